"""Run the perf_analyzer that the tritonclient wheel bundles against a Triton model, and read its CSV into
the same summary format as `load`.

Defaults suit a small shared CPU: count windows (each window holds a minimum number of requests, so a slow
model still gets a full sample), a wide stability band and few trials (perf_analyzer otherwise gives up on
a noisy machine), and real prompts from the workload generator instead of random bytes."""

from __future__ import annotations

import csv
import json
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from clients.report import percentiles_ms
from clients.targets import input_spec, streams
from clients.workload import WorkItem
from stack import paths
from stack.triton import triton_env

PERF_ANALYZER = paths.PYTHON_BIN_DIR / "perf_analyzer"


class PerfError(RuntimeError):
    """perf_analyzer could not run or measure; the message carries its own last lines."""


@dataclass(frozen=True)
class PerfSettings:
    concurrency_range: str = "8:32:8"  # perf_analyzer's start:end:step (end included)
    window_requests: int = 200  # --measurement-request-count
    stability_percentage: int = 100  # max/min of the last 3 windows within 2x: a shared CPU is noisy
    max_trials: int = 10
    max_tokens: int = 32
    distinct_prompts: int = 256


def input_data(grpc_url: str, model: str, items: Iterator[WorkItem], settings: PerfSettings) -> tuple[dict, bool]:
    """perf_analyzer's --input-data JSON (one step per prompt) and whether the model streams."""
    client = grpcclient.InferenceServerClient(grpc_url)
    try:
        config = client.get_model_config(model, as_json=True)["config"]
    except InferenceServerException as error:
        raise PerfError(f"model {model!r} on {grpc_url}: {error.message()}") from None
    finally:
        client.close()
    specs = input_spec(config, settings.max_tokens)
    steps = []
    for _ in range(settings.distinct_prompts):
        text = next(items).text()
        steps.append({s.name: {"content": [text if s.value is None else s.value], "shape": list(s.shape)}
                      for s in specs})
    return {"data": steps}, streams(config)


def command(grpc_url: str, model: str, data_file: Path, csv_file: Path, export_file: Path, streaming: bool,
            settings: PerfSettings) -> list[str]:
    argv = [
        str(PERF_ANALYZER), "-m", model, "-u", grpc_url, "-i", "grpc",
        "--input-data", str(data_file),
        "--concurrency-range", settings.concurrency_range,
        "--measurement-mode", "count_windows",
        "--measurement-request-count", str(settings.window_requests),
        "--stability-percentage", str(settings.stability_percentage),
        "--max-trials", str(settings.max_trials),
        "-f", str(csv_file), "--verbose-csv", "--profile-export-file", str(export_file),
    ]
    return argv + ["--streaming"] if streaming else argv


def _ms(row: dict, column: str) -> float:
    return round(float(row[column]) / 1000.0, 3)


def summaries(csv_text: str, export: dict, target: str) -> list[dict]:
    """One summary per concurrency: latency and server breakdown from the CSV (µs averages over the
    measurement windows), the request count and TTFT from the per-request export."""
    experiments = {int(e["experiment"]["value"]): e for e in export.get("experiments", [])}
    results = []
    for row in sorted(csv.DictReader(csv_text.splitlines()), key=lambda r: int(r["Concurrency"])):
        concurrency = int(row["Concurrency"])
        requests = experiments.get(concurrency, {}).get("requests", [])
        boundaries = experiments.get(concurrency, {}).get("window_boundaries", [])
        ttfts = [(r["response_timestamps"][0] - r["timestamp"]) / 1e9 for r in requests if r["response_timestamps"]]
        streamed = any(len(r["response_timestamps"]) > 1 for r in requests)
        queue = _ms(row, "Server Queue")
        compute = round(sum(_ms(row, c) for c in ("Server Compute Input", "Server Compute Infer",
                                                   "Server Compute Output")), 3)
        results.append({
            "target": target,
            "mode": f"perf_analyzer concurrency={concurrency}",
            "duration_s": round((boundaries[-1] - boundaries[0]) / 1e9, 3) if len(boundaries) > 1 else None,
            "requests": len(requests),
            "ok": len(requests),
            "throughput_rps": float(row["Inferences/Second"]),
            "latency_ms": {"p50": _ms(row, "p50 latency"), "p90": _ms(row, "p90 latency"),
                           "p99": _ms(row, "p99 latency"), "mean": _ms(row, "Avg latency")},
            "ttft_ms": percentiles_ms(ttfts) if streamed else None,
            "errors": {},
            "hit_rate": None,
            "by_kind": None,
            "server": {"queue_ms": queue, "compute_ms": compute,
                       "network_ms": _ms(row, "Network+Server Send/Recv")},
        })
    return results


def run_perf(grpc_url: str, model: str, items: Iterator[WorkItem], settings: PerfSettings = PerfSettings(),
             timeout_s: float = 600.0, keep_dir: Path | None = None) -> list[dict]:
    data, streaming = input_data(grpc_url, model, items, settings)
    with tempfile.TemporaryDirectory(prefix="perf-") as scratch:
        folder = keep_dir or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        data_file, csv_file, export_file = folder / "input.json", folder / "perf.csv", folder / "export.json"
        data_file.write_text(json.dumps(data))
        argv = command(grpc_url, model, data_file, csv_file, export_file, streaming, settings)
        try:
            finished = subprocess.run(argv, env=triton_env(), capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise PerfError(f"perf_analyzer ran past {timeout_s:g} s") from None
        if finished.returncode != 0 or not csv_file.exists():
            tail = "\n".join((finished.stdout + finished.stderr).strip().splitlines()[-6:])
            raise PerfError(f"perf_analyzer failed (exit {finished.returncode}):\n{tail}")
        return summaries(csv_file.read_text(), json.loads(export_file.read_text()),
                         f"perf_analyzer:{model}@{grpc_url}")
