"""Tune Triton's dynamic batcher from measurements: load each candidate configuration through explicit model
control with a config override, drive it at several concurrencies, read the batches Triton really formed,
and pick the fastest configuration whose p99 stays within a latency budget.

The unbatched baseline (`max_batch_size: 1`: every execution holds one request, which the statistics
confirm) always runs too, at each instance count, so the gain from batching is measured, not assumed. The model's original
configuration is loaded again at the end, also when the sweep fails."""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import tritonclient.http as httpclient
from rich.table import Table
from tritonclient.utils import InferenceServerException

from clients.load import Plan, run_load
from clients.perf import PerfSettings, run_perf
from clients.report import Summary, server_view
from clients.targets import TritonTarget
from clients.workload import WorkItem
from stack.triton_stats import model_stats, stats_after, wait_recorded


@dataclass(frozen=True)
class BatcherConfig:
    """The dynamic-batcher fields a sweep varies (names as in config.pbtxt)."""

    max_batch_size: int
    preferred_batch_size: tuple[int, ...]
    max_queue_delay_microseconds: int
    instance_count: int

    @property
    def unbatched(self) -> bool:
        return self.max_batch_size == 1

    @property
    def label(self) -> str:
        if self.unbatched:
            return f"unbatched ×{self.instance_count}"
        preferred = ",".join(map(str, self.preferred_batch_size)) or "-"
        return (f"max {self.max_batch_size} pref {preferred} delay {self.max_queue_delay_microseconds}µs "
                f"×{self.instance_count}")

    def apply(self, config: dict) -> dict:
        """A copy of a model config (Triton's JSON form) with these batcher fields."""
        updated = copy.deepcopy(config)
        updated["max_batch_size"] = self.max_batch_size
        batcher = updated.setdefault("dynamic_batching", {})
        batcher["preferred_batch_size"] = list(self.preferred_batch_size)
        batcher["max_queue_delay_microseconds"] = self.max_queue_delay_microseconds
        for group in updated.setdefault("instance_group", [{"kind": "KIND_CPU"}]):
            group["count"] = self.instance_count
        return updated


def unbatched(instance_count: int = 1) -> BatcherConfig:
    return BatcherConfig(1, (), 0, instance_count)


def grid(delays_us: Sequence[int], preferred: Sequence[Sequence[int]], max_batch_sizes: Sequence[int],
         instance_counts: Sequence[int]) -> list[BatcherConfig]:
    """Every combination, preferred sizes above max_batch_size dropped, duplicates removed; first the unbatched
    baseline at each instance count, so batching is compared with the best that no batching does."""
    candidates = [unbatched(count) for count in dict.fromkeys(instance_counts)]
    for delay, sizes, largest, count in itertools.product(delays_us, preferred, max_batch_sizes, instance_counts):
        if largest < 1 or count < 1 or delay < 0:
            raise ValueError("max_batch_size and instance count must be >= 1, delays >= 0")
        candidate = BatcherConfig(largest, tuple(s for s in sizes if s <= largest), delay, count)
        if candidate not in candidates:
            candidates.append(candidate)
    return candidates


@dataclass
class Point:
    config: BatcherConfig
    concurrency: int
    summary: dict  # clients.report.Summary.to_dict(), with the server's view
    phase: str = "sweep"  # or "confirm": the paired re-measurement of the best and the baseline

    @property
    def rps(self) -> float:
        return self.summary["throughput_rps"]

    @property
    def p99_ms(self) -> float:
        latency = self.summary["latency_ms"]
        return latency["p99"] if latency else float("inf")


class SweepError(RuntimeError):
    """A candidate Triton refused to load, or the model cannot be swept; the message names it."""


#: What drives the load: this package's asyncio client (Python, ~1 ms of CPU per request) or the bundled
#: perf_analyzer (C++, a fraction of that), which leaves more of a small machine to the server.
DRIVERS = ("python", "perf_analyzer")


class Sweep:
    """Loads candidate configurations of one model and measures them; the original configuration is loaded
    again on exit, also after an error."""

    def __init__(self, http_url: str, grpc_url: str, model: str, items: Iterator[WorkItem], duration_s: float,
                 warmup_s: float, on_point: Callable[[Point], None] = lambda p: None, driver: str = "python",
                 perf_window_requests: int = 500) -> None:
        if driver not in DRIVERS:
            raise ValueError(f"driver must be one of {DRIVERS}, got {driver!r}")
        self.grpc_url, self.model, self.items = grpc_url, model, items
        self.duration_s, self.warmup_s, self.on_point = duration_s, warmup_s, on_point
        self.driver, self.perf_window_requests = driver, perf_window_requests
        self.control = httpclient.InferenceServerClient(http_url)
        try:
            self.original = self.control.get_model_config(model)
            if "sequence_batching" in self.original:
                raise SweepError(f"model {model!r} uses the sequence batcher; the sweep tunes the dynamic batcher")
            if int(self.original.get("max_batch_size", 0)) < 1:
                raise SweepError(f"model {model!r} has max_batch_size 0: its inputs carry no batch dimension")
        except InferenceServerException as error:
            self.control.close()
            raise SweepError(f"model {model!r}: {error.message()}") from None
        except SweepError:
            self.control.close()
            raise

    async def measure(self, candidate: BatcherConfig, concurrencies: Sequence[int], phase: str = "sweep"
                      ) -> list[Point]:
        try:
            self.control.load_model(self.model, config=json.dumps(candidate.apply(self.original)))
        except InferenceServerException as error:
            raise SweepError(f"{candidate.label}: Triton refused the config: {error.message()}") from None
        if self.driver == "perf_analyzer":
            return [self._point(candidate, concurrency, phase, await self._perf_summary(concurrency))
                    for concurrency in concurrencies]
        target = TritonTarget(self.grpc_url, self.model)
        await target.open()
        points = []
        try:
            for concurrency in concurrencies:
                before = model_stats(self.control, self.model)
                if self.warmup_s > 0:
                    warm = await run_load(target, self.items, Plan(concurrency=concurrency, duration_s=self.warmup_s))
                    before = wait_recorded(self.control, self.model, before, _ok(warm))
                summary = await run_load(target, self.items, Plan(concurrency=concurrency, duration_s=self.duration_s))
                summary.server = stats_after(self.control, self.model, before, _ok(summary))
                points.append(self._point(candidate, concurrency, phase, summary.to_dict()))
        finally:
            await target.close()
        return points

    def _point(self, candidate: BatcherConfig, concurrency: int, phase: str, summary: dict) -> Point:
        point = Point(candidate, concurrency, summary, phase)
        self.on_point(point)
        return point

    async def _perf_summary(self, concurrency: int) -> dict:
        """perf_analyzer at one concurrency (its own warm-up and stable windows), with Triton's statistics
        over everything it sent (perf_analyzer's latency split kept beside them as `perf_*`)."""
        before = model_stats(self.control, self.model)
        # Any three windows count as stable: drift is the paired confirmation rounds' job, and a model that
        # stalls now and then (one-instance embedding on Triton 2.51) must still get a point, not abort the sweep.
        settings = PerfSettings(concurrency_range=f"{concurrency}:{concurrency}:1",
                                window_requests=self.perf_window_requests, stability_percentage=10_000)
        (summary,) = await asyncio.to_thread(run_perf, self.grpc_url, self.model, self.items, settings)
        perf_view = {f"perf_{name}": value for name, value in summary["server"].items()}
        summary["server"] = {**server_view(stats_after(self.control, self.model, before, summary["requests"])),
                             **perf_view}
        return summary

    def __enter__(self) -> Sweep:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.control.load_model(self.model, config=json.dumps(self.original))
        finally:
            self.control.close()


def _ok(summary: Summary) -> int:
    return sum(1 for o in summary.outcomes if o.error is None)


async def run_sweep(http_url: str, grpc_url: str, model: str, candidates: Sequence[BatcherConfig],
                    concurrencies: Sequence[int], duration_s: float, warmup_s: float, items: Iterator[WorkItem],
                    on_point: Callable[[Point], None] = lambda p: None, at_concurrency: int | None = None,
                    p99_budget_ms: float = float("inf"), confirm_rounds: int = 0, driver: str = "python",
                    perf_window_requests: int = 500) -> list[Point]:
    """Every candidate at every concurrency; then, when confirm_rounds > 0, the best candidate and the
    unbatched baseline again, alternately, at at_concurrency: a machine whose load drifts during a long
    sweep then still gives a paired comparison."""
    points: list[Point] = []
    with Sweep(http_url, grpc_url, model, items, duration_s, warmup_s, on_point, driver,
               perf_window_requests) as sweep:
        for candidate in candidates:
            points += await sweep.measure(candidate, concurrencies)
        at = at_concurrency or max(concurrencies)
        best, baseline = choose(points, at, p99_budget_ms)
        if best is not None and baseline is not None:
            for _ in range(confirm_rounds):
                for config in (baseline.config, best.config):
                    points += await sweep.measure(config, [at], "confirm")
    return points


def choose(points: Sequence[Point], concurrency: int, p99_budget_ms: float) -> tuple[Point | None, Point | None]:
    """(best batched point within the budget, best unbatched point) at the given concurrency, from the sweep."""
    at = [p for p in points if p.concurrency == concurrency and not p.summary["errors"] and p.phase == "sweep"]
    within = [p for p in at if not p.config.unbatched and p.p99_ms <= p99_budget_ms]
    best = max(within, key=lambda p: p.rps, default=None)
    baseline = max((p for p in at if p.config.unbatched), key=lambda p: p.rps, default=None)
    return best, baseline


def result(model: str, points: Sequence[Point], concurrency: int, p99_budget_ms: float,
           batch_cost: dict | None = None) -> dict:
    """The sweep's verdict as one JSON-able dict (the `--json` line). With confirmation rounds, the rps and p99
    figures are the medians of the paired re-measurements; the sweep's own numbers stay in `points`. With the
    model's batch-cost ceiling (clients.ceiling), `gain_over_ceiling` is the gain as a share of it."""
    best, baseline = choose(points, concurrency, p99_budget_ms)
    best_rps, unbatched_rps = (best.rps if best else None), (baseline.rps if baseline else None)
    best_p99, unbatched_p99 = (best.p99_ms if best else None), (baseline.p99_ms if baseline else None)
    confirmed = None
    if best and baseline:
        again = [p for p in points if p.phase == "confirm"]
        best_runs = [p.rps for p in again if p.config == best.config]
        baseline_runs = [p.rps for p in again if p.config == baseline.config]
        if best_runs and baseline_runs:
            confirmed = {"best_rps": best_runs, "unbatched_rps": baseline_runs,
                         "best_p99_ms": [p.p99_ms for p in again if p.config == best.config],
                         "unbatched_p99_ms": [p.p99_ms for p in again if p.config == baseline.config]}
            best_rps, unbatched_rps = statistics.median(best_runs), statistics.median(baseline_runs)
            best_p99 = statistics.median(confirmed["best_p99_ms"])
            unbatched_p99 = statistics.median(confirmed["unbatched_p99_ms"])
    return {
        "model": model,
        "concurrency": concurrency,
        "p99_budget_ms": p99_budget_ms,
        "best_config": asdict(best.config) if best else None,
        "best_rps": best_rps,
        "best_p99_ms": best_p99,
        "unbatched_config": asdict(baseline.config) if baseline else None,
        "unbatched_rps": unbatched_rps,
        "unbatched_p99_ms": unbatched_p99,
        "batching_gain": round(best_rps / unbatched_rps, 2) if best_rps and unbatched_rps else None,
        "batch_cost": batch_cost,
        "gain_over_ceiling": round(best_rps / unbatched_rps / batch_cost["ceiling"], 2)
        if best_rps and unbatched_rps and batch_cost else None,
        "confirmed": confirmed,
        "where_time_goes": {
            "best": best.summary["server"] if best else None,
            "unbatched": baseline.summary["server"] if baseline else None,
        },
        "points": [{"config": asdict(p.config), "concurrency": p.concurrency, "phase": p.phase, **p.summary}
                   for p in points],
    }


def points_table(points: Sequence[Point], best: Point | None, p99_budget_ms: float) -> Table:
    table = Table(title=f"dynamic-batcher sweep (p99 budget {p99_budget_ms:g} ms; * = best; server times per request)")
    for column in ("max batch", "preferred", "delay µs", "inst", "conc", "req/s", "p50 ms", "p99 ms",
                   "mean batch", "queue ms", "compute ms", "exec ms", "errors"):
        table.add_column(column, justify="right")
    for point in points:
        if point.phase != "sweep":
            continue
        config, server = point.config, point.summary["server"]
        latency = point.summary["latency_ms"] or {"p50": float("nan"), "p99": float("nan")}
        p99 = f"{latency['p99']:.1f}"
        table.add_row(
            ("* " if point is best else "") + ("1 (unbatched)" if config.unbatched else str(config.max_batch_size)),
            ",".join(map(str, config.preferred_batch_size)) or "-", str(config.max_queue_delay_microseconds),
            str(config.instance_count), str(point.concurrency), f"{point.rps:.1f}", f"{latency['p50']:.1f}",
            f"[red]{p99}[/]" if point.p99_ms > p99_budget_ms else p99, f"{server['mean_batch_size']:.1f}",
            f"{server['queue_ms']:.1f}", f"{server['compute_ms']:.1f}", f"{server['execution_ms']:.1f}",
            str(sum(point.summary["errors"].values()) or ""),
        )
    return table
