"""The table of prefix placements against the real Valkey: block prefixes shared between two clients (two
orchestrator pods), the longest known prefix winning, a conversation's next turn finding the replica of the
one before, expiry, and a dead Redis costing one short timeout, then nothing, while routing goes on without it."""

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
    assert await second.lookup(document + "Q1") == Placement(None)
    await first.record(document + "Q1", A)
    assert await second.lookup(document + "Q2") == Placement(A)
    keys = first.redis_keys(document + "Q1")
    assert len(keys) == 1024 // BLOCK_CHARS
    assert 0 < await first.client.pttl(keys[-1]) <= 500
    time.sleep(0.6)
    assert await first.lookup(document + "Q2") == Placement(None)


async def test_the_longest_known_prefix_wins_and_a_next_turn_finds_the_turn_before(pods) -> None:
    first, second = pods
    system = "You answer questions about the Acme Router X2, its setup, its lights and its warranty. " * 2
    await first.record(system + "Q: how do I reset it? " * 10, A)  # a conversation's first turn on A
    turn_two = system + "Q: how do I reset it? " * 10 + "A: hold the button for ten seconds. Q: and then?"
    await second.record(system + "another user's question, long enough to make a block or two " * 3, B)
    # B holds the shared system prompt's blocks now (recorded last), but A holds the longer prefix.
    assert await second.lookup(turn_two) == Placement(A)
    assert await first.lookup(system + "a third conversation entirely") == Placement(B)
    assert await first.lookup("short: less than one block") == Placement(None)


async def test_an_unreachable_redis_costs_one_timeout_then_nothing_until_retry() -> None:
    client = connect(RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0"))
    placements = PrefixPlacements(client, "test", ttl_s=60, retry_after_s=30, window_chars=1024)
    prompt = "anything at all, long enough to be one block " * 4

    def errors() -> float:
        return sum(REGISTRY.get_sample_value("orchestrator_redis_errors_total", {"operation": operation}) or 0
                   for operation in ("route_lookup", "route_record"))

    before = errors()
    try:
        assert await placements.lookup(prompt) is None  # None: route without the table
        for _ in range(100):
            assert await placements.lookup(prompt) is None
            await placements.record(prompt, A)
        assert errors() - before == 1  # skipped after the first failure: no connection attempt per request
    finally:
        await client.aclose()
