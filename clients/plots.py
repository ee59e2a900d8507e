"""The sweep as a picture: throughput against p99 latency per configuration, and the batch sizes formed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from clients.sweep import Point  # noqa: E402


def sweep_plot(points: Sequence[Point], best: Point | None, baseline: Point | None, p99_budget_ms: float,
               path: Path, title: str) -> Path:
    figure, (curves, histogram) = plt.subplots(1, 2, figsize=(14, 5.2), gridspec_kw={"width_ratios": [3, 2]})
    points = [p for p in points if p.phase == "sweep"]
    configs = list(dict.fromkeys(p.config for p in points))
    for config in configs:
        series = sorted((p for p in points if p.config == config), key=lambda p: p.concurrency)
        style = {"linewidth": 1, "alpha": 0.55}
        if config.unbatched:
            style = {"color": "black" if config.instance_count == 1 else "dimgrey", "linestyle": "--",
                     "linewidth": 2}
        if best is not None and config == best.config:
            style = {"linewidth": 2.5, "color": "tab:red"}
        curves.plot([p.p99_ms for p in series], [p.rps for p in series], marker="o", markersize=3,
                    label=config.label, **style)
        for p in series:
            curves.annotate(str(p.concurrency), (p.p99_ms, p.rps), fontsize=6, alpha=0.6,
                            xytext=(2, 2), textcoords="offset points")
    curves.axvline(p99_budget_ms, color="grey", linestyle=":", label=f"p99 budget {p99_budget_ms:g} ms")
    curves.set_xscale("log")
    curves.set_xlabel("p99 latency (ms, log scale); labels = concurrency")
    curves.set_ylabel("throughput (requests/s)")
    curves.set_title("throughput vs p99 per configuration")
    curves.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    curves.grid(alpha=0.3)

    shown = [(p, name) for p, name in ((baseline, "unbatched"), (best, "best")) if p is not None]
    width = 0.8 / max(len(shown), 1)
    for index, (point, name) in enumerate(shown):
        batches = {int(s): n for s, n in point.summary["server"]["batches"].items()}
        requests = sum(s * n for s, n in batches.items()) or 1
        sizes = sorted(batches)
        histogram.bar([s + (index - (len(shown) - 1) / 2) * width for s in sizes],
                      [s * batches[s] / requests for s in sizes], width=width,
                      label=f"{name}: {point.config.label}", color="black" if name == "unbatched" else "tab:red")
    concurrency = shown[0][0].concurrency if shown else 0
    histogram.set_xlabel("batch size formed by Triton")
    histogram.set_ylabel("share of requests")
    histogram.set_title(f"batch sizes at concurrency {concurrency}")
    histogram.legend(fontsize=6)
    histogram.grid(alpha=0.3)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def rate_latency_plot(series: dict[str, list[dict]], slo_s: float, path: Path, title: str) -> Path:
    """Normalised latency (s per output token) against arrival rate, one line per strategy: p99 solid, mean
    dashed; rates where requests were cut off (infinite latency) are drawn at the top edge, marked x."""
    figure, axes = plt.subplots(figsize=(8, 5))
    finite = [v for rows in series.values() for r in rows
              for v in (r["norm_latency_p99_s"], r["norm_latency_mean_s"]) if v is not None]
    ceiling = max(finite + [slo_s]) * 2
    for index, (name, rows) in enumerate(series.items()):
        color = f"C{index}"
        rates = [r["rate_per_s"] for r in rows]
        p99 = [r["norm_latency_p99_s"] if r["norm_latency_p99_s"] is not None else ceiling for r in rows]
        mean = [r["norm_latency_mean_s"] if r["norm_latency_mean_s"] is not None else ceiling for r in rows]
        axes.plot(rates, p99, marker="o", color=color, linewidth=2, label=f"{name} p99")
        axes.plot(rates, mean, marker=".", color=color, linestyle="--", linewidth=1, label=f"{name} mean")
        cut = [r["rate_per_s"] for r in rows if r["norm_latency_p99_s"] is None]
        axes.scatter(cut, [ceiling] * len(cut), marker="x", s=80, color="black", zorder=3)
    axes.scatter([], [], marker="x", color="black", label="requests cut off at the drain cap (infinite)")
    axes.axhline(slo_s, color="grey", linestyle=":", label=f"SLO {slo_s:g} s/token (p99)")
    axes.set_yscale("log")
    axes.set_xlabel("arrival rate (requests/s, Poisson)")
    axes.set_ylabel("normalised latency (s per output token, log scale)")
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=7)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
