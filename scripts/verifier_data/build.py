"""The verifier's labelled pairs for one split, from the rows of that split only (orchestrator.pairsets).

- paraphrase: each row's (origin, similar), the data's real duplicates;
- hard_negative: a row's `similar` with the origins of other rows nearest to it by MiniLM cosine (what the
  cache would otherwise serve it; the QQP and GPTCache protocols count exactly these as wrong hits);
- synthetic near misses (scripts/verifier_data/perturb.py, one pair per family drawn), meaning-keeping rewrites
  (surface, the question asked as a request) and pairs of requests for a written work made from the question.

Deterministic for a seed: rows are visited in file order with one random.Random.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from orchestrator.eval import is_near_duplicate
from orchestrator.pairsets import Pair
from verifier_data.perturb import Perturber


def hard_negatives(rows: Sequence[tuple[str, str]], vectors: dict[str, np.ndarray], per_row: int,
                   skip_near_duplicates: bool = False) -> list[Pair]:
    """For each row, its `similar` against the `per_row` nearest other origins (a different text); with
    `skip_near_duplicates` (the train split), origins that are likely the row's own question asked again (the
    eval's near duplicates; QQP holds many unmarked ones) are passed over: as "different question" labels they
    would teach noise. The calibration and test splits keep them: there they are what the cache will meet."""
    origins = [origin for origin, _ in rows]
    matrix = np.stack([vectors[o] for o in origins])
    pairs = []
    for i, (origin, similar) in enumerate(rows):
        similarities = matrix @ vectors[similar]
        taken = 0
        for j in np.argsort(-similarities):
            if origins[j] in (origin, similar) or j == i:
                continue
            if skip_near_duplicates and is_near_duplicate(origins[j], origin, vectors):
                continue
            pairs.append(Pair(origins[j], similar, False, "hard_negative"))
            taken += 1
            if taken == per_row:
                break
    return pairs


def build_pairs(rows: Sequence[tuple[str, str]], vectors: dict[str, np.ndarray], perturber: Perturber,
                rng: random.Random, negatives_per_row: int, families_per_row: int,
                surface_share: float, skip_near_duplicates: bool = False) -> list[Pair]:
    """Every pair of one split's rows (see the module docstring)."""
    pairs = [Pair(origin, similar, True, "paraphrase") for origin, similar in rows]
    pairs += hard_negatives(rows, vectors, negatives_per_row, skip_near_duplicates)
    for origin, similar in rows:
        misses = perturber.near_misses(origin, rng)
        drawn = rng.sample(misses, min(families_per_row, len(misses)))
        for rewrite in drawn:
            cached = rng.choice((origin, similar))
            pairs.append(Pair(cached, rewrite.text, False, rewrite.family))
        pairs += perturber.written_works(origin, similar, drawn, rng)
        if rng.random() < surface_share:
            for rewrite in perturber.paraphrases(similar, rng):
                pairs.append(Pair(origin, rewrite.text, True, rewrite.family))
    return pairs
