"""Closed-loop (N clients, each sends its next request when the last one returns) and open-loop (Poisson
arrivals at R per second, whatever the responses do) load against a Target.

A run stops issuing at its deadline (or after `requests`) and then waits for every request in flight, so
each request sent is counted exactly once; that is what lets a caller compare the client's counts with
Triton's own statistics. Open-loop latency is measured from the scheduled arrival, so a slow server is
not hidden by the client falling behind (no coordinated omission)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from clients.report import Outcome, Summary
from clients.targets import Target
from clients.workload import WorkItem

#: Open loop: beyond this many requests in flight new arrivals are dropped and counted as `client_overload`.
MAX_OPEN_IN_FLIGHT = 4096

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Plan:
    """How long or how many, and in which loop. Exactly one of concurrency / rate is set."""

    concurrency: int | None = None
    rate: float | None = None
    duration_s: float | None = 10.0
    requests: int | None = None

    def __post_init__(self) -> None:
        if (self.concurrency is None) == (self.rate is None):
            raise ValueError("give either a concurrency (closed loop) or a rate (open loop)")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive")
        if self.duration_s is None and self.requests is None:
            raise ValueError("give a duration or a number of requests")

    @property
    def mode(self) -> str:
        return f"closed concurrency={self.concurrency}" if self.concurrency else f"open rate={self.rate:g}/s"


class _Budget:
    """Shared stop condition: a deadline and/or a request count."""

    def __init__(self, plan: Plan, start: float) -> None:
        self.deadline = start + plan.duration_s if plan.duration_s is not None else float("inf")
        self.remaining = plan.requests if plan.requests is not None else -1

    def take(self, at: float | None = None) -> bool:
        """One more request, issued now (closed loop) or scheduled at `at` (open loop)?"""
        if (time.perf_counter() if at is None else at) >= self.deadline or self.remaining == 0:
            return False
        self.remaining -= 1
        return True


async def _closed(target: Target, items: Iterator[WorkItem], plan: Plan, budget: _Budget,
                  outcomes: list[Outcome], progress: Progress) -> None:
    async def client() -> None:
        while budget.take():
            outcomes.append(await target.send(next(items)))
            progress(1)

    await asyncio.gather(*(client() for _ in range(plan.concurrency)))


async def _open(target: Target, items: Iterator[WorkItem], plan: Plan, budget: _Budget,
                outcomes: list[Outcome], progress: Progress, seed: int) -> None:
    arrivals = random.Random(seed)
    in_flight: set[asyncio.Task] = set()

    async def one(item: WorkItem, scheduled: float) -> None:
        outcome = await target.send(item)
        # Latency from the scheduled arrival: time spent waiting for the client's own loop counts too.
        late = max(time.perf_counter() - outcome.latency_s - scheduled, 0.0)
        outcomes.append(Outcome(outcome.latency_s + late, outcome.kind,
                                outcome.ttft_s + late if outcome.ttft_s is not None else None,
                                outcome.error, outcome.cache))
        progress(1)

    scheduled = time.perf_counter()
    while True:
        # The arrivals are the Poisson process's, however far the client's own loop falls behind.
        scheduled += arrivals.expovariate(plan.rate)
        if not budget.take(at=scheduled):
            break
        await asyncio.sleep(max(scheduled - time.perf_counter(), 0.0))
        item = next(items)
        if len(in_flight) >= MAX_OPEN_IN_FLIGHT:
            outcomes.append(Outcome(0.0, item.kind, error="client_overload"))
            progress(1)
            continue
        task = asyncio.create_task(one(item, scheduled))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    await asyncio.gather(*in_flight)


async def run_load(target: Target, items: Iterator[WorkItem], plan: Plan, progress: Progress = lambda n: None,
                   seed: int = 0) -> Summary:
    """Drive an opened target; returns the client-side summary (the caller adds server statistics)."""
    outcomes: list[Outcome] = []
    start = time.perf_counter()
    budget = _Budget(plan, start)
    if plan.concurrency is not None:
        await _closed(target, items, plan, budget, outcomes, progress)
    else:
        await _open(target, items, plan, budget, outcomes, progress, seed)
    return Summary(target.name, plan.mode, time.perf_counter() - start, outcomes)
