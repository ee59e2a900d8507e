"""The verifier's word-sourced families (scripts/verifier_data/perturb.py).

- "action": the corpus's own verbs, found in a verb slot, replace each other, never by a word sharing a
  WordNet sense;
- "request" (a positive) and "task" (a near miss): a how-to or what-is question asked as a request for the
  same answer, and its subject asked for as a kind of written work.

WordNet (a training extra) is replaced by a small stand-in with the questions the families ask of it."""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from verifier_data.perturb import MIN_VERB_USES, Perturber, Rewrite, corpus_verbs, writings  # noqa: E402


class Senses:
    """WordNet's verb senses for a few words: a word's verbs, and which words share one."""

    SENSES = {"delete": {"v1"}, "erase": {"v1"}, "recover": {"v2"}, "cancel": {"v3"}, "renew": {"v4"}}
    KINDS = {"written material": ["essay", "diary", "piece of music"], "literary composition": ["poem", "ballad"]}
    NOUN_SENSES = {"poem": {"n1"}, "ballad": {"n1"}, "essay": {"n2"}}  # a ballad is a poem

    def is_verb(self, word: str) -> bool:
        return word in self.SENSES

    def shares_a_sense(self, word: str, other: str) -> bool:
        senses = self.SENSES | self.NOUN_SENSES
        return bool(senses.get(word, set()) & senses.get(other, set()))

    def kinds_of(self, word: str, depth: int) -> list[str]:
        return self.KINDS.get(word, [])


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


def test_how_to_and_what_is_questions_are_asked_again_as_requests_for_the_same_answer() -> None:
    perturber = Perturber(Senses(), proper_nouns=[])
    how = {perturber.request("How can I reset my password?", random.Random(seed)) for seed in range(20)}
    assert {r.text for r in how} == {"Explain how to reset my password.", "Tell me how to reset my password.",
                                     "Show me how to reset my password."}
    assert all(r.family == "request" and r.same_answer for r in how)
    what = {perturber.request("What are index funds", random.Random(seed)).text for seed in range(20)}
    assert what == {"Explain what index funds are.", "Tell me what index funds are."}
    assert perturber.request("Why is the sky blue?", random.Random(0)) is None  # no frame that reads as one
    assert perturber.request("How do I cook rice? Which pot?", random.Random(0)) is None  # two questions
    assert "request" in {r.family for r in perturber.paraphrases("What is a mortgage?", random.Random(0))}


def test_the_task_family_asks_for_a_written_work_about_the_same_subject() -> None:
    perturber = Perturber(Senses(), proper_nouns=[], writings=writings(Senses()))
    texts = {perturber.task("What is a mortgage?", random.Random(seed)).text for seed in range(40)}
    assert texts == {"Write an essay about a mortgage.", "Write a diary about a mortgage.",
                     "Write a poem about a mortgage.", "Write a ballad about a mortgage."}
    rewrite = perturber.task("How do I renew my passport?", random.Random(0))
    assert rewrite.text.endswith(" about how to renew my passport.") and rewrite.family == "task"
    assert rewrite.same_answer is False
    assert perturber.task("Why is the sky blue?", random.Random(0)) is None  # no subject to write about
    assert Perturber(Senses(), proper_nouns=[]).task("What is a mortgage?", random.Random(0)) is None


def test_requests_for_written_works_differ_by_work_and_subject_never_by_frame() -> None:
    perturber = Perturber(Senses(), proper_nouns=[], writings=["poem", "ballad", "essay"])
    miss = Rewrite("How do I cancel my passport?", "action", False)
    for seed in range(20):
        same, other_work, other_subject = perturber.written_works(
            "How do I renew my passport?", "How can one renew a passport?", [miss], random.Random(seed))
        assert (same.same_answer, same.kind) == (True, "request") and same.cached != same.query
        assert same.cached.endswith("about how to renew my passport.")
        assert same.query.endswith("about how to renew a passport.")  # the paraphrase's own subject
        assert (other_work.same_answer, other_work.kind) == (False, "task")
        works = {w for w in ("poem", "ballad", "essay") for text in (other_work.cached, other_work.query)
                 if f" {w} " in text}
        assert "essay" in works and len(works) == 2  # never poem against ballad
        assert (other_subject.same_answer, other_subject.kind) == (False, "action")
        assert other_subject.query.endswith("about how to cancel my passport.")
    assert perturber.written_works("Why is the sky blue?", "Why's the sky blue?", [], random.Random(0)) == []
