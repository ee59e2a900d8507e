"""Client pieces without servers: workload mix, load loops, summaries, sweep grid and verdict, perf CSV,
profile writing, and the orchestrator HTTP target against a fake transport."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import tomllib
from pathlib import Path

import httpx
import pytest

from clients.load import Plan, run_load
from clients.perf import summaries
from clients.profile_writer import check_writable, write_batcher
from clients.report import Outcome, Summary
from clients.sweep import BatcherConfig, Point, choose, grid, result, unbatched
from clients.targets import OrchestratorHttpTarget, input_spec
from clients.workload import SHARED_PREFIX, FileWorkload, GeneratedWorkload, WorkItem, parse_mix
from stack import paths
from stack.render import render_profile


# --- workload ---------------------------------------------------------------------------------------------
def test_mix_is_normalised_and_checked() -> None:
    assert parse_mix("exact=1,fresh=3") == {"exact": 0.25, "fresh": 0.75}
    for bad, word in (("nope=1", "unknown kind"), ("fresh=x", "needs a number"), ("fresh=0", "zero"),
                      ("fresh=-1", "negative")):
        with pytest.raises(ValueError, match=word):
            parse_mix(bad)


def test_generator_kinds_and_seed() -> None:
    workload = GeneratedWorkload(parse_mix("exact=1,paraphrase=1,fresh=1,shared_prefix=1"), seed=3)
    items = [next(workload) for _ in range(400)]
    fresh = [i.prompt for i in items if i.kind == "fresh"]
    assert len(set(fresh)) == len(fresh), "fresh prompts never repeat"
    assert all(i.prompt in fresh for i in items if i.kind == "exact"), "exact repeats a prompt sent before"
    assert all(i.prompt not in fresh for i in items if i.kind == "paraphrase")
    shared = [i for i in items if i.kind == "shared_prefix"]
    assert shared and all(i.system == SHARED_PREFIX and i.text().startswith(SHARED_PREFIX) for i in shared)
    assert shared[0].messages()[0] == {"role": "system", "content": SHARED_PREFIX}
    again = GeneratedWorkload(parse_mix("exact=1,paraphrase=1,fresh=1,shared_prefix=1"), seed=3)
    assert [next(again) for _ in range(400)] == items


def test_file_workload(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "hi", "kind": "exact"}\n\nplain line\n')
    workload = FileWorkload(path)
    assert [next(workload) for _ in range(3)] == [WorkItem("hi", "exact"), WorkItem("plain line", "file"),
                                                  WorkItem("hi", "exact")]
    path.write_text('{"prompt": ""}\n')
    with pytest.raises(ValueError, match=r"prompts.jsonl:1: field 'prompt'"):
        FileWorkload(path)


# --- load loops -------------------------------------------------------------------------------------------
class SlowTarget:
    """Answers after a fixed delay and remembers how many requests were in flight at once."""

    name = "fake"

    def __init__(self, delay_s: float = 0.01) -> None:
        self.delay_s, self.in_flight, self.most_in_flight, self.sent = delay_s, 0, 0, 0

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, item: WorkItem) -> Outcome:
        self.sent += 1
        number = self.sent
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        start = time.perf_counter()
        await asyncio.sleep(self.delay_s)
        self.in_flight -= 1
        error = "queue_full" if number % 10 == 0 else None
        return Outcome(time.perf_counter() - start, item.kind, error=error, cache="miss" if error is None else None)


async def test_closed_loop_holds_concurrency_and_counts_exactly() -> None:
    target = SlowTarget()
    summary = await run_load(target, iter(GeneratedWorkload({"fresh": 1.0})), Plan(concurrency=4, requests=50))
    report = summary.to_dict()
    assert target.most_in_flight == 4 and target.sent == 50
    assert report["requests"] == 50 and report["ok"] == 45 and report["errors"] == {"queue_full": 5}
    assert report["hit_rate"] == {"miss": 1.0} and report["mode"] == "closed concurrency=4"


async def test_open_loop_follows_the_rate_not_the_responses() -> None:
    target = SlowTarget(delay_s=0.2)
    summary = await run_load(target, iter(GeneratedWorkload({"fresh": 1.0})), Plan(rate=200, duration_s=0.5))
    assert 50 <= len(summary.outcomes) <= 160
    assert target.most_in_flight > 10, "arrivals do not wait for responses"
    assert all(o.latency_s >= 0.2 for o in summary.outcomes)


async def test_open_loop_drops_arrivals_beyond_its_in_flight_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("clients.load.MAX_OPEN_IN_FLIGHT", 3)
    summary = await run_load(SlowTarget(delay_s=0.3), iter(GeneratedWorkload({"fresh": 1.0})),
                             Plan(rate=100, duration_s=None, requests=20))
    report = summary.to_dict()
    assert report["requests"] == 20 and report["errors"]["client_overload"] >= 10


def test_plan_is_checked() -> None:
    for kwargs in ({}, {"concurrency": 1, "rate": 1.0}, {"concurrency": 0}, {"rate": -1.0},
                   {"concurrency": 1, "duration_s": None}):
        with pytest.raises(ValueError):
            Plan(**kwargs)


def test_summary_percentiles_and_ttft() -> None:
    outcomes = [Outcome(i / 1000, ttft_s=i / 2000) for i in range(1, 101)] + [Outcome(5.0, error="timeout")]
    report = Summary("t", "m", 2.0, outcomes).to_dict()
    assert report["throughput_rps"] == 50.0
    assert report["latency_ms"]["p50"] == pytest.approx(50.5) and report["latency_ms"]["p99"] == pytest.approx(99.01)
    assert report["ttft_ms"]["p50"] == pytest.approx(25.25) and report["errors"] == {"timeout": 1}


# --- sweep grid and verdict -------------------------------------------------------------------------------
def test_grid_drops_oversized_preferred_sizes_and_duplicates() -> None:
    candidates = grid([0, 1000], [[], [8, 16, 32]], [8, 32], [1])
    assert candidates[0] == unbatched(1)
    assert BatcherConfig(8, (8,), 0, 1) in candidates and BatcherConfig(32, (8, 16, 32), 1000, 1) in candidates
    assert len(candidates) == len(set(candidates)) == 1 + 2 * 2 * 2
    with pytest.raises(ValueError, match="instance count"):
        grid([0], [[]], [8], [0])
    assert grid([0], [[]], [8], [1, 2])[:2] == [unbatched(1), unbatched(2)]


def test_apply_keeps_everything_else() -> None:
    config = {"name": "embedding", "max_batch_size": 32, "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
              "dynamic_batching": {"default_queue_policy": {"max_queue_size": "256"}}}
    updated = BatcherConfig(16, (4, 16), 500, 2).apply(config)
    assert updated["dynamic_batching"] == {"default_queue_policy": {"max_queue_size": "256"},
                                           "preferred_batch_size": [4, 16], "max_queue_delay_microseconds": 500}
    assert updated["instance_group"] == [{"count": 2, "kind": "KIND_CPU"}] and updated["max_batch_size"] == 16
    assert config["max_batch_size"] == 32, "the original is untouched"


def point(config: BatcherConfig, concurrency: int, rps: float, p99: float) -> Point:
    return Point(config, concurrency, {"throughput_rps": rps, "latency_ms": {"p50": p99 / 2, "p99": p99},
                                       "errors": {}, "server": {"mean_batch_size": 1.0}})


def test_best_is_fastest_within_budget_against_unbatched() -> None:
    fast_slow = BatcherConfig(32, (), 8000, 1)
    fast_ok = BatcherConfig(16, (), 1000, 1)
    points = [point(unbatched(1), 32, 100.0, 400.0), point(fast_slow, 32, 300.0, 900.0),
              point(fast_ok, 32, 250.0, 150.0), point(fast_ok, 8, 400.0, 50.0)]
    best, baseline = choose(points, 32, 200.0)
    assert best.config == fast_ok and baseline.config.unbatched
    verdict = result("embedding", points, 32, 200.0)
    assert verdict["best_rps"] == 250.0 and verdict["unbatched_rps"] == 100.0 and verdict["batching_gain"] == 2.5
    assert result("embedding", points, 32, 10.0)["best_config"] is None
    # Paired re-measurements replace the sweep's numbers in the verdict (medians), not in the choice.
    again = [Point(unbatched(1), 32, points[0].summary | {"throughput_rps": rps}, "confirm") for rps in (90, 80, 85)]
    again += [Point(fast_ok, 32, points[2].summary | {"throughput_rps": rps}, "confirm") for rps in (200, 230, 210)]
    confirmed = result("embedding", points + again, 32, 200.0)
    assert confirmed["best_config"] == verdict["best_config"]
    assert (confirmed["best_rps"], confirmed["unbatched_rps"], confirmed["batching_gain"]) == (210, 85, 2.47)
    # Against the model's own batch-cost ceiling: the share of what the hardware allows.
    assert result("embedding", points, 32, 200.0, {"ceiling": 5.0})["gain_over_ceiling"] == 0.5
    assert verdict["gain_over_ceiling"] is None


def test_the_batch_cost_ceiling_is_per_item_cost_at_one_over_at_the_largest_batch() -> None:
    from clients.ceiling import per_item_ms

    costs = per_item_ms(lambda batch: time.sleep(0.002 + 0.0005 * len(batch)),
                        GeneratedWorkload(parse_mix("fresh=1"), seed=1), (1, 8), rounds=3)
    assert costs[1] > 2 * costs[8]  # a fixed cost per call is what batching amortises


# --- perf CSV ---------------------------------------------------------------------------------------------
PERF_CSV = """Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,Avg latency,request/response,response wait
8,45.3982,3,1301,89030,75,83132,1152,1,109581,608033,615990,656324,174696,4,174671
2,89.9,3,435,5751,60,15400,161,1,17998,20586,21000,23627,21818,4,21800
"""


def test_perf_csv_becomes_load_summaries() -> None:
    export = {"experiments": [
        {"experiment": {"mode": "concurrency", "value": 2}, "window_boundaries": [0, 2_000_000_000],
         "requests": [{"timestamp": 0, "response_timestamps": [5_000_000, 9_000_000]}] * 3},
        {"experiment": {"mode": "concurrency", "value": 8}, "window_boundaries": [0, 1_000_000_000],
         "requests": [{"timestamp": 0, "response_timestamps": [7_000_000]}] * 4},
    ]}
    low, high = summaries(PERF_CSV, export, "perf_analyzer:embedding@x")
    assert (low["mode"], high["mode"]) == ("perf_analyzer concurrency=2", "perf_analyzer concurrency=8")
    assert high["throughput_rps"] == 45.3982 and high["requests"] == 4 and high["duration_s"] == 1.0
    assert high["latency_ms"] == {"p50": 109.581, "p90": 608.033, "p99": 656.324, "mean": 174.696}
    assert high["server"] == {"queue_ms": 89.03, "compute_ms": 84.359, "network_ms": 1.301}
    assert high["ttft_ms"] is None and low["ttft_ms"]["p50"] == 5.0, "TTFT only where responses streamed"


# --- input spec -------------------------------------------------------------------------------------------
def test_input_spec_fills_upstream_inputs() -> None:
    ensemble = {"name": "ensemble", "input": [
        {"name": "text_input", "data_type": "TYPE_STRING", "dims": ["1"]},
        {"name": "max_tokens", "data_type": "TYPE_INT32", "dims": ["1"]},
        {"name": "stream", "data_type": "TYPE_BOOL", "dims": ["1"], "optional": True},
        {"name": "temperature", "data_type": "TYPE_FP32", "dims": ["1"], "optional": True},
    ]}
    specs = {s.name: s for s in input_spec(ensemble, 16)}
    assert set(specs) == {"text_input", "max_tokens", "stream"}
    assert specs["text_input"].array("hi").tolist() == [b"hi"]
    assert specs["max_tokens"].array("hi").tolist() == [16] and specs["stream"].array("").tolist() == [True]
    with pytest.raises(ValueError, match="requires input 'end_id'"):
        input_spec({"name": "m", "input": ensemble["input"] + [
            {"name": "end_id", "data_type": "TYPE_INT32", "dims": ["1"]}]}, 16)


# --- profile writing --------------------------------------------------------------------------------------
def test_write_batcher_edits_only_the_swept_keys(tmp_path: Path) -> None:
    profile = tmp_path / "cpu.toml"
    shutil.copy(paths.PROFILES_DIR / "cpu.toml", profile)
    before = profile.read_text()
    write_batcher(str(profile), "embedding", BatcherConfig(16, (8, 16), 750, 3))
    after = profile.read_text()
    data = tomllib.loads(after)["models"]["embedding"]
    assert (data["max_batch_size"], data["preferred_batch_size"], data["max_queue_delay_microseconds"],
            data["instance_count"]) == (16, [8, 16], 750, 3)
    changed = [line for line in after.splitlines() if line not in before.splitlines()]
    assert len(changed) == 4 and all(line.split(" = ")[0] in {"max_batch_size", "preferred_batch_size",
                                     "max_queue_delay_microseconds", "instance_count"} for line in changed)
    render_profile(profile)
    with pytest.raises(ValueError, match=r"no \[models.nope\]"):
        write_batcher(str(profile), "nope", BatcherConfig(16, (), 0, 1))
    # A model whose template exposes no batcher placeholders is refused before any sweep runs.
    bare = tmp_path / "bare.toml"
    bare.write_text('[models.preprocessing]\ntriton_backend = "python"\nmax_batch_size = 4\ninstance_count = 1\n')
    with pytest.raises(ValueError, match="has no key 'preferred_batch_size'"):
        check_writable(str(bare), "preprocessing")


# --- orchestrator HTTP target -----------------------------------------------------------------------------
def sse(*chunks: dict) -> bytes:
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"


def chunk(content: str | None, finish: str | None = None) -> dict:
    return {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "ensemble",
            "choices": [{"index": 0, "delta": {"content": content} if content else {}, "finish_reason": finish}]}


async def http_outcome(handler) -> Outcome:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    target = OrchestratorHttpTarget("http://orchestrator", "ensemble", http_client=client)
    try:
        return await target.send(WorkItem("What is the capital of France?"))
    finally:
        await target.close()


async def test_http_target_reads_layer_and_ttft() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert body["stream"] is True and body["messages"][-1]["content"] == "What is the capital of France?"
        return httpx.Response(200, headers={"content-type": "text/event-stream", "x-cache": "semantic"},
                              content=sse(chunk("Paris"), chunk(".", "stop")))

    outcome = await http_outcome(handler)
    assert outcome.cache == "semantic" and outcome.error is None and outcome.ttft_s is not None


async def test_http_target_errors_by_kind() -> None:
    assert (await http_outcome(lambda r: httpx.Response(503, json={"error": {"message": "busy"}}))).error == "http_503"
    cut = await http_outcome(lambda r: httpx.Response(200, headers={"content-type": "text/event-stream"},
                                                      content=sse(chunk("Par"))))
    assert cut.error == "stream_broken"
