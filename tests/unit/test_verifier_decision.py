"""The semantic layer's decision with the pair verifier: the band, the guard's veto, τ, and the fallback to
cosine + guard (counted) when the verifier cannot answer. The verifier here is a stub with fixed scores;
tests/unit/test_pair_verifier_model.py checks the real model, tests/e2e/test_pair_verifier.py both on Triton."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest

from orchestrator import metrics
from orchestrator.cache.semantic import VERIFIER_REASON, SemanticCache, SemanticMatcher
from orchestrator.cache.vector_index import Candidate
from orchestrator.config import SemanticSettings, VerifierSettings

QUERY = "How do I convert Celsius to Fahrenheit?"
TAU = 0.7
VETO = 0.05


def candidate(query: str, similarity: float) -> Candidate:
    return Candidate(f"key:{query}", similarity, query)


def matcher(**verifier: object) -> SemanticMatcher:
    settings = VerifierSettings(**{"enabled": True, "threshold": TAU, "veto_below": VETO, **verifier})
    return SemanticMatcher(SemanticSettings(threshold=0.8, verifier=settings))


def test_the_verifier_decides_the_band_vetoes_above_it_and_the_guard_keeps_its_veto() -> None:
    m = matcher(min_similarity=0.5)
    low_paraphrase = candidate("What's the formula to turn Celsius into Fahrenheit?", 0.62)
    swapped = candidate("How do I convert Fahrenheit to Celsius?", 0.97)  # the guard's order check
    near_miss = candidate("Why do people convert Celsius to Fahrenheit?", 0.9)
    below_band = candidate("What is the boiling point of water?", 0.4)
    found = [swapped, near_miss, low_paraphrase, below_band]
    screened = m.screen(QUERY, found)
    assert m.to_verify(screened) == [near_miss, low_paraphrase]  # from the band up, no guard objection
    # above the threshold only a confident "different" (< the veto) refuses; in the band τ must be reached
    decision = m.choose(screened, {near_miss.key: VETO - 0.01, low_paraphrase.key: TAU})
    assert decision.chosen == low_paraphrase  # below the 0.80 threshold, served on the verifier's word
    assert dict(decision.rejected) == {swapped: ("order",), near_miss: (VERIFIER_REASON,)}
    # the nearest acceptable candidate is served: above the threshold a middling score does not refuse
    assert m.choose(screened, {near_miss.key: 0.3, low_paraphrase.key: 0.99}).chosen == near_miss
    assert m.choose(screened, {near_miss.key: 0.01, low_paraphrase.key: TAU - 0.01}).chosen is None


def test_without_scores_the_old_rule_decides() -> None:
    m = matcher()
    near_miss = candidate("Why do people convert Celsius to Fahrenheit?", 0.9)
    low_paraphrase = candidate("What's the formula to turn Celsius into Fahrenheit?", 0.62)
    assert m.decide(QUERY, [near_miss, low_paraphrase], None).chosen == near_miss  # cosine 0.9 ≥ 0.8, guard ok
    assert m.decide(QUERY, [low_paraphrase], None).chosen is None


def test_a_verifier_switched_off_is_never_asked() -> None:
    m = SemanticMatcher(SemanticSettings(verifier=VerifierSettings(enabled=False)))
    assert m.bars is None
    assert m.to_verify(m.screen(QUERY, [candidate("Why do people convert Celsius to Fahrenheit?", 0.9)])) == []


def test_the_band_must_lie_below_the_threshold() -> None:
    with pytest.raises(ValueError, match="min_similarity"):
        SemanticSettings(threshold=0.6, verifier=VerifierSettings(enabled=True, min_similarity=0.7))
    SemanticSettings(threshold=0.6, verifier=VerifierSettings(enabled=False, min_similarity=0.7))  # not used


class StubVerifier:
    def __init__(self, scores: Sequence[float] | None = None, delay_s: float = 0.0) -> None:
        self.scores, self.delay_s, self.calls = scores, delay_s, []

    async def score(self, query: str, cached: Sequence[str]) -> np.ndarray:
        self.calls.append(list(cached))
        await asyncio.sleep(self.delay_s)
        if self.scores is None:
            raise ConnectionError("pair_verifier is not loaded")
        return np.array(self.scores, dtype=np.float32)


def cache(verifier: StubVerifier | None, timeout_s: float = 1.0) -> SemanticCache:
    return SemanticCache(redis=None, embedder=None, index=None, matcher=matcher(), verifier=verifier,
                         verifier_timeout_s=timeout_s)


def fallbacks(reason: str) -> float:
    return metrics.SEMANTIC_VERIFIER_FALLBACKS.labels(reason)._value.get()


async def test_one_call_per_lookup_and_none_below_the_band() -> None:
    verifier = StubVerifier([0.9, 0.1])
    found = [candidate("What's the formula to turn Celsius into Fahrenheit?", 0.7),
             candidate("Why do people convert Celsius to Fahrenheit?", 0.6)]
    layer = cache(verifier)
    assert await layer._verify(layer.matcher.screen(QUERY, found)) == {found[0].key: pytest.approx(0.9),
                                                                       found[1].key: pytest.approx(0.1)}
    assert verifier.calls == [[c.query for c in found]]
    below = layer.matcher.screen(QUERY, [candidate("What is the boiling point of water?", 0.3)])
    assert await layer._verify(below) == {}
    assert len(verifier.calls) == 1  # a miss below the band pays nothing


@pytest.mark.parametrize(("verifier", "reason"), [(StubVerifier(None), "error"),
                                                  (StubVerifier([0.9], delay_s=0.5), "timeout"),
                                                  (None, "unavailable")])
async def test_a_verifier_that_cannot_answer_falls_back_and_is_counted(verifier, reason) -> None:
    before = fallbacks(reason)
    found = [candidate("Why do people convert Celsius to Fahrenheit?", 0.9)]
    layer = cache(verifier, timeout_s=0.05)
    assert await layer._verify(layer.matcher.screen(QUERY, found)) is None
    assert fallbacks(reason) == before + 1
