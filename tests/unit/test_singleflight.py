"""Single-flight: one source run per key for concurrent subscribers; late joiners replay; errors and
cancellation reach everyone; the source is cancelled only when every subscriber has gone."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from orchestrator.singleflight import SingleFlight


class Source:
    """A controllable stream: yields what is pushed, records starts and how it ended."""

    def __init__(self) -> None:
        self.starts = 0
        self.queue: asyncio.Queue = asyncio.Queue()
        self.ended: str | None = None

    async def run(self):
        self.starts += 1
        try:
            while (item := await self.queue.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                yield item
            self.ended = "complete"
        except asyncio.CancelledError:
            self.ended = "cancelled"
            raise


async def collect(stream) -> list:
    return [item async for item in stream]


async def test_concurrent_joiners_share_one_run_and_get_every_item() -> None:
    flights: SingleFlight[str] = SingleFlight()
    source = Source()
    joined = [flights.join("k", source.run) for _ in range(5)]
    assert [leader for _, leader in joined] == [True, False, False, False, False]
    tasks = [asyncio.create_task(collect(stream)) for stream, _ in joined]
    for token in ("a", "b", "c"):
        await source.queue.put(token)
        await asyncio.sleep(0)
    # A late joiner replays what was already produced, then follows.
    late, late_leader = flights.join("k", source.run)
    late_task = asyncio.create_task(collect(late))
    await asyncio.sleep(0.01)
    await source.queue.put("d")
    await source.queue.put(None)
    results = await asyncio.gather(*tasks, late_task)
    assert not late_leader
    assert results == [["a", "b", "c", "d"]] * 6
    assert source.starts == 1 and source.ended == "complete"
    assert len(flights) == 0


async def test_followers_stream_items_as_they_come() -> None:
    flights: SingleFlight[str] = SingleFlight()
    source = Source()
    leader, _ = flights.join("k", source.run)
    follower, _ = flights.join("k", source.run)
    first = asyncio.create_task(anext(follower))
    await source.queue.put("a")
    assert await asyncio.wait_for(first, 1) == "a"
    await source.queue.put(None)
    assert await collect(leader) == ["a"]
    assert await collect(follower) == []


async def test_an_error_reaches_every_subscriber_and_the_key_is_freed() -> None:
    flights: SingleFlight[str] = SingleFlight()
    source = Source()
    streams = [flights.join("k", source.run)[0] for _ in range(3)]
    tasks = [asyncio.create_task(collect(s)) for s in streams]
    await source.queue.put("a")
    await source.queue.put(RuntimeError("backend died"))
    for task in tasks:
        with pytest.raises(RuntimeError, match="backend died"):
            await task
    assert len(flights) == 0
    _, leader = flights.join("k", Source().run)
    assert leader


async def test_leader_leaving_does_not_stop_the_followers() -> None:
    flights: SingleFlight[str] = SingleFlight()
    source = Source()
    leader, _ = flights.join("k", source.run)
    follower, _ = flights.join("k", source.run)
    follower_task = asyncio.create_task(collect(follower))
    await source.queue.put("a")
    assert await anext(leader) == "a"
    await leader.aclose()
    await source.queue.put("b")
    await source.queue.put(None)
    assert await follower_task == ["a", "b"]
    assert source.ended == "complete"


async def test_source_is_cancelled_when_every_subscriber_is_gone() -> None:
    flights: SingleFlight[str] = SingleFlight()
    source = Source()
    streams = [flights.join("k", source.run)[0] for _ in range(2)]
    tasks = [asyncio.create_task(collect(s)) for s in streams]
    await source.queue.put("a")
    await asyncio.sleep(0.01)
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await asyncio.sleep(0.01)
    assert source.ended == "cancelled"
    assert len(flights) == 0


async def test_different_keys_run_separately() -> None:
    flights: SingleFlight[str] = SingleFlight()
    a, b = Source(), Source()
    stream_a, leader_a = flights.join("a", a.run)
    stream_b, leader_b = flights.join("b", b.run)
    assert leader_a and leader_b
    await a.queue.put(None)
    await b.queue.put("x")
    await b.queue.put(None)
    assert await collect(stream_a) == [] and await collect(stream_b) == ["x"]
