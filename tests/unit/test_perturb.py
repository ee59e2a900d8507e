"""The verifier's "action" near-miss family (scripts/verifier_data/perturb.py): the corpus's own verbs, found
in a verb slot, replace each other, never by a word sharing a WordNet sense. WordNet (a training extra) is
replaced by a small stand-in with the two questions the family asks of it."""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from verifier_data.perturb import MIN_VERB_USES, Perturber, corpus_verbs  # noqa: E402


class Senses:
    """WordNet's verb senses for a few words: a word's verbs, and which words share one."""

    SENSES = {"delete": {"v1"}, "erase": {"v1"}, "recover": {"v2"}, "cancel": {"v3"}, "renew": {"v4"}}

    def is_verb(self, word: str) -> bool:
        return word in self.SENSES

    def shares_a_sense(self, word: str, other: str) -> bool:
        return bool(self.SENSES.get(word, set()) & self.SENSES.get(other, set()))


def test_corpus_verbs_are_common_wordnet_verbs_seen_in_a_verb_slot_often_enough() -> None:
    texts = ["How do I delete my account?", "How can you renew a passport?", "Is it possible to cancel it?",
             "Why delete anything?"]  # "delete" after "why" is not in a verb slot
    often = texts * MIN_VERB_USES
    assert corpus_verbs(often, Senses()) == ["cancel", "delete", "renew"]
    assert corpus_verbs(texts, Senses()) == []  # each seen once
    assert corpus_verbs(["How do I account for it?"] * MIN_VERB_USES, Senses()) == []  # not a verb


def test_the_action_family_asks_for_another_action_never_a_synonym() -> None:
    perturber = Perturber(Senses(), proper_nouns=[], verbs=["delete", "erase", "recover", "cancel"])
    seen = set()
    for seed in range(40):
        rewrite = perturber.action("How do I delete my Facebook account?", random.Random(seed))
        if rewrite is not None:
            assert rewrite.family == "action" and rewrite.same_answer is False
            seen.add(rewrite.text)
    assert seen == {"How do I recover my Facebook account?", "How do I cancel my Facebook account?"}
    assert perturber.action("Why delete it?", random.Random(0)) is None  # no verb slot: nothing to swap
    cased = {perturber.action("Is it safe to Delete it?", random.Random(seed)) for seed in range(40)} - {None}
    assert {r.text for r in cased} == {"Is it safe to Recover it?", "Is it safe to Cancel it?"}
