"""Two stream utilities of the service: OpenAI's stop sequences over a text stream, and an iterator whose first
item is fetched ahead of time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TypeVar

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
