"""What the cache layers store and return, shared by the exact layer, the semantic layer and the service."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

Layer = Literal["exact", "semantic", "miss"]


@dataclass(frozen=True)
class CachedAnswer:
    """A complete generation, as stored in both layers."""

    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    created_at: float
    key: str  # the exact-layer key of the request that produced it


@dataclass(frozen=True)
class Scope:
    """The conversation context a semantic entry belongs to; lookups never cross scopes.

    `digest` is a stable hash of tenant, model, system prompt, earlier turns and sampling class; the
    service computes it (orchestrator.cache.keys) and the semantic layer only compares it.
    """

    tenant: str
    digest: str


@dataclass(frozen=True)
class SemanticHit:
    answer: CachedAnswer
    similarity: float
    cached_query: str
    guard_reasons: tuple[str, ...] = field(default=())


class SemanticLayer(Protocol):
    """The semantic cache as the service sees it (implemented in orchestrator.cache.semantic)."""

    async def lookup(self, scope: Scope, query: str) -> SemanticHit | None: ...

    async def store(self, scope: Scope, query: str, answer: CachedAnswer, ttl_s: int) -> None: ...

    async def invalidate_tenant(self, tenant: str) -> int: ...

    async def invalidate_all(self) -> int: ...
