"""Where each prompt prefix was last computed: a table in Redis that every orchestrator pod reads and writes.

Rendezvous hashing alone (orchestrator/backends/replicas.py) cannot tell a prefix that some replica holds from
one that no replica has seen, so it must trade balance for affinity with one load bound for both. A tight
bound splits requests that would reuse a prefix; a loose one piles requests that share nothing onto one
replica while another idles. Both cost throughput or TTFT, and measurably so (docs/benchmarks.md, prefix
routing). With this table the router knows which case it is in:

- a prompt whose prefix a replica holds goes back to that replica, within the load bound;
- a prompt with no known prefix goes where it balances load and cache: within a tight load bound, to the
  replica given the fewest KV blocks recently (each replica's blocks are counted in a sorted set beside the
  table, `<key_prefix>:held:<url>`, scored by when each block was last routed there, and counted over the TTL).

Prefixes are keyed at every `BLOCK_CHARS` characters of the prompt up to the routing window (1,024 by
default), about one 32-token KV block apart, and the longest one found wins. So the next turn of a
conversation (whose prompt starts with the whole previous one) finds the replica of the turn before, and
prompts that share a long system prompt meet on one replica, while prompts that share less than a block do not.
One pipeline reads them all (an MGET) with every replica's block count, and the replica chosen is written
back for every key in one pipeline, off the request's path, so the next request with that prefix follows it
from any pod. Entries expire after `ttl_s`, about as long as a replica's KV blocks survive under load (a stale
entry costs one prefill, as no affinity would). The table is a hint: while Redis is unavailable the router goes back to rendezvous hashing with the
bound, and no request waits on it for more than one short timeout.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import redis.asyncio as aioredis

from orchestrator.backends.replicas import Placement, prefix_key
from orchestrator.breaker import RedisBreaker

#: ~32 tokens at ~4 characters per token: one KV block (the profiles' tokens_per_block) between keys.
BLOCK_CHARS = 128


def block_prefixes(prompt: str, window_chars: int) -> list[bytes]:
    """Keys of the prompt's first 128, 256, ... characters within the window, shortest first."""
    longest = min(len(prompt), window_chars)
    return [prefix_key(prompt, length) for length in range(BLOCK_CHARS, longest + 1, BLOCK_CHARS)]


class PrefixPlacements:
    """The shared table: block prefix key -> replica url, in Redis under `<key_prefix>:route:<hex>` with a TTL."""

    def __init__(self, client: aioredis.Redis, key_prefix: str, ttl_s: float, retry_after_s: float,
                 window_chars: int) -> None:
        if ttl_s <= 0 or window_chars < 1:
            raise ValueError("ttl_s and window_chars must be positive")
        self.client = client
        self.key_prefix = key_prefix
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self.window_chars = window_chars
        self._breaker = RedisBreaker(retry_after_s, "routing without prefix placements")

    def redis_keys(self, prompt: str) -> list[str]:
        return [f"{self.key_prefix}:route:{key.hex()}" for key in block_prefixes(prompt, self.window_chars)]

    def held_key(self, url: str) -> str:
        """The sorted set of the block prefixes routed to `url` (member: the block's key; score: when, in ms)."""
        return f"{self.key_prefix}:held:{url}"

    async def lookup(self, prompt: str, urls: Sequence[str]) -> Placement | None:
        """Where the prompt's longest known prefix was computed, with how many blocks each of `urls` was given
        within the TTL; None when the table cannot be read (route without it)."""
        keys = self.redis_keys(prompt)
        since_ms = _now_ms() - self.ttl_ms

        async def read() -> Placement:
            async with self.client.pipeline(transaction=False) as pipe:
                if keys:
                    pipe.mget(keys)
                for url in urls:
                    pipe.zcount(self.held_key(url), since_ms, "+inf")
                replies = await pipe.execute()
            holders = replies.pop(0) if keys else []
            holder = next((url.decode() for url in reversed(holders) if url is not None), None)
            return Placement(holder, dict(zip(urls, replies, strict=True)))

        return await self._breaker.call("route_lookup", read, None)

    async def record(self, prompt: str, url: str) -> None:
        """`url` has (or is about to have) the KV blocks of every prefix of the prompt."""
        keys = self.redis_keys(prompt)
        if not keys:
            return
        now_ms = _now_ms()
        held = self.held_key(url)

        async def write() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.set(key, url, px=self.ttl_ms)
                pipe.zadd(held, dict.fromkeys(keys, now_ms))
                pipe.zremrangebyscore(held, "-inf", f"({now_ms - self.ttl_ms}")
                pipe.pexpire(held, self.ttl_ms)
                await pipe.execute()

        await self._breaker.call("route_record", write, None)


def _now_ms() -> int:
    """Wall-clock milliseconds: the pods share the sorted sets, so their clocks (NTP) are the common base."""
    return time.time_ns() // 1_000_000
