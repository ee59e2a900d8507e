#!/usr/bin/env python3
"""Prefix-affinity routing vs. round-robin across two real Triton servers (CPU profile), same workload.

Workload: `--groups` documents (each a unique system prompt of ~`--prefix-tokens` tokens), each asked
`--questions` different questions; requests arrive round by round (every document once per round, in a
shuffled order per round), `--concurrency` at a time. Each policy gets two fresh Triton servers, so neither
sees a cache warmed by the other. Per request the engine reports `kv_cache_reused_blocks` (prompt KV blocks it
did not recompute); the last line is one JSON object with the per-request means and their ratio.

  .venv/bin/python scripts/bench/prefix_routing.py [--groups 9 --questions 3 ...]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import tritonclient.grpc.aio as grpcaio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cpu_engine import tokenizer  # noqa: E402
from cpu_engine.chat import format_chat  # noqa: E402
from cpu_engine.client import Generation, generate, text_inputs  # noqa: E402
from orchestrator.backends.replicas import ReplicaRouter  # noqa: E402
from stack.render import render  # noqa: E402
from stack.triton import TritonServer  # noqa: E402

LLM_MODELS = ("preprocessing", "tensorrt_llm", "postprocessing", "ensemble")
WORDS = ("invoice", "policy", "refund", "customer", "warranty", "shipping", "account", "order", "delivery",
         "contract", "support", "billing", "region", "product", "return", "credit", "service", "payment")


def document(seed: str, tokens: int) -> str:
    """A system prompt of about `tokens` tokens whose first words already differ between documents."""
    rng = random.Random(seed)
    encoder = tokenizer.load()
    sentences = [f"Handbook {seed}."]
    while len(tokenizer.encode(encoder, " ".join(sentences))) < tokens:
        sentences.append(" ".join(rng.choice(WORDS) for _ in range(12)).capitalize() + ".")
    return " ".join(sentences)


def workload(groups: int, questions: int, prefix_tokens: int, seed: int) -> list[str]:
    """Prompts in arrival order: round q asks every document its q-th question, documents shuffled."""
    nonce = uuid.uuid4().hex[:6]
    documents = [document(f"{nonce}-{g}", prefix_tokens) for g in range(groups)]
    rng = random.Random(seed)
    prompts = []
    for q in range(questions):
        for g in rng.sample(range(groups), groups):
            prompts.append(format_chat([{"role": "system", "content": documents[g]},
                                        {"role": "user", "content": f"Question {q}: what does item {q + 1} say?"}]))
    return prompts


async def run_policy(urls: list[str], prompts: list[str], choose: Callable[[str], tuple[str, Callable[[], None]]],
                     concurrency: int, max_tokens: int) -> list[Generation]:
    clients = {url: grpcaio.InferenceServerClient(url) for url in urls}
    gate = asyncio.Semaphore(concurrency)

    async def one(prompt: str) -> Generation:
        async with gate:
            url, done = choose(prompt)
            try:
                return await generate(clients[url], "ensemble",
                                      text_inputs(prompt, max_tokens, stream=True, temperature=0.0))
            finally:
                done()

    try:
        # Requests start in arrival order; the semaphore keeps `concurrency` in flight.
        tasks = []
        for prompt in prompts:
            tasks.append(asyncio.create_task(one(prompt)))
            await asyncio.sleep(0)
        return await asyncio.gather(*tasks)
    finally:
        for client in clients.values():
            await client.close()


def affinity_chooser(urls: list[str], max_in_flight: int) -> tuple[ReplicaRouter, Callable]:
    router = ReplicaRouter(urls, max_in_flight=max_in_flight)

    def choose(prompt: str) -> tuple[str, Callable[[], None]]:
        replica = router.pick(prompt)
        return replica.url, lambda: router.release(replica)

    return router, choose


def round_robin_chooser(urls: list[str]) -> Callable:
    turn = itertools.cycle(urls)

    def choose(prompt: str) -> tuple[str, Callable[[], None]]:
        return next(turn), lambda: None

    return choose


def measure(repository: Path, log_dir: Path, name: str, prompts: list[str], concurrency: int, max_tokens: int,
            max_in_flight: int) -> tuple[list[Generation], dict]:
    with ExitStack() as stack:
        servers = [stack.enter_context(TritonServer(repository, model_control_mode="explicit", load_models=LLM_MODELS,
                                                    log_path=log_dir / f"{name}-{i}.log")) for i in range(2)]
        urls = [server.grpc_url for server in servers]
        routes: dict = {}
        if name == "affinity":
            router, choose = affinity_chooser(urls, max_in_flight)
        else:
            router, choose = None, round_robin_chooser(urls)
        results = asyncio.run(run_policy(urls, prompts, choose, concurrency, max_tokens))
        if router is not None:
            routes = {route.value: count for route, count in router.decisions.items()}
    return results, routes


def summary(results: list[Generation]) -> dict:
    failed = [r for r in results if r.error is not None]
    if failed:
        raise SystemExit(f"{len(failed)} requests failed, first: {failed[0].error}")
    reused = [r.outputs["kv_cache_reused_blocks"] for r in results]
    return {"reused_blocks_per_req": statistics.fmean(reused),
            "requests_with_reuse": sum(1 for n in reused if n > 0),
            "mean_ttft_ms": statistics.fmean(r.ttft_s for r in results) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=9, help="distinct documents (prompt prefixes)")
    parser.add_argument("--questions", type=int, default=3, help="requests per document")
    parser.add_argument("--prefix-tokens", type=int, default=400, help="length of each document")
    parser.add_argument("--max-tokens", type=int, default=8, help="tokens generated per request")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    prompts = workload(args.groups, args.questions, args.prefix_tokens, args.seed)
    with tempfile.TemporaryDirectory(prefix="prefix-routing-") as tmp:
        repository = render("cpu", Path(tmp) / "cpu")
        max_in_flight = int(next(line for line in (repository / "tensorrt_llm" / "config.pbtxt").read_text()
                                 .splitlines() if line.startswith("max_batch_size")).split(":")[1])
        started = time.monotonic()
        affinity, routes = measure(repository, Path(tmp), "affinity", prompts, args.concurrency, args.max_tokens,
                                   max_in_flight)
        round_robin, _ = measure(repository, Path(tmp), "round_robin", prompts, args.concurrency, args.max_tokens,
                                 max_in_flight)
    a, r = summary(affinity), summary(round_robin)
    for name, values in (("affinity", a), ("round robin", r)):
        print(f"{name:12s} reused blocks/request {values['reused_blocks_per_req']:6.2f}  requests with reuse "
              f"{values['requests_with_reuse']:3d}/{len(prompts)}  mean TTFT {values['mean_ttft_ms']:7.1f} ms")
    print(json.dumps({
        "bench": "prefix_routing", "replicas": 2, "groups": args.groups, "questions_per_group": args.questions,
        "prefix_tokens": args.prefix_tokens, "requests": len(prompts), "concurrency": args.concurrency,
        "max_tokens": args.max_tokens, "max_in_flight": max_in_flight,
        "affinity_reused_blocks_per_req": round(a["reused_blocks_per_req"], 3),
        "round_robin_reused_blocks_per_req": round(r["reused_blocks_per_req"], 3),
        "affinity_over_round_robin": (round(a["reused_blocks_per_req"] / r["reused_blocks_per_req"], 3)
                                      if r["reused_blocks_per_req"] else None),
        "affinity_requests_with_reuse": a["requests_with_reuse"],
        "round_robin_requests_with_reuse": r["requests_with_reuse"],
        "affinity_mean_ttft_ms": round(a["mean_ttft_ms"], 1), "round_robin_mean_ttft_ms": round(r["mean_ttft_ms"], 1),
        "affinity_routes": routes, "seconds": round(time.monotonic() - started, 1),
    }))


if __name__ == "__main__":
    main()
