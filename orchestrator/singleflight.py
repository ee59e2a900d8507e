"""Single-flight for streams: identical concurrent requests share one backend generation.

The first request for a key starts a flight: a task that runs the source (the backend stream, which also
stores the finished answer) and keeps every item it yields. Later requests for the same key join it and
receive the same items: first those already produced, then each new one as it comes, so a follower streams
with the leader instead of waiting for the end. The flight belongs to no single caller: when the leader
goes away the others keep receiving; only when every subscriber has gone is the source cancelled (which
stops the generation). A flight leaves the table when its source ends, after the source's own clean-up
(storing the answer), so a request arriving later finds either the flight or the cached answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class Flight(Generic[T]):
    def __init__(self, source: AsyncIterator[T], on_done: Callable[[Flight[T]], None]) -> None:
        self.items: list[T] = []
        self.error: BaseException | None = None
        self.done = False
        self.subscribers = 0
        self._changed = asyncio.Event()
        self._on_done = on_done
        self.task = asyncio.create_task(self._pump(source), name="singleflight")

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _pump(self, source: AsyncIterator[T]) -> None:
        try:
            async for item in source:
                self.items.append(item)
                self._notify()
        except asyncio.CancelledError:
            self.error = asyncio.CancelledError("the generation was cancelled: every requester went away")
        except Exception as error:  # noqa: BLE001 - handed to every subscriber
            self.error = error
        finally:
            self.done = True
            self._notify()
            self._on_done(self)

    async def subscribe(self) -> AsyncIterator[T]:
        self.subscribers += 1
        index = 0
        try:
            while True:
                while index < len(self.items):
                    yield self.items[index]
                    index += 1
                if self.done:
                    if self.error is not None:
                        raise self.error
                    return
                await self._changed.wait()
        finally:
            self.subscribers -= 1
            if self.subscribers == 0 and not self.done:
                self.task.cancel()


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._flights: dict[Hashable, Flight[T]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def join(self, key: Hashable, start: Callable[[], AsyncIterator[T]]) -> tuple[AsyncIterator[T], bool]:
        """Subscribe to the flight for `key`, starting it with `start()` if there is none.
        Returns the items and whether this call started the flight (is the leader)."""
        flight = self._flights.get(key)
        leader = flight is None
        if flight is None:
            flight = Flight(start(), lambda done: self._forget(key, done))
            self._flights[key] = flight
        return flight.subscribe(), leader

    def _forget(self, key: Hashable, flight: Flight[T]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
