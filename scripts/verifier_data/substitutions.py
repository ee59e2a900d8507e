"""A positive family learned from the data: one word of a question replaced by a word the data's own
paraphrases use for it ("create" → "generate", "purpose" → "goal").

The near-miss families change one word and label the pair "different"; without a counterpart the model
learns that any changed word changes the question, and refuses paraphrases that reword a sentence
throughout (GPTCache's answers above all). The counterpart is mined, not typed: the single-word replacements
in the word alignment of each train-split (origin, similar) pair, kept only where WordNet agrees the two words
share a sense (scripts/verifier_data/wordnet.py: a synonym, or directly above or below one). The data
proposes and WordNet vetoes: "reset" → "recover" is one QQP pair's substitution, not a synonym.

Training only: calibration and test keep the pairs they had, so models trained with and without the family
are measured on the same data.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from difflib import SequenceMatcher

from orchestrator.pairsets import Pair
from verifier_data.perturb import WORD, is_content, replace_word
from verifier_data.wordnet import WordNet


def mine(rows: Sequence[tuple[str, str]], wordnet: WordNet) -> dict[str, list[str]]:
    """word → the words the rows' paraphrases put in its place (both directions), WordNet-confirmed."""
    found: dict[str, set[str]] = defaultdict(set)
    for origin, similar in rows:
        before = [w.lower() for w in WORD.findall(origin)]
        after = [w.lower() for w in WORD.findall(similar)]
        for tag, i1, i2, j1, j2 in SequenceMatcher(None, before, after, autojunk=False).get_opcodes():
            if tag != "replace" or i2 - i1 != 1 or j2 - j1 != 1:
                continue
            word, other = before[i1], after[j1]
            if is_content(word) and is_content(other) and wordnet.shares_a_sense(word, other):
                found[word].add(other)
                found[other].add(word)
    return {word: sorted(others) for word, others in sorted(found.items())}


def substitution_pairs(rows: Sequence[tuple[str, str]], table: Mapping[str, Sequence[str]],
                       rng: random.Random) -> list[Pair]:
    """For each row whose origin has a word in `table`: (origin or similar, origin with that word replaced)."""
    pairs = []
    for origin, similar in rows:
        options = [m for m in WORD.finditer(origin) if m.group().lower() in table]
        if not options:
            continue
        match = rng.choice(options)
        rewritten = replace_word(origin, match, rng.choice(table[match.group().lower()]))
        pairs.append(Pair(rng.choice((origin, similar)), rewritten, True, "substitution"))
    return pairs
