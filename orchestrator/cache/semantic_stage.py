"""The semantic layer's life cycle in the service: built when it can be, never failing a request, storing in
the background and reading its own writes.

- Built late: a layer that could not be built at start (Redis down) is built by a later request, tried at most
  once per `redis.retry_after_s` until it succeeds.
- Soft: a failed build, lookup or store is counted (`orchestrator_semantic_errors_total`), logged, and the
  request goes on without the layer.
- Stores run in the background (they may embed the question: milliseconds, off the stream). A lookup first
  waits up to `semantic.store_wait_s` for the stores of its own scope still running here, so a paraphrase sent
  as soon as an answer arrived finds it.
- One target per request (`target`): its scope digest is computed once, and the vector its lookup embedded is
  what its store writes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from orchestrator import metrics
from orchestrator.cache import keys
from orchestrator.cache.types import CachedAnswer, Scope, SemanticHit, SemanticLayer, SemanticTarget
from orchestrator.config import SemanticSettings
from orchestrator.schemas import GenerationRequest

log = logging.getLogger(__name__)
T = TypeVar("T")


class SemanticStage:
    def __init__(self, settings: SemanticSettings, retry_after_s: float, layer: SemanticLayer | None = None,
                 factory: Callable[[], Awaitable[SemanticLayer]] | None = None) -> None:
        """`factory` builds the layer when it was not given (or could not be built at start)."""
        self.settings = settings
        self.retry_after_s = retry_after_s
        self.layer = layer if settings.enabled else None
        self._factory = factory if settings.enabled else None
        self._retry_at = 0.0
        #: Stores running in the background, with the scope each writes to.
        self._stores: dict[asyncio.Task, Scope] = {}

    def target(self, request: GenerationRequest, namespace: str) -> SemanticTarget | None:
        """Where this request is looked up and stored; None when the layer is off or the request has no
        semantic query (a conversation that does not end with a user message)."""
        query = keys.semantic_query(request)
        if not self.settings.enabled or query is None:
            return None
        return SemanticTarget(Scope(request.tenant, keys.scope_digest(request, namespace)), query)

    async def available(self) -> bool:
        """Whether the layer is there, building it first if that is pending and due."""
        if self.layer is None and self._factory is not None and time.monotonic() >= self._retry_at:
            self._retry_at = time.monotonic() + self.retry_after_s
            self.layer = await self._soft("build", self._factory(), None)
        return self.layer is not None

    async def lookup(self, target: SemanticTarget) -> SemanticHit | None:
        if not await self.available():
            return None
        # Read your writes: a paraphrase sent as soon as an answer arrived must find it.
        await self.settle(self.settings.store_wait_s, target.scope)
        return await self._soft("lookup", self.layer.lookup(target), None)

    async def store(self, target: SemanticTarget, answer: CachedAnswer, ttl_s: int) -> None:
        """Start storing the answer in the background."""
        if not await self.available():
            return
        task = asyncio.create_task(self._store(self.layer, target, answer, ttl_s))
        self._stores[task] = target.scope
        task.add_done_callback(self._stores.pop)

    async def settle(self, timeout_s: float = 5.0, scope: Scope | None = None) -> None:
        """Wait for the background stores started so far (only those of `scope` if given)."""
        pending = [task for task, stored in self._stores.items() if scope is None or stored == scope]
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)

    async def invalidate(self, tenant: str | None) -> int:
        """Delete the tenant's entries (every entry if None); the stores started before go first."""
        await self.settle()
        if not await self.available():
            return 0
        return await (self.layer.invalidate_all() if tenant is None else self.layer.invalidate_tenant(tenant))

    async def _store(self, layer: SemanticLayer, target: SemanticTarget, answer: CachedAnswer, ttl_s: int) -> None:
        async def store() -> bool:
            await layer.store(target, answer, ttl_s)
            return True

        if await self._soft("store", store(), False):
            metrics.CACHE_STORES.labels("semantic").inc()

    @staticmethod
    async def _soft(operation: str, call: Awaitable[T], default: T) -> T:
        try:
            return await call
        except Exception as error:  # noqa: BLE001 - the semantic layer must never fail a request
            metrics.SEMANTIC_ERRORS.labels(operation).inc()
            log.warning("semantic %s failed (%s: %s); going on without it", operation, type(error).__name__, error)
            return default
