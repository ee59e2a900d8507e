#!/usr/bin/env python
"""API latency: exact-cache hits over gRPC and HTTP at concurrency 1 and 32 against a raw redis-py GET, and the
miss path's overhead (time to first token through the orchestrator vs. its Triton LLM model called directly).

Starts Valkey, Triton (CPU profile) and `python -m orchestrator serve` as child processes (or uses running
Triton/Redis given by URL), so the load generator never shares an interpreter with the server. The clients
run on the same machine as the servers: at concurrency 32 both compete for the same cores.

Miss path: chat questions that are never stored (no-store), so every request does the full lookup and then
calls Triton; the direct path sends the same inputs to the same model (`triton.llm_model`, the BLS by default;
the chat rendered with the model's template, as the service does) with tritonclient. The two alternate
request by request on fresh prompts of the same shape, so the engine's prompt cache helps both equally. Two
scopes: single-turn questions in the default scope, which holds entries (exact GET, query embedding, vector
search: `miss_overhead_ms`), and second turns of new conversations, whose scopes are empty (exact GET and an
index count, no embedding: `*_new_conversation`). Prints a table, then one JSON line last.

`--semantic-verifier` measures only what the semantic layer's pair verifier costs: HTTP semantic hits at
concurrency 1 (a paraphrase of the stored HIT_QUESTION, sent with no-store so it never becomes an exact entry)
through two orchestrators on the same Triton and Redis, one with the verifier and one without
(ORCH_SEMANTIC__VERIFIER__ENABLED=false), alternating request by request; the difference of their p50 is the
verifier's added latency. It
also sends misses whose nearest entry lies below the verifier's band and reports how many verifier calls they
made (none expected).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import httpx
import numpy as np
import redis
import redis.asyncio as aioredis
from tritonclient.grpc import aio as tritonclient

from clients.prometheus import scrape, total
from model_assets.chat import format_chat
from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2 as pb
from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from orchestrator.backends.triton_llm import ensemble_inputs
from orchestrator.config import ModelSettings, TritonSettings
from orchestrator.schemas import SamplingParams
from stack.orchestrator_process import OrchestratorProcess

MODEL = ModelSettings().name
HIT_QUESTION = "What is the capital of France?"
HIT_MAX_TOKENS = 32
#: A paraphrase of HIT_QUESTION (a semantic hit), and questions far from it (below the verifier's band).
SEMANTIC_HIT_QUESTION = "Which city is the capital of France?"
BELOW_BAND_QUESTIONS = ("How do I bake sourdough bread?", "Why is the sea salty?", "How tall is Mount Everest?")
#: Requests sent, and not measured, before each measured run.
WARM_UP = 100
#: Requests that must never become cache entries (the measured paraphrase would turn into an exact hit).
NO_STORE = {"cache-control": "no-store"}


def percentile_ms(samples: list[float], q: float) -> float:
    return round(float(np.percentile(samples, q)) * 1000, 3)


async def closed_loop(call: Callable[[], Awaitable[object]], concurrency: int, requests: int) -> dict:
    """`requests` calls spread over `concurrency` workers, each calling back to back; latency per call."""
    latencies: list[float] = []
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {"p50_ms": percentile_ms(latencies, 50), "p99_ms": percentile_ms(latencies, 99),
            "rps": round(len(latencies) / elapsed, 1)}


def redis_get_sync(url: str, value_bytes: int, requests: int) -> dict:
    client = redis.Redis.from_url(url)
    key = f"bench:api_latency:{uuid.uuid4().hex}"
    client.set(key, b"x" * value_bytes, ex=600)
    for _ in range(WARM_UP):
        client.get(key)
    latencies = []
    for _ in range(requests):
        started = time.perf_counter()
        client.get(key)
        latencies.append(time.perf_counter() - started)
    client.delete(key)
    return {"p50_ms": percentile_ms(latencies, 50), "p99_ms": percentile_ms(latencies, 99)}


async def redis_get_async(url: str, value_bytes: int, concurrency: int, requests: int) -> dict:
    client = aioredis.Redis.from_url(url, max_connections=concurrency)
    key = f"bench:api_latency:{uuid.uuid4().hex}"
    await client.set(key, b"x" * value_bytes, ex=600)
    try:
        await closed_loop(lambda: client.get(key), concurrency, 200)
        return await closed_loop(lambda: client.get(key), concurrency, requests)
    finally:
        await client.delete(key)
        await client.aclose()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measured(orchestrator: OrchestratorProcess, call: Callable[[], Awaitable[object]], concurrency: int,
                   requests: int) -> dict:
    """Latency and throughput, plus the server's CPU time per request (less sensitive to a busy machine)."""
    await closed_loop(call, concurrency, WARM_UP)
    cpu_before, client_before = cpu_seconds(orchestrator.pid), cpu_seconds(os.getpid())
    result = await closed_loop(call, concurrency, requests)
    result["server_cpu_ms"] = round(1000 * (cpu_seconds(orchestrator.pid) - cpu_before) / requests, 3)
    result["client_cpu_ms"] = round(1000 * (cpu_seconds(os.getpid()) - client_before) / requests, 3)
    return result


async def exact_hits(orchestrator: OrchestratorProcess, concurrency: int, requests: int) -> dict[str, dict]:
    request = pb.GenerateRequest(model=MODEL, messages=[pb.ChatMessage(role="user", content=HIT_QUESTION)],
                                 params=pb.SamplingParams(max_tokens=HIT_MAX_TOKENS))
    body = {"model": MODEL, "messages": [{"role": "user", "content": HIT_QUESTION}], "max_tokens": HIT_MAX_TOKENS}
    results = {}
    async with grpc.aio.insecure_channel(orchestrator.grpc_target) as channel:
        stub = pb_grpc.OrchestratorStub(channel)

        async def grpc_call() -> None:
            response = await stub.Generate(request)
            assert response.cache.layer == pb.CACHE_LAYER_EXACT, response.cache

        results["grpc"] = await measured(orchestrator, grpc_call, concurrency, requests)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=orchestrator.http_url, limits=limits) as client:
        async def http_call() -> None:
            response = await client.post("/v1/chat/completions", json=body)
            assert response.headers["x-cache"] == "exact", response.text

        results["http"] = await measured(orchestrator, http_call, concurrency, requests)
    return results


Messages = list[dict[str, str]]


def single_turn(question: str, path: str, index: int) -> Messages:
    """A one-question chat: all share one scope, which the seed answer populates, so every lookup embeds."""
    return [{"role": "user", "content": question}]


def new_conversation(question: str, path: str, index: int) -> Messages:
    """The question as a conversation's second turn, each its own scope with nothing stored (the seed went
    to a conversation of its own): the lookup embeds nothing."""
    return [{"role": "user", "content": f"Let's talk about boats, conversation {path} {index}."},
            {"role": "assistant", "content": "Gladly."}, {"role": "user", "content": question}]


async def miss_ttft(orchestrator: OrchestratorProcess, triton_url: str, rounds: int, max_tokens: int,
                    chat: Callable[[str, str, int], Messages]) -> dict:
    """Time to first token: orchestrator (gRPC stream, full miss path) vs. the LLM model directly."""
    settings = TritonSettings(url=triton_url)
    params = SamplingParams(max_tokens=max_tokens)
    triton = tritonclient.InferenceServerClient(triton_url)
    tokenizer_dir = str(ModelSettings().tokenizer_dir or "")

    async def direct(messages: Messages) -> float:
        # The text_input the service sends for this chat (its chat formatter, the model's own template).
        prompt = format_chat(messages, tokenizer_dir=tokenizer_dir)
        finished = asyncio.Event()

        async def requests():
            yield {"model_name": settings.llm_model, "inputs": ensemble_inputs(prompt, params, ModelSettings()),
                   "request_id": uuid.uuid4().hex, "parameters": {"triton_enable_empty_final_response": True}}
            await finished.wait()

        started = time.perf_counter()
        ttft = None
        async for result, error in triton.stream_infer(requests()):
            if error is not None:
                raise RuntimeError(error)
            text = result.as_numpy("text_output")
            if ttft is None and text is not None and b"".join(text.reshape(-1).tolist()):
                ttft = time.perf_counter() - started
            final = result.get_response().parameters.get("triton_final_response")
            if final is not None and final.bool_param:
                break
        finished.set()
        assert ttft is not None, "the LLM model produced no text"
        return ttft

    async with grpc.aio.insecure_channel(orchestrator.grpc_target) as channel:
        stub = pb_grpc.OrchestratorStub(channel)

        async def through_orchestrator(messages: Messages) -> float:
            request = pb.GenerateRequest(model=MODEL, messages=[pb.ChatMessage(**m) for m in messages],
                                         params=pb.SamplingParams(max_tokens=max_tokens),
                                         cache=pb.CacheControls(no_store=True))
            started = time.perf_counter()
            ttft = None
            async for message in stub.GenerateStream(request):
                if message.HasField("cache"):
                    assert message.cache.layer == pb.CACHE_LAYER_MISS, message.cache
                if ttft is None and message.text:
                    ttft = time.perf_counter() - started
            assert ttft is not None, "the orchestrator produced no text"
            return ttft

        def messages(path: str, index: int) -> Messages:
            # Same shape for both paths; the varying part is last, so the engine's prompt cache serves the rest.
            return chat(f"Write one short sentence about the sea, {path} number {index}.", path, index)

        # A stored answer with the measured requests' sampling class (max_tokens is part of a scope), on
        # another subject (a paraphrase of the measured questions would be a semantic hit).
        seed = pb.GenerateRequest(model=MODEL, messages=[pb.ChatMessage(**m) for m in chat("Name one ocean.", "seed", 0)],
                                  params=pb.SamplingParams(max_tokens=max_tokens))
        await stub.Generate(seed)
        assert (await stub.Generate(seed)).cache.layer == pb.CACHE_LAYER_EXACT, "the seed answer was not stored"
        await direct(messages("warm-direct", 0))
        await through_orchestrator(messages("warm-orch", 0))
        backend_before = histogram_totals(orchestrator, "orchestrator_backend_ttft_seconds")
        embeddings_before = await embedding_count(triton)
        direct_ttft, orchestrator_ttft = [], []
        for index in range(rounds):
            # Alternate which path goes first, so neither always follows the other.
            order = [("direct", direct, direct_ttft), ("orch", through_orchestrator, orchestrator_ttft)]
            for path, measure, samples in order if index % 2 == 0 else reversed(order):
                samples.append(await measure(messages(path, index)))
        embeddings = await embedding_count(triton) - embeddings_before
    await triton.close()
    backend_after = histogram_totals(orchestrator, "orchestrator_backend_ttft_seconds")
    backend_mean_ms = 1000 * (backend_after[0] - backend_before[0]) / max(1, backend_after[1] - backend_before[1])
    direct_p50 = statistics.median(direct_ttft)
    orchestrator_p50 = statistics.median(orchestrator_ttft)
    overhead_ms = (orchestrator_p50 - direct_p50) * 1000
    # Paired per round: the two requests of a round ran back to back on prompts of the same shape.
    paired = [(o - d) * 1000 for o, d in zip(orchestrator_ttft, direct_ttft)]
    return {
        "triton_direct_ttft_p50_ms": round(direct_p50 * 1000, 3),
        "orchestrator_miss_ttft_p50_ms": round(orchestrator_p50 * 1000, 3),
        "miss_overhead_ms": round(overhead_ms, 3),
        "miss_overhead_paired_p50_ms": round(statistics.median(paired), 3),
        "miss_overhead_pct": round(100 * overhead_ms / (direct_p50 * 1000), 2),
        "miss_overhead_goal_met": overhead_ms <= max(2.0, 0.05 * direct_p50 * 1000),
        # Where the orchestrator's time goes: its own backend call's TTFT (mean), the rest is lookups + APIs.
        "orchestrator_backend_ttft_mean_ms": round(backend_mean_ms, 3),
        "orchestrator_ttft_mean_ms": round(1000 * statistics.mean(orchestrator_ttft), 3),
        # 1 where the lookup embeds the question, 0 where its scope is empty.
        "embeddings_per_miss": round(embeddings / rounds, 2),
    }


async def embedding_count(triton: tritonclient.InferenceServerClient) -> int:
    """Requests the `embedding` model has served (Triton's statistics)."""
    stats = await triton.get_inference_statistics("embedding", as_json=True)
    return int(stats["model_stats"][0].get("inference_count", 0))


def histogram_totals(orchestrator: OrchestratorProcess, name: str) -> tuple[float, float]:
    """(sum, count) of a histogram on the orchestrator's /metrics."""
    samples = scrape(orchestrator.http_url)
    return total(samples, f"{name}_sum"), total(samples, f"{name}_count")


def warm_exact_entry(orchestrator: OrchestratorProcess) -> int:
    """Store the answer the hit benchmarks read; returns its size in the body (to size the raw GET alike)."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": HIT_QUESTION}], "max_tokens": HIT_MAX_TOKENS}
    with httpx.Client(base_url=orchestrator.http_url, timeout=120) as client:
        first = client.post("/v1/chat/completions", json=body)
        first.raise_for_status()
        for _ in range(50):  # the store completes just before the last chunk; allow for the round trip
            again = client.post("/v1/chat/completions", json=body)
            if again.headers["x-cache"] == "exact":
                return len(again.content)
            time.sleep(0.1)
    raise RuntimeError(f"the warm-up answer was not stored: {first.text}")


async def semantic_hits(orchestrators: dict[str, OrchestratorProcess], requests: int) -> dict[str, dict]:
    """Semantic-hit latency at concurrency 1 through each orchestrator, alternating request by request (after
    WARM_UP rounds), so drift of the machine and the engine's cancelled speculative generations weigh on
    both alike."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": SEMANTIC_HIT_QUESTION}],
            "max_tokens": HIT_MAX_TOKENS}
    latencies: dict[str, list[float]] = {name: [] for name in orchestrators}
    async with contextlib.AsyncExitStack() as opened:
        clients = {name: await opened.enter_async_context(httpx.AsyncClient(base_url=o.http_url, timeout=120))
                   for name, o in orchestrators.items()}
        for round_ in range(WARM_UP + requests):
            for name, client in clients.items():
                started = time.perf_counter()
                response = await client.post("/v1/chat/completions", json=body, headers=NO_STORE)
                elapsed = time.perf_counter() - started
                assert response.headers["x-cache"] == "semantic", (name, response.headers.get("x-cache"))
                if round_ >= WARM_UP:
                    latencies[name].append(elapsed)
    return {name: {"p50_ms": percentile_ms(samples, 50), "p99_ms": percentile_ms(samples, 99)}
            for name, samples in latencies.items()}


async def below_band_verifier_calls(orchestrator: OrchestratorProcess) -> float:
    """Verifier calls made by misses whose nearest entry lies below the verifier's band (0 expected)."""
    calls = total(scrape(orchestrator.http_url), "orchestrator_semantic_verifier_calls_total")
    async with httpx.AsyncClient(base_url=orchestrator.http_url, timeout=120) as client:
        for question in BELOW_BAND_QUESTIONS:
            await client.post("/v1/chat/completions", headers=NO_STORE, json={
                "model": MODEL, "messages": [{"role": "user", "content": question}], "max_tokens": 1})
    return total(scrape(orchestrator.http_url), "orchestrator_semantic_verifier_calls_total") - calls


def verifier_cost(args: argparse.Namespace) -> dict:
    """The same semantic hit with and without the pair verifier (two orchestrators, one Triton and Redis)."""
    with stack(args, ORCH_SEMANTIC__VERIFIER__ENABLED="true") as (redis_url, triton_url, with_verifier):
        warm_exact_entry(with_verifier)
        env = {"ORCH_REDIS__KEY_PREFIX": with_verifier.env["ORCH_REDIS__KEY_PREFIX"],
               "ORCH_SEMANTIC__VERIFIER__ENABLED": "false", "ORCH_API__LOG_LEVEL": "warning"}
        with OrchestratorProcess(triton_url, redis_url, env=env) as without_verifier:
            hits = asyncio.run(semantic_hits({"verifier": with_verifier, "no_verifier": without_verifier},
                                             args.requests))
        below_band = asyncio.run(below_band_verifier_calls(with_verifier))
    verified, unverified = hits["verifier"], hits["no_verifier"]
    return {"semantic_hit_p50_ms_verifier": verified["p50_ms"], "semantic_hit_p99_ms_verifier": verified["p99_ms"],
            "semantic_hit_p50_ms_no_verifier": unverified["p50_ms"],
            "semantic_hit_p99_ms_no_verifier": unverified["p99_ms"],
            "verifier_added_p50_ms": round(verified["p50_ms"] - unverified["p50_ms"], 3),
            "below_band_miss_verifier_calls": below_band, "requests": args.requests}


@contextlib.contextmanager
def stack(args: argparse.Namespace, **settings: str):
    """Triton and Redis URLs: the given ones, or servers started here (stopped on exit); and an orchestrator
    in front of them (`settings`: further ORCH_* variables)."""
    with contextlib.ExitStack() as servers:
        redis_url, triton_url = args.redis_url, args.triton_url
        if redis_url is None:
            from stack.valkey import ValkeyServer

            redis_url = servers.enter_context(ValkeyServer()).url
        if triton_url is None:
            from stack.render import render
            from stack.triton import TritonServer

            repository = render("cpu", Path(servers.enter_context(tempfile.TemporaryDirectory())) / "cpu")
            triton_url = servers.enter_context(TritonServer(repository)).grpc_url
        env = {"ORCH_REDIS__KEY_PREFIX": f"bench-{uuid.uuid4().hex[:8]}", "ORCH_CACHE__STORE_TRUNCATED": "true",
               "ORCH_API__LOG_LEVEL": "warning", **settings}
        orchestrator = servers.enter_context(OrchestratorProcess(triton_url, redis_url, env=env))
        yield redis_url, triton_url, orchestrator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per hit benchmark")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--miss-rounds", type=int, default=20, help="miss requests per path")
    parser.add_argument("--miss-max-tokens", type=int, default=4)
    parser.add_argument("--triton-url", help="use this running Triton (gRPC host:port)")
    parser.add_argument("--redis-url", help="use this running Redis/Valkey")
    parser.add_argument("--semantic-verifier", action="store_true",
                        help="only the pair verifier's cost on a semantic hit (see the module docstring)")
    args = parser.parse_args()
    c = args.concurrency
    if args.semantic_verifier:
        print(json.dumps(verifier_cost(args)))
        return

    with stack(args) as (redis_url, triton_url, orchestrator):
        value_bytes = warm_exact_entry(orchestrator)
        redis_c1 = redis_get_sync(redis_url, value_bytes, args.requests)
        redis_cn = asyncio.run(redis_get_async(redis_url, value_bytes, c, args.requests))
        hits_c1 = asyncio.run(exact_hits(orchestrator, 1, args.requests))
        hits_cn = asyncio.run(exact_hits(orchestrator, c, args.requests))
        miss = asyncio.run(miss_ttft(orchestrator, triton_url, args.miss_rounds, args.miss_max_tokens,
                                     single_turn))
        fresh = asyncio.run(miss_ttft(orchestrator, triton_url, args.miss_rounds, args.miss_max_tokens,
                                      new_conversation))

    rows = [("redis-py GET", redis_c1, redis_cn), ("gRPC exact hit", hits_c1["grpc"], hits_cn["grpc"]),
            ("HTTP exact hit", hits_c1["http"], hits_cn["http"])]
    print(f"{'':16} {'c=1 p50 ms':>11} {'c=1 p99 ms':>11} {f'c={c} p50 ms':>12} {f'c={c} rps':>10} "
          f"{'server CPU ms/req':>18}")
    for name, one, many in rows:
        print(f"{name:16} {one['p50_ms']:>11} {one['p99_ms']:>11} {many['p50_ms']:>12} {many['rps']:>10} "
              f"{one.get('server_cpu_ms', '-'):>18}")
    for name, figures in (("single-turn scope (embeds)", miss), ("new conversation (no embedding)", fresh)):
        print(f"miss TTFT p50, {name}: direct {figures['triton_direct_ttft_p50_ms']} ms, through the "
              f"orchestrator {figures['orchestrator_miss_ttft_p50_ms']} ms (overhead "
              f"{figures['miss_overhead_ms']} ms, {figures['miss_overhead_pct']} %)")
    result = {
        "redis_get_p50_ms": redis_c1["p50_ms"],
        f"redis_get_rps_c{c}": redis_cn["rps"],
        "grpc_exact_hit_p50_ms": hits_c1["grpc"]["p50_ms"],
        "grpc_exact_hit_p99_ms": hits_c1["grpc"]["p99_ms"],
        "grpc_exact_hit_rps_c1": hits_c1["grpc"]["rps"],
        f"grpc_exact_hit_p50_ms_c{c}": hits_cn["grpc"]["p50_ms"],
        f"grpc_exact_hit_rps_c{c}": hits_cn["grpc"]["rps"],
        "http_exact_hit_p50_ms": hits_c1["http"]["p50_ms"],
        "http_exact_hit_p99_ms": hits_c1["http"]["p99_ms"],
        "http_exact_hit_rps_c1": hits_c1["http"]["rps"],
        f"http_exact_hit_p50_ms_c{c}": hits_cn["http"]["p50_ms"],
        f"http_exact_hit_rps_c{c}": hits_cn["http"]["rps"],
        "grpc_exact_hit_server_cpu_ms": hits_c1["grpc"]["server_cpu_ms"],
        "http_exact_hit_server_cpu_ms": hits_c1["http"]["server_cpu_ms"],
        "grpc_exact_hit_client_cpu_ms": hits_c1["grpc"]["client_cpu_ms"],
        "http_exact_hit_client_cpu_ms": hits_c1["http"]["client_cpu_ms"],
        **miss,
        **{f"{name}_new_conversation": value for name, value in fresh.items()},
        "requests": args.requests,
        "miss_rounds": args.miss_rounds,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
