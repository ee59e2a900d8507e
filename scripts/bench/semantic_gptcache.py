"""Side by side with GPTCache (PyPI `gptcache`) on its own benchmark data, with the same embeddings.

Both caches get the same all-MiniLM-L6-v2 vectors, computed once up front (embedding is excluded from the
lookup time of both). GPTCache runs its documented set-up (sqlite + faiss `IDMap,Flat` L2 +
SearchDistanceEvaluation) through `gptcache.adapter.api.get`; its `similarity_threshold` t means
L2² <= 4(1 - t), i.e. cosine >= 2t - 1 on unit vectors, so GPTCache's 0.95 / 0.90 / 0.80 are compared with
our cosine 0.90 / 0.80 / 0.60, and with our default threshold (guard on). A hit is correct when it returns the
query's own origin. One JSON line per (cache, threshold).

    python scripts/bench/semantic_gptcache.py [--data FILE] [--limit N]
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from model_assets.minilm import EMBEDDING_DIM
from orchestrator.cache.semantic import SemanticMatcher
from orchestrator.cache.vector_index import FaissIndex, IndexedEntry
from orchestrator.config import GuardSettings, SemanticSettings
from orchestrator.eval import EVAL_TENANT, embed_all, index_search
from stack import paths

DATA = paths.SEMANTIC_DATA_DIR / "gptcache_mock_data.json"
GPTCACHE_THRESHOLDS = (0.95, 0.90, 0.80)


def summarise(name: str, threshold: float, rows, answers, lookup_ms) -> dict:
    hits = [a for a in answers if a is not None]
    correct = sum(1 for (origin, _), a in zip(rows, answers) if a == origin)
    return {"cache": name, "threshold": threshold, "pairs": len(rows), "hit_rate": round(len(hits) / len(rows), 4),
            "precision": round(correct / len(hits), 4) if hits else None, "wrong_hits": len(hits) - correct,
            "p50_lookup_ms": round(statistics.median(lookup_ms), 4),
            "p99_lookup_ms": round(float(np.percentile(lookup_ms, 99)), 4)}


def run_gptcache(rows, vectors, threshold: float, workdir: Path) -> dict:
    from gptcache import Cache, Config
    from gptcache.adapter.api import get
    from gptcache.manager import CacheBase, VectorBase, get_data_manager
    from gptcache.processor.pre import get_prompt
    from gptcache.similarity_evaluation.distance import SearchDistanceEvaluation

    folder = Path(tempfile.mkdtemp(dir=workdir))
    data_manager = get_data_manager(CacheBase("sqlite", sql_url=f"sqlite:///{folder}/cache.db"),
                                    VectorBase("faiss", dimension=EMBEDDING_DIM, index_path=str(folder / "faiss.index")))
    cache = Cache()
    cache.init(pre_embedding_func=get_prompt, embedding_func=lambda text, **_: vectors[text],
               data_manager=data_manager,
               similarity_evaluation=SearchDistanceEvaluation(), config=Config(similarity_threshold=threshold))
    origins = list(dict.fromkeys(origin for origin, _ in rows))
    cache.import_data(questions=origins, answers=origins)
    answers, lookup_ms = [], []
    for _, similar in rows:
        started = time.perf_counter()
        answers.append(get(similar, cache_obj=cache))
        lookup_ms.append((time.perf_counter() - started) * 1000)
    return summarise("gptcache", threshold, rows, answers, lookup_ms)


def run_ours(rows, vectors, threshold: float, guard: bool) -> dict:
    origins = list(dict.fromkeys(origin for origin, _ in rows))
    index = FaissIndex(EMBEDDING_DIM)
    index.add_many([IndexedEntry(f"o:{i}", EVAL_TENANT, "all", o, vectors[o], float("inf")) for i, o in enumerate(origins)])
    matcher = SemanticMatcher(SemanticSettings(threshold=threshold, guard=GuardSettings(enabled=guard)))
    answers, lookup_ms = [], []
    for _, similar in rows:
        started = time.perf_counter()
        chosen = matcher.decide(similar, index_search(index, "all", vectors[similar], matcher.candidates)).chosen
        lookup_ms.append((time.perf_counter() - started) * 1000)
        answers.append(chosen.query if chosen else None)
    return summarise("ours" + ("+guard" if guard else ""), threshold, rows, answers, lookup_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--limit", type=int, default=None, help="first N pairs only (smoke runs)")
    args = parser.parse_args()
    rows = [(r["origin"], r["similar"]) for r in json.loads(args.data.read_text())][:args.limit]
    vectors = embed_all([t for row in rows for t in row], threads=1)
    workdir = Path(tempfile.mkdtemp(prefix="gptcache-bench-"))
    # registered first, so it runs after GPTCache's own exit hook (which writes its faiss index there)
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    for t in GPTCACHE_THRESHOLDS:
        print(json.dumps({**run_gptcache(rows, vectors, t, workdir), "cosine_equivalent": round(2 * t - 1, 2)}),
              flush=True)
        print(json.dumps(run_ours(rows, vectors, round(2 * t - 1, 2), guard=False)), flush=True)
        print(json.dumps(run_ours(rows, vectors, round(2 * t - 1, 2), guard=True)), flush=True)
    print(json.dumps(run_ours(rows, vectors, SemanticSettings().threshold, guard=True)), flush=True)


if __name__ == "__main__":
    main()
