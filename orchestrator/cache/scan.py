"""Redis keys by pattern: a tenant or prefix matched literally, and the matching keys in batches (SCAN, never
KEYS: a large keyspace must not block Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from redis.asyncio import Redis

SCAN_BATCH = 1000


def glob_escape(text: str) -> str:
    """Escape Redis glob metacharacters so a tenant or prefix is matched literally by SCAN MATCH."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


async def scan_batches(redis: Redis, pattern: str, batch: int = SCAN_BATCH) -> AsyncIterator[list[bytes]]:
    """The keys matching `pattern`, in lists of up to `batch`."""
    keys: list[bytes] = []
    async for key in redis.scan_iter(match=pattern, count=batch):
        keys.append(key)
        if len(keys) >= batch:
            yield keys
            keys = []
    if keys:
        yield keys


async def unlink_matching(redis: Redis, pattern: str) -> int:
    """Delete (UNLINK: freed in the background) every key matching `pattern`; returns how many."""
    return sum([await redis.unlink(*keys) async for keys in scan_batches(redis, pattern)])
