"""Tune Triton's dynamic batcher from measurements: load each candidate configuration through explicit model
control with a config override, drive it at several concurrencies, read the batches Triton really formed,
and pick the fastest configuration whose p99 stays within a latency budget.

The unbatched baseline (`max_batch_size: 1`: every execution holds one request, which the statistics
confirm) always runs too, at each instance count, so the gain from batching is measured, not assumed. The model's original
configuration is loaded again at the end, also when the sweep fails."""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import tritonclient.http as httpclient
from rich.table import Table
from tritonclient.utils import InferenceServerException

from clients.load import Plan, run_load
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

    @property
    def rps(self) -> float:
        return self.summary["throughput_rps"]

    @property
    def p99_ms(self) -> float:
        latency = self.summary["latency_ms"]
        return latency["p99"] if latency else float("inf")


class SweepError(RuntimeError):
    """A candidate Triton refused to load, or the model cannot be swept; the message names it."""


async def run_sweep(http_url: str, grpc_url: str, model: str, candidates: Sequence[BatcherConfig],
                    concurrencies: Sequence[int], duration_s: float, warmup_s: float, items: Iterator[WorkItem],
                    on_point: Callable[[Point], None] = lambda p: None) -> list[Point]:
    control = httpclient.InferenceServerClient(http_url)
    try:
        original = control.get_model_config(model)
    except InferenceServerException as error:
        raise SweepError(f"model {model!r}: {error.message()}") from None
    if "sequence_batching" in original:
        raise SweepError(f"model {model!r} uses the sequence batcher; the sweep tunes the dynamic batcher")
    if int(original.get("max_batch_size", 0)) < 1:
        raise SweepError(f"model {model!r} has max_batch_size 0: its inputs carry no batch dimension to batch on")
    points = []
    try:
        for candidate in candidates:
            try:
                control.load_model(model, config=json.dumps(candidate.apply(original)))
            except InferenceServerException as error:
                raise SweepError(f"{candidate.label}: Triton refused the config: {error.message()}") from None
            target = TritonTarget(grpc_url, model)
            await target.open()
            try:
                for concurrency in concurrencies:
                    before = model_stats(control, model)
                    if warmup_s > 0:
                        warm = await run_load(target, items, Plan(concurrency=concurrency, duration_s=warmup_s))
                        warm_ok = sum(1 for o in warm.outcomes if o.error is None)
                        before = wait_recorded(control, model, before, warm_ok)
                    summary = await run_load(target, items, Plan(concurrency=concurrency, duration_s=duration_s))
                    ok = sum(1 for o in summary.outcomes if o.error is None)
                    summary.server = stats_after(control, model, before, ok)
                    point = Point(candidate, concurrency, summary.to_dict())
                    points.append(point)
                    on_point(point)
            finally:
                await target.close()
    finally:
        control.load_model(model, config=json.dumps(original))
        control.close()
    return points


def choose(points: Sequence[Point], concurrency: int, p99_budget_ms: float) -> tuple[Point | None, Point | None]:
    """(best batched point within the budget, unbatched baseline) at the given concurrency."""
    at = [p for p in points if p.concurrency == concurrency and not p.summary["errors"]]
    within = [p for p in at if not p.config.unbatched and p.p99_ms <= p99_budget_ms]
    best = max(within, key=lambda p: p.rps, default=None)
    baseline = max((p for p in at if p.config.unbatched), key=lambda p: p.rps, default=None)
    return best, baseline


def result(model: str, points: Sequence[Point], concurrency: int, p99_budget_ms: float) -> dict:
    """The sweep's verdict as one JSON-able dict (the `--json` line)."""
    best, baseline = choose(points, concurrency, p99_budget_ms)
    return {
        "model": model,
        "concurrency": concurrency,
        "p99_budget_ms": p99_budget_ms,
        "best_config": asdict(best.config) if best else None,
        "best_rps": best.rps if best else None,
        "best_p99_ms": best.p99_ms if best else None,
        "unbatched_rps": baseline.rps if baseline else None,
        "unbatched_p99_ms": baseline.p99_ms if baseline else None,
        "batching_gain": round(best.rps / baseline.rps, 2) if best and baseline and baseline.rps else None,
        "where_time_goes": {
            "best": best.summary["server"] if best else None,
            "unbatched": baseline.summary["server"] if baseline else None,
        },
        "points": [{"config": asdict(p.config), "concurrency": p.concurrency, **p.summary} for p in points],
    }


def points_table(points: Sequence[Point], best: Point | None, p99_budget_ms: float) -> Table:
    table = Table(title=f"dynamic-batcher sweep (p99 budget {p99_budget_ms:g} ms; * = best; server times per request)")
    for column in ("max batch", "preferred", "delay µs", "inst", "conc", "req/s", "p50 ms", "p99 ms",
                   "mean batch", "queue ms", "compute ms", "exec ms", "errors"):
        table.add_column(column, justify="right")
    for point in points:
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
