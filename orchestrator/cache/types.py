"""What the cache layers store and return, shared by the exact layer, the semantic layer and the service, and
the one stored form of an answer (both layers write it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import msgpack
import numpy as np

Layer = Literal["exact", "semantic", "miss"]
#: Version of the stored form: an entry of another version reads as damaged (a miss, then deleted).
ANSWER_FORMAT = 1


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


def pack_answer(answer: CachedAnswer) -> bytes:
    """The stored form: a msgpack array led by ANSWER_FORMAT."""
    return msgpack.packb([ANSWER_FORMAT, answer.text, answer.model, answer.prompt_tokens, answer.completion_tokens,
                          answer.finish_reason, answer.created_at, answer.key])


def unpack_answer(data: bytes | None) -> CachedAnswer | None:
    """None for nothing, an entry in another format, or a damaged one."""
    try:
        fields = msgpack.unpackb(data) if data else None
    except (ValueError, msgpack.UnpackException):
        return None
    if not isinstance(fields, list) or len(fields) != 8 or fields[0] != ANSWER_FORMAT:
        return None
    _, text, model, prompt_tokens, completion_tokens, finish_reason, created_at, key = fields
    if not (all(isinstance(v, str) for v in (text, model, finish_reason, key))
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (prompt_tokens, completion_tokens))
            and isinstance(created_at, (int, float))):
        return None
    return CachedAnswer(text=text, model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                        finish_reason=finish_reason, created_at=created_at, key=key)


@dataclass(frozen=True)
class Scope:
    """The conversation context a semantic entry belongs to; lookups never cross scopes.

    `digest` is a stable hash of tenant, model, system prompt, earlier turns and sampling class; the
    service computes it (orchestrator.cache.keys) and the semantic layer only compares it.
    """

    tenant: str
    digest: str


@dataclass
class SemanticTarget:
    """Where the semantic layer looks one request up and stores its answer: the scope and the query (the
    service computes both once per request). The lookup leaves the query's vector here once it has embedded
    it, and the store of the same request reuses it: one embedding per miss."""

    scope: Scope
    query: str
    vector: np.ndarray | None = None


@dataclass(frozen=True)
class SemanticHit:
    answer: CachedAnswer
    similarity: float
    cached_query: str
    guard_reasons: tuple[str, ...] = field(default=())


class SemanticLayer(Protocol):
    """The semantic cache as the service sees it (implemented in orchestrator.cache.semantic)."""

    async def lookup(self, target: SemanticTarget) -> SemanticHit | None:
        """The answer for a paraphrase of `target.query` in its scope, embedding the query (onto
        `target.vector`) unless the scope is empty or the vector is already there."""

    async def store(self, target: SemanticTarget, answer: CachedAnswer, ttl_s: int) -> None:
        """Store the answer under the target's query, with `target.vector` if the lookup left one."""

    async def invalidate_tenant(self, tenant: str) -> int: ...

    async def invalidate_all(self) -> int: ...
