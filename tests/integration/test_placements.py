"""The table of prefix placements against the real Valkey: block prefixes shared between two clients (two
orchestrator pods), the longest known prefix winning, a conversation's next turn finding the replica of the
one before, expiry, each replica's blocks counted over the TTL, and a dead Redis costing one short timeout,
then nothing, while routing goes on without it."""

from __future__ import annotations

import time
import uuid

import pytest
from prometheus_client import REGISTRY

from orchestrator.backends.placements import BLOCK_CHARS, PrefixPlacements
from orchestrator.backends.replicas import Placement
from orchestrator.cache.exact import connect
from orchestrator.config import RedisSettings
from stack.ports import free_port

pytestmark = pytest.mark.integration

A, B = "10.0.0.7:8001", "10.0.0.8:8001"


@pytest.fixture
async def pods(valkey):
    """Two pods' tables over their own connections, in a namespace of their own."""
    clients = [connect(RedisSettings(url=valkey.url)) for _ in range(2)]
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    yield [PrefixPlacements(client, namespace, ttl_s=0.5, retry_after_s=1.0, window_chars=1024)
           for client in clients]
    for client in clients:
        await client.aclose()


async def test_a_prefix_recorded_by_one_pod_is_found_by_the_other_until_it_expires(pods) -> None:
    first, second = pods
    document = "System: the warranty covers parts and labour for two years. " * 30
    assert await second.lookup(document + "Q1", [A, B]) == Placement(None, {A: 0, B: 0})
    await first.record(document + "Q1", A)
    await first.record(document + "Q1", A)  # the same blocks again: counted once
    assert await second.lookup(document + "Q2", [A, B]) == Placement(A, {A: 8, B: 0})
    keys = first.redis_keys(document + "Q1")
    assert len(keys) == 1024 // BLOCK_CHARS
    assert 0 < await first.client.pttl(keys[-1]) <= 500
    assert 0 < await first.client.pttl(first.held_key(A)) <= 500
    time.sleep(0.6)
    assert await first.lookup(document + "Q2", [A, B]) == Placement(None, {A: 0, B: 0})


async def test_the_longest_known_prefix_wins_and_a_next_turn_finds_the_turn_before(pods) -> None:
    first, second = pods
    system = "You answer questions about the Acme Router X2, its setup, its lights and its warranty. " * 2
    turn_one = system + "Q: how do I reset it? " * 10
    await first.record(turn_one, A)  # a conversation's first turn on A
    turn_two = turn_one + "A: hold the button for ten seconds. Q: and then?"
    other_user = system + "another user's question, long enough to make a block or two " * 3
    await second.record(other_user, B)
    held = {A: len(first.redis_keys(turn_one)), B: len(first.redis_keys(other_user))}
    # B holds the shared system prompt's blocks now (recorded last), but A holds the longer prefix.
    assert await second.lookup(turn_two, [A, B]) == Placement(A, held)
    assert await first.lookup(system + "a third conversation entirely", [A, B]) == Placement(B, held)
    assert await first.lookup("short: less than one block", [A, B]) == Placement(None, held)


async def test_blocks_are_counted_per_replica_over_the_ttl_only(pods) -> None:
    first, _ = pods
    old, fresh, other = ("an old document nobody asks about any more " * 20, "a fresh document " * 60,
                         "another fresh document " * 60)
    await first.record(old, A)
    time.sleep(0.3)
    await first.record(fresh, A)  # keeps A's set alive (its TTL restarts on every write)
    await first.record(other, B)
    time.sleep(0.3)
    # A's set still has the old blocks (a TTL old now, but not yet pruned)...
    assert await first.client.zcard(first.held_key(A)) == len(first.redis_keys(old) + first.redis_keys(fresh))
    # ...but only the blocks of the last TTL count...
    counted = await first.lookup("anything", [A, B])
    assert counted.held == {A: len(first.redis_keys(fresh)), B: len(first.redis_keys(other))}
    # ...and the next write prunes them.
    await first.record(fresh, A)
    assert await first.client.zcard(first.held_key(A)) == len(first.redis_keys(fresh))


async def test_an_unreachable_redis_costs_one_timeout_then_nothing_until_retry() -> None:
    client = connect(RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0"))
    placements = PrefixPlacements(client, "test", ttl_s=60, retry_after_s=30, window_chars=1024)
    prompt = "anything at all, long enough to be one block " * 4

    def errors() -> float:
        return sum(REGISTRY.get_sample_value("orchestrator_redis_errors_total", {"operation": operation}) or 0
                   for operation in ("route_lookup", "route_record"))

    before = errors()
    try:
        assert await placements.lookup(prompt, [A]) is None  # None: route without the table
        for _ in range(100):
            assert await placements.lookup(prompt, [A]) is None
            await placements.record(prompt, A)
        assert errors() - before == 1  # skipped after the first failure: no connection attempt per request
    finally:
        await client.aclose()
