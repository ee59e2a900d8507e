"""The verifier's band threshold for an error bound: `semantic.max_error_rate` (δ) → τ.

A wrong hit serves another question's answer. The error rate bounded is vCache's: wrong hits per lookup (the
share of requests that get another question's answer). Each calibration pair (never trained on) is one
lookup: its stored question, then its new one.

What δ bounds is the error the verifier's band adds: the pairs below `semantic.threshold`, which cosine and
guard alone never serve and the verifier serves at a score ≥ τ. Above the threshold the verifier only vetoes
(a score below the veto bar), so it can only remove wrong hits there; what remains there is the cosine +
guard rule's own error, set by its threshold (`eval calibrate-cosine`) and reported beside δ by the eval.
What the veto costs is bounded instead: the bar is the highest that refuses at most
`semantic.verifier.max_veto_loss` (ε) of the calibration paraphrases above the threshold, so the veto
follows the model's score scale rather than a number fitted to one model.
On the synthetic calibration split that rule's error alone is ~10 % per lookup (half its pairs are near
misses made to sit close in embedding space), so no threshold could bound the total at 2 %: docs/benchmarks.md.

The band's pairs (cosine in [`semantic.verifier.min_similarity`, `semantic.threshold`), no guard objection)
are scored once; for a candidate τ the wrong hits are those scoring ≥ τ with different answers. The bound is
the one-sided 95 % Clopper-Pearson upper limit of wrong hits / lookups. The lookups are a fixed number and
the wrong hits only grow as τ falls, so the loosest τ whose bound is ≤ δ is found by trying thresholds from
the strictest down and stopping at the first that fails: one family of nested tests, no confidence spent on
the search.

The scored table is part of the model's training record (model_assets/pair_verifier/record.json): every
calibration pair from its lower bar up that the guard lets through, as (score, same answer, cosine). The
orchestrator derives both bars (`Bars`) at start for its own settings without scoring anything;
`python -m orchestrator.eval calibrate` scores the calibration split again and prints the same bars.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_assets.minilm import OnnxMiniLM
from model_assets.pair_verifier import OnnxPairVerifier, load_record
from orchestrator.cache.guard import NearMissGuard
from orchestrator.config import SemanticSettings
from orchestrator.pairsets import Pair

log = logging.getLogger(__name__)
CONFIDENCE = 0.95
#: Texts per embedding run when scoring a set (length-sorted, so little padding).
EMBED_BATCH = 64


@dataclass(frozen=True)
class Threshold:
    """τ and what it gives on the calibration split (hits, wrong hits, the bound on wrong hits per lookup,
    how many pairs the verifier decided); τ is None when no threshold keeps the bound ≤ δ."""

    threshold: float | None
    max_error_rate: float
    hits: int
    wrong_hits: int
    upper_bound: float | None
    decided: int


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X ≤ k) for X ~ Binomial(n, p), summed in log space (n in the thousands stays exact enough)."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
             for i in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def upper_bound(wrong: int, hits: int, confidence: float = CONFIDENCE) -> float:
    """One-sided Clopper-Pearson upper limit of the wrong-hit rate: the p with P(X ≤ wrong) = 1 - confidence."""
    if hits == 0:
        return 1.0
    if wrong >= hits:
        return 1.0
    low, high = wrong / hits, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        if binomial_cdf(wrong, hits, middle) > 1.0 - confidence:
            low = middle
        else:
            high = middle
    return high


def threshold_for(table: Sequence[tuple[float, bool]], lookups: int, max_error_rate: float,
                  confidence: float = CONFIDENCE) -> Threshold:
    """τ for δ from (score, same_answer) of the band's calibration pairs out of `lookups` (strictest first)."""
    ordered = sorted(table, key=lambda row: -row[0])
    best = Threshold(None, max_error_rate, 0, 0, None, len(ordered))
    hits = wrong = 0
    for i, (score, same) in enumerate(ordered):
        hits += 1
        wrong += not same
        if i + 1 < len(ordered) and ordered[i + 1][0] == score:
            continue  # a threshold admits every pair with its score
        bound = upper_bound(wrong, lookups, confidence)
        if bound > max_error_rate:
            break
        best = Threshold(score, max_error_rate, hits, wrong, bound, len(ordered))
    return best


@dataclass(frozen=True)
class Row:
    """One calibration pair the guard lets through, from the table's lower bar up."""

    score: float
    same_answer: bool
    similarity: float


def band_rows(table: dict, settings: SemanticSettings) -> list[tuple[float, bool]]:
    """(score, same_answer) of the table's pairs in the settings' band."""
    low, high = settings.verifier.min_similarity, settings.threshold
    return [(r.score, r.same_answer) for r in table_rows(table) if low <= r.similarity < high]


def band_threshold(table: dict, settings: SemanticSettings) -> Threshold:
    """τ for the settings' δ and band from a calibration table."""
    return threshold_for(band_rows(table, settings), table["pairs"], settings.max_error_rate)


def veto_for(table: dict, settings: SemanticSettings) -> float:
    """The veto bar for ε: the highest score below which at most ε of the table's paraphrases from
    `semantic.threshold` up fall (0.0, no veto, when the table has none there)."""
    scores = sorted(r.score for r in table_rows(table) if r.same_answer and r.similarity >= settings.threshold)
    allowed = math.floor(settings.verifier.max_veto_loss * len(scores))
    return scores[allowed] if allowed < len(scores) else 0.0


@dataclass(frozen=True)
class Bars:
    """The verifier scores a candidate needs: `band` (τ) below `semantic.threshold`, `veto` from it up."""

    band: float
    veto: float


def verifier_bars(settings: SemanticSettings, record: dict | None = None) -> Bars | None:
    """The bars the layer uses (None when the verifier is off). Each is its setting when set
    (`verifier.threshold`, `verifier.veto_below`), else derived from the shipped model's calibration table:
    τ from δ for the settings' band (math.inf when no τ meets δ: the band then serves nothing), the veto from
    ε. A table made with another guard than the settings', or from a higher lower bar than theirs, still
    gives bars, with a warning naming the fix: the bound is then approximate."""
    verifier = settings.verifier
    if not verifier.enabled:
        return None
    if verifier.threshold is not None and verifier.veto_below is not None:
        return Bars(verifier.threshold, verifier.veto_below)
    table = (record or load_record())["calibration"]
    if table["min_similarity"] > verifier.min_similarity or table["guard"] != settings.guard.model_dump(mode="json"):
        log.warning("the pair verifier's calibration table was made for pairs from cosine %s with the default "
                    "guard; for these settings run `python -m orchestrator.eval calibrate` with them and set "
                    "ORCH_SEMANTIC__VERIFIER__THRESHOLD and ORCH_SEMANTIC__VERIFIER__VETO_BELOW",
                    table["min_similarity"])
    band = band_threshold(table, settings).threshold if verifier.threshold is None else verifier.threshold
    veto = veto_for(table, settings) if verifier.veto_below is None else verifier.veto_below
    return Bars(math.inf if band is None else band, veto)


def cosines(pairs: Sequence[Pair], embedder: OnnxMiniLM) -> np.ndarray:
    texts = sorted({t for p in pairs for t in (p.cached, p.query)}, key=len)
    vectors = {}
    for start in range(0, len(texts), EMBED_BATCH):
        chunk = texts[start:start + EMBED_BATCH]
        vectors.update(zip(chunk, embedder.encode(chunk)))
    return np.array([float(vectors[p.cached] @ vectors[p.query]) for p in pairs], dtype=np.float32)


def build_table(pairs: Sequence[Pair], verifier: OnnxPairVerifier, settings: SemanticSettings | None = None,
                embedder: OnnxMiniLM | None = None) -> dict:
    """The calibration table: the lower bar and guard it was made with, the number of lookups, and a
    [score, same_answer, cosine] row for every pair from the bar up that the guard lets through."""
    settings = settings or SemanticSettings()
    guard = NearMissGuard(settings.guard)
    low = settings.verifier.min_similarity
    taken = [(p, float(s)) for p, s in zip(pairs, cosines(pairs, embedder or OnnxMiniLM()))
             if s >= low and guard.agrees(p.cached, p.query)]
    scores = verifier.score([(p.cached, p.query) for p, _ in taken])
    rows = [[round(float(score), 6), pair.same_answer, round(similarity, 6)]
            for (pair, similarity), score in zip(taken, scores)]
    return {"pairs": len(pairs), "min_similarity": low, "guard": settings.guard.model_dump(mode="json"),
            "rows": rows}


def table_rows(table: dict) -> list[Row]:
    return [Row(float(score), bool(same), float(similarity)) for score, same, similarity in table["rows"]]


def veto_effect(table: dict, settings: SemanticSettings, veto: float) -> dict:
    """What a veto bar does on the table's pairs from `semantic.threshold` up (which cosine and guard alone
    serve): wrong hits it removes, paraphrase hits it costs and wrong hits it leaves, per lookup."""
    above = [r for r in table_rows(table) if r.similarity >= settings.threshold]
    lookups = table["pairs"]

    def per_lookup(same: bool, vetoed: bool) -> float:
        return round(sum(r.same_answer == same and (r.score < veto) == vetoed for r in above) / lookups, 4)

    return {"veto_below": round(veto, 6), "wrong_hits_removed_per_lookup": per_lookup(False, True),
            "paraphrase_hits_lost_per_lookup": per_lookup(True, True),
            "wrong_hits_left_per_lookup": per_lookup(False, False)}


def pair_metrics(pairs: Sequence[Pair], scores: np.ndarray) -> dict:
    """Ranking quality (AUC) and accuracy at 0.5 of the verifier alone, overall and per kind of pair."""
    labels = np.array([p.same_answer for p in pairs])
    ranks = np.argsort(np.argsort(scores)) + 1
    positives = int(labels.sum())
    negatives = len(labels) - positives
    auc = (ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives)
    correct = (scores >= 0.5) == labels
    by_kind: Counter = Counter()
    totals: Counter = Counter()
    for pair, ok in zip(pairs, correct):
        totals[pair.kind] += 1
        by_kind[pair.kind] += int(ok)
    return {"pairs": len(pairs), "auc": round(float(auc), 4), "accuracy": round(float(correct.mean()), 4),
            "accuracy_by_kind": {kind: round(by_kind[kind] / totals[kind], 4) for kind in sorted(totals)}}


def save_record(path: Path, record: dict) -> None:
    path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
