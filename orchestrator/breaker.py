"""Redis as a helper that may fail: a failed call returns a default, and Redis is skipped for a while.

The exact cache and the routing table of prefix placements both use Redis on the request path and both can do
without it. A dead Redis must then cost one short timeout, not one per request: after a failure every call
returns its default at once for `retry_after_s`, then Redis is tried again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import RedisError

from orchestrator import metrics

log = logging.getLogger(__name__)
T = TypeVar("T")


class RedisBreaker:
    """Runs Redis calls for one purpose (`degraded` says what a failure costs, for the log)."""

    def __init__(self, retry_after_s: float, degraded: str) -> None:
        self.retry_after_s = retry_after_s
        self.degraded = degraded
        self._skip_until = 0.0

    @property
    def available(self) -> bool:
        """False while skipping Redis after an error."""
        return time.monotonic() >= self._skip_until

    async def call(self, operation: str, call: Callable[[], Awaitable[T]], default: T) -> T:
        """`call()`, or `default` when it fails (counted in orchestrator_redis_errors_total) or while skipping."""
        if not self.available:
            return default
        try:
            return await call()
        except (RedisError, OSError, asyncio.TimeoutError) as error:
            metrics.REDIS_ERRORS.labels(operation).inc()
            self._skip_until = time.monotonic() + self.retry_after_s
            log.warning("redis %s failed (%s: %s); %s for %.1f s", operation, type(error).__name__, error,
                        self.degraded, self.retry_after_s)
            return default
