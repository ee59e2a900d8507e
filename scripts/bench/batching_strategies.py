#!/usr/bin/env python
"""Static vs. dynamic vs. continuous batching on the same engine, same workload, one run.

- static: gpt_model_type=V1 and Triton's dynamic batcher holding requests until a full batch (preferred size =
  the slots, a long queue delay): fixed batches that run to completion;
- dynamic: V1 behind the dynamic batcher with a short queue delay: whatever waits forms the next batch;
- continuous: inflight_fused_batching: a request takes the first free slot at once.

The workload is mixed (output lengths spread over [min, max], log-uniform, generated to the full length with
end_id -1) with Poisson arrivals at a rate that keeps the engine busy. Each strategy is a fresh Triton on a
repository rendered with its overrides. Also prints the workload's ideal gain: what continuous would win over
static if a decode step cost the same at any batch size (computed from the lengths, arrival order, slots).
Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc.aio as grpcaio

from cpu_engine import tokenizer
from cpu_engine.client import generate, id_inputs
from model_assets.chat import format_chat
from llm_bench import MACHINE, percentile_ms, render_llm_repository
from stack.triton import TritonServer

TOPICS = ["the sea", "a mountain village", "trains", "a lighthouse keeper", "bees", "the moon", "a library",
          "winter markets", "old maps", "a violin maker"]


def strategies(slots: int, static_delay_us: int, dynamic_delay_us: int) -> dict[str, dict]:
    batching = {"max_batch_size": slots, "preferred_batch_size": [slots]}
    return {
        "static": {**batching, "max_queue_delay_microseconds": static_delay_us, "parameters": {"gpt_model_type": "V1"}},
        "dynamic": {**batching, "max_queue_delay_microseconds": dynamic_delay_us,
                    "parameters": {"gpt_model_type": "V1"}},
        "continuous": {**batching, "max_queue_delay_microseconds": 0,
                       "parameters": {"gpt_model_type": "inflight_fused_batching"}},
    }


def workload(requests: int, min_len: int, max_len: int, rate: float, seed: int) -> list[tuple[float, list[int], int]]:
    """(arrival offset s, prompt ids, output length) per request."""
    rng = np.random.default_rng(seed)
    lengths = np.exp(rng.uniform(np.log(min_len), np.log(max_len), requests)).astype(int)
    arrivals = np.cumsum(rng.exponential(1 / rate, requests))
    arrivals -= arrivals[0]
    vocabulary = tokenizer.load()
    return [(max(0.0, float(t)), tokenizer.encode(vocabulary, format_chat(
        [{"role": "user", "content": f"Write about {TOPICS[i % len(TOPICS)]}, part {i}."}])), int(n))
        for i, (t, n) in enumerate(zip(arrivals, lengths))]


def ideal_gain(lengths: list[int], slots: int) -> float:
    """Decode steps of fixed batches (arrival order) over steps with a slot refilled as soon as it frees."""
    static_steps = sum(max(lengths[i:i + slots]) for i in range(0, len(lengths), slots))
    free_at = [0] * slots
    for length in lengths:
        slot = min(range(slots), key=free_at.__getitem__)
        free_at[slot] += length
    return static_steps / max(free_at)


async def drive(url: str, jobs) -> dict:
    client = grpcaio.InferenceServerClient(url)
    start = time.perf_counter()

    async def one(offset: float, ids: list[int], length: int):
        await asyncio.sleep(max(0.0, start + offset - time.perf_counter()))
        return await generate(client, "tensorrt_llm", id_inputs(ids, length, streaming=True, end_id=-1,
                                                                 temperature=0.0))

    try:
        results = await asyncio.gather(*(one(*job) for job in jobs))
    finally:
        await client.close()
    errors = [str(r.error) for r in results if r.error is not None]
    if errors:
        raise SystemExit(f"{len(errors)} requests failed, first: {errors[0]}")
    tokens = sum(len(r.ids) for r in results)
    makespan = max(r.end for r in results) - start
    return {"tok_s": round(tokens / makespan, 1), "tokens": tokens, "makespan_s": round(makespan, 1),
            "p50_ms": percentile_ms([r.latency_s for r in results], 50),
            "p99_ms": percentile_ms([r.latency_s for r in results], 99),
            "ttft_p50_ms": percentile_ms([r.ttft_s for r in results], 50)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--min-len", type=int, default=16)
    parser.add_argument("--max-len", type=int, default=512)
    parser.add_argument("--rate", type=float, default=0.8, help="Poisson arrivals per second")
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--static-delay-ms", type=int, default=5000)
    parser.add_argument("--dynamic-delay-ms", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--strategies", nargs="+", default=["static", "dynamic", "continuous"],
                        choices=["static", "dynamic", "continuous"])
    args = parser.parse_args()
    jobs = workload(args.requests, args.min_len, args.max_len, args.rate, args.seed)
    measured = {}
    for name, overrides in strategies(args.slots, args.static_delay_ms * 1000, args.dynamic_delay_ms * 1000).items():
        if name not in args.strategies:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            repository = render_llm_repository(Path(tmp) / "repository", {"tensorrt_llm": overrides},
                                               models=("tensorrt_llm",))
            with TritonServer(repository, log_path=Path(tmp) / "triton.log") as server:
                measured[name] = asyncio.run(drive(server.grpc_url, jobs))
        print(f"{name:10s} {json.dumps(measured[name])}", flush=True)
    gain = ideal_gain([length for _, _, length in jobs], args.slots)
    if len(measured) < 3:
        return
    print(json.dumps({
        "bench": "batching_strategies", "machine": MACHINE, "requests": args.requests, "rate_per_s": args.rate,
        "output_len_range": [args.min_len, args.max_len], "slots": args.slots,
        "static_tok_s": measured["static"]["tok_s"], "dynamic_tok_s": measured["dynamic"]["tok_s"],
        "continuous_tok_s": measured["continuous"]["tok_s"],
        "continuous_over_static": round(measured["continuous"]["tok_s"] / measured["static"]["tok_s"], 2),
        "ideal_continuous_over_static": round(gain, 2),
        "static_p99_ms": measured["static"]["p99_ms"], "dynamic_p99_ms": measured["dynamic"]["p99_ms"],
        "continuous_p99_ms": measured["continuous"]["p99_ms"],
        "static_ttft_p50_ms": measured["static"]["ttft_p50_ms"],
        "continuous_ttft_p50_ms": measured["continuous"]["ttft_p50_ms"],
    }))


if __name__ == "__main__":
    main()
