"""Stream utilities of the service: OpenAI's stop sequences over a text stream, an iterator whose first item is
fetched ahead of time, and a whole stream collected into one result."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import TypeVar

from orchestrator.errors import OrchestratorError
from orchestrator.schemas import GenerationResult, StreamChunk

T = TypeVar("T")


class StopScanner:
    """OpenAI's `stop`: the answer ends before the first stop sequence, which is not returned. Engines match
    stop words on token ids and keep them in the output (TensorRT-LLM's meaning), and a stop string can
    span tokens, so the text is scanned here: a tail that could be the start of a stop sequence is held back
    until the next delta shows whether it is one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [stop for stop in stops if stop]
        self.held = ""

    def push(self, text: str, final: bool = False) -> tuple[str, bool]:
        """The text that may be sent now, and whether a stop sequence ended the answer."""
        if not self.stops:
            return text, False
        buffer, self.held = self.held + text, ""
        cut = min((i for stop in self.stops if (i := buffer.find(stop)) >= 0), default=-1)
        if cut >= 0:
            return buffer[:cut], True
        if final:
            return buffer, False
        keep = next((k for k in range(min(len(buffer), max(map(len, self.stops)) - 1), 0, -1)
                     if any(stop.startswith(buffer[-k:]) for stop in self.stops)), 0)
        if keep:
            buffer, self.held = buffer[:-keep], buffer[-keep:]
        return buffer, False


class EarlyStart(AsyncIterator[T]):
    """An async iterator whose first item is already being fetched: the work behind it starts now, while
    the caller does something else, and aclose() cancels it if the caller decides against it."""

    def __init__(self, source: AsyncIterator[T]) -> None:
        self.source = source
        self.first: asyncio.Future[T] | None = asyncio.ensure_future(anext(source))

    async def __anext__(self) -> T:
        if self.first is None:
            return await anext(self.source)
        first, self.first = self.first, None
        return await first

    async def aclose(self) -> None:
        if self.first is not None:
            self.first.cancel()
            with contextlib.suppress(BaseException):
                await self.first
            self.first = None
        await self.source.aclose()


async def collect(chunks: AsyncIterator[StreamChunk]) -> GenerationResult:
    """The service's stream as one result (closed at the end, or when collecting fails); `ttft_ms` is the time
    to the first text of a miss."""
    text: list[str] = []
    cache = usage = finish_reason = kv_blocks = ttft_ms = None
    started = time.perf_counter()
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            if ttft_ms is None and chunk.text:
                ttft_ms = (time.perf_counter() - started) * 1000
            text.append(chunk.text)
            cache = chunk.cache or cache
            usage = chunk.usage or usage
            finish_reason = chunk.finish_reason or finish_reason
            kv_blocks = chunk.kv_cache_reused_blocks if chunk.kv_cache_reused_blocks is not None else kv_blocks
    if cache is None or usage is None or finish_reason is None:
        raise OrchestratorError("the generation ended without its final chunk")
    return GenerationResult(text="".join(text), finish_reason=finish_reason, usage=usage, cache=cache,
                            kv_cache_reused_blocks=kv_blocks, ttft_ms=ttft_ms if cache.layer == "miss" else None)
