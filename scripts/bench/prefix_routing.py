#!/usr/bin/env python3
"""Prefix-affinity routing vs. round-robin through the orchestrator: 2 orchestrator processes x 2 Triton
replicas per policy, the same workloads, the two policies alternating round by round.

Per policy: two Triton servers (bundled 2.51, CPU profile with one llama.cpp thread per engine, so two busy
engines share the 2 cores without oversubscribing them) and two `python -m orchestrator serve` processes, both
routing across those two Tritons with ORCH_TRITON__REPLICAS and ORCH_TRITON__ROUTING=affinity|round_robin (the
same code, one setting apart). The client spreads requests over the two orchestrators in consecutive pairs
(requests 0 and 1 to the first, 2 and 3 to the second, ...): each round-robin orchestrator alternates between
the replicas, so the fleet as a whole alternates exactly, round-robin's best case (alternating single requests
would send consecutive ones to the same replica). Affinity does not care which orchestrator gets a request.
The cache is off (ORCH_CACHE__ENABLED=false, no semantic layer), so every request goes through the service to
Triton; one Valkey serves all four orchestrators (their readiness needs Redis, and the affinity pods share
their table of prefix placements there, as deployed; `--no-placements` routes by rendezvous hashing alone).
Each policy has its own Tritons, so neither sees KV blocks the other computed; all eight servers stay up for
the whole run and only one policy's are busy at a time.

Workloads, over gRPC GenerateStream (TTFT measured by the client: the first chunk with text):
- shared prefixes: `--groups` documents of ~`--prefix-tokens` tokens as system prompts, each asked
  `--questions` questions; round q asks every document its q-th question (shuffled, the same order for both
  policies), `--concurrency` in flight. Per request the engine reports kv_cache_reused_blocks (prompt KV blocks
  it did not compute again).
- no shared prefixes: `--distinct-rounds` rounds of `--distinct` requests, each with its own system prompt of
  ~`--distinct-tokens` tokens (different from its first word), `--distinct-max-tokens` generated,
  `--distinct-concurrency` in flight; throughput = requests (and generated tokens) per second of wall time.

Rounds alternate: one policy's round r, then the other's, the order swapped every round (ABBA), so drift and
noise on a shared machine hit both alike. Prints a table, then one JSON line last.

  .venv/bin/python scripts/bench/prefix_routing.py [--groups 8 --questions 3 --distinct 12 ...]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from clients.prometheus import scrape  # noqa: E402
from cpu_engine import tokenizer  # noqa: E402
from stack.orchestrator_process import OrchestratorProcess  # noqa: E402
from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2 as pb  # noqa: E402
from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc  # noqa: E402
from orchestrator.backends.triton_llm import TritonLLM  # noqa: E402
from orchestrator.config import ModelSettings, TritonSettings  # noqa: E402
from orchestrator.schemas import SamplingParams  # noqa: E402
from stack.render import profile_variant, render  # noqa: E402
from stack.triton import TritonServer  # noqa: E402
from stack.valkey import ValkeyServer  # noqa: E402

POLICIES = ("affinity", "round_robin")
#: What the orchestrator calls: the BLS (its default) and the engine it stops abandoned generations on.
LLM_MODELS = ("tensorrt_llm", "tensorrt_llm_bls")
MODEL = ModelSettings().name
WORDS = ("invoice", "policy", "refund", "customer", "warranty", "shipping", "account", "order", "delivery",
         "contract", "support", "billing", "region", "product", "return", "credit", "service", "payment")
Messages = list[dict[str, str]]


def document(seed: str, tokens: int) -> str:
    """A system prompt of about `tokens` tokens whose first words already differ between documents."""
    rng = random.Random(seed)
    encoder = tokenizer.load()
    sentences = [f"Handbook {seed}."]
    while len(tokenizer.encode(encoder, " ".join(sentences))) < tokens:
        sentences.append(" ".join(rng.choice(WORDS) for _ in range(12)).capitalize() + ".")
    return " ".join(sentences)


def chat(system: str, question: str) -> Messages:
    return [{"role": "system", "content": system}, {"role": "user", "content": question}]


def shared_rounds(groups: int, questions: int, prefix_tokens: int, seed: int) -> list[list[Messages]]:
    """Round q asks every document its q-th question, documents shuffled."""
    nonce = uuid.uuid4().hex[:6]
    documents = [document(f"{nonce}-{g}", prefix_tokens) for g in range(groups)]
    rng = random.Random(seed)
    return [[chat(documents[g], f"Question {q}: what does item {q + 1} say?")
             for g in rng.sample(range(groups), groups)] for q in range(questions)]


def distinct_rounds(rounds: int, requests: int, tokens: int) -> list[list[Messages]]:
    """Every request its own system prompt: nothing beyond the chat template's first tokens is shared."""
    nonce = uuid.uuid4().hex[:6]
    return [[chat(document(f"{nonce}-r{r}-{i}", tokens), "Summarise this in one sentence.") for i in range(requests)]
            for r in range(rounds)]


def small_profile(out: Path, kv_host_bytes: int | None) -> Path:
    """The CPU profile with one llama.cpp thread per engine (two engines busy at once use the two cores) and,
    when given, `kv_host_bytes` of host prompt cache beside the slots."""
    engine: dict[str, int] = {"cpu_threads": 1, "cpu_threads_batch": 1}
    if kv_host_bytes is not None:
        engine["kv_cache_host_memory_bytes"] = kv_host_bytes
    return profile_variant("cpu", {"tensorrt_llm": engine}, out)


@dataclass
class Result:
    ttft_s: float
    reused_blocks: int
    completion_tokens: int


@dataclass
class Deployment:
    """One policy: two Tritons and two orchestrators routing across them."""

    policy: str
    tritons: list[TritonServer]
    orchestrators: list[OrchestratorProcess]
    sent: int = 0

    def routes(self) -> dict[str, Counter]:
        """orchestrator_triton_replica_routed_total summed over both orchestrators: {replica: {route: n}}."""
        names = {triton.grpc_url: f"triton-{i}" for i, triton in enumerate(self.tritons)}
        routes: dict[str, Counter] = {name: Counter() for name in names.values()}
        for orchestrator in self.orchestrators:
            for sample in scrape(orchestrator.http_url):
                if sample.name == "orchestrator_triton_replica_routed_total":
                    routes[names[sample.labels["replica"]]][sample.labels["route"]] += int(sample.value)
        return routes


def deploy(stack: ExitStack, policy: str, repository: Path, redis_url: str, log_dir: Path,
           load_factor: str | None, placements: bool) -> Deployment:
    tritons = [stack.enter_context(TritonServer(repository, model_control_mode="explicit", load_models=LLM_MODELS,
                                                log_path=log_dir / f"triton-{policy}-{i}.log")) for i in range(2)]
    urls = [triton.grpc_url for triton in tritons]
    env = {"ORCH_TRITON__REPLICAS": ",".join(urls), "ORCH_TRITON__ROUTING": policy,
           "ORCH_CACHE__ENABLED": "false", "ORCH_SEMANTIC__ENABLED": "false",
           "ORCH_REDIS__KEY_PREFIX": f"bench-routing-{policy}"}
    if load_factor is not None:
        env["ORCH_TRITON__ROUTING_LOAD_FACTOR"] = load_factor
    if not placements:
        env["ORCH_TRITON__ROUTING_PLACEMENTS"] = "false"
    orchestrators = [stack.enter_context(OrchestratorProcess(urls[0], redis_url, env=env,
                                                             log_path=log_dir / f"orchestrator-{policy}-{i}.log"))
                     for i in range(2)]
    return Deployment(policy, tritons, orchestrators)


async def warm_up(deployment: Deployment) -> None:
    """One short generation on each Triton directly and through each orchestrator (nothing the workloads share)."""
    for triton in deployment.tritons:
        llm = TritonLLM(TritonSettings(url=triton.grpc_url), ModelSettings())
        try:
            async for _ in llm.stream(f"Warm-up {uuid.uuid4().hex}: say hi.", SamplingParams(max_tokens=4)):
                pass
        finally:
            await llm.aclose()
    for orchestrator in deployment.orchestrators:
        async with grpc.aio.insecure_channel(orchestrator.grpc_target) as channel:
            hello = pb.ChatMessage(role="user", content=f"Hi {uuid.uuid4().hex}")
            request = pb.GenerateRequest(model=MODEL, messages=[hello],
                                         params=pb.SamplingParams(max_tokens=4, temperature=0.0))
            await pb_grpc.OrchestratorStub(channel).Generate(request)


async def run_round(deployment: Deployment, requests: list[Messages], concurrency: int,
                    max_tokens: int) -> tuple[list[Result], float]:
    """The requests in order, `concurrency` in flight, in consecutive pairs per orchestrator."""
    channels = [grpc.aio.insecure_channel(o.grpc_target) for o in deployment.orchestrators]
    stubs = [pb_grpc.OrchestratorStub(channel) for channel in channels]
    gate = asyncio.Semaphore(concurrency)
    first = deployment.sent
    deployment.sent += len(requests)

    def stub(index: int) -> pb_grpc.OrchestratorStub:
        return stubs[(first + index) // len(deployment.tritons) % len(stubs)]

    async def one(index: int, messages: Messages) -> Result:
        request = pb.GenerateRequest(model=MODEL, messages=[pb.ChatMessage(**m) for m in messages],
                                     params=pb.SamplingParams(max_tokens=max_tokens, temperature=0.0))
        async with gate:
            started = time.perf_counter()
            ttft, reused, tokens = None, None, 0
            async for message in stub(index).GenerateStream(request):
                if ttft is None and message.text:
                    ttft = time.perf_counter() - started
                if message.HasField("kv_cache_reused_blocks"):
                    reused = message.kv_cache_reused_blocks
                if message.HasField("usage"):
                    tokens = message.usage.completion_tokens
            assert ttft is not None and reused is not None, "no text or no KV report from the orchestrator"
            return Result(ttft, reused, tokens)

    try:
        started = time.perf_counter()
        results = await asyncio.gather(*(one(i, m) for i, m in enumerate(requests)))
        return list(results), time.perf_counter() - started
    finally:
        for channel in channels:
            await channel.close()


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


async def measure(deployments: dict[str, Deployment], args: argparse.Namespace) -> dict:
    for deployment in deployments.values():
        await warm_up(deployment)
    warm_up_routes = {policy: deployment.routes() for policy, deployment in deployments.items()}
    shared: dict[str, list[Result]] = {p: [] for p in POLICIES}
    distinct: dict[str, list[tuple[list[Result], float]]] = {p: [] for p in POLICIES}
    step = 0

    def turns() -> list[str]:
        nonlocal step
        step += 1
        return list(POLICIES) if step % 2 else list(reversed(POLICIES))

    for requests in shared_rounds(args.groups, args.questions, args.prefix_tokens, args.seed):
        for policy in turns():
            results, _ = await run_round(deployments[policy], requests, args.concurrency, args.max_tokens)
            shared[policy] += results
    for requests in distinct_rounds(args.distinct_rounds, args.distinct, args.distinct_tokens):
        for policy in turns():
            distinct[policy].append(await run_round(deployments[policy], requests, args.distinct_concurrency,
                                                    args.distinct_max_tokens))
    summary: dict = {}
    for policy in POLICIES:
        results = shared[policy]
        reused = [r.reused_blocks for r in results]
        ttfts = [r.ttft_s * 1000 for r in results]
        rounds = distinct[policy]
        wall = sum(seconds for _, seconds in rounds)
        done = [r for results_, _ in rounds for r in results_]
        summary[policy] = {
            "reused_blocks_per_req": round(statistics.fmean(reused), 3),
            "requests_with_reuse": sum(1 for n in reused if n > 0),
            "ttft_p50_ms": round(statistics.median(ttfts), 1), "ttft_p90_ms": round(p90(ttfts), 1),
            "distinct_req_per_s": round(len(done) / wall, 4),
            "distinct_tokens_per_s": round(sum(r.completion_tokens for r in done) / wall, 2),
            "distinct_req_per_s_by_round": [round(len(results_) / seconds, 4) for results_, seconds in rounds],
            "routes": {replica: dict(counts - warm_up_routes[policy][replica])
                       for replica, counts in deployments[policy].routes().items()},
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=12, help="shared-prefix workload: distinct documents")
    parser.add_argument("--questions", type=int, default=3,
                        help="shared-prefix workload: rounds (questions per document)")
    parser.add_argument("--prefix-tokens", type=int, default=400, help="length of each document")
    parser.add_argument("--max-tokens", type=int, default=8, help="tokens generated per shared-prefix request")
    parser.add_argument("--concurrency", type=int, default=2, help="shared-prefix requests in flight")
    parser.add_argument("--distinct", type=int, default=12, help="no-sharing workload: requests per round")
    parser.add_argument("--distinct-rounds", type=int, default=4)
    parser.add_argument("--distinct-tokens", type=int, default=150, help="length of each distinct system prompt")
    parser.add_argument("--distinct-max-tokens", type=int, default=16)
    parser.add_argument("--distinct-concurrency", type=int, default=4)
    parser.add_argument("--kv-host-bytes", type=int,
                        help="each engine's host prompt cache (kv_cache_host_memory_bytes; default: the profile's "
                             "1 GiB); 0, upstream's default, keeps reuse to what the 4 slots hold")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--placements", action=argparse.BooleanOptionalAction, default=True,
                        help="affinity pods share prefix placements through Valkey (the default setting)")
    parser.add_argument("--load-factor", help="ORCH_TRITON__ROUTING_LOAD_FACTOR for affinity (default: the setting's)")
    args = parser.parse_args()
    started = time.monotonic()
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="prefix-routing-") as tmp, ExitStack() as stack:
        repository = render(str(small_profile(Path(tmp) / "cpu-1-thread.toml", args.kv_host_bytes)),
                            Path(tmp) / "repository")
        valkey = stack.enter_context(ValkeyServer())
        deployments = {policy: deploy(stack, policy, repository, valkey.url, Path(tmp), args.load_factor,
                                       args.placements)
                       for policy in POLICIES}
        summary = asyncio.run(measure(deployments, args))
    a, r = summary["affinity"], summary["round_robin"]
    for name, values in summary.items():
        print(f"{name:12s} reused blocks/request {values['reused_blocks_per_req']:6.2f}  TTFT p50/p90 "
              f"{values['ttft_p50_ms']:7.1f}/{values['ttft_p90_ms']:7.1f} ms  no-sharing "
              f"{values['distinct_req_per_s']:.3f} req/s  routes {values['routes']}")
    print(json.dumps({
        "bench": "prefix_routing", "date": datetime.date.today().isoformat(),
        "machine": f"{os.cpu_count()} cores, {platform.system()} {platform.release()}, "
                   f"Python {platform.python_version()}",
        "load_average_before": load_before, "load_average_after": load_average(),
        "orchestrators_per_policy": 2, "tritons_per_policy": 2, "engine_threads": 1,
        "kv_cache_host_memory_bytes": args.kv_host_bytes,
        "load_factor": TritonSettings(**({"routing_load_factor": args.load_factor} if args.load_factor else {})
                                      ).routing_load_factor,
        "placements": args.placements,
        "shared": {"groups": args.groups, "questions": args.questions, "prefix_tokens": args.prefix_tokens,
                   "requests": args.groups * args.questions, "concurrency": args.concurrency,
                   "max_tokens": args.max_tokens},
        "distinct": {"requests": args.distinct * args.distinct_rounds, "rounds": args.distinct_rounds,
                     "prompt_tokens": args.distinct_tokens, "concurrency": args.distinct_concurrency,
                     "max_tokens": args.distinct_max_tokens},
        "affinity": a, "round_robin": r,
        "reused_blocks_ratio": round(a["reused_blocks_per_req"] / r["reused_blocks_per_req"], 3)
        if r["reused_blocks_per_req"] else None,
        "ttft_p90_ratio": round(a["ttft_p90_ms"] / r["ttft_p90_ms"], 3),
        "throughput_ratio": round(a["distinct_req_per_s"] / r["distinct_req_per_s"], 3),
        "seconds": round(time.monotonic() - started, 1),
    }))


if __name__ == "__main__":
    main()
