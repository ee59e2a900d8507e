"""Evaluate the semantic cache's decision on labelled data; calibrate it.

    python -m orchestrator.eval report                       # every set x every decision, test split only
    python -m orchestrator.eval pairs FILE.jsonl [--mode cosine|guard|verifier] [--threshold T] [--sweep]
    python -m orchestrator.eval gptcache FILE.json [--split test|calibration|train|all] [--mode ...]
    python -m orchestrator.eval calibrate [--max-error-rate D]   # the verifier's band threshold for δ = D
    python -m orchestrator.eval calibrate-cosine FILE.jsonl --min-precision P   # the fallback rule's bar

It runs without servers, through the same code as the layer: the in-process all-MiniLM-L6-v2 (the ONNX
model Triton's `embedding` serves), the faiss index (orchestrator.cache.vector_index.FaissIndex), the pair
verifier (model_assets.pair_verifier, what Triton's `pair_verifier` serves) and SemanticMatcher. The three
decisions (`--mode`): `cosine` (similarity ≥ threshold), `guard` (and the near-miss guard agrees: the layer's
fallback, and its rule with `semantic.verifier.enabled` off), `verifier` (the guard, then the verifier's veto
above the threshold and its τ for `semantic.max_error_rate` in the band below; its lines give the realised
error beside δ). Without `--mode`, `pairs` and `gptcache` measure the layer's default decision.
Embedding and scoring are done up front in length-sorted batches and are not part of the lookup time. Every
command prints one JSON line per result. The labelled sets and their fixed split are orchestrator.pairsets (data/semantic/, sources and licences in its README.md).
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import typer

from model_assets.minilm import EMBEDDING_DIM, OnnxMiniLM
from model_assets.pair_verifier import OnnxPairVerifier, load_record
from orchestrator import calibration, pairsets
from orchestrator.cache.guard import CHECKS, NearMissGuard
from orchestrator.cache.semantic import Decision, SemanticMatcher
from orchestrator.cache.vector_index import Candidate, FaissIndex, IndexedEntry
from orchestrator.config import GuardSettings, SemanticSettings, VerifierSettings
from orchestrator.pairsets import Pair

app = typer.Typer(add_completion=False, help=__doc__)
SWEEP = [round(t, 2) for t in np.arange(0.50, 0.995, 0.01)]
NO_EXPIRY = float("inf")
EVAL_TENANT = "eval"
#: Cosine similarity from which two different origins count as near duplicates (reported, never tuned on).
NEAR_DUPLICATE = 0.9
_FULL_GUARD = NearMissGuard()
#: The layer's own defaults, for the options below.
DEFAULTS = SemanticSettings()
Mode = Literal["cosine", "guard", "verifier"]
MODES: tuple[Mode, ...] = ("cosine", "guard", "verifier")
#: The decision the layer makes with default settings.
DEFAULT_MODE: Mode = "verifier" if DEFAULTS.verifier.enabled else "guard"
SplitOption = Literal["train", "calibration", "test", "all"]


def embed_all(texts: Sequence[str], threads: int, batch: int = 64) -> dict[str, np.ndarray]:
    """Unique texts embedded in batches of similar length (little padding); text -> unit vector."""
    model = OnnxMiniLM(intra_op_threads=threads)
    unique = sorted(set(texts), key=len)
    vectors: dict[str, np.ndarray] = {}
    for start in range(0, len(unique), batch):
        chunk = unique[start:start + batch]
        vectors.update(zip(chunk, model.encode(chunk)))
    return vectors


def mode_settings(mode: Mode, threshold: float, candidates: int,
                  guard: GuardSettings | None = None) -> SemanticSettings:
    """The layer's settings for one decision (`guard` replaces the default guard in the guard mode)."""
    off = VerifierSettings(enabled=False)
    if mode == "cosine":
        return SemanticSettings(threshold=threshold, candidates=candidates, guard=GuardSettings(enabled=False),
                                verifier=off)
    if mode == "guard":
        return SemanticSettings(threshold=threshold, candidates=candidates, guard=guard or GuardSettings(),
                                verifier=off)
    return SemanticSettings(threshold=threshold, candidates=candidates, verifier=VerifierSettings(enabled=True))


class Decider:
    """Runs the matcher over many lookups, scoring every verifier question of all of them in one pass."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._verifier: OnnxPairVerifier | None = None

    def decide(self, matcher: SemanticMatcher, queries: Sequence[str],
               found: Sequence[Sequence[Candidate]]) -> list[Candidate | None]:
        return [d.chosen for d in self.decisions(matcher, queries, found)]

    def decisions(self, matcher: SemanticMatcher, queries: Sequence[str],
                  found: Sequence[Sequence[Candidate]]) -> list[Decision]:
        screened = [matcher.screen(q, c) for q, c in zip(queries, found)]
        if matcher.bars is None:
            return [matcher.choose(s) for s in screened]
        pending = [matcher.to_verify(s) for s in screened]
        flat = [(c.query, q) for q, cs in zip(queries, pending) for c in cs]
        if self._verifier is None:
            self._verifier = OnnxPairVerifier(intra_op_threads=self.threads)
        values = iter(self._verifier.score(flat).tolist())
        scores = [{c.key: next(values) for c in cs} for cs in pending]
        return [matcher.choose(s, v) for s, v in zip(screened, scores)]


def _emit(row: dict) -> None:
    typer.echo(json.dumps(row, ensure_ascii=False))


def _verifier_fields(matcher: SemanticMatcher, lookups: int, wrong: Sequence[Candidate]) -> dict:
    """δ beside the realised error it bounds (wrong hits per lookup served from the band, below the cosine
    threshold) and the total (wrong hits per lookup, the band's and the cosine rule's above it)."""
    if matcher.bars is None:
        return {}
    band = sum(c.similarity < matcher.threshold for c in wrong)
    return {"max_error_rate": DEFAULTS.max_error_rate, "verifier_threshold": round(matcher.bars.band, 6),
            "veto_below": round(matcher.bars.veto, 6), "band_error_rate": round(band / lookups, 4),
            "error_rate": round(len(wrong) / lookups, 4)}


# pairs ------------------------------------------------------------------------------------------------------------

def load_pairs(path: Path) -> list[Pair]:
    try:
        return pairsets.load_pairs(path)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


def pair_candidates(pairs: Sequence[Pair], vectors: dict[str, np.ndarray], k: int) -> list[list[Candidate]]:
    """Each pair in a fresh scope: store `cached`, look up `query`."""
    index = FaissIndex(EMBEDDING_DIM)
    index.add_many([IndexedEntry(f"pair:{i}", EVAL_TENANT, f"pair:{i}", p.cached, vectors[p.cached], NO_EXPIRY)
                    for i, p in enumerate(pairs)])
    return [index_search(index, f"pair:{i}", vectors[p.query], k) for i, p in enumerate(pairs)]


def pair_report(pairs: Sequence[Pair], candidates: Sequence[list[Candidate]], matcher: SemanticMatcher,
                decider: Decider) -> dict:
    decisions = decider.decisions(matcher, [p.query for p in pairs], candidates)
    hits = [d.chosen is not None for d in decisions]
    same = [h for h, p in zip(hits, pairs) if p.same_answer]
    different = [h for h, p in zip(hits, pairs) if not p.same_answer]
    true_hits = sum(same)
    reasons: Counter = Counter(r for d in decisions for _, rs in d.rejected for r in rs)
    missed_by_kind = Counter(p.kind or "unlabelled" for p, hit in zip(pairs, hits) if not p.same_answer and hit)
    return {
        "pairs": len(pairs),
        "threshold": matcher.threshold,
        "guard": matcher.guard.settings.enabled,
        "verifier": matcher.bars is not None,
        "paraphrase_hit_rate": round(true_hits / len(same), 4) if same else None,
        "near_miss_rejection_rate": round(1 - sum(different) / len(different), 4) if different else None,
        "precision": round(true_hits / sum(hits), 4) if sum(hits) else None,
        "hits": sum(hits),
        "wrong_hits": sum(different),
        **_verifier_fields(matcher, len(pairs), [d.chosen for d, p in zip(decisions, pairs)
                                                  if d.chosen is not None and not p.same_answer]),
        "wrong_hits_by_kind": dict(missed_by_kind),
        "rejection_reasons": dict(reasons),
    }


def _check_sweep(sweep: bool, mode: Mode) -> None:
    if sweep and mode == "verifier":
        raise typer.BadParameter("--sweep varies the cosine threshold: use it with --mode cosine or --mode guard")


@app.command()
def pairs(file: Path,
          threshold: Annotated[float, typer.Option(help="cosine threshold (cosine, guard)")] = DEFAULTS.threshold,
          sweep: Annotated[bool, typer.Option(help="one line per threshold 0.50..0.99")] = False,
          mode: Annotated[str, typer.Option(help="cosine | guard | verifier (default: the layer's)")] = DEFAULT_MODE,
          candidates: int = DEFAULTS.candidates, threads: int = 1) -> None:
    """Labelled pairs {cached, query, same_answer}: paraphrase hit rate, near-miss rejection, precision."""
    chosen_mode = _mode(mode)
    _check_sweep(sweep, chosen_mode)
    data = load_pairs(file)
    vectors = embed_all([t for p in data for t in (p.cached, p.query)], threads)
    found = pair_candidates(data, vectors, candidates)
    decider = Decider(threads)
    for t in (SWEEP if sweep else [threshold]):
        _emit(pair_report(data, found, SemanticMatcher(mode_settings(chosen_mode, t, candidates)), decider))


def _mode(value: str) -> Mode:
    if value not in MODES:
        raise typer.BadParameter(f"--mode must be one of {', '.join(MODES)}, got {value!r}")
    return value  # type: ignore[return-value]


# gptcache ---------------------------------------------------------------------------------------------------------

@dataclass
class Lookups:
    """GPTCache's protocol, searched once: every origin stored in one scope, every `similar` looked up."""

    rows: list[tuple[str, str]]
    origins: list[str]
    vectors: dict[str, np.ndarray]
    found: list[list[Candidate]]
    lookup_ms: list[float]


def gptcache_lookups(rows: list[tuple[str, str]], candidates: int, threads: int) -> Lookups:
    vectors = embed_all([t for row in rows for t in row], threads)
    origins = list(dict.fromkeys(o for o, _ in rows))
    index = FaissIndex(EMBEDDING_DIM)
    index.add_many([IndexedEntry(f"o:{i}", EVAL_TENANT, "all", o, vectors[o], NO_EXPIRY)
                    for i, o in enumerate(origins)])
    found, lookup_ms = [], []
    for _, similar in rows:
        started = time.perf_counter()
        found.append(index_search(index, "all", vectors[similar], candidates))
        lookup_ms.append((time.perf_counter() - started) * 1000)
    return Lookups(rows, origins, vectors, found, lookup_ms)


def gptcache_report(lookups: Lookups, matcher: SemanticMatcher, decider: Decider) -> dict:
    """A hit is correct when it returns the query's own origin (identical origins are one entry)."""
    chosen = decider.decide(matcher, [s for _, s in lookups.rows], lookups.found)
    hits = correct = near_duplicate = 0
    wrong: list[Candidate] = []
    for (origin, _), candidate in zip(lookups.rows, chosen):
        if candidate is None:
            continue
        hits += 1
        if candidate.query == origin:
            correct += 1
            continue
        wrong.append(candidate)
        if is_near_duplicate(candidate.query, origin, lookups.vectors):
            near_duplicate += 1
    return {"pairs": len(lookups.rows), "origins": len(lookups.origins), "threshold": matcher.threshold,
            "guard": matcher.guard.settings.enabled, "verifier": matcher.bars is not None,
            "hit_rate": round(hits / len(lookups.rows), 4), "precision": round(correct / hits, 4) if hits else None,
            "wrong_hits": hits - correct, **_verifier_fields(matcher, len(lookups.rows), wrong),
            "wrong_hits_near_duplicate_origin": near_duplicate,
            "precision_near_duplicates_as_correct": round((correct + near_duplicate) / hits, 4) if hits else None,
            "p50_search_ms": round(statistics.median(lookups.lookup_ms), 4),
            "p99_search_ms": round(float(np.percentile(lookups.lookup_ms, 99)), 4)}


def load_rows(path: Path, split: SplitOption) -> list[tuple[str, str]]:
    try:
        rows = pairsets.rows_in(pairsets.load_origin_similar(path), None if split == "all" else split)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    if not rows:
        raise typer.BadParameter(f"{path}: no rows in split {split!r}")
    return rows


@app.command()
def gptcache(file: Path,
             threshold: Annotated[float, typer.Option(help="cosine threshold (cosine, guard)")] = DEFAULTS.threshold,
             sweep: Annotated[bool, typer.Option(help="one line per threshold 0.50..0.99")] = False,
             mode: Annotated[str, typer.Option(help="cosine | guard | verifier (default: the layer's)")] = DEFAULT_MODE,
             split: Annotated[str, typer.Option(help="train | calibration | test | all")] = "test",
             candidates: int = DEFAULTS.candidates, threads: int = 1) -> None:
    """GPTCache's protocol on one split of a {origin, similar} file: store every origin (one scope), query
    every similar; a hit is correct when it returns the query's own origin."""
    chosen_mode = _mode(mode)
    _check_sweep(sweep, chosen_mode)
    if split not in ("train", "calibration", "test", "all"):
        raise typer.BadParameter(f"--split must be train, calibration, test or all, got {split!r}")
    lookups = gptcache_lookups(load_rows(file, split), candidates, threads)  # type: ignore[arg-type]
    decider = Decider(threads)
    for t in (SWEEP if sweep else [threshold]):
        _emit(gptcache_report(lookups, SemanticMatcher(mode_settings(chosen_mode, t, candidates)), decider))


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


# report -----------------------------------------------------------------------------------------------------------

#: The sets of the report: labelled pair files (whole: test data) and GPTCache-protocol files (test split).
REPORT_PAIRS = {"adversarial_dev": pairsets.ADVERSARIAL, "verifier_test": pairsets.VERIFIER_PAIRS["test"]}
REPORT_PROTOCOL = {"qqp_test": pairsets.QQP, "gptcache_test": pairsets.GPTCACHE}


@app.command()
def report(threads: int = 1, candidates: int = DEFAULTS.candidates) -> None:
    """Every set, side by side in one run: cosine alone, cosine + guard, cosine + guard + verifier (the
    layer's defaults), on test data only. One JSON line per (set, decision)."""
    decider = Decider(threads)
    matchers = {mode: SemanticMatcher(mode_settings(mode, DEFAULTS.threshold, candidates)) for mode in MODES}
    for name, path in REPORT_PAIRS.items():
        data = load_pairs(path)
        found = pair_candidates(data, embed_all([t for p in data for t in (p.cached, p.query)], threads), candidates)
        for mode, matcher in matchers.items():
            _emit({"set": name, "mode": mode, **pair_report(data, found, matcher, decider)})
    for name, path in REPORT_PROTOCOL.items():
        lookups = gptcache_lookups(load_rows(path, "test"), candidates, threads)
        for mode, matcher in matchers.items():
            _emit({"set": name, "mode": mode, **gptcache_report(lookups, matcher, decider)})


# calibrate --------------------------------------------------------------------------------------------------------

@app.command()
def calibrate(file: Path = pairsets.VERIFIER_PAIRS["calibration"],
              max_error_rate: Annotated[float, typer.Option(help="δ: bound on the band's wrong hits per lookup")] =
              DEFAULTS.max_error_rate,
              min_similarity: Annotated[float, typer.Option(help="the band's lower cosine bar")] =
              DEFAULTS.verifier.min_similarity,
              threshold: Annotated[float, typer.Option(help="the cosine threshold: the band's top")] =
              DEFAULTS.threshold,
              max_veto_loss: Annotated[float, typer.Option(
                  help="ε: share of paraphrases above the threshold the veto may refuse")] =
              DEFAULTS.verifier.max_veto_loss,
              threads: int = 1) -> None:
    """The verifier's band threshold τ for δ on the calibration split (orchestrator.calibration): scores it
    with the shipped model, prints τ, its hits and wrong hits there, the 95 % upper bound of the band's wrong
    hits per lookup, the τ the model's shipped calibration table gives (the layer's), and the veto bar for ε
    with what it removes and costs above the threshold."""
    if not 0.0 < max_error_rate < 1.0:
        raise typer.BadParameter("--max-error-rate must be within (0, 1)")
    try:
        settings = SemanticSettings(max_error_rate=max_error_rate, threshold=threshold, verifier=VerifierSettings(
            enabled=True, min_similarity=min_similarity, max_veto_loss=max_veto_loss))
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    table = calibration.build_table(load_pairs(file), OnnxPairVerifier(intra_op_threads=threads), settings,
                                    OnnxMiniLM(intra_op_threads=threads))
    found = calibration.band_threshold(table, settings)
    shipped = calibration.band_threshold(load_record()["calibration"], settings)
    _emit({"file": str(file), "lookups": table["pairs"], "in_band": found.decided, "max_error_rate": max_error_rate,
           "threshold": found.threshold, "hits": found.hits, "wrong_hits": found.wrong_hits,
           "wrong_hits_per_lookup": round(found.wrong_hits / table["pairs"], 4),
           "upper_bound_95": round(found.upper_bound, 4) if found.upper_bound is not None else None,
           "shipped_table_threshold": shipped.threshold,
           **calibration.veto_effect(table, settings, calibration.veto_for(table, settings)),
           "settings": {"ORCH_SEMANTIC__MAX_ERROR_RATE": max_error_rate, "ORCH_SEMANTIC__THRESHOLD": threshold,
                        "ORCH_SEMANTIC__VERIFIER__MIN_SIMILARITY": min_similarity,
                        "ORCH_SEMANTIC__VERIFIER__MAX_VETO_LOSS": max_veto_loss}})
    if found.threshold is None:
        raise typer.Exit(1)


def guard_variants() -> list[GuardSettings]:
    """Guard off, all checks, and all checks but one (to see whether a check costs more than it gives)."""
    variants = [GuardSettings(enabled=False), GuardSettings()]
    variants += [GuardSettings(checks=tuple(c for c in CHECKS if c != check)) for check in CHECKS]
    return variants


@app.command("calibrate-cosine")
def calibrate_cosine(file: Path, min_precision: Annotated[float, typer.Option(help="required precision on the pairs")],
                     candidates: int = DEFAULTS.candidates, threads: int = 1) -> None:
    """The fallback rule (no verifier): the threshold and guard settings that maximise paraphrase hits with
    precision >= P; print them."""
    if not 0.0 < min_precision <= 1.0:
        raise typer.BadParameter("--min-precision must be within (0, 1]")
    data = load_pairs(file)
    vectors = embed_all([t for p in data for t in (p.cached, p.query)], threads)
    found = pair_candidates(data, vectors, candidates)
    decider = Decider(threads)
    best: tuple | None = None
    for settings in guard_variants():
        for t in SWEEP:
            matcher = SemanticMatcher(mode_settings("guard", t, candidates, settings))
            score = pair_report(data, found, matcher, decider)
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
