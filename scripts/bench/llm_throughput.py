#!/usr/bin/env python
"""Aggregate decode throughput at 1, 4 and 16 concurrent streams, through Triton and in-process.

Through Triton: streaming requests to `tensorrt_llm` (token ids in, token ids out) over gRPC. In-process: the
same engine (cpu_engine.LlamaEngine with the same rendered config and admission policy) called from threads in
this process, after the server is stopped. Every request generates exactly --tokens tokens (end_id -1). The
difference is Triton's overhead (gRPC, the Python backend's IPC, one response per token group).
Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import queue
import time
from pathlib import Path

import tritonclient.grpc.aio as grpcaio
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from cpu_engine import tokenizer
from cpu_engine.admission import InflightAdmission
from cpu_engine.client import generate, id_inputs
from cpu_engine.config import EngineConfig
from cpu_engine.engine import LlamaEngine
from cpu_engine.requests import GenerationRequest, Sampling
from model_assets.chat import format_chat
from llm_bench import MACHINE, median_ms, render_llm_repository
from model_assets import llm


def prompts(count: int) -> list[list[int]]:
    vocabulary = tokenizer.load()
    return [tokenizer.encode(vocabulary, format_chat([{"role": "user", "content": f"Story number {i}: begin."}]))
            for i in range(count)]


async def through_triton(url: str, concurrency: int, tokens: int) -> dict:
    client = grpcaio.InferenceServerClient(url)
    start = time.perf_counter()
    try:
        results = await asyncio.gather(*(generate(client, "tensorrt_llm", id_inputs(
            ids, tokens, streaming=True, end_id=-1, temperature=0.0)) for ids in prompts(concurrency)))
    finally:
        await client.close()
    wall = time.perf_counter() - start
    if any(r.error for r in results):
        raise SystemExit(f"request failed: {next(r.error for r in results if r.error)}")
    return {"tok_s": round(sum(len(r.ids) for r in results) / wall, 1),
            "ttft_p50_ms": median_ms([r.ttft_s for r in results])}


def in_process(engine: LlamaEngine, config: EngineConfig, concurrency: int, tokens: int) -> dict:
    finished: queue.Queue[tuple[int, float]] = queue.Queue()
    start = time.perf_counter()

    def run(ids: list[int]) -> None:
        first: list[float] = []

        def on_progress(progress):
            if not first:
                first.append(time.perf_counter())

        request = GenerationRequest(input_ids=ids, max_new_tokens=tokens, streaming=True, end_id=-1,
                                    sampling=Sampling(temperature=0.0))
        outcome = engine.generate(request, on_progress, lambda: False, time.time_ns())
        finished.put((len(outcome.output_ids), first[0] - start))

    admission = InflightAdmission(config.slots, 0, run)
    for ids in prompts(concurrency):
        admission.submit(ids)
    results = [finished.get() for _ in range(concurrency)]
    wall = time.perf_counter() - start
    admission.close()
    return {"tok_s": round(sum(n for n, _ in results) / wall, 1), "ttft_p50_ms": median_ms([t for _, t in results])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    from stack.triton import TritonServer

    triton, direct = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        repository = render_llm_repository(Path(tmp) / "repository", models=("tensorrt_llm",))
        with TritonServer(repository, log_path=Path(tmp) / "triton.log") as server:
            for concurrency in args.concurrency:
                triton[concurrency] = asyncio.run(through_triton(server.grpc_url, concurrency, args.tokens))
                print(f"triton     {concurrency:3d} streams {triton[concurrency]}", flush=True)
        parsed = text_format.Parse((repository / "tensorrt_llm" / "config.pbtxt").read_text(),
                                   model_config_pb2.ModelConfig())
        config = EngineConfig.from_model_config(json_format.MessageToDict(parsed, preserving_proto_field_name=True),
                                                default_model_path=str(llm.gguf_path()))
    vocabulary = tokenizer.load()
    engine = LlamaEngine(config, lambda text: tokenizer.encode(vocabulary, text))
    try:
        for concurrency in args.concurrency:
            direct[concurrency] = in_process(engine, config, concurrency, args.tokens)
            print(f"in-process {concurrency:3d} streams {direct[concurrency]}", flush=True)
    finally:
        engine.close()
    result = {"bench": "llm_throughput", "machine": MACHINE, "tokens_per_request": args.tokens,
              "slots": config.slots}
    for concurrency in args.concurrency:
        result[f"triton_tok_s_{concurrency}"] = triton[concurrency]["tok_s"]
        result[f"in_process_tok_s_{concurrency}"] = direct[concurrency]["tok_s"]
        result[f"triton_overhead_pct_{concurrency}"] = round(
            100 * (1 - triton[concurrency]["tok_s"] / direct[concurrency]["tok_s"]), 1)
        result[f"triton_ttft_p50_ms_{concurrency}"] = triton[concurrency]["ttft_p50_ms"]
        result[f"in_process_ttft_p50_ms_{concurrency}"] = direct[concurrency]["ttft_p50_ms"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
