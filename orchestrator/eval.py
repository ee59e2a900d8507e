"""Evaluate the semantic cache's decision (threshold + near-miss guard) on labelled data; calibrate it.

    python -m orchestrator.eval pairs FILE.jsonl [--threshold T] [--sweep] [--no-guard]
    python -m orchestrator.eval gptcache FILE.json [--threshold T] [--sweep] [--no-guard]
    python -m orchestrator.eval calibrate FILE.jsonl --min-precision P

It runs without servers, through the same code as the layer: the in-process all-MiniLM-L6-v2 (the ONNX
model Triton's `embedding` serves), the faiss index (orchestrator.cache.vector_index.FaissIndex) and
SemanticMatcher (threshold, then guard). Embedding is done up front in length-sorted batches and is not
part of the lookup time. Every command prints one JSON line per threshold. The labelled sets are in the
repository's `data/semantic/` (sources and licences in its README.md), e.g.
`python -m orchestrator.eval pairs data/semantic/adversarial_dev.jsonl`.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from model_assets.minilm import EMBEDDING_DIM, OnnxMiniLM
from orchestrator.cache.guard import CHECKS, NearMissGuard
from orchestrator.cache.semantic import SemanticMatcher
from orchestrator.cache.vector_index import Candidate, FaissIndex, IndexedEntry
from orchestrator.config import GuardSettings, SemanticSettings

app = typer.Typer(add_completion=False, help=__doc__)
SWEEP = [round(t, 2) for t in np.arange(0.50, 0.995, 0.01)]
NO_EXPIRY = float("inf")
EVAL_TENANT = "eval"
#: Cosine similarity from which two different origins count as near duplicates (reported, never tuned on).
NEAR_DUPLICATE = 0.9
_FULL_GUARD = NearMissGuard()
#: The layer's own defaults, for the options below.
DEFAULTS = SemanticSettings()


def embed_all(texts: Sequence[str], threads: int, batch: int = 64) -> dict[str, np.ndarray]:
    """Unique texts embedded in batches of similar length (little padding); text -> unit vector."""
    model = OnnxMiniLM(intra_op_threads=threads)
    unique = sorted(set(texts), key=len)
    vectors: dict[str, np.ndarray] = {}
    for start in range(0, len(unique), batch):
        chunk = unique[start:start + batch]
        vectors.update(zip(chunk, model.encode(chunk)))
    return vectors


def _matcher(threshold: float, guard: GuardSettings, candidates: int) -> SemanticMatcher:
    return SemanticMatcher(SemanticSettings(threshold=threshold, guard=guard, candidates=candidates))


def _emit(row: dict) -> None:
    typer.echo(json.dumps(row, ensure_ascii=False))


# pairs ------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pair:
    cached: str
    query: str
    same_answer: bool
    kind: str | None = None


def load_pairs(path: Path) -> list[Pair]:
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pairs.append(Pair(str(row["cached"]), str(row["query"]), bool(row["same_answer"]), row.get("kind")))
        except (ValueError, KeyError, TypeError) as error:
            raise typer.BadParameter(f"{path}:{number}: expected {{cached, query, same_answer}}: {error}")
    if not pairs:
        raise typer.BadParameter(f"{path}: no pairs")
    return pairs


def pair_candidates(pairs: Sequence[Pair], vectors: dict[str, np.ndarray], k: int) -> list[list[Candidate]]:
    """Each pair in a fresh scope: store `cached`, look up `query`."""
    index = FaissIndex(EMBEDDING_DIM)
    index.add_many([IndexedEntry(f"pair:{i}", EVAL_TENANT, f"pair:{i}", p.cached, vectors[p.cached], NO_EXPIRY)
                    for i, p in enumerate(pairs)])
    return [index_search(index, f"pair:{i}", vectors[p.query], k) for i, p in enumerate(pairs)]


def score_pairs(pairs: Sequence[Pair], candidates: Sequence[list[Candidate]], matcher: SemanticMatcher) -> dict:
    hits = [matcher.choose(p.query, c).chosen is not None for p, c in zip(pairs, candidates)]
    same = [h for h, p in zip(hits, pairs) if p.same_answer]
    different = [h for h, p in zip(hits, pairs) if not p.same_answer]
    true_hits = sum(same)
    reasons: Counter = Counter()
    missed_by_kind: Counter = Counter()
    for p, c, hit in zip(pairs, candidates, hits):
        if not p.same_answer and hit:
            missed_by_kind[p.kind or "unlabelled"] += 1
        if c and c[0].similarity >= matcher.threshold:
            reasons.update(matcher.guard.reasons(c[0].query, p.query))
    return {
        "pairs": len(pairs),
        "threshold": matcher.threshold,
        "guard": matcher.guard.settings.enabled,
        "paraphrase_hit_rate": round(true_hits / len(same), 4) if same else None,
        "near_miss_rejection_rate": round(1 - sum(different) / len(different), 4) if different else None,
        "precision": round(true_hits / sum(hits), 4) if sum(hits) else None,
        "hits": sum(hits),
        "wrong_hits": sum(different),
        "wrong_hits_by_kind": dict(missed_by_kind),
        "guard_reasons": dict(reasons),
    }


@app.command()
def pairs(file: Path, threshold: Annotated[float, typer.Option(help="cosine similarity threshold")] = DEFAULTS.threshold,
          sweep: Annotated[bool, typer.Option(help="one line per threshold 0.50..0.99")] = False,
          guard: Annotated[bool, typer.Option(help="near-miss guard on/off")] = True,
          candidates: int = DEFAULTS.candidates, threads: int = 1) -> None:
    """Labelled pairs {cached, query, same_answer}: paraphrase hit rate, near-miss rejection, precision."""
    data = load_pairs(file)
    vectors = embed_all([t for p in data for t in (p.cached, p.query)], threads)
    found = pair_candidates(data, vectors, candidates)
    for t in (SWEEP if sweep else [threshold]):
        _emit(score_pairs(data, found, _matcher(t, GuardSettings(enabled=guard), candidates)))


# gptcache ---------------------------------------------------------------------------------------------------------

def load_origin_similar(path: Path) -> list[tuple[str, str]]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
        return [(str(r["origin"]), str(r["similar"])) for r in rows]
    except (ValueError, KeyError, TypeError) as error:
        raise typer.BadParameter(f"{path}: expected a JSON list of {{origin, similar}}: {error}")


@app.command()
def gptcache(file: Path,
             threshold: Annotated[float, typer.Option(help="cosine similarity threshold")] = DEFAULTS.threshold,
             sweep: Annotated[bool, typer.Option(help="one line per threshold 0.50..0.99")] = False,
             guard: Annotated[bool, typer.Option(help="near-miss guard on/off")] = True,
             candidates: int = DEFAULTS.candidates, threads: int = 1) -> None:
    """GPTCache's protocol: store every origin (one scope), query every similar; a hit is correct when it
    returns the query's own origin. Identical origins are one entry, as in the layer (same key)."""
    rows = load_origin_similar(file)
    vectors = embed_all([t for row in rows for t in row], threads)
    origins = list(dict.fromkeys(o for o, _ in rows))
    index = FaissIndex(EMBEDDING_DIM)
    index.add_many([IndexedEntry(f"o:{i}", EVAL_TENANT, "all", o, vectors[o], NO_EXPIRY) for i, o in enumerate(origins)])
    found, lookup_ms = [], []
    first = _matcher(threshold, GuardSettings(enabled=guard), candidates)
    for _, similar in rows:
        started = time.perf_counter()
        result = index_search(index, "all", vectors[similar], candidates)
        first.choose(similar, result)
        lookup_ms.append((time.perf_counter() - started) * 1000)
        found.append(result)
    for t in (SWEEP if sweep else [threshold]):
        matcher = _matcher(t, GuardSettings(enabled=guard), candidates)
        hits = correct = near_duplicate = 0
        for (origin, similar), result in zip(rows, found):
            chosen = matcher.choose(similar, result).chosen
            if chosen is None:
                continue
            hits += 1
            if chosen.query == origin:
                correct += 1
            elif is_near_duplicate(chosen.query, origin, vectors):
                near_duplicate += 1
        _emit({"pairs": len(rows), "origins": len(origins), "threshold": t, "guard": guard,
               "hit_rate": round(hits / len(rows), 4), "precision": round(correct / hits, 4) if hits else None,
               "wrong_hits": hits - correct, "wrong_hits_near_duplicate_origin": near_duplicate,
               "precision_near_duplicates_as_correct": round((correct + near_duplicate) / hits, 4) if hits else None,
               "p50_lookup_ms": round(statistics.median(lookup_ms), 4),
               "p99_lookup_ms": round(float(np.percentile(lookup_ms, 99)), 4)})


def is_near_duplicate(a: str, b: str, vectors: dict[str, np.ndarray]) -> bool:
    """Two stored texts that say the same thing (cosine >= NEAR_DUPLICATE and no guard objection): a
    hit on one for the other's paraphrase serves an equivalent answer, though the protocol counts it wrong."""
    return float(vectors[a] @ vectors[b]) >= NEAR_DUPLICATE and _FULL_GUARD.agrees(a, b)


def index_search(index: FaissIndex, scope: str, vector: np.ndarray, k: int) -> list[Candidate]:
    """One lookup's index search, driven synchronously (FaissIndex.search never waits on anything)."""
    coroutine = index.search(EVAL_TENANT, scope, vector, k)
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("FaissIndex.search unexpectedly awaited")


# calibrate --------------------------------------------------------------------------------------------------------

def guard_variants() -> list[GuardSettings]:
    """Guard off, all checks, and all checks but one (to see whether a check costs more than it gives)."""
    variants = [GuardSettings(enabled=False), GuardSettings()]
    variants += [GuardSettings(checks=tuple(c for c in CHECKS if c != check)) for check in CHECKS]
    return variants


@app.command()
def calibrate(file: Path, min_precision: Annotated[float, typer.Option(help="required precision on the pairs")],
              candidates: int = DEFAULTS.candidates, threads: int = 1) -> None:
    """Pick threshold and guard settings that maximise paraphrase hits with precision >= P; print them."""
    if not 0.0 < min_precision <= 1.0:
        raise typer.BadParameter("--min-precision must be within (0, 1]")
    data = load_pairs(file)
    vectors = embed_all([t for p in data for t in (p.cached, p.query)], threads)
    found = pair_candidates(data, vectors, candidates)
    best: tuple | None = None
    for settings in guard_variants():
        for t in SWEEP:
            matcher = _matcher(t, settings, candidates)
            score = score_pairs(data, found, matcher)
            if score["precision"] is None or score["precision"] < min_precision:
                continue
            # most paraphrase hits; then most near misses rejected; then the fewer checks; then the higher bar
            rank = (score["paraphrase_hit_rate"] or 0, score["near_miss_rejection_rate"] or 0,
                    -len(settings.checks) if settings.enabled else 0, t)
            if best is None or rank > best[0]:
                best = (rank, settings, score)
    if best is None:
        _emit({"error": f"no threshold and guard setting reaches precision {min_precision}"})
        raise typer.Exit(1)
    _, settings, score = best
    _emit({"min_precision": min_precision, **score,
           "settings": {"ORCH_SEMANTIC__THRESHOLD": score["threshold"],
                        "ORCH_SEMANTIC__GUARD__ENABLED": settings.enabled,
                        "ORCH_SEMANTIC__GUARD__CHECKS": sorted(settings.checks) if settings.enabled else [],
                        "ORCH_SEMANTIC__CANDIDATES": candidates}})


if __name__ == "__main__":
    app()
