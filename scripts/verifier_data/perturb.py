"""Synthetic pairs from one question: near misses by perturbation family, and meaning-keeping rewrites.

A near miss changes the one thing the answer depends on while the sentence barely moves in embedding space.
The families are the kinds of difference a cache must not ignore: entity, number, negation, antonym,
argument order, unit, time, audience, action, and task (the same subject asked for as another kind of text:
"How do I reset my password?" → "Write a poem about how to reset my password."). Words come from WordNet
(scripts/verifier_data/wordnet.py: antonyms, co-hyponyms named by their hypernym root, which words are verbs
and which share a sense, the kinds of written work) and from the corpus itself (its capitalised words as
entities, the verbs its questions ask about as actions); only English grammar's closed classes (auxiliaries,
asymmetric prepositions, the words before a verb, the question-to-request frames) are written here. Rewrites
that keep the meaning (contractions, case and punctuation; a question asked as a request, "Explain how to
reset my password.") are positives beside the data's real paraphrases.
WordNet synonyms are not used as positives: a first sense's other lemmas too often change the meaning
(pass/walk, child/fry).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from wordfreq import zipf_frequency

from orchestrator.pairsets import Pair
from verifier_data.wordnet import WordNet

WORD = re.compile(r"[A-Za-z][A-Za-z'-]*|\d+(?:\.\d+)?")
#: Auxiliaries and their negated contractions (a closed class of English grammar).
NEGATED = {"is": "isn't", "are": "aren't", "was": "wasn't", "were": "weren't", "do": "don't", "does": "doesn't",
           "did": "didn't", "can": "can't", "could": "couldn't", "should": "shouldn't", "would": "wouldn't",
           "will": "won't", "has": "hasn't", "have": "haven't"}
POSITIVE = {v: k for k, v in NEGATED.items()}
#: Prepositions whose two sides cannot be swapped without changing the question (A to B, A than B).
ASYMMETRIC = ("to", "into", "than", "vs", "versus", "over", "before", "after")
CONTRACTIONS = {"what is": "what's", "how is": "how's", "it is": "it's", "i am": "i'm", "do not": "don't",
                "can not": "can't", "does not": "doesn't", "is not": "isn't"}
#: Zipf frequency from which a replacement word is common enough to appear in a real question.
COMMON = 3.0
#: Words too frequent to carry a question's meaning alone (articles, pronouns, auxiliaries, prepositions).
FUNCTION_ZIPF = 6.0
#: Words after which English puts a verb's base form (a closed class: "to" and the subject pronouns).
VERB_SLOTS = frozenset({"to", "i", "you", "we", "they"})
#: Times a word must fill a verb slot in the corpus to count as one of its actions.
MIN_VERB_USES = 3
#: Question words (a closed class): never swapped for a sibling or an antonym.
QUESTION_WORDS = frozenset({"what", "why", "how", "when", "where", "which", "who", "whom", "whose"})
#: "How do I <do something>?" and "What is <something>?": the two question frames that read as a request for
#: the same answer ("Explain how to <do something>.") and whose subject another request can be about.
HOW_TO = re.compile(r"^how\s+(?:do|does|can|could|should|would|will)\s+(?:i|you|we|one|someone)\s+"
                    r"(?P<rest>[^?]+?)\s*\?*$", re.IGNORECASE)
WHAT_IS = re.compile(r"^what\s+(?P<verb>is|are)\s+(?P<rest>[^?]+?)\s*\?*$", re.IGNORECASE)
#: Request frames that ask for the question's own answer (a closed class of English imperatives).
ASK_HOW = ("Explain how to {rest}.", "Tell me how to {rest}.", "Show me how to {rest}.")
ASK_WHAT = ("Explain what {rest} {verb}.", "Tell me what {rest} {verb}.")
#: Each question frame with the requests that ask for its answer and the subject a written work can be about.
FRAMES = ((HOW_TO, ASK_HOW, "how to {rest}"), (WHAT_IS, ASK_WHAT, "{rest}"))
#: Request frames that ask for a written work (any two ask for the same one).
WRITE = ("Write {work} about {subject}.", "Compose {work} about {subject}.", "Give me {work} about {subject}.")


@dataclass(frozen=True)
class Rewrite:
    text: str
    family: str
    same_answer: bool


def _is_content(word: str) -> bool:
    return word.isalpha() and word.lower() not in QUESTION_WORDS and zipf_frequency(word.lower(), "en") < FUNCTION_ZIPF


def _cased(template: str, word: str) -> str:
    return word.capitalize() if template[:1].isupper() else word


def _replace(text: str, match: re.Match, word: str) -> str:
    return text[:match.start()] + _cased(match.group(), word) + text[match.end():]


class Perturber:
    """Every family that applies to a question, each at most once (rng picks the word and the replacement)."""

    def __init__(self, wordnet: WordNet, proper_nouns: Sequence[str], verbs: Sequence[str] = (),
                 writings: Sequence[str] = ()) -> None:
        self.wordnet = wordnet
        self.proper_nouns = sorted(set(proper_nouns))
        self.verbs = sorted(set(verbs))
        self._verb_set = frozenset(self.verbs)
        self.writings = sorted(set(writings))

    def near_misses(self, text: str, rng: random.Random) -> list[Rewrite]:
        found: list[Rewrite] = []
        for make in (self.number, self.negation, self.antonym, self.order, self.proper_noun, self.action,
                     self.task):
            rewrite = make(text, rng)
            if rewrite is not None and rewrite.text != text:
                found.append(rewrite)
        found += self.siblings(text, rng)
        return found

    def paraphrases(self, text: str, rng: random.Random) -> list[Rewrite]:
        rewrites = (self.surface(text, rng), self.request(text, rng))
        return [r for r in rewrites if r is not None and r.text != text]

    # near misses ---------------------------------------------------------------------------------------------

    @staticmethod
    def number(text: str, rng: random.Random) -> Rewrite | None:
        numbers = [m for m in WORD.finditer(text) if m.group()[0].isdigit()]
        if not numbers:
            return None
        match = rng.choice(numbers)
        value = float(match.group())
        changed = rng.choice([value + 1, value - 1, value * 2, value + 10, value / 2 if value > 1 else value + 3])
        shown = str(int(changed)) if "." not in match.group() else f"{changed:.{len(match.group().split('.')[1])}f}"
        return Rewrite(text[:match.start()] + shown + text[match.end():], "number", False)

    @staticmethod
    def negation(text: str, rng: random.Random) -> Rewrite | None:
        words = list(WORD.finditer(text))
        negated = [m for m in words if m.group().lower() in POSITIVE]
        if negated:
            match = rng.choice(negated)
            return Rewrite(_replace(text, match, POSITIVE[match.group().lower()]), "negation", False)
        nots = [m for m in words if m.group().lower() in ("not", "never", "without")]
        if nots:
            match = rng.choice(nots)
            if match.group().lower() == "without":
                return Rewrite(_replace(text, match, "with"), "negation", False)
            return Rewrite((text[:match.start()] + text[match.end():].lstrip()).strip(), "negation", False)
        auxiliaries = [m for m in words if m.group().lower() in NEGATED]
        if auxiliaries:
            match = auxiliaries[0]
            return Rewrite(_replace(text, match, NEGATED[match.group().lower()]), "negation", False)
        withs = [m for m in words if m.group().lower() == "with"]
        if withs:
            return Rewrite(_replace(text, rng.choice(withs), "without"), "negation", False)
        return None

    def antonym(self, text: str, rng: random.Random) -> Rewrite | None:
        options = []
        for match in WORD.finditer(text):
            word = match.group().lower()
            if not _is_content(word):
                continue
            for suffix in ("", "s", "ed", "d", "ing", "er", "est"):
                base = word[:len(word) - len(suffix)] if suffix and word.endswith(suffix) else word
                opposites = [a for a in self.wordnet.antonyms(base) if " " not in a]
                if opposites and (suffix == "" or word.endswith(suffix)):
                    options.append((match, [a + suffix for a in opposites]))
                    break
        if not options:
            return None
        match, opposites = rng.choice(options)
        return Rewrite(_replace(text, match, rng.choice(opposites)), "antonym", False)

    @staticmethod
    def order(text: str, rng: random.Random) -> Rewrite | None:
        words = list(WORD.finditer(text))
        options = [(words[i - 1], words[i + 1]) for i in range(1, len(words) - 1)
                   if words[i].group().lower() in ASYMMETRIC
                   and _is_content(words[i - 1].group()) and _is_content(words[i + 1].group())
                   and words[i - 1].group().lower() != words[i + 1].group().lower()]
        if not options:
            return None
        left, right = rng.choice(options)
        swapped = (text[:left.start()] + right.group() + text[left.end():right.start()] + left.group()
                   + text[right.end():])
        return Rewrite(swapped, "order", False)

    def proper_noun(self, text: str, rng: random.Random) -> Rewrite | None:
        words = list(WORD.finditer(text))
        names = [m for m in words[1:] if m.group()[0].isupper() and m.group().isalpha() and len(m.group()) > 1]
        if not names or not self.proper_nouns:
            return None
        match = rng.choice(names)
        other = rng.choice(self.proper_nouns)
        return Rewrite(text[:match.start()] + other + text[match.end():], "entity", False) \
            if other != match.group() else None

    def action(self, text: str, rng: random.Random) -> Rewrite | None:
        """Another of the corpus's actions in a verb slot ("how do I delete my account" → "… recover …"): the
        question keeps its object and its frame and asks for something else."""
        words = list(WORD.finditer(text))
        slots = [word for before, word in zip(words, words[1:])
                 if before.group().lower() in VERB_SLOTS and word.group().lower() in self._verb_set]
        if not slots:
            return None
        match = rng.choice(slots)
        other = rng.choice(self.verbs)
        if other == match.group().lower() or self.wordnet.shares_a_sense(other, match.group().lower()):
            return None  # the same action, or a synonym of it in some sense (increase/raise)
        return Rewrite(_replace(text, match, other), "action", False)

    def task(self, text: str, rng: random.Random) -> Rewrite | None:
        """The question's subject asked for as a kind of written work ("What is a mortgage?" → "Write a story
        about a mortgage."): the topic stays, the answer is another text."""
        subject = _subject(text)
        if subject is None or not self.writings:
            return None
        return Rewrite(_write(rng.choice(self.writings), subject, WRITE[0]), "task", False)

    def written_works(self, text: str, paraphrase: str, misses: Sequence[Rewrite],
                      rng: random.Random) -> list[Pair]:
        """Pairs of two requests for a written work made from one question, so that requests are told apart by
        what they ask for, not by their frame: the same work in other words (a positive, "request": another
        frame, about the paraphrase's subject when it has one), another kind of work about the same subject
        ("task"; never one directly above or below it in WordNet, poem/ballad), and the same work about a near
        miss's subject (the miss's family)."""
        subject = _subject(text)
        if subject is None or len(self.writings) < 2:
            return []
        writing = rng.choice(self.writings)
        frame, other_frame = rng.sample(WRITE, 2)
        asked = _write(writing, subject, frame)
        pairs = [Pair(asked, _write(writing, _subject(paraphrase) or subject, other_frame), True, "request")]
        others = [w for w in self.writings if w != writing and not self.wordnet.shares_a_sense(w, writing)]
        if others:
            pairs.append(Pair(asked, _write(rng.choice(others), subject, frame), False, "task"))
        for miss in misses:
            miss_subject = _subject(miss.text)
            if miss_subject is not None and miss_subject != subject:
                pairs.append(Pair(asked, _write(writing, miss_subject, frame), False, miss.family))
                break
        return pairs

    def siblings(self, text: str, rng: random.Random) -> list[Rewrite]:
        """One co-hyponym swap per family found (unit, time, audience, entity)."""
        by_family: dict[str, list[tuple[re.Match, list[str]]]] = {}
        for match in WORD.finditer(text):
            word = match.group().lower()
            if not _is_content(word):
                continue
            family, words = self.wordnet.siblings(word)
            common = [w for w in words if zipf_frequency(w, "en") >= COMMON]
            if common:
                by_family.setdefault(family, []).append((match, common))
        rewrites = []
        for family, options in sorted(by_family.items()):
            match, words = rng.choice(options)
            rewrites.append(Rewrite(_replace(text, match, rng.choice(words)), family, False))
        return rewrites

    # paraphrases ---------------------------------------------------------------------------------------------

    @staticmethod
    def surface(text: str, rng: random.Random) -> Rewrite | None:
        lowered = text.lower()
        for long, short in CONTRACTIONS.items():
            for a, b in ((long, short), (short, long)):
                if re.search(rf"\b{re.escape(a)}\b", lowered):
                    return Rewrite(re.sub(rf"\b{re.escape(a)}\b", b, lowered, count=1), "surface", True)
        styles: list[Callable[[str], str]] = [str.lower, lambda t: t.rstrip("?.! "), lambda t: t.rstrip("?") + " ?"]
        return Rewrite(rng.choice(styles)(text), "surface", True)

    @staticmethod
    def request(text: str, rng: random.Random) -> Rewrite | None:
        """The question asked as a request for the same answer ("How can I reset my password?" → "Tell me how
        to reset my password.")."""
        found = _framed(text)
        if found is None:
            return None
        (_, asks, _), parts = found
        return Rewrite(rng.choice(asks).format(**parts), "request", True)


def _write(writing: str, subject: str, frame: str) -> str:
    article = "an" if writing[0] in "aeiou" else "a"
    return frame.format(work=f"{article} {writing}", subject=subject)


def _framed(text: str) -> tuple[tuple, dict[str, str]] | None:
    """The question's frame (an entry of FRAMES) and its parts (`rest`, the lower-case `verb`), or None."""
    for frame in FRAMES:
        if match := frame[0].match(text.strip()):
            return frame, {"rest": match["rest"], "verb": (match.groupdict().get("verb") or "").lower()}
    return None


def _subject(text: str) -> str | None:
    """What a how-to or what-is question is about ("how to reset my password", "a mortgage"), or None."""
    found = _framed(text)
    return None if found is None else found[0][2].format(**found[1])


def corpus_verbs(texts: Sequence[str], wordnet: WordNet) -> list[str]:
    """Common words the corpus puts in a verb slot at least MIN_VERB_USES times that WordNet knows as verbs:
    the actions its questions ask about."""
    uses: Counter = Counter()
    for text in texts:
        words = [m.group() for m in WORD.finditer(text)]
        for before, word in zip(words, words[1:]):
            lowered = word.lower()
            if before.lower() in VERB_SLOTS and _is_content(lowered) \
                    and zipf_frequency(lowered, "en") >= COMMON and wordnet.is_verb(lowered):
                uses[lowered] += 1
    return sorted(word for word, count in uses.items() if count >= MIN_VERB_USES)


def writings(wordnet: WordNet) -> list[str]:
    """Kinds of written work a request can ask for (poem, story, essay, …): common one-word nouns among WordNet's
    kinds of writing and of literary composition."""
    found = wordnet.kinds_of("written material", depth=1) + wordnet.kinds_of("literary composition", depth=2)
    return sorted({w for w in found if " " not in w and zipf_frequency(w, "en") >= COMMON})


def proper_nouns(texts: Sequence[str]) -> list[str]:
    """Capitalised words inside sentences that are not common words: the corpus's own entities."""
    found = set()
    for text in texts:
        for match in list(WORD.finditer(text))[1:]:
            word = match.group()
            if word[0].isupper() and word.isalpha() and len(word) > 2 and zipf_frequency(word.lower(), "en") < 4.5:
                found.add(word)
    return sorted(found)
