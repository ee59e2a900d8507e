"""The exact layer against the real Valkey: round trip, TTL, hit statistics, scoping and invalidation."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from orchestrator.cache.exact import ExactCache, connect
from orchestrator.cache.types import CachedAnswer
from orchestrator.config import RedisSettings

pytestmark = pytest.mark.integration


def answer(key: str, text: str = "Paris.") -> CachedAnswer:
    return CachedAnswer(text=text, model="m", prompt_tokens=20, completion_tokens=4, finish_reason="stop",
                        created_at=1_700_000_000.0, key=key)


def key_of(n: int) -> str:
    return f"{n:064x}"


async def entry(cache: ExactCache, key: str) -> tuple[int, int, float, int]:
    """An acme/default entry as Redis holds it: hits, tokens per hit, creation time, remaining TTL."""
    name = cache.entry_key("acme", "default", key)
    hits, tokens, created = await cache.client.hmget(name, "hits", "tok", "created")
    return int(hits), int(tokens), float(created), await cache.client.ttl(name)


@pytest.fixture
async def cache(valkey):
    client = connect(RedisSettings(url=valkey.url))
    # A fresh prefix per test: tests share the session's server.
    yield ExactCache(client, prefix=f"test-{uuid.uuid4().hex[:8]}", max_entry_bytes=4096)
    await client.aclose()


async def test_round_trip_with_ttl_hits_and_tokens_saved(cache: ExactCache) -> None:
    assert await cache.get("acme", "default", key_of(1)) is None
    assert await cache.set("acme", "default", answer(key_of(1)), ttl_s=120)
    for _ in range(3):
        assert await cache.get("acme", "default", key_of(1)) == answer(key_of(1))
    hits, tokens, created, ttl_s = await entry(cache, key_of(1))
    assert (hits, tokens, created) == (3, 24, 1_700_000_000.0) and 110 <= ttl_s <= 120
    await cache.record("acme", "misses")
    await cache.record("acme", "semantic_hits", tokens=10)
    assert await cache.stats("acme") == {"exact_hits": 3, "semantic_hits": 1, "misses": 1, "tokens_saved": 82}
    assert await cache.count_entries("acme") == 1


async def test_entries_expire(cache: ExactCache) -> None:
    assert await cache.set("acme", "default", answer(key_of(2)), ttl_s=1)
    await cache.client.pexpire(cache.entry_key("acme", "default", key_of(2)), 50)
    await asyncio.sleep(0.2)
    assert await cache.get("acme", "default", key_of(2)) is None
    assert await cache.count_entries("acme") == 0


async def test_a_new_answer_replaces_the_old_one_and_resets_its_hits(cache: ExactCache) -> None:
    await cache.set("acme", "default", answer(key_of(3), "old"), ttl_s=60)
    await cache.get("acme", "default", key_of(3))
    await cache.set("acme", "default", answer(key_of(3), "new"), ttl_s=60)
    assert (await cache.get("acme", "default", key_of(3))).text == "new"
    assert (await entry(cache, key_of(3)))[0] == 1


async def test_tenants_and_namespaces_do_not_share_entries(cache: ExactCache) -> None:
    await cache.set("acme", "default", answer(key_of(4)), ttl_s=60)
    assert await cache.get("other", "default", key_of(4)) is None
    assert await cache.get("acme", "docs", key_of(4)) is None
    assert await cache.stats("other") == {"exact_hits": 0, "semantic_hits": 0, "misses": 0, "tokens_saved": 0}


async def test_size_cap_is_enforced(cache: ExactCache) -> None:
    assert not await cache.set("acme", "default", answer(key_of(5), "x" * 5000), ttl_s=60)
    assert await cache.get("acme", "default", key_of(5)) is None


async def test_invalidation_by_key_namespace_tenant_and_all(cache: ExactCache) -> None:
    layout = [("acme", "default", 10), ("acme", "default", 11), ("acme", "docs", 12), ("beta", "default", 13),
              ("beta", "docs", 14), ("beta", "docs", 10)]
    for tenant, namespace, n in layout:
        await cache.set(tenant, namespace, answer(key_of(n)), ttl_s=60)
    assert await cache.invalidate("acme", key=key_of(10)) == 1
    assert await cache.get("beta", "docs", key_of(10)) is not None
    assert await cache.invalidate(namespace="docs") == 3
    assert await cache.count_entries() == 2
    assert await cache.invalidate("acme") == 1
    assert await cache.count_entries("beta") == 1
    assert await cache.invalidate() == 1
    assert await cache.count_entries() == 0


async def test_entries_are_compact_hashes(cache: ExactCache) -> None:
    await cache.set("acme", "default", answer(key_of(6)), ttl_s=60)
    fields = await cache.client.hgetall(cache.entry_key("acme", "default", key_of(6)))
    assert set(fields) == {b"a", b"tok", b"hits", b"created"}
    assert len(fields[b"a"]) < 100
