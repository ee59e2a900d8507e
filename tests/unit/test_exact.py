"""The exact layer without a server: entry format, key layout, size cap, pass-through when Redis is down."""

from __future__ import annotations

import time

import msgpack
import pytest

from orchestrator import metrics
from orchestrator.cache.exact import ExactCache, connect
from orchestrator.cache.types import CachedAnswer, pack_answer, unpack_answer
from orchestrator.config import RedisSettings
from orchestrator.errors import BackendUnavailable, InvalidRequest
from stack.ports import free_port

ANSWER = CachedAnswer(text="Paris. ✓", model="m", prompt_tokens=12, completion_tokens=3, finish_reason="stop",
                      created_at=1_700_000_000.5, key="a" * 64)


def dead_redis_cache(retry_after_s: float = 60.0, max_entry_bytes: int = 1024) -> ExactCache:
    client = connect(RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0"))
    return ExactCache(client, prefix="t", max_entry_bytes=max_entry_bytes, retry_after_s=retry_after_s)


def test_answers_round_trip_compactly() -> None:
    packed = pack_answer(ANSWER)
    assert unpack_answer(packed) == ANSWER
    assert len(packed) < len(ANSWER.text.encode()) + 100


@pytest.mark.parametrize("data", [b"\xc1garbage", msgpack.packb([99, "x"]), msgpack.packb({"a": 1}), b""])
def test_damaged_or_foreign_entries_read_as_misses(data: bytes) -> None:
    assert unpack_answer(data) is None


def test_key_layout_puts_tenant_in_a_hash_tag() -> None:
    cache = dead_redis_cache()
    assert cache.entry_key("acme", "docs", "k") == "t:exact:{acme}:docs:k"
    assert cache.stats_key("acme") == "t:stats:{acme}"
    assert cache._entry_pattern("acme", None, None) == "t:exact:{acme}:*:*"
    assert cache._entry_pattern(None, "docs", None) == "t:exact:{*}:docs:*"


async def test_redis_down_is_a_miss_then_skipped_for_a_while() -> None:
    cache = dead_redis_cache()
    errors = metrics.REDIS_ERRORS.labels("get")
    before = errors._value.get()
    started = time.perf_counter()
    assert await cache.get("acme", "default", "a" * 64) is None
    assert errors._value.get() == before + 1
    assert not cache.available
    # Skipped: no second error, no second timeout.
    assert await cache.get("acme", "default", "a" * 64) is None
    assert await cache.set("acme", "default", ANSWER, 60) is False
    assert errors._value.get() == before + 1
    assert time.perf_counter() - started < 1.0
    await cache.client.aclose()


async def test_entries_over_the_size_cap_are_not_stored() -> None:
    cache = dead_redis_cache(max_entry_bytes=256)
    skipped = metrics.CACHE_STORES_SKIPPED.labels("too_large")
    before = skipped._value.get()
    big = CachedAnswer(**{**ANSWER.__dict__, "text": "x" * 300})
    assert await cache.set("acme", "default", big, 60) is False
    assert skipped._value.get() == before + 1
    await cache.client.aclose()


async def test_admin_operations_fail_loudly_when_redis_is_down() -> None:
    cache = dead_redis_cache()
    with pytest.raises(BackendUnavailable):
        await cache.invalidate("acme")
    with pytest.raises(InvalidRequest):
        await cache.invalidate("acme", key="not-a-key*")
    assert await cache.ping() is False
    await cache.client.aclose()
