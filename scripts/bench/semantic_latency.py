"""Semantic lookup latency (embedding excluded) at N entries in one scope, for both index back-ends.

Entries: N vectors made from real all-MiniLM-L6-v2 embeddings of GPTCache's benchmark sentences (the
`origin`s), each copy perturbed with Gaussian noise and re-normalised, so the index holds N distinct
vectors with realistic neighbourhoods; queries are the embeddings of the `similar` sentences. They are
written the way the layer writes them (Redis hashes with TTL under the layer's prefix), then:
- redisearch: RediSearch indexes the hashes; a lookup (`SemanticCache.lookup` of a target that carries its vector) is one FT.SEARCH
  (KNN + scope/tenant TAG filter, EF_RUNTIME set) returning question and answer, then the guard;
- faiss: `FaissIndex.rebuild` reads the hashes back (the start-up path); a lookup is the in-process HNSW
  search, the guard, and one HGET of the chosen answer.
Recall@1 is measured against exact search over the same vectors. One JSON line per back-end.

    python scripts/bench/semantic_latency.py [--entries 100000] [--queries 1000] [--ef-runtime 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import numpy as np
import redis.asyncio as aioredis

from model_assets.minilm import EMBEDDING_DIM
from orchestrator.cache.semantic import SemanticCache, SemanticMatcher
from orchestrator.cache.types import CachedAnswer, Scope, SemanticTarget, pack_answer
from orchestrator.cache.vector_index import (
    F_ANSWER, F_EXPIRES, F_QUERY, F_SCOPE, F_TENANT, F_VECTOR, FaissIndex, RediSearchIndex,
)
from orchestrator.config import HnswSettings, SemanticSettings
from orchestrator.eval import embed_all
from stack import paths
from stack.valkey import ValkeyServer

DATA = paths.SEMANTIC_DATA_DIR / "gptcache_mock_data.json"
SCOPE = Scope("bench", "5" * 64)
TTL_S = 3600


class NoEmbedder:
    async def embed(self, texts):  # pragma: no cover - lookups here always pass vectors
        raise RuntimeError("the benchmark passes vectors; embedding is excluded")


def make_entries(base: np.ndarray, n: int, noise: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = base[np.arange(n) % len(base)] + rng.standard_normal((n, base.shape[1])).astype(np.float32) * noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32)


async def load(redis: aioredis.Redis, cache: SemanticCache, texts: list[str], vectors: np.ndarray) -> float:
    started = time.perf_counter()
    now = time.time()
    for start in range(0, len(vectors), 1000):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(start, min(start + 1000, len(vectors))):
                query = f"{texts[i % len(texts)]} #{i}"
                key = cache.entry_key(SCOPE, query)
                answer = CachedAnswer(f"answer {i}", "m", 10, 20, "stop", now, "k" * 64)
                pipe.hset(key, mapping={F_TENANT: SCOPE.tenant, F_SCOPE: SCOPE.digest, F_QUERY: query,
                                        F_ANSWER: pack_answer(answer), F_VECTOR: vectors[i].tobytes(),
                                        F_EXPIRES: repr(now + TTL_S)})
                pipe.expire(key, TTL_S)
            await pipe.execute()
    return time.perf_counter() - started


async def wait_indexed(redis: aioredis.Redis, index: RediSearchIndex, n: int) -> None:
    while await index.size() < n:
        await asyncio.sleep(0.5)


async def measure(cache: SemanticCache, queries: list[tuple[str, np.ndarray]], exact_best: list[str]) -> dict:
    for text, vector in queries[:20]:  # warm-up
        await cache.lookup(SemanticTarget(SCOPE, text, vector))
    latencies, search_latencies, hits, recall = [], [], 0, 0
    for (text, vector), best in zip(queries, exact_best):
        started = time.perf_counter()
        hit = await cache.lookup(SemanticTarget(SCOPE, text, vector))
        latencies.append((time.perf_counter() - started) * 1000)
        hits += hit is not None
        started = time.perf_counter()
        nearest = await cache.index.search(SCOPE.tenant, SCOPE.digest, vector, cache.matcher.candidates)
        search_latencies.append((time.perf_counter() - started) * 1000)
        recall += bool(nearest) and nearest[0].key == best
    return {"p50_ms": round(statistics.median(latencies), 3), "p90_ms": round(float(np.percentile(latencies, 90)), 3),
            "p99_ms": round(float(np.percentile(latencies, 99)), 3),
            "index_search_p50_ms": round(statistics.median(search_latencies), 3),
            "recall_at_1": round(recall / len(queries), 4), "hit_fraction": round(hits / len(queries), 3)}


async def run(args: argparse.Namespace) -> None:
    rows = json.loads(DATA.read_text())
    origins = list(dict.fromkeys(r["origin"] for r in rows))
    similars = [r["similar"] for r in rows][:args.queries]
    vectors_by_text = embed_all(origins + similars, threads=1)
    base = np.stack([vectors_by_text[o] for o in origins])
    entries = make_entries(base, args.entries, args.noise)
    queries = [(s, vectors_by_text[s]) for s in similars]
    hnsw = HnswSettings(ef_runtime=args.ef_runtime)
    matcher = SemanticMatcher(SemanticSettings(threshold=args.threshold))
    server = ValkeyServer() if args.redis_url is None else None
    if server:
        server.start()
    redis = aioredis.Redis.from_url(args.redis_url or server.url)
    try:
        prefix = "bench"
        redisearch = RediSearchIndex(redis, f"{prefix}:sem:", EMBEDDING_DIM, hnsw=hnsw)
        await redisearch.drop()
        await redis.flushdb()
        await redisearch.ensure()
        cache = SemanticCache(redis, NoEmbedder(), redisearch, prefix, matcher)
        load_s = await load(redis, cache, origins, entries)
        started = time.perf_counter()
        await wait_indexed(redis, redisearch, args.entries)
        keys = [cache.entry_key(SCOPE, f"{origins[i % len(origins)]} #{i}") for i in range(args.entries)]
        exact_best = [keys[int(np.argmax(entries @ v))] for _, v in queries]
        common = {"entries": args.entries, "queries": len(queries), "ef_runtime": args.ef_runtime,
                  "threshold": args.threshold, "noise": args.noise}
        if "redisearch" in args.backends:
            result = await measure(cache, queries, exact_best)
            print(json.dumps({"backend": "redisearch", **common, **result, "load_s": round(load_s, 1),
                              "index_wait_s": round(time.perf_counter() - started, 1)}), flush=True)
        if "faiss" in args.backends:
            faiss_index = FaissIndex(EMBEDDING_DIM, hnsw=hnsw)
            started = time.perf_counter()
            loaded = await faiss_index.rebuild(redis, f"{prefix}:sem:")
            rebuild_s = time.perf_counter() - started
            cache = SemanticCache(redis, NoEmbedder(), faiss_index, prefix, matcher)
            result = await measure(cache, queries, exact_best)
            print(json.dumps({"backend": "faiss", **common, **result, "rebuild_from_redis_s": round(rebuild_s, 1),
                              "rebuilt_entries": loaded}), flush=True)
        await redisearch.drop()
        await redis.flushdb()
    finally:
        await redis.aclose()
        if server:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--ef-runtime", type=int, default=HnswSettings().ef_runtime)
    parser.add_argument("--threshold", type=float, default=SemanticSettings().threshold)
    parser.add_argument("--noise", type=float, default=0.03, help="per-dimension noise of the entry copies")
    parser.add_argument("--backends", default="redisearch,faiss")
    parser.add_argument("--redis-url", default=None, help="an existing Redis with RediSearch (default: start one)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
