"""Near-miss guard: the second stage of a semantic hit.

Sentence embeddings put "capital of France" and "capital of Germany" (or 17x23 and 17x24) close together,
because the sentences share everything but the one word that decides the answer. No single similarity
threshold separates such near misses from paraphrases, so after the nearest neighbour passes the threshold
the guard compares the two texts for the kinds of difference that change an answer while barely moving an
embedding:

- ``numbers``: the multisets of numbers differ (digits, number words, Roman numerals II and up);
- ``negation``: one text negates and the other does not (not, no, never, n't, without, avoid, ...);
- ``antonym``: opposite words, from a small English lexicon and from opposite prefixes
  (enable/disable, increase/decrease, install/uninstall, import/export);
- ``order``: the same two words in reversed order around an asymmetric connective
  (Celsius to Fahrenheit vs Fahrenheit to Celsius, Python faster than Java vs Java faster than Python);
- ``entity``: a specific word on each side that the other side lacks: capitalised words inside a
  sentence, identifiers (mixed case, digits, underscores, quoted or back-ticked text) and rare words
  (word frequency below ``rare_zipf``, e.g. numpy, ibuprofen);
- ``unit`` and ``time``: different units of measure, or different time references (today, yesterday,
  next week).

The rules are lexical and general (no list of the evaluation's sentences); each returns a reason name so a
rejection can be explained, counted and switched off by configuration.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import get_args

from wordfreq import zipf_frequency

from orchestrator.config import GuardCheck, GuardSettings

#: A slot swap changes one or two specific words per side; more is a rewrite (see _entity).
MAX_SWAPPED = 2
#: Content-word Jaccard similarity from which two texts count as a minimal pair (see _minimal_pair).
MINIMAL_PAIR_JACCARD = 0.6
#: Zipf frequency from which a capitalised word that starts a list item reads as an ordinary word.
COMMON_ZIPF = 4.0
_VERB_SUFFIXES = ("ing", "ed", "ize", "ise", "izing", "ising", "ized", "ised", "ify", "able")

#: The checks, in the order they run (their names are orchestrator.config.GuardCheck).
CHECKS = get_args(GuardCheck)


_TOKEN = re.compile(r"[`'\"]?[\w][\w.+#/'-]*[\w+#]|[\w]")
_QUOTED = re.compile(r"`([^`]+)`|\"([^\"]+)\"|(?<!\w)'([^']+)'(?!\w)")

STOPWORDS = frozenset("""
a an the and or but if then so of to in on at by for with from into onto about as is are was were be been
being am do does did doing have has had having i me my mine we us our you your yours he him his she her it
its they them their what which who whom whose this that these those there here how why when where can could
would should will shall may might must let lets please tell give show explain describe list some any each
every all both either such than too very just also only more most much many one's s t get got make makes
made way ways thing things something anything out up over again further once own same other another
whats what's hows how's""".split())

NEGATIONS = frozenset("not no never nor neither none nothing nobody nowhere without cannot avoid prevent lack "
                      "absence cant dont doesnt didnt isnt arent wasnt werent wont wouldnt shouldnt couldnt "
                      "hasnt havent hadnt".split())

_ANTONYM_PAIRS = """
good bad, best worst, better worse, pro con, advantage drawback, benefit risk, max min, maximum minimum,
high low, higher lower, highest lowest, large small, larger smaller, largest smallest, big small,
bigger smaller, biggest smallest, long short, longer shorter, fast slow, faster slower, fastest slowest,
hot cold, warm cold, open close, start stop, begin end, first last, before after, add remove, add delete,
create delete, create destroy, allow deny, allow block, accept reject, buy sell, win lose, true false,
positive negative, reduce increase, push pull, send receive, input output, upper lower, uppercase lowercase,
left right, north south, east west, above below, inside outside, love hate, safe dangerous, rich poor,
cheap expensive, easy hard, easy difficult, strong weak, light dark, light heavy, early late, old new,
old young, past future, morning evening, day night, summer winter, male female, man woman, men women,
boy girl, father mother, husband wife, son daughter, brother sister, up down, in out, on off, enter exit,
gain lose, gain loss, profit loss, asc desc, ascending descending, attack defend, min max, lowest highest,
import export, encode decode, encrypt decrypt, compress decompress, serialize deserialize, show hide,
expand collapse, zoom-in zoom-out, raise lower, lend borrow, arrive depart, sender receiver, client server,
debit credit, deposit withdraw, lock unlock, mount unmount, connect disconnect, upload download,
increment decrement, include exclude, inbound outbound, internal external, private public, sync async,
synchronous asynchronous, static dynamic, horizontal vertical, row column, read write,
""".replace("\n", " ")

#: Opposite prefixes: a word whose root, after stripping one of a pair, equals the other's root.
_OPPOSITE_PREFIXES = (("en", "dis"), ("en", "de"), ("in", "de"), ("in", "ex"), ("im", "ex"), ("up", "down"),
                      ("over", "under"), ("pre", "post"), ("", "un"), ("", "dis"), ("", "non"), ("", "in"),
                      ("", "im"), ("", "il"), ("", "ir"), ("", "anti"), ("", "mis"))

UNITS = frozenset("""
mm cm m km meter metre kilometer kilometre centimeter millimeter mile yard foot feet inch nanometer
mg g kg gram kilogram milligram pound lb ounce oz ton tonne stone
ml l liter litre milliliter gallon quart pint cup tablespoon teaspoon
second sec minute min hour hr day week month year decade century millennium millisecond microsecond
nanosecond celsius fahrenheit kelvin degree
dollar usd euro eur pound gbp yen jpy yuan rupee franc cent
bit byte kb mb gb tb kilobyte megabyte gigabyte terabyte kib mib gib
watt kw kwh volt amp ampere ohm joule calorie kcal hertz hz khz mhz ghz
mph kph knot acre hectare percent
""".split())

_TIME_WORDS = frozenset("today tomorrow yesterday tonight".split())
_TIME_PHRASE = re.compile(r"\b(last|next|this|past|coming|previous)\s+(week|month|year|day|night|weekend|"
                          r"monday|tuesday|wednesday|thursday|friday|saturday|sunday|season|decade)\b")

_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS.update({"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
                      "ninety": 90, "hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9,
                      "dozen": 12, "twice": 2, "triple": 3})
#: "one", "a" and "1" say the same ("1 month", "one-minute", "a month"); and "one" is often a pronoun
#: ("one can"). So 1 is not compared at all; "one egg" vs "two eggs" still differs by the 2.
del _NUMBER_WORDS["one"]
#: From "third" on: "first" would be 1, which is never compared (above), and "second" is as often the unit.
_ORDINALS = {w: i + 2 for i, w in enumerate("third fourth fifth sixth seventh eighth ninth tenth".split(), 1)}
_ROMAN = re.compile(r"^(?=[IVXLC]{2,}$)C{0,3}(XC|XL|L?X{0,3})(IX|IV|V?I{0,3})$")
_DIGITS = re.compile(r"^\d[\d,]*(\.\d+)*(st|nd|rd|th|s|x|k|m|b|%)?$", re.IGNORECASE)

_CONNECTIVES = frozenset("to into onto than vs versus before after towards toward ->".split())


def _antonym_table() -> dict[str, frozenset[str]]:
    table: dict[str, set[str]] = {}
    for pair in _ANTONYM_PAIRS.split(","):
        words = pair.split()
        if len(words) == 2:
            a, b = words
            table.setdefault(a, set()).add(b)
            table.setdefault(b, set()).add(a)
    return {k: frozenset(v) for k, v in table.items()}


_ANTONYMS = _antonym_table()


def stem(word: str) -> str:
    """A light, predictable English stem: lower case, no possessive, no plural or common verb suffix."""
    w = word.lower().strip("`'\".-")
    if w.endswith("'s"):
        w = w[:-2]
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 4 and w.endswith(("ses", "xes", "zes", "ches", "shes")):
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


@dataclass(frozen=True)
class _Text:
    """The features of one text that the checks compare, computed once."""

    raw: str
    tokens: tuple[str, ...]
    sentence_starts: frozenset[int]  # token positions that begin a sentence
    list_markers: frozenset[int]  # "1)" "2." at the start of a line or sentence: enumeration, not quantity
    list_item_ends: frozenset[int]  # token positions followed by a comma or colon
    stems: tuple[str, ...]
    content: tuple[str, ...]  # stems of non-stopwords, in order
    squashed: str  # lower case, letters and digits only: "SQL Server" and "sqlserver" meet here


@lru_cache(maxsize=4096)
def _analyse(text: str) -> _Text:
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    tokens: list[str] = []
    starts: set[int] = set()
    markers: set[int] = set()
    item_ends: set[int] = set()
    previous_end = 0
    for match in _TOKEN.finditer(text):
        token = match.group().strip("`'\"").rstrip(".")
        if not token:
            continue
        gap = text[previous_end:match.start()]
        if not tokens or re.search(r"[.!?:;\n]", gap):
            starts.add(len(tokens))
        if tokens and re.search(r"[,:]", gap):
            item_ends.add(len(tokens) - 1)
        line_start = not tokens or "\n" in gap
        if token.isdigit() and (text[match.end():match.end() + 1] == ")" or line_start and text[match.end():match.end() + 1] == "."):
            markers.add(len(tokens))
        tokens.append(token)
        previous_end = match.end()
    stems = tuple(stem(t) for t in tokens)
    content = tuple(s for s in stems if s not in STOPWORDS and s not in NEGATIONS and not s.endswith("n't"))
    squashed = re.sub(r"[\W_]+", "", text.lower())
    return _Text(text, tuple(tokens), frozenset(starts), frozenset(markers), frozenset(item_ends), stems, content, squashed)


def _numbers(text: _Text) -> Counter:
    values: Counter = Counter()
    for i, token in enumerate(text.tokens):
        if _ROMAN.match(token) or token == "I" and _is_roman_one(text, i):
            values[_roman_value(token)] += 1
            continue
        if i in text.list_markers:
            continue
        for part in token.split("-"):
            low = stem(part)
            if _DIGITS.match(low):
                values[re.sub(r"(st|nd|rd|th|s)$", "", low.replace(",", ""))] += 1
            elif low in _NUMBER_WORDS:
                values[str(_NUMBER_WORDS[low])] += 1
            elif low in _ORDINALS:
                values[str(_ORDINALS[low])] += 1
    values.pop("1", None)
    return values


def _is_roman_one(text: _Text, i: int) -> bool:
    """ "World War I?": a lone I after a capitalised word, ending the sentence."""
    after_name = i > 0 and text.tokens[i - 1][:1].isupper() and i - 1 not in text.sentence_starts
    return after_name and (i + 1 == len(text.tokens) or i + 1 in text.sentence_starts)


def _roman_value(token: str) -> str:
    digits = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100}
    total = 0
    for a, b in zip(token, token[1:] + " "):
        value = digits[a]
        total += -value if b != " " and digits[b] > value else value
    return str(total)


def _negations(text: _Text) -> int:
    count = 0
    for i, token in enumerate(text.tokens):
        low = token.lower()
        if low == "no" and i in text.list_item_ends and i in text.sentence_starts:
            continue  # "No, ..." answers a question; it does not negate the sentence
        if low == "not" and i > 0 and text.tokens[i - 1].lower() == "or":
            continue  # "whether or not" asks both ways
        parts = low.split("-")
        count += low in NEGATIONS or low.endswith("n't") or len(parts) > 1 and parts[0] in ("no", "non")
    return count


@lru_cache(maxsize=8192)
def _opposites(word: str) -> frozenset[str]:
    """Words opposite to `word`: from the lexicon, and by swapping an opposite prefix (roots of 4+ letters)."""
    found = set(_ANTONYMS.get(word, ()))
    for p, q in _OPPOSITE_PREFIXES:
        for have, other in ((p, q), (q, p)):
            if word.startswith(have) and len(word) - len(have) >= 4:
                found.add(other + word[len(have):])
    found.discard(word)
    return frozenset(found)


def _antonym(a: _Text, b: _Text) -> bool:
    only_a = set(a.content) - set(b.content)
    only_b = set(b.content) - set(a.content)
    return any(not _opposites(x).isdisjoint(only_b) for x in only_a)


def _ordered_pairs(text: _Text) -> set[tuple[str, str]]:
    """(x, y) for "x to y", "from x to y", "x into y", "x faster than y", "x vs y": the nearest content words
    on each side of an asymmetric connective (for "than", the word before the comparative)."""
    pairs = set()
    content = [i for i, s in enumerate(text.stems) if s not in STOPWORDS and s not in NEGATIONS]
    for c, word in enumerate(text.stems):
        if word not in _CONNECTIVES:
            continue
        before = [i for i in content if i < c]
        after = [i for i in content if i > c]
        if word == "than" and before:
            before = before[:-1]  # skip the comparative: "Python *faster* than Java"
        if before and after and after[0] - c <= 3 and c - before[-1] <= 3:
            pairs.add((text.stems[before[-1]], text.stems[after[0]]))
    return pairs


def _order(a: _Text, b: _Text) -> bool:
    pairs_b = _ordered_pairs(b)
    return any((y, x) in pairs_b and (x, y) not in pairs_b for x, y in _ordered_pairs(a))


def _is_specific(token: str, position: int, text: _Text, rare_zipf: float) -> bool:
    if token.lower() in STOPWORDS or token.lower() in NEGATIONS or len(token) < 2 and not token.isdigit():
        return False
    if token.replace(",", "").replace(".", "").isdigit():
        return False  # plain numbers are the numbers check's business
    if any(c.isdigit() for c in token) or "_" in token or (token[1:] != token[1:].lower() and token.isalpha()):
        return True  # identifiers and mixed case: 2FA, push_to_hub, JavaScript, PostgreSQL
    word = token.lower()
    if token[0].isupper() and position not in text.sentence_starts:
        # a capitalised common word right after a comma or colon starts a list item ("include Load a
        # dataset, Know your dataset"); anywhere else it is a name ("install Docker on Windows")
        list_item = position - 1 in text.list_item_ends and zipf_frequency(word, "en") >= COMMON_ZIPF
        return not list_item
    if word.endswith(_VERB_SUFFIXES):
        return False  # inflected verbs and derived adjectives are rare as forms, not as meanings
    return word.isalpha() and len(word) >= 3 and zipf_frequency(word, "en") < rare_zipf


@lru_cache(maxsize=4096)
def _specifics(text: _Text, rare_zipf: float) -> frozenset[str]:
    found = {stem(t) for i, t in enumerate(text.tokens) if _is_specific(t, i, text, rare_zipf)}
    for match in _QUOTED.finditer(text.raw):
        quoted = next(g for g in match.groups() if g)
        found.update(stem(t) for t in _TOKEN.findall(quoted) if t.lower() not in STOPWORDS)
    return frozenset(found)


def _present(word: str, other: _Text) -> bool:
    """Whether `other` mentions `word`, allowing inflection, case, spacing and acronym differences."""
    if word in other.stems:
        return True
    squashed = re.sub(r"[\W_]+", "", word)
    if len(squashed) >= 4 and squashed in other.squashed:
        return True
    if any(_common_prefix(word, s) >= max(4, min(len(word), len(s)) - 3) for s in other.stems):
        return True  # decoded / decoding, iterate / iterating, dictionary / dicts
    return 2 <= len(squashed) <= 5 and squashed.isalpha() and squashed in _initialisms(other)


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@lru_cache(maxsize=4096)
def _initialisms(text: _Text) -> frozenset[str]:
    """What an acronym could stand for here: initials of word runs ("machine learning" -> ml) and the
    capitals of camel-case words ("JavaScript" -> js)."""
    found = set()
    words = [t for t in text.tokens if t.isalpha()]
    for n in range(2, 6):
        for i in range(len(words) - n + 1):
            found.add("".join(w[0] for w in words[i:i + n]).lower())
    for token in text.tokens:
        capitals = "".join(c for c in token if c.isupper())
        if len(capitals) >= 2:
            found.add(capitals.lower())
    return frozenset(found)


def _minimal_pair(a: _Text, b: _Text, slots: frozenset[str] = frozenset()) -> bool:
    """Whether the texts, apart from the words in `slots`, differ in few content words (Jaccard at least
    MINIMAL_PAIR_JACCARD). A one-word difference between two requests decides the answer; in a rewrite of
    a longer text, words are routinely paraphrased away ("optional" / "not mandatory", "zero-copy" /
    "without copying", "JS" / "JavaScript")."""
    words_a = {w for w in a.content if w not in slots and not w[:1].isdigit()}
    words_b = {w for w in b.content if w not in slots and not w[:1].isdigit()}
    if not words_a or not words_b:
        return True
    return len(words_a & words_b) / len(words_a | words_b) >= MINIMAL_PAIR_JACCARD


def _entity(a: _Text, b: _Text, rare_zipf: float) -> bool:
    """Each side names one or two things the other does not, in an otherwise shared frame (a slot swap)."""
    missing_in_b = {w for w in _specifics(a, rare_zipf) if not _present(w, b)}
    missing_in_a = {w for w in _specifics(b, rare_zipf) if not _present(w, a)}
    swapped = 1 <= len(missing_in_b) <= MAX_SWAPPED and 1 <= len(missing_in_a) <= MAX_SWAPPED
    return swapped and _minimal_pair(a, b, frozenset(missing_in_b | missing_in_a))


def _numbers_differ(a: _Text, b: _Text) -> bool:
    """Different numbers on both sides; or numbers on one side only, in an otherwise near-identical pair
    ("calories in an egg" / "calories in 2 eggs"). Long rewrites add or drop counts ("two steps")."""
    numbers_a, numbers_b = _numbers(a), _numbers(b)
    if numbers_a == numbers_b:
        return False
    return bool(numbers_a) and bool(numbers_b) or _minimal_pair(a, b)


def _units(text: _Text) -> frozenset[str]:
    return frozenset(s for s in text.stems if s in UNITS)


def _unit(a: _Text, b: _Text) -> bool:
    units_a, units_b = _units(a), _units(b)
    return bool(units_a) and bool(units_b) and units_a != units_b


def _times(text: _Text) -> frozenset[str]:
    found = {s for s in text.stems if s in _TIME_WORDS}
    found.update(" ".join(m.groups()) for m in _TIME_PHRASE.finditer(text.raw.lower()))
    return frozenset(found)


def _time(a: _Text, b: _Text) -> bool:
    return _times(a) != _times(b)


class NearMissGuard:
    """Decides whether a cached entry's question asks the same thing as a new query."""

    def __init__(self, settings: GuardSettings | None = None) -> None:
        self.settings = settings or GuardSettings()
        zipf_frequency("warm", "en")  # loads the word-frequency table now, not during the first lookup

    def reasons(self, cached: str, query: str) -> tuple[str, ...]:
        """Names of the checks that find a decisive difference; empty when the hit may be served."""
        if not self.settings.enabled:
            return ()
        a, b = _analyse(cached), _analyse(query)
        checks = self.settings.checks
        found = []
        if "numbers" in checks and _numbers_differ(a, b):
            found.append("numbers")
        if "negation" in checks and _negations(a) % 2 != _negations(b) % 2 and _minimal_pair(a, b):
            found.append("negation")
        if "antonym" in checks and _antonym(a, b):
            found.append("antonym")
        if "order" in checks and _order(a, b):
            found.append("order")
        if "entity" in checks and _entity(a, b, self.settings.rare_zipf):
            found.append("entity")
        if "unit" in checks and _unit(a, b):
            found.append("unit")
        if "time" in checks and _time(a, b):
            found.append("time")
        return tuple(found)

    def agrees(self, cached: str, query: str) -> bool:
        return not self.reasons(cached, query)
