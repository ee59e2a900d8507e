"""The evaluation CLI end to end on small files it writes (real in-process embedder, faiss, guard)."""

import json
from pathlib import Path

from typer.testing import CliRunner

from orchestrator.eval import app

runner = CliRunner()

PAIRS = [
    {"cached": "How do I change my email address?", "query": "What's the way to update my email address?",
     "same_answer": True, "kind": "paraphrase"},
    {"cached": "What is the tallest mountain on Earth?", "query": "Which mountain on Earth is the tallest?",
     "same_answer": True, "kind": "paraphrase"},
    {"cached": "What is the currency of Japan?", "query": "What is the currency of Brazil?",
     "same_answer": False, "kind": "entity"},
    {"cached": "Convert feet to meters.", "query": "Convert meters to feet.", "same_answer": False, "kind": "order"},
    {"cached": "What is 12 plus 30?", "query": "What is 12 plus 31?", "same_answer": False, "kind": "number"},
]


def write_pairs(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in PAIRS) + "\n")
    return path


def lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_pairs_with_and_without_guard(tmp_path: Path) -> None:
    path = write_pairs(tmp_path)
    result = runner.invoke(app, ["pairs", str(path), "--threshold", "0.6", "--mode", "guard"])
    assert result.exit_code == 0, result.output
    (row,) = lines(result.output)
    assert row["pairs"] == 5 and row["threshold"] == 0.6
    assert row["paraphrase_hit_rate"] == 1.0
    assert row["near_miss_rejection_rate"] == 1.0
    assert row["precision"] == 1.0
    result = runner.invoke(app, ["pairs", str(path), "--threshold", "0.6", "--mode", "cosine"])
    (row,) = lines(result.output)
    assert row["near_miss_rejection_rate"] < 1.0  # similarity alone lets the order swap through
    assert row["precision"] < 1.0


def test_pairs_with_the_verifier_report_the_error_rate_beside_the_bound(tmp_path: Path) -> None:
    result = runner.invoke(app, ["pairs", str(write_pairs(tmp_path)), "--mode", "verifier"])
    assert result.exit_code == 0, result.output
    (row,) = lines(result.output)
    assert row["verifier"] is True and row["guard"] is True
    assert row["max_error_rate"] == 0.02 and 0.0 < row["verifier_threshold"] < 1.0
    assert row["near_miss_rejection_rate"] == 1.0 and row["paraphrase_hit_rate"] == 1.0
    assert row["error_rate"] == 0.0
    result = runner.invoke(app, ["pairs", str(write_pairs(tmp_path)), "--sweep", "--mode", "verifier"])
    assert result.exit_code != 0 and "--sweep varies the cosine threshold" in result.output


def test_pairs_sweep_prints_one_line_per_threshold(tmp_path: Path) -> None:
    result = runner.invoke(app, ["pairs", str(write_pairs(tmp_path)), "--sweep", "--mode", "guard"])
    rows = lines(result.output)
    assert len(rows) == 50
    assert [r["threshold"] for r in rows] == sorted(r["threshold"] for r in rows)
    hit_rates = [r["paraphrase_hit_rate"] for r in rows]
    assert hit_rates == sorted(hit_rates, reverse=True)  # a higher bar never adds hits


def test_gptcache_protocol(tmp_path: Path) -> None:
    data = [{"origin": "How do I bake sourdough bread at home?", "similar": "What is the way to bake sourdough at home?"},
            {"origin": "What is the speed of light in vacuum?", "similar": "How fast does light travel in a vacuum?"},
            {"origin": "Which planet is closest to the sun?", "similar": "What planet is nearest to the sun?"}]
    path = tmp_path / "mock.json"
    path.write_text(json.dumps(data))
    result = runner.invoke(app, ["gptcache", str(path), "--split", "all", "--mode", "guard", "--threshold", "0.7"])
    assert result.exit_code == 0, result.output
    (row,) = lines(result.output)
    assert row["hit_rate"] == 1.0 and row["precision"] == 1.0 and row["wrong_hits"] == 0
    assert row["p50_search_ms"] > 0
    (strict,) = lines(runner.invoke(app, ["gptcache", str(path), "--split", "all", "--mode", "guard",
                                          "--threshold", "0.999"]).output)
    assert strict["hit_rate"] == 0.0 and strict["precision"] is None
    (verified,) = lines(runner.invoke(app, ["gptcache", str(path), "--split", "all", "--mode", "verifier"]).output)
    assert verified["verifier"] is True and verified["precision"] == 1.0 and verified["error_rate"] == 0.0


def test_gptcache_reads_one_split(tmp_path: Path) -> None:
    """Rows are split by their origin's hash: a split is a fixed subset, and the three add up."""
    data = [{"origin": f"How do I reach the office number {i}?", "similar": f"Office {i}: how do I get there?"}
            for i in range(40)]
    path = tmp_path / "mock.json"
    path.write_text(json.dumps(data))
    counts = {split: lines(runner.invoke(app, ["gptcache", str(path), "--split", split, "--mode", "cosine"]).output)[0]
              ["pairs"] for split in ("train", "calibration", "test")}
    assert sum(counts.values()) == 40 and all(counts.values())


def test_calibrate_cosine_meets_the_precision_and_prints_settings(tmp_path: Path) -> None:
    result = runner.invoke(app, ["calibrate-cosine", str(write_pairs(tmp_path)), "--min-precision", "1.0"])
    assert result.exit_code == 0, result.output
    (row,) = lines(result.output)
    assert row["precision"] == 1.0
    assert row["paraphrase_hit_rate"] == 1.0
    settings = row["settings"]
    assert settings["ORCH_SEMANTIC__GUARD__ENABLED"] is True  # without the guard, precision 1.0 costs paraphrases
    assert settings["ORCH_SEMANTIC__THRESHOLD"] == row["threshold"]


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"cached": "a", "query": "b"}\n')
    result = runner.invoke(app, ["pairs", str(path)])
    assert result.exit_code != 0
    assert "same_answer" in result.output
    result = runner.invoke(app, ["calibrate-cosine", str(write_pairs(tmp_path)), "--min-precision", "1.5"])
    assert result.exit_code != 0 and "min-precision" in result.output
    result = runner.invoke(app, ["pairs", str(write_pairs(tmp_path)), "--mode", "nearest"])
    assert result.exit_code != 0 and "--mode must be one of" in result.output
    result = runner.invoke(app, ["calibrate", "--max-error-rate", "0"])
    assert result.exit_code != 0 and "max-error-rate" in result.output
