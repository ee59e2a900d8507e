"""The near-miss guard: each check catches its kind of near miss and lets paraphrases through.

The sentences here are written for these tests (not taken from the evaluation data), so the guard's rules
are checked for generality rather than recall of the dev set.
"""

import pytest

from orchestrator.cache.guard import CHECKS, NearMissGuard, stem
from orchestrator.config import GuardSettings

guard = NearMissGuard()

NEAR_MISSES = [
    ("numbers", "What is 12 plus 30?", "What is 12 plus 31?"),
    ("numbers", "Give me 3 ideas for a party.", "Give me five ideas for a party."),
    ("numbers", "Tell me about Windows XP and Windows 7.", "Tell me about Windows XP and Windows 10."),
    ("numbers", "Who fought in the Punic War II?", "Who fought in the Punic War III?"),
    ("numbers", "How many calories are in an apple?", "How many calories are in 3 apples?"),
    ("negation", "Should I water cactus plants daily?", "Should I not water cactus plants daily?"),
    ("negation", "Which drinks help me sleep?", "Which drinks should I avoid to sleep?"),
    ("negation", "Why can I log in?", "Why can't I log in?"),
    ("antonym", "How do I lock the screen on a Mac?", "How do I unlock the screen on a Mac?"),
    ("antonym", "How to encrypt a zip file?", "How to decrypt a zip file?"),
    ("antonym", "What is the maximum speed of a bicycle?", "What is the minimum speed of a bicycle?"),
    ("antonym", "How do I upload photos to the cloud?", "How do I download photos to the cloud?"),
    ("order", "Convert feet to meters.", "Convert meters to feet."),
    ("order", "Is tea healthier than coffee?", "Is coffee healthier than tea?"),
    ("order", "Flights from Paris to Rome", "Flights from Rome to Paris"),
    ("entity", "What is the currency of Japan?", "What is the currency of Brazil?"),
    ("entity", "How do I sort a vector in Rust?", "How do I sort a vector in Haskell?"),
    ("entity", "How do I plot a histogram with matplotlib?", "How do I plot a histogram with seaborn?"),
    ("unit", "How many cups are in a gallon?", "How many cups are in a quart?"),
    ("time", "What's the weather today?", "What's the weather tomorrow?"),
    ("time", "What were sales like last week?", "What were sales like next week?"),
]

PARAPHRASES = [
    ("How can I change my email address?", "What's the way to update my email address?"),
    ("What is the tallest mountain on Earth?", "Which mountain on Earth is the tallest?"),
    ("How many sides does a hexagon have?", "A hexagon has how many sides?"),
    ("Explain how a hash map works.", "How does a hash map work?"),
    ("Give me 3 tips for learning Spanish.", "Share three tips for learning Spanish."),
    ("Convert 5 km to miles.", "How many miles is 5 km?"),
    ("What does NASA stand for?", "What is the meaning of the acronym NASA?"),
    ("How do I combine two lists in Python?", "What's the way to merge two lists in Python?"),
    ("No, the feature isn't available in version 2.", "Version 2 does not have the feature."),
    ("It is a guide to ML tooling.", "It is a guide to machine learning tooling."),
    ("How can I learn to juggle in 1 week?", "How do I learn juggling in one week?"),
    ("How do I tell if my code is thread-safe?", "How do I know whether or not my code is thread-safe?"),
    ("Why can't I hear sound from my speakers?", "Why cant I hear sound from my speakers?"),
    ("The parameter is optional and defaults to False, it is used to return details instead of names.",
     "The parameter is not mandatory; set to False by default, it returns full details rather than names."),
]


@pytest.mark.parametrize(("check", "cached", "query"), NEAR_MISSES)
def test_near_miss_is_rejected_by_its_check(check: str, cached: str, query: str) -> None:
    assert check in guard.reasons(cached, query)
    assert check in guard.reasons(query, cached), "the guard must be symmetric"


@pytest.mark.parametrize(("cached", "query"), PARAPHRASES)
def test_paraphrase_passes(cached: str, query: str) -> None:
    assert guard.reasons(cached, query) == ()


def test_identical_texts_pass() -> None:
    for _, cached, _ in NEAR_MISSES:
        assert guard.agrees(cached, cached)


@pytest.mark.parametrize("check", CHECKS)
def test_each_check_can_be_switched_off(check: str) -> None:
    cases = [(c, q) for name, c, q in NEAR_MISSES if name == check]
    without = NearMissGuard(GuardSettings(checks=tuple(c for c in CHECKS if c != check)))
    for cached, query in cases:
        assert check not in without.reasons(cached, query)


def test_disabled_guard_agrees_with_everything() -> None:
    off = NearMissGuard(GuardSettings(enabled=False))
    assert all(off.agrees(c, q) for _, c, q in NEAR_MISSES)


def test_unknown_check_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="spelling"):
        GuardSettings(checks=("numbers", "spelling"))


def test_rare_words_count_as_specific_only_below_the_threshold() -> None:
    cached, query = "How do I install numpy?", "How do I install pandas?"
    assert "entity" in guard.reasons(cached, query)
    assert "entity" not in NearMissGuard(GuardSettings(rare_zipf=1.0)).reasons(cached, query)


def test_long_rewrite_with_different_wording_is_not_a_slot_swap() -> None:
    cached = ("Optimum is a tool that allows for fast training and inference of HF Transformers with easy-to-use "
              "hardware optimization tools.")
    query = ("Optimum is a platform that facilitates the swift training and application of HF Transformers with "
             "user-friendly hardware optimization capabilities.")
    assert "entity" not in guard.reasons(cached, query)


def test_stem() -> None:
    assert stem("Dictionaries") == "dictionary"
    assert stem("boxes") == "box"
    assert stem("Python's") == "python"
    assert stem("class") == "class"
