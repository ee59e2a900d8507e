"""The one summary format every client reports (load, sweep points, perf): throughput, latency percentiles,
time to first token, errors by kind, cache hits by layer, and the server's own view when known."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from rich.table import Table

from stack.triton_stats import ModelStats

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class Outcome:
    """One request as the client saw it."""

    latency_s: float
    kind: str = "fresh"
    ttft_s: float | None = None
    error: str | None = None  # short kind: queue_full, timeout, http_500, ...
    cache: str | None = None  # exact | semantic | miss, when the target says


def percentiles_ms(values_s: list[float]) -> dict[str, float] | None:
    if not values_s:
        return None
    points = np.percentile(np.asarray(values_s) * 1000.0, PERCENTILES)
    summary = {f"p{p}": round(float(v), 3) for p, v in zip(PERCENTILES, points)}
    summary["mean"] = round(float(np.mean(values_s) * 1000.0), 3)
    return summary


def server_view(stats: ModelStats) -> dict:
    """Where a request's time went inside Triton, per request (ms), and the batches it formed."""
    requests = max(stats.request_count, 1)
    executions = sum(stats.batches.values())

    def per_request(ns: int) -> float:
        return round(ns / requests / 1e6, 3)

    compute = stats.compute_input_ns + stats.compute_infer_ns + stats.compute_output_ns
    return {
        "requests": stats.request_count,
        "inferences": stats.inference_count,
        "executions": executions,
        "batches": {str(size): n for size, n in sorted(stats.batches.items())},
        "mean_batch_size": round(stats.mean_batch_size, 2),
        "queue_ms": per_request(stats.queue_ns),
        "compute_ms": per_request(compute),
        "overhead_ms": per_request(max(stats.success_ns - stats.queue_ns - compute, 0)),
        "total_ms": per_request(stats.success_ns),
        "execution_ms": round(sum(stats.batch_compute_ns.values()) / max(executions, 1) / 1e6, 3),
    }


@dataclass
class Summary:
    target: str
    mode: str  # "closed concurrency=N" | "open rate=R/s" | "perf_analyzer concurrency=N"
    duration_s: float
    outcomes: list[Outcome] = field(default_factory=list)
    server: ModelStats | None = None

    def to_dict(self) -> dict:
        ok = [o for o in self.outcomes if o.error is None]
        layers = Counter(o.cache for o in ok if o.cache)
        cached = sum(layers.values())
        return {
            "target": self.target,
            "mode": self.mode,
            "duration_s": round(self.duration_s, 3),
            "requests": len(self.outcomes),
            "ok": len(ok),
            "throughput_rps": round(len(ok) / self.duration_s, 2) if self.duration_s > 0 else 0.0,
            "latency_ms": percentiles_ms([o.latency_s for o in ok]),
            "ttft_ms": percentiles_ms([o.ttft_s for o in ok if o.ttft_s is not None]),
            "errors": dict(Counter(o.error for o in self.outcomes if o.error)),
            "hit_rate": {layer: round(n / cached, 4) for layer, n in sorted(layers.items())} if cached else None,
            "by_kind": dict(Counter(o.kind for o in self.outcomes)),
            "server": server_view(self.server) if self.server else None,
        }


def summary_table(summary: dict, title: str = "load") -> Table:
    """A summary dict (from Summary.to_dict or perf) as a two-column rich table."""
    table = Table(title=title, show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")

    def ms(block: dict | None) -> str:
        return " / ".join(f"{block[f'p{p}']:.1f}" for p in PERCENTILES) if block else "-"

    table.add_row("target", summary["target"])
    table.add_row("mode", summary["mode"])
    table.add_row("requests ok / sent", f"{summary['ok']} / {summary['requests']}")
    table.add_row("throughput (req/s)", f"{summary['throughput_rps']:.1f}")
    table.add_row("latency p50 / p90 / p99 (ms)", ms(summary["latency_ms"]))
    table.add_row("TTFT p50 / p90 / p99 (ms)", ms(summary["ttft_ms"]))
    table.add_row("errors", ", ".join(f"{k}: {n}" for k, n in summary["errors"].items()) or "none")
    if summary.get("hit_rate"):
        table.add_row("cache layer", ", ".join(f"{k} {v:.0%}" for k, v in summary["hit_rate"].items()))
    if server := summary.get("server"):
        if "batches" in server:
            table.add_row("server batches (size: count)", ", ".join(f"{s}: {n}" for s, n in server["batches"].items()))
        table.add_row("server queue / compute per request (ms)", f"{server['queue_ms']:.2f} / {server['compute_ms']:.2f}")
    return table
