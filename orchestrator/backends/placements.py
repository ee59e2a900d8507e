"""Where each prompt prefix was last computed: a table in Redis that every orchestrator pod reads and writes.

Rendezvous hashing alone (orchestrator/backends/replicas.py) cannot tell a prefix that some replica holds from
one that no replica has seen, so it must trade balance for affinity with one load bound for both. A tight
bound splits requests that would reuse a prefix; a loose one piles requests that share nothing onto one
replica while another idles. Both cost throughput or TTFT, and measurably so (docs/benchmarks.md, prefix
routing). With this table the router knows which case it is in:

- a prefix with a placement goes back to the replica that computed it, within the loose bound;
- a prefix with none goes to the least-loaded replica: nothing can be reused anywhere, so balance is all.

Either way the replica chosen is written back, so the next request with that prefix follows it, from any
pod. Entries expire after `ttl_s`, about as long as a replica's KV blocks survive under load (a stale
entry costs one prefill, as no affinity would). The table is a hint: while Redis is unavailable the router
goes back to rendezvous hashing with the bound, and no request waits on it for more than one short timeout.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from orchestrator.breaker import RedisBreaker


@dataclass(frozen=True)
class Placement:
    """What the table says about one prefix: the replica that last computed it, or None when none has
    recently."""

    url: str | None


class PrefixPlacements:
    """The shared table: prefix key (replicas.prefix_key) -> replica url, in Redis under
    `<key_prefix>:route:<hex>` with a TTL."""

    def __init__(self, client: aioredis.Redis, key_prefix: str, ttl_s: float, retry_after_s: float) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self.client = client
        self.key_prefix = key_prefix
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self._breaker = RedisBreaker(retry_after_s, "routing without prefix placements")

    def redis_key(self, prefix: bytes) -> str:
        return f"{self.key_prefix}:route:{prefix.hex()}"

    async def lookup(self, prefix: bytes) -> Placement | None:
        """The prefix's placement, or None when the table cannot be read (route without it)."""
        async def read() -> Placement:
            url = await self.client.get(self.redis_key(prefix))
            return Placement(url.decode() if url is not None else None)

        return await self._breaker.call("route_lookup", read, None)

    async def record(self, prefix: bytes, url: str) -> None:
        """`url` has (or is about to have) the prefix's KV blocks."""
        await self._breaker.call("route_record",
                                 lambda: self.client.set(self.redis_key(prefix), url, px=self.ttl_ms), None)
