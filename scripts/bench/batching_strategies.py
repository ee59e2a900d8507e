#!/usr/bin/env python
"""Static vs. dynamic vs. continuous batching on the same engine: an arrival-rate sweep with capacity under an SLO.

- static: gpt_model_type=V1 and Triton's dynamic batcher holding requests until a full batch (preferred size =
  the slots, a long queue delay): fixed batches that run to completion;
- dynamic: V1 behind the dynamic batcher with a short queue delay: whatever waits forms the next batch;
- continuous: inflight_fused_batching: a request takes the first free slot at once.

Measured as Orca and vLLM do: one seeded workload (prompts and output lengths, log-uniform over [min, max],
generated to the full length with end_id -1) is offered at each Poisson arrival rate, from well below to past
saturation; the arrival gaps are the same unit-rate draws scaled by 1/rate, so every rate sees identical
requests in identical order. Each strategy is a fresh Triton on a repository rendered with its overrides.

At each rate: TTFT p50/p99, normalised latency (end-to-end seconds per output token, mean and p99) and the
achieved output tokens/s. A rate's offering cannot run away: arrivals stop with the workload and whatever has
not finished --drain-cap-s later is cancelled and counted as an SLO violation (its latency is infinite); the
engine is then settled (one-token probes on every slot) before the next rate.

Capacity of a strategy = the highest rate, climbing from the lowest, up to which p99 normalised latency stays
under --slo-s-per-token, fixed before the run. Its default, 0.5 s per output token, was chosen from the smoke
runs and from how static batching works: static makes a request wait up to --static-delay-ms (5 s) for a full
batch, so its floor is 5 s over the shortest output (16 tokens) = 0.31 s/token, and the smoke run's lowest
rate gave static a p99 of 0.38 s/token; below saturation continuous and dynamic gave 0.02-0.14 s/token; past
saturation queueing takes every strategy to 1 s/token and beyond, or to requests cut off (infinite). An SLO
under static's floor would give static no capacity at all by construction (and no ratio); 0.5 s/token (2
tokens/s for a request, a slow reader's pace) sits above that floor and well below the queueing regime, so
it separates "keeps up" from "queues". The JSON also gives each capacity at half and twice the SLO, to show
how much the verdict depends on it.

JSON (last line): per strategy and rate the figures above, each strategy's capacity, `continuous_over_static`
= capacity ratio (null if static sustains no rate), and `ttft_p50_ratio_at_<rate>` = static TTFT p50 over
continuous TTFT p50 at --moderate-rate. Draws normalised latency against rate (p99 and mean, one colour per
strategy) into --plot. The default run (5 rates x 14 requests, outputs 16-256 tokens, 15 s drain cap) is
bounded by the caps: 623 s in a smoke run on this machine shared with a training job, where nearly every rate
hit the cap (the worst case), less on an idle one; --rates,
--requests-per-rate, --max-len and --drain-cap-s make it bigger (the issue's workload is --max-len 512).

    .venv/bin/python scripts/bench/batching_strategies.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc.aio as grpcaio

from cpu_engine import tokenizer
from cpu_engine.client import Generation, generate, id_inputs
from model_assets.chat import format_chat
from llm_bench import MACHINE, render_llm_repository
from stack.paths import PROJECT_ROOT
from stack.triton import TritonServer

TOPICS = ["the sea", "a mountain village", "trains", "a lighthouse keeper", "bees", "the moon", "a library",
          "winter markets", "old maps", "a violin maker"]
STRATEGIES = ("static", "dynamic", "continuous")


def strategies(slots: int, static_delay_us: int, dynamic_delay_us: int) -> dict[str, dict]:
    batching = {"max_batch_size": slots, "preferred_batch_size": [slots]}
    return {
        "static": {**batching, "max_queue_delay_microseconds": static_delay_us, "parameters": {"gpt_model_type": "V1"}},
        "dynamic": {**batching, "max_queue_delay_microseconds": dynamic_delay_us,
                    "parameters": {"gpt_model_type": "V1"}},
        "continuous": {**batching, "max_queue_delay_microseconds": 0,
                       "parameters": {"gpt_model_type": "inflight_fused_batching"}},
    }


@dataclass(frozen=True)
class Job:
    """One request of the workload: its arrival gap at rate 1/s (scaled per rate), prompt ids, output length."""

    unit_gap_s: float
    ids: list[int]
    length: int


def workload(requests: int, min_len: int, max_len: int, seed: int) -> list[Job]:
    rng = np.random.default_rng(seed)
    lengths = np.exp(rng.uniform(np.log(min_len), np.log(max_len), requests)).astype(int)
    gaps = rng.exponential(1.0, requests)
    gaps[0] = 0.0
    vocabulary = tokenizer.load()
    return [Job(float(gap), tokenizer.encode(vocabulary, format_chat(
        [{"role": "user", "content": f"Write about {TOPICS[i % len(TOPICS)]}, part {i}."}])), int(length))
        for i, (gap, length) in enumerate(zip(gaps, lengths))]


def percentile(samples: list[float], q: float) -> float | None:
    """Percentile of samples that may hold inf (unfinished requests); None where it lands on one (JSON)."""
    with np.errstate(invalid="ignore"):  # inf - inf where the interpolation lands between two unfinished
        value = float(np.percentile(samples, q))
    return round(value, 4) if math.isfinite(value) else None


async def offer(url: str, jobs: list[Job], rate: float, drain_cap_s: float, slots: int) -> dict:
    """The workload at one Poisson rate; whatever is unfinished drain_cap_s after the last arrival is cancelled."""
    client = grpcaio.InferenceServerClient(url)
    started: dict[int, Generation] = {}
    start = time.perf_counter()
    offsets = np.cumsum([job.unit_gap_s / rate for job in jobs])

    async def one(index: int, job: Job) -> Generation:
        await asyncio.sleep(max(0.0, start + offsets[index] - time.perf_counter()))

        async def seen(generation: Generation) -> None:
            started[index] = generation

        return await generate(client, "tensorrt_llm", id_inputs(
            job.ids, job.length, streaming=True, end_id=-1, temperature=0.0), on_response=seen)

    tasks = [asyncio.create_task(one(i, job)) for i, job in enumerate(jobs)]
    deadline = float(offsets[-1]) + drain_cap_s
    try:
        done, pending = await asyncio.wait(tasks, timeout=deadline)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        end = time.perf_counter()
        finished = {i: t.result() for i, t in enumerate(tasks) if t in done}
        errors = [str(g.error) for g in finished.values() if g.error is not None]
        if errors:
            raise SystemExit(f"{len(errors)} requests failed at {rate}/s, first: {errors[0]}")
        settled = await settle(client, jobs[0].ids, slots)
    finally:
        await client.close()
    ttft = [finished[i].ttft_s if i in finished else math.inf for i in range(len(jobs))]
    normalised = [finished[i].latency_s / jobs[i].length if i in finished else math.inf for i in range(len(jobs))]
    tokens = sum(len(g.ids) for g in {**started, **finished}.values())
    last = max((g.end for g in finished.values() if g.end), default=end) if not pending else end
    return {"rate_per_s": rate, "requests": len(jobs), "unfinished": len(pending), "settled": settled,
            "tok_s": round(tokens / (last - start), 1),
            "ttft_p50_s": percentile(ttft, 50), "ttft_p99_s": percentile(ttft, 99),
            "norm_latency_mean_s": round(float(np.mean(normalised)), 4) if not pending else None,
            "norm_latency_p99_s": percentile(normalised, 99)}


async def settle(client: grpcaio.InferenceServerClient, ids: list[int], slots: int = 4,
                 timeout_s: float = 60.0) -> bool:
    """Wait until cancelled work has left the engine: one-token probes on every slot come back. False when they
    did not within timeout_s (the next rate then starts on a busy engine; the row says so)."""
    probes = [generate(client, "tensorrt_llm", id_inputs(ids, 1, streaming=True, end_id=-1, temperature=0.0))
              for _ in range(slots)]
    try:
        await asyncio.wait_for(asyncio.gather(*probes), timeout_s)
    except asyncio.TimeoutError:
        return False
    return True


def capacity(rows: list[dict], slo_s: float) -> float:
    """Highest rate, climbing from the lowest, whose p99 normalised latency is within the SLO (0: none)."""
    best = 0.0
    for row in sorted(rows, key=lambda r: r["rate_per_s"]):
        p99 = row["norm_latency_p99_s"]
        if p99 is None or p99 > slo_s:
            break
        best = row["rate_per_s"]
    return best


def sweep_strategy(name: str, overrides: dict, jobs: list[Job], rates: list[float], drain_cap_s: float,
                   slots: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        repository = render_llm_repository(Path(tmp) / "repository", {"tensorrt_llm": overrides},
                                           models=("tensorrt_llm",))
        with TritonServer(repository, log_path=Path(tmp) / "triton.log") as server:
            asyncio.run(_warm(server.grpc_url, jobs[0].ids, slots))
            for rate in rates:
                row = asyncio.run(offer(server.grpc_url, jobs, rate, drain_cap_s, slots))
                rows.append(row)
                print(f"{name:10s} {json.dumps(row)}", flush=True)
    return rows


async def _warm(url: str, ids: list[int], slots: int) -> None:
    client = grpcaio.InferenceServerClient(url)
    try:
        await settle(client, ids, slots)
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.3, 0.6, 1.0, 1.5, 2.2],
                        help="Poisson arrival rates (requests/s), from well below to past saturation")
    parser.add_argument("--requests-per-rate", type=int, default=14)
    parser.add_argument("--min-len", type=int, default=16)
    parser.add_argument("--max-len", type=int, default=256)
    parser.add_argument("--slo-s-per-token", type=float, default=0.5,
                        help="p99 normalised latency (s per output token) a rate must keep to count as sustained")
    parser.add_argument("--moderate-rate", type=float, default=None,
                        help="rate for ttft_p50_ratio_at_<rate> (default: the second lowest)")
    parser.add_argument("--drain-cap-s", type=float, default=15.0,
                        help="after the last arrival, unfinished requests are cancelled and count as violations")
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--static-delay-ms", type=int, default=5000)
    parser.add_argument("--dynamic-delay-ms", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--plot", type=Path, default=PROJECT_ROOT / "docs" / "img" / "batching-strategies.png")
    args = parser.parse_args()
    rates = sorted(args.rates)
    moderate = args.moderate_rate if args.moderate_rate is not None else rates[min(1, len(rates) - 1)]
    if moderate not in rates:
        parser.error(f"--moderate-rate {moderate} is not one of --rates")
    jobs = workload(args.requests_per_rate, args.min_len, args.max_len, args.seed)
    began = time.perf_counter()
    measured: dict[str, list[dict]] = {}
    for name, overrides in strategies(args.slots, args.static_delay_ms * 1000, args.dynamic_delay_ms * 1000).items():
        if name in args.strategies:
            measured[name] = sweep_strategy(name, overrides, jobs, rates, args.drain_cap_s, args.slots)
    capacities = {name: capacity(rows, args.slo_s_per_token) for name, rows in measured.items()}
    from clients.plots import rate_latency_plot

    rate_latency_plot(measured, args.slo_s_per_token, args.plot,
                      f"batching strategies, {args.requests_per_rate} requests/rate, output {args.min_len}-"
                      f"{args.max_len} tokens, {args.slots} slots ({MACHINE})")
    result: dict = {"bench": "batching_strategies", "machine": MACHINE, "rates_per_s": rates,
                    "requests_per_rate": args.requests_per_rate, "output_len_range": [args.min_len, args.max_len],
                    "slots": args.slots, "slo_s_per_token": args.slo_s_per_token, "drain_cap_s": args.drain_cap_s,
                    "capacity_per_s": capacities,
                    "capacity_per_s_by_slo": {f"{slo:g}": {name: capacity(rows, slo) for name, rows in measured.items()}
                                              for slo in (args.slo_s_per_token / 2, args.slo_s_per_token * 2)}}
    if "static" in capacities and "continuous" in capacities:
        result["continuous_over_static"] = (round(capacities["continuous"] / capacities["static"], 2)
                                            if capacities["static"] else None)
        at = {name: next(r for r in measured[name] if r["rate_per_s"] == moderate) for name in ("static", "continuous")}
        static_ttft, continuous_ttft = at["static"]["ttft_p50_s"], at["continuous"]["ttft_p50_s"]
        result[f"ttft_p50_ratio_at_{moderate:g}"] = (round(static_ttft / continuous_ttft, 2)
                                                     if static_ttft and continuous_ttft else None)
    result["per_rate"] = measured
    plot = args.plot.resolve()
    result["plot"] = str(plot.relative_to(PROJECT_ROOT) if plot.is_relative_to(PROJECT_ROOT) else plot)
    result["wall_s"] = round(time.perf_counter() - began)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
