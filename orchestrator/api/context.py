"""What both APIs share: the service they call (as a protocol, so tests can put a fake behind the APIs),
the model names they serve, and opening/closing a service stream safely."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import anyio
import numpy as np

from orchestrator.errors import InvalidRequest, OrchestratorError
from orchestrator.schemas import CacheControls, GenerationRequest, GenerationResult, StreamChunk

#: How long closing a backend stream may take (it stops the generation) before we give up waiting.
CLOSE_TIMEOUT_S = 5.0


class GenerationService(Protocol):
    """The part of orchestrator.service.CachedLLMService the APIs use."""

    async def generate(self, request: GenerationRequest, controls: CacheControls = ...) -> GenerationResult: ...

    def stream(self, request: GenerationRequest, controls: CacheControls = ...) -> AsyncIterator[StreamChunk]: ...

    async def embed(self, texts: list[str]) -> np.ndarray: ...

    async def stats(self, tenant: str | None = None) -> dict: ...

    async def invalidate(self, tenant: str | None = None, key: str | None = None,
                         namespace: str | None = None) -> int: ...

    async def readiness(self) -> dict[str, bool]: ...


@dataclass(frozen=True)
class ServedModels:
    generation: tuple[str, ...]
    embedding: str

    def check_embedding_model(self, model: str, field: str = "model") -> None:
        if model != self.embedding:
            raise InvalidRequest(field, f"unknown embedding model {model!r}; this server embeds with "
                                        f"{self.embedding!r}")


async def open_stream(service: GenerationService, request: GenerationRequest,
                      controls: CacheControls) -> tuple[StreamChunk, AsyncIterator[StreamChunk]]:
    """Start a stream and wait for its first chunk, so that errors raised before anything was produced
    (bad input, backend down, queue full) become a plain error status instead of a broken stream."""
    chunks = service.stream(request, controls)
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        raise OrchestratorError("the service ended a stream without any chunk") from None
    except BaseException:
        await close_stream(chunks)
        raise
    return first, chunks


async def close_stream(chunks: AsyncIterator[StreamChunk]) -> None:
    """Close the service's iterator, which stops the generation if it is still running. Shielded:
    this runs while the caller is being cancelled (the client went away)."""
    aclose = getattr(chunks, "aclose", None)
    if aclose is None:
        return
    with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT_S):
        await aclose()
