"""FaissIndex (scopes, expiry, removal, compaction) and SemanticMatcher (threshold, guard, fallback)."""

import numpy as np
import pytest

from orchestrator.cache.guard import CHECKS, NearMissGuard
from orchestrator.cache.semantic import SemanticMatcher
from orchestrator.cache.vector_index import Candidate, FaissIndex, IndexedEntry
from orchestrator.config import GuardSettings, HnswSettings, SemanticSettings, Settings

DIM = 16


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def entry(key: str, scope: str, seed: int, expires_at: float = 2000.0, tenant: str = "t") -> IndexedEntry:
    return IndexedEntry(key, tenant, scope, f"question {key}", unit(seed), expires_at)


async def test_search_is_confined_to_the_scope() -> None:
    index = FaissIndex(DIM, clock=Clock())
    await index.add(entry("a", "scope-1", 1))
    await index.add(entry("b", "scope-2", 1))
    found = await index.search("t", "scope-1", unit(1), 5)
    assert [c.key for c in found] == ["a"]
    assert found[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert await index.search("t", "scope-3", unit(1), 5) == []
    assert await index.has_scope("t", "scope-1") and not await index.has_scope("t", "scope-3")
    assert not await index.has_scope("other", "scope-1")


async def test_nearest_first() -> None:
    index = FaissIndex(DIM, clock=Clock())
    index.add_many([entry(str(i), "s", i) for i in range(50)])
    found = await index.search("t", "s", unit(7), 3)
    assert found[0].key == "7"
    assert [c.similarity for c in found] == sorted((c.similarity for c in found), reverse=True)


async def test_expired_entries_are_never_returned_and_get_swept() -> None:
    clock = Clock()
    index = FaissIndex(DIM, sweep_interval_s=10, clock=clock)
    await index.add(entry("short", "s", 1, expires_at=1005))
    await index.add(entry("long", "s", 2, expires_at=5000))
    assert {c.key for c in await index.search("t", "s", unit(1), 5)} == {"short", "long"}
    clock.now = 1006
    assert [c.key for c in await index.search("t", "s", unit(1), 5)] == ["long"]
    clock.now = 6000
    index.sweep()
    assert len(index) == 0
    assert await index.search("t", "s", unit(2), 5) == []


async def test_remove_remove_tenant_and_clear() -> None:
    index = FaissIndex(DIM, clock=Clock())
    index.add_many([entry("a", "s", 1, tenant="x"), entry("b", "s", 2, tenant="y"), entry("c", "s", 3, tenant="y")])
    assert [c.key for c in await index.search("x", "s", unit(1), 5)] == ["a"]  # tenants never cross
    await index.remove(["a"])
    assert await index.search("x", "s", unit(1), 5) == []
    assert not await index.has_scope("x", "s") and await index.has_scope("y", "s")
    assert {c.key for c in await index.search("y", "s", unit(1), 5)} == {"b", "c"}
    await index.remove_tenant("y")
    assert await index.search("y", "s", unit(1), 5) == []
    index.add_many([entry("d", "s", 4)])
    await index.clear()
    assert len(index) == 0


async def test_replacing_a_key_keeps_one_copy_and_compaction_keeps_the_live() -> None:
    clock = Clock()
    index = FaissIndex(DIM, sweep_interval_s=0, clock=clock)
    index.add_many([entry(str(i), "s", i) for i in range(20)])
    index.add_many([entry("3", "s", 100)])  # same key, new vector
    assert len(index) == 20
    await index.remove([str(i) for i in range(10, 20)])
    index.sweep()  # mostly dead -> rebuilt
    found = await index.search("t", "s", unit(100), 1)
    assert found[0].key == "3" and found[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert len(index) == 10


def candidate(query: str, similarity: float) -> Candidate:
    return Candidate(f"key:{query}", similarity, query)


def test_matcher_threshold_guard_and_fallback() -> None:
    matcher = SemanticMatcher(SemanticSettings(threshold=0.8, candidates=3))
    query = "What is the capital of France?"
    near_miss = candidate("What is the capital of Germany?", 0.95)
    paraphrase = candidate("Which city is the capital of France?", 0.9)
    decision = matcher.decide(query, [near_miss, paraphrase])
    assert decision.chosen == paraphrase
    assert decision.rejected == ((near_miss, ("entity",)),)
    assert matcher.decide(query, [near_miss]).chosen is None
    assert matcher.decide(query, [candidate("Which city is the capital of France?", 0.79)]).chosen is None
    off = SemanticMatcher(SemanticSettings(threshold=0.8, guard=GuardSettings(enabled=False)))
    assert off.decide(query, [near_miss, paraphrase]).chosen == near_miss


def test_matcher_looks_at_no_more_than_its_candidates() -> None:
    matcher = SemanticMatcher(SemanticSettings(threshold=0.5, candidates=1))
    query = "What is 2 + 2?"
    assert matcher.decide(query, [candidate("What is 2 + 3?", 0.99), candidate("What is 2 + 2 ?", 0.98)]).chosen is None


@pytest.mark.parametrize(("field", "value"), [("threshold", 1.5), ("candidates", 0), ("index", "annoy")])
def test_settings_reject_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        SemanticSettings(**{field: value})


def test_the_layer_and_its_parts_take_their_defaults_from_the_settings() -> None:
    """Every default of the semantic layer is written once, in orchestrator.config: the parts built without
    settings get exactly those."""
    defaults = Settings().semantic
    assert defaults == SemanticSettings()
    assert defaults.threshold == SemanticSettings.model_fields["threshold"].default
    matcher = SemanticMatcher(defaults)
    assert (matcher.threshold, matcher.candidates, matcher.guard.settings) == (
        defaults.threshold, defaults.candidates, defaults.guard)
    assert NearMissGuard().settings == defaults.guard == GuardSettings()
    assert FaissIndex(DIM).hnsw == defaults.hnsw == HnswSettings()
    assert defaults.guard.checks == CHECKS  # the guard runs every check it has by default


def test_the_guard_and_the_index_are_sections_of_the_semantic_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_SEMANTIC__GUARD__CHECKS", '["numbers", "negation"]')
    monkeypatch.setenv("ORCH_SEMANTIC__GUARD__RARE_ZIPF", "2.5")
    monkeypatch.setenv("ORCH_SEMANTIC__HNSW__EF_RUNTIME", "128")
    semantic = Settings().semantic
    assert (semantic.guard.checks, semantic.guard.rare_zipf, semantic.hnsw.ef_runtime) == (
        ("numbers", "negation"), 2.5, 128)
    assert SemanticMatcher(semantic).guard.settings is semantic.guard  # passed straight through
    monkeypatch.setenv("ORCH_SEMANTIC__GUARD__CHECKS", '["numbers", "spelling"]')
    with pytest.raises(ValueError, match="spelling"):
        Settings()


def test_the_guard_switch_keeps_its_old_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_SEMANTIC__GUARD", "false")
    assert Settings().semantic.guard == GuardSettings(enabled=False)
    assert Settings(semantic={"guard": True}).semantic.guard.enabled
