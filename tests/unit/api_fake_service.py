"""A scripted stand-in for CachedLLMService behind the APIs (unit tests only): it validates requests as the
service does (orchestrator.validation), answers "echo: <input>", reports the cache layer it is told to, records
what it was asked, and notes when a stream was closed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np

from orchestrator.config import CacheSettings, ModelSettings
from orchestrator.schemas import (
    CacheControls,
    CacheInfo,
    GenerationRequest,
    GenerationResult,
    StreamChunk,
    Usage,
)
from orchestrator.validation import validate_controls, validate_embedding_input, validate_request


@dataclass
class FakeService:
    layer: str = "miss"
    similarity: float | None = None
    error: Exception | None = None  # raised before anything is produced
    fail_after_chunks: Exception | None = None  # raised after the first two chunks of a stream
    chunk_delay_s: float = 0.0
    stall_s: float = 0.0  # a pause before the second chunk, like a slow backend
    ready: dict[str, bool] = field(default_factory=lambda: {"triton": True, "redis": True})
    calls: list[tuple[GenerationRequest, CacheControls]] = field(default_factory=list)
    invalidations: list[dict] = field(default_factory=list)
    streams_closed: int = 0
    stream_closed: asyncio.Event = field(default_factory=asyncio.Event)

    def answer(self, request: GenerationRequest) -> str:
        return "echo: " + (request.prompt if request.prompt is not None else request.messages[-1].content)

    def cache_info(self) -> CacheInfo:
        return CacheInfo(layer=self.layer, key="k" * 64, similarity=self.similarity,
                         tokens_saved=0 if self.layer == "miss" else 12)

    def usage(self, text: str) -> Usage:
        return Usage(prompt_tokens=7, completion_tokens=len(text.split()))

    def accept(self, request: GenerationRequest, controls: CacheControls) -> None:
        validate_request(request, ModelSettings())
        validate_controls(controls, CacheSettings())
        self.calls.append((request, controls))

    async def generate(self, request: GenerationRequest, controls: CacheControls = CacheControls()
                       ) -> GenerationResult:
        self.accept(request, controls)
        if self.error is not None:
            raise self.error
        text = self.answer(request)
        return GenerationResult(text=text, finish_reason="stop", usage=self.usage(text), cache=self.cache_info(),
                                kv_cache_reused_blocks=3 if self.layer == "miss" else None, ttft_ms=1.5)

    async def stream(self, request: GenerationRequest, controls: CacheControls = CacheControls()
                     ) -> AsyncIterator[StreamChunk]:
        self.accept(request, controls)
        try:
            if self.error is not None:
                raise self.error
            text = self.answer(request)
            words = text.split(" ")
            pieces = [word if i == 0 else " " + word for i, word in enumerate(words)]
            for index, piece in enumerate(pieces):
                if index == 2 and self.fail_after_chunks is not None:
                    raise self.fail_after_chunks
                if index == 1 and self.stall_s:
                    await asyncio.sleep(self.stall_s)
                if self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
                last = index == len(pieces) - 1
                yield StreamChunk(text=piece, cache=self.cache_info() if index == 0 else None,
                                  finish_reason="stop" if last else None, usage=self.usage(text) if last else None)
        finally:
            self.streams_closed += 1
            self.stream_closed.set()

    async def embed(self, texts: list[str]) -> np.ndarray:
        validate_embedding_input(texts)
        if self.error is not None:
            raise self.error
        vectors = np.zeros((len(texts), 384), dtype=np.float32)
        for row, text in enumerate(texts):
            vectors[row, len(text) % 384] = 1.0
        return vectors

    async def stats(self, tenant: str | None = None) -> dict:
        return {"tenant": tenant, "hits": {"exact": 2, "semantic": 1}, "misses": 3}

    async def invalidate(self, tenant: str | None = None, key: str | None = None, namespace: str | None = None
                         ) -> int:
        self.invalidations.append({"tenant": tenant, "key": key, "namespace": namespace})
        return 4

    async def readiness(self) -> dict[str, bool]:
        return dict(self.ready)
