"""The exact layer: complete answers in Redis under the request's key, with per-tenant hit statistics.

Layout (`{tenant}` is a Redis Cluster hash tag, so a tenant's entries and stats share a slot):
  <prefix>:exact:{<tenant>}:<namespace>:<key>   hash  a=pack_answer(answer) tok=tokens hits=n created=unix time
  <prefix>:stats:{<tenant>}                      hash  exact_hits semantic_hits misses tokens_saved
A hit is one EVALSHA round trip: read the answer, count the hit on the entry and in the tenant's stats.

Redis failures never fail a request: the operation returns "nothing cached"/"not stored", logs a warning,
counts `orchestrator_redis_errors_total`, and the cache is skipped for `retry_after_s` so a dead Redis costs
one short timeout, not one per request.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from orchestrator import metrics
from orchestrator.breaker import RedisBreaker
from orchestrator.cache.scan import glob_escape, scan_batches, unlink_matching
from orchestrator.cache.types import CachedAnswer, pack_answer, unpack_answer
from orchestrator.config import RedisSettings
from orchestrator.errors import BackendUnavailable, InvalidRequest

log = logging.getLogger(__name__)
T = TypeVar("T")

KEY_PATTERN = re.compile(r"^[0-9a-f]{64}$")
STAT_FIELDS = ("exact_hits", "semantic_hits", "misses", "tokens_saved")

# KEYS[1] entry, KEYS[2] tenant stats. Returns the packed answer or nil.
GET_SCRIPT = """
local found = redis.call('HMGET', KEYS[1], 'a', 'tok')
if not found[1] then return false end
redis.call('HINCRBY', KEYS[1], 'hits', 1)
redis.call('HINCRBY', KEYS[2], 'exact_hits', 1)
redis.call('HINCRBY', KEYS[2], 'tokens_saved', tonumber(found[2]) or 0)
return found[1]
"""


def connect(settings: RedisSettings) -> aioredis.Redis:
    """A client that fails fast: short timeouts and no retries (the caller skips the cache instead)."""
    return aioredis.Redis.from_url(settings.url, socket_timeout=settings.socket_timeout_s,
                                   socket_connect_timeout=settings.connect_timeout_s,
                                   retry=Retry(NoBackoff(), 0), max_connections=settings.max_connections)


def tokens_saved(answer: CachedAnswer) -> int:
    """What a hit spares the engine: the prefill of the prompt and the decoding of the answer."""
    return answer.prompt_tokens + answer.completion_tokens


class ExactCache:
    def __init__(self, client: aioredis.Redis, prefix: str = "llmcache", max_entry_bytes: int = 256 * 1024,
                 retry_after_s: float = 1.0) -> None:
        self.client = client
        self.prefix = prefix
        self.max_entry_bytes = max_entry_bytes
        self._breaker = RedisBreaker(retry_after_s, "serving without the cache")
        self._get_script = client.register_script(GET_SCRIPT)

    # Keys -------------------------------------------------------------------------------------------------------

    def entry_key(self, tenant: str, namespace: str, key: str) -> str:
        return f"{self.prefix}:exact:{{{tenant}}}:{namespace}:{key}"

    def stats_key(self, tenant: str) -> str:
        return f"{self.prefix}:stats:{{{tenant}}}"

    def _entry_pattern(self, tenant: str | None, namespace: str | None, key: str | None) -> str:
        parts = [glob_escape(part) if part else "*" for part in (tenant, namespace, key)]
        return f"{glob_escape(self.prefix)}:exact:{{{parts[0]}}}:{parts[1]}:{parts[2]}"

    # Pass-through on failure ------------------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """False while skipping Redis after an error."""
        return self._breaker.available

    async def _hard(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run an administrative Redis call; failure is the caller's error (503), not a silent no-op."""
        try:
            return await call()
        except (RedisError, OSError, asyncio.TimeoutError) as error:
            metrics.REDIS_ERRORS.labels(operation).inc()
            raise BackendUnavailable(f"redis unavailable for {operation}: {error}") from error

    # Request path -----------------------------------------------------------------------------------------------

    async def get(self, tenant: str, namespace: str, key: str) -> CachedAnswer | None:
        """The stored answer, counting the hit; None on a miss or when Redis is unavailable. A damaged entry, or
        one that belongs to another key (copied there), is deleted and is a miss."""
        keys = [self.entry_key(tenant, namespace, key), self.stats_key(tenant)]
        data = await self._breaker.call("get", lambda: self._get_script(keys=keys), None)
        if data is None:
            return None
        answer = unpack_answer(data)
        if answer is None or answer.key != key:
            log.warning("deleted a damaged or misplaced exact-cache entry (tenant %s)", tenant)
            await self._breaker.call("delete", lambda: self.client.unlink(keys[0]), None)
            return None
        return answer

    def fits(self, answer: CachedAnswer) -> bool:
        """Whether the answer is within the size cap (checked before any layer stores it)."""
        size = len(pack_answer(answer))
        if size > self.max_entry_bytes:
            log.info("answer for %s not cached: %d bytes > cap %d", answer.key, size, self.max_entry_bytes)
        return size <= self.max_entry_bytes

    async def set(self, tenant: str, namespace: str, answer: CachedAnswer, ttl_s: int) -> bool:
        """Store a complete answer; False when it is over the size cap or Redis is unavailable."""
        if not self.fits(answer):
            metrics.CACHE_STORES_SKIPPED.labels("too_large").inc()
            return False
        packed = pack_answer(answer)
        name = self.entry_key(tenant, namespace, answer.key)

        async def write() -> bool:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(name)
                pipe.hset(name, mapping={"a": packed, "tok": tokens_saved(answer), "hits": 0,
                                         "created": answer.created_at})
                pipe.expire(name, ttl_s)
                await pipe.execute()
            return True

        return await self._breaker.call("set", write, False)

    async def record(self, tenant: str, outcome: str, tokens: int = 0) -> None:
        """Count a semantic hit or a miss in the tenant's stats (exact hits are counted by get())."""
        async def write() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hincrby(self.stats_key(tenant), outcome, 1)
                if tokens:
                    pipe.hincrby(self.stats_key(tenant), "tokens_saved", tokens)
                await pipe.execute()

        await self._breaker.call("record", write, None)

    # Administration ---------------------------------------------------------------------------------------------

    async def invalidate(self, tenant: str | None = None, namespace: str | None = None, key: str | None = None) -> int:
        """Delete the entries matching every given part (none given: all); returns how many."""
        if key is not None and not KEY_PATTERN.match(key):
            raise InvalidRequest("key", "must be a cache key: 64 lowercase hex digits")
        pattern = self._entry_pattern(tenant, namespace, key)
        return await self._hard("invalidate", lambda: unlink_matching(self.client, pattern))

    async def count_entries(self, tenant: str | None = None) -> int:
        async def count() -> int:
            return sum([len(keys) async for keys in scan_batches(self.client, self._entry_pattern(tenant, None, None))])

        return await self._hard("count", count)

    async def stats(self, tenant: str | None = None) -> dict[str, int]:
        """Hits by layer, misses and tokens saved, for one tenant or summed over all."""
        async def read() -> dict[str, int]:
            if tenant is not None:
                names = [self.stats_key(tenant)]
            else:
                names = [n async for keys in scan_batches(self.client, f"{glob_escape(self.prefix)}:stats:*")
                         for n in keys]
            totals = dict.fromkeys(STAT_FIELDS, 0)
            for name in names:
                values = await self.client.hmget(name, *STAT_FIELDS)
                for field, value in zip(STAT_FIELDS, values):
                    totals[field] += int(value or 0)
            return totals

        return await self._hard("stats", read)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError, asyncio.TimeoutError):
            return False
