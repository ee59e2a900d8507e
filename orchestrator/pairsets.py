"""The labelled question sets and their one fixed split into train / calibration / test.

The split is decided by a hash of each row's stored question (its `origin`), not by position or a random
draw, so it never changes when a file is re-ordered and every tool agrees on it: the verifier is trained on
`train` only (scripts/train_verifier.py), its decision threshold is set on `calibration`
(orchestrator.calibration), and accuracy is reported on `test`. adversarial_dev.jsonl is test data as a whole.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from model_assets.paths import PROJECT_ROOT

Split = Literal["train", "calibration", "test"]
SPLITS: tuple[Split, ...] = ("train", "calibration", "test")
#: Percent of rows per split, in SPLITS order.
SHARES = (60, 20, 20)
DATA_DIR = PROJECT_ROOT / "data" / "semantic"
QQP = DATA_DIR / "qqp_duplicates_5k.json"
GPTCACHE = DATA_DIR / "gptcache_mock_data.json"
ADVERSARIAL = DATA_DIR / "adversarial_dev.jsonl"
#: The verifier's labelled pair sets written by scripts/train_verifier.py (one per split but train).
VERIFIER_PAIRS = {"calibration": DATA_DIR / "verifier_calibration.jsonl", "test": DATA_DIR / "verifier_test.jsonl"}


@dataclass(frozen=True)
class Pair:
    """A stored question, a new one, and whether one answer serves both; `kind` says how it was made."""

    cached: str
    query: str
    same_answer: bool
    kind: str | None = None


def split_of(origin: str) -> Split:
    """The split a row belongs to, from the SHA-256 of its stored question."""
    bucket = int(hashlib.sha256(origin.encode("utf-8")).hexdigest()[:8], 16) % 100
    if bucket < SHARES[0]:
        return "train"
    return "calibration" if bucket < SHARES[0] + SHARES[1] else "test"


def load_origin_similar(path: Path) -> list[tuple[str, str]]:
    """A GPTCache-shaped file: a JSON list of {origin, similar}. ValueError names what is wrong."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
        return [(str(r["origin"]), str(r["similar"])) for r in rows]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: expected a JSON list of {{origin, similar}}: {error}") from None


def rows_in(rows: list[tuple[str, str]], split: Split | None) -> list[tuple[str, str]]:
    """The rows of one split (all rows for None)."""
    return [row for row in rows if split is None or split_of(row[0]) == split]


def load_pairs(path: Path) -> list[Pair]:
    """A JSON-lines file of {cached, query, same_answer[, kind]}. ValueError names the bad line."""
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pairs.append(Pair(str(row["cached"]), str(row["query"]), bool(row["same_answer"]), row.get("kind")))
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}:{number}: expected {{cached, query, same_answer}}: {error}") from None
    if not pairs:
        raise ValueError(f"{path}: no pairs")
    return pairs


def write_pairs(path: Path, pairs: list[Pair]) -> None:
    path.write_text("".join(json.dumps({"cached": p.cached, "query": p.query, "same_answer": p.same_answer,
                                        "kind": p.kind}, ensure_ascii=False) + "\n" for p in pairs),
                    encoding="utf-8")
