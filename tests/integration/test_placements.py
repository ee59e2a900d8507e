"""The table of prefix placements against the real Valkey: round trip, expiry, sharing between two clients (two
orchestrator pods), and a dead Redis costing one short timeout, then nothing, while routing goes on without it."""

from __future__ import annotations

import time
import uuid

import pytest
from prometheus_client import REGISTRY

from orchestrator.backends.placements import Placement, PrefixPlacements
from orchestrator.backends.replicas import prefix_key
from orchestrator.cache.exact import connect
from orchestrator.config import RedisSettings
from stack.ports import free_port

pytestmark = pytest.mark.integration


async def test_two_pods_share_where_a_prefix_was_computed_until_it_expires(valkey) -> None:
    clients = [connect(RedisSettings(url=valkey.url)) for _ in range(2)]
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    first, second = (PrefixPlacements(client, namespace, ttl_s=0.5, retry_after_s=1.0) for client in clients)
    prefix = prefix_key("a shared system prompt " * 80)
    try:
        assert await second.lookup(prefix) == Placement(None)
        await first.record(prefix, "10.0.0.7:8001")
        assert await second.lookup(prefix) == Placement("10.0.0.7:8001")
        assert 0 < await clients[1].pttl(second.redis_key(prefix)) <= 500
        await second.record(prefix, "10.0.0.8:8001")  # the latest replica to compute it wins
        assert await first.lookup(prefix) == Placement("10.0.0.8:8001")
        time.sleep(0.6)
        assert await first.lookup(prefix) == Placement(None)
    finally:
        for client in clients:
            await client.aclose()


async def test_an_unreachable_redis_costs_one_timeout_then_nothing_until_retry() -> None:
    client = connect(RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0"))
    placements = PrefixPlacements(client, "test", ttl_s=60, retry_after_s=30)
    prefix = prefix_key("anything")

    def errors() -> float:
        return sum(REGISTRY.get_sample_value("orchestrator_redis_errors_total", {"operation": operation}) or 0
                   for operation in ("route_lookup", "route_record"))

    before = errors()
    try:
        assert await placements.lookup(prefix) is None  # None: route without the table
        for _ in range(100):
            assert await placements.lookup(prefix) is None
            await placements.record(prefix, "10.0.0.7:8001")
        assert errors() - before == 1  # skipped after the first failure: no connection attempt per request
    finally:
        await client.aclose()
