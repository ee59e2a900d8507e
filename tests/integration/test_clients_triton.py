"""The client CLI against the real Triton: `load`, `sweep` and `perf` report what Triton's own statistics say."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import pytest
import tritonclient.http as httpclient
from typer.testing import CliRunner

from clients.cli import app
from stack import paths
from stack.render import render_profile
from stack.triton import TritonServer
from stack.triton_stats import model_stats, stats_after

pytestmark = pytest.mark.integration
runner = CliRunner()


def invoke(*args: str) -> dict:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def batcher_fields(config: dict) -> tuple:
    batcher = config.get("dynamic_batching", {})
    return (config["max_batch_size"], batcher.get("preferred_batch_size"), batcher.get("max_queue_delay_microseconds"),
            [g["count"] for g in config["instance_group"]])


@pytest.fixture
def control(triton: TritonServer) -> httpclient.InferenceServerClient:
    client = httpclient.InferenceServerClient(triton.http_url)
    yield client
    client.close()


def test_load_closed_loop_batches_match_triton(triton: TritonServer, control) -> None:
    before = model_stats(control, "embedding")
    result = invoke("load", "--url", triton.grpc_url, "--stats-url", triton.http_url, "--model", "embedding",
                    "--concurrency", "8", "--requests", "120", "--mix", "fresh=0.5,exact=0.3,paraphrase=0.2",
                    "--json")
    mine = stats_after(control, "embedding", before, 120)
    assert result["requests"] == result["ok"] == 120 and result["errors"] == {}
    assert sum(result["by_kind"].values()) == 120
    # The load's own view of the server equals Triton's statistics over the same interval ...
    assert result["server"]["batches"] == {str(s): n for s, n in mine.batches.items()}
    # ... and every request ran in exactly one batch.
    assert sum(int(s) * n for s, n in result["server"]["batches"].items()) == mine.inference_count == 120
    assert result["server"]["executions"] < 120, "8 concurrent clients should have been batched"
    latency = result["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"]
    assert result["throughput_rps"] > 0 and result["ttft_ms"] is None


def test_load_open_loop(triton: TritonServer, control) -> None:
    before = model_stats(control, "embedding")
    result = invoke("load", "--url", triton.grpc_url, "--model", "embedding", "--rate", "40", "--duration", "1.5",
                    "--json")
    mine = stats_after(control, "embedding", before, result["ok"])
    assert result["mode"] == "open rate=40/s" and result["errors"] == {}
    assert 20 <= result["requests"] <= 110, "a Poisson process at 40/s for 1.5 s"
    assert mine.inference_count == result["ok"]


def test_load_names_an_unknown_model(triton: TritonServer) -> None:
    result = runner.invoke(app, ["load", "--url", triton.grpc_url, "--model", "no_such_model", "--requests", "1"])
    assert result.exit_code == 2 and "no_such_model" in result.output


def test_sweep_small_grid(triton: TritonServer, control, tmp_path: Path) -> None:
    original = control.get_model_config("embedding")
    profile = tmp_path / "cpu.toml"
    shutil.copy(paths.PROFILES_DIR / "cpu.toml", profile)
    plot = tmp_path / "sweep.png"
    result = invoke("sweep", "--http-url", triton.http_url, "--grpc-url", triton.grpc_url, "--model", "embedding",
                    "--delay-us", "3000", "--preferred", "-", "--max-batch", "8", "--instances", "1",
                    "--concurrency", "1,8", "--duration", "1", "--warmup", "0.3", "--p99-ms", "60000",
                    "--confirm", "1", "--plot", str(plot), "--write", str(profile), "--json")
    points = [p for p in result["points"] if p["phase"] == "sweep"]
    confirm = [p for p in result["points"] if p["phase"] == "confirm"]
    assert [(p["config"]["max_batch_size"], p["concurrency"]) for p in points] == [(1, 1), (1, 8), (8, 1), (8, 8)]
    for point in points:
        batches = {int(s): n for s, n in point["server"]["batches"].items()}
        # Triton ran exactly the requests the client counted, each once, never above max_batch_size.
        assert sum(s * n for s, n in batches.items()) == point["ok"] == point["server"]["inferences"]
        assert max(batches) <= point["config"]["max_batch_size"]
    unbatched_8, batched_8 = points[1], points[3]
    assert unbatched_8["server"]["batches"] == {"1": unbatched_8["ok"]}
    assert batched_8["server"]["mean_batch_size"] > 1.5

    assert result["best_config"] == points[3]["config"] and result["unbatched_config"] == points[1]["config"]
    # One confirmation round re-measures the baseline, then the best, at concurrency 8; the verdict uses those.
    assert [(p["config"], p["concurrency"]) for p in confirm] == [(points[1]["config"], 8), (points[3]["config"], 8)]
    assert result["unbatched_rps"] == confirm[0]["throughput_rps"] and result["best_rps"] == confirm[1]["throughput_rps"]
    assert result["batching_gain"] == round(result["best_rps"] / result["unbatched_rps"], 2)
    assert result["confirmed"]["best_rps"] == [confirm[1]["throughput_rps"]]
    # Where the time goes: Triton's own figures (queue, compute) for the chosen point and the baseline.
    assert result["where_time_goes"] == {"best": points[3]["server"], "unbatched": points[1]["server"]}

    # The original configuration is back.
    assert batcher_fields(control.get_model_config("embedding")) == batcher_fields(original)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    # --write changed only the swept keys; comments survive; the profile still renders.
    written = tomllib.loads(profile.read_text())["models"]["embedding"]
    assert (written["max_batch_size"], written["preferred_batch_size"], written["max_queue_delay_microseconds"],
            written["instance_count"]) == (8, [], 3000, 1)
    assert "# Queue bound" in profile.read_text()
    assert {m.name for m in render_profile(profile)} >= {"embedding"}


def test_sweep_driven_by_perf_analyzer(triton: TritonServer, control) -> None:
    original = control.get_model_config("embedding")
    result = invoke("sweep", "--http-url", triton.http_url, "--grpc-url", triton.grpc_url, "--model", "embedding",
                    "--driver", "perf_analyzer", "--perf-window-requests", "30", "--delay-us", "3000",
                    "--preferred", "-", "--max-batch", "8", "--instances", "1", "--concurrency", "8",
                    "--p99-ms", "60000", "--json")
    unbatched, batched = result["points"]
    for point in result["points"]:
        server = point["server"]
        batches = {int(s): n for s, n in server["batches"].items()}
        # Triton saw at least what perf_analyzer measured (it also sends unmeasured warm-up windows).
        assert sum(s * n for s, n in batches.items()) == server["inferences"] >= point["requests"] > 0
        assert max(batches) <= point["config"]["max_batch_size"] and "perf_queue_ms" in server
    assert set(unbatched["server"]["batches"]) == {"1"} and batched["server"]["mean_batch_size"] > 1.5
    assert result["batching_gain"] == round(batched["throughput_rps"] / unbatched["throughput_rps"], 2)
    assert batcher_fields(control.get_model_config("embedding")) == batcher_fields(original)


def test_sweep_rejects_a_bad_grid_before_touching_triton(triton: TritonServer, control) -> None:
    original = control.get_model_config("embedding")
    result = runner.invoke(app, ["sweep", "--http-url", triton.http_url, "--grpc-url", triton.grpc_url,
                                 "--delay-us", "0", "--preferred", "-", "--max-batch", "8", "--instances", "0",
                                 "--concurrency", "1"])
    assert result.exit_code == 2 and "instance count" in result.output
    assert batcher_fields(control.get_model_config("embedding")) == batcher_fields(original)


def test_perf(triton: TritonServer, control) -> None:
    before = model_stats(control, "embedding")
    result = invoke("perf", "--url", triton.grpc_url, "--model", "embedding", "--concurrency-range", "4",
                    "--window-requests", "40", "--json")
    (summary,) = result["results"]
    mine = model_stats(control, "embedding").minus(before)
    assert summary["mode"] == "perf_analyzer concurrency=4" and summary["requests"] >= 40 * 3
    # perf_analyzer reports its last windows; Triton saw those requests and the warm-up windows before them.
    assert mine.inference_count >= summary["requests"]
    latency = summary["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"]
    server = summary["server"]
    # The server's share (averaged by perf_analyzer from Triton's statistics over its windows, whose edges
    # need not match the client's) stays within what the client saw.
    assert 0 < server["queue_ms"] + server["compute_ms"] <= latency["p99"]
    # Triton's own per-request compute time over the whole run is in the same range as perf's windows.
    triton_compute_ms = (mine.compute_input_ns + mine.compute_infer_ns + mine.compute_output_ns) / mine.request_count / 1e6
    assert server["compute_ms"] / 3 <= triton_compute_ms <= server["compute_ms"] * 3


def test_load_streams_from_the_llm_ensemble(triton: TritonServer, control) -> None:
    before = model_stats(control, "ensemble")
    result = invoke("load", "--url", triton.grpc_url, "--stats-url", triton.http_url, "--model", "ensemble",
                    "--concurrency", "2", "--requests", "4", "--max-tokens", "4", "--json")
    assert result["ok"] == 4 and result["errors"] == {}
    assert result["ttft_ms"] is not None and result["ttft_ms"]["p50"] <= result["latency_ms"]["p50"]
    assert result["server"]["requests"] == stats_after(control, "ensemble", before, 4).request_count == 4
