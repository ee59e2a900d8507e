"""The shipped pair verifier is what scripts/train_verifier.py recorded: scored again on the fixed test and
calibration splits, the int8 ONNX file reproduces the recorded metrics and calibration table, and the
threshold the layer derives from them is the one `python -m orchestrator.eval calibrate` prints."""

from __future__ import annotations

import pytest

from model_assets.pair_verifier import MODEL_FILE, OnnxPairVerifier, load_record
from orchestrator import calibration
from orchestrator.config import SemanticSettings, VerifierSettings
from orchestrator.pairsets import VERIFIER_PAIRS, load_pairs

#: Scores agree to this across onnxruntime builds and thread counts (int8 kernels accumulate in int32).
SCORE_TOLERANCE = 1e-3
METRIC_TOLERANCE = 0.002
#: The shipped-file limit of the issue: larger models are trained at set-up instead.
MAX_MODEL_BYTES = 25 * 1024 * 1024


@pytest.fixture(scope="module")
def verifier() -> OnnxPairVerifier:
    return OnnxPairVerifier(intra_op_threads=2)


@pytest.fixture(scope="module")
def record() -> dict:
    return load_record()


def test_the_model_ships_in_the_repository_within_the_size_limit() -> None:
    assert 0 < MODEL_FILE.stat().st_size <= MAX_MODEL_BYTES


def test_the_shipped_model_reproduces_the_recorded_test_metrics(verifier: OnnxPairVerifier, record: dict) -> None:
    test = load_pairs(VERIFIER_PAIRS["test"])
    metrics = calibration.pair_metrics(test, verifier.score([(p.cached, p.query) for p in test]))
    recorded = record["test_metrics"]
    assert metrics["pairs"] == recorded["pairs"]
    assert metrics["auc"] == pytest.approx(recorded["auc"], abs=METRIC_TOLERANCE)
    assert metrics["accuracy"] == pytest.approx(recorded["accuracy"], abs=METRIC_TOLERANCE)
    assert metrics["auc"] >= 0.9  # a model that ranks no better than this was not trained


def test_the_shipped_calibration_table_is_the_models_and_gives_the_layers_threshold(
        verifier: OnnxPairVerifier, record: dict) -> None:
    table = calibration.build_table(load_pairs(VERIFIER_PAIRS["calibration"]), verifier)
    shipped = record["calibration"]
    assert {k: v for k, v in table.items() if k != "rows"} == {k: v for k, v in shipped.items() if k != "rows"}
    assert [same for _, same, _ in table["rows"]] == [same for _, same, _ in shipped["rows"]]
    for column in (0, 2):  # the score, the cosine
        assert [r[column] for r in table["rows"]] == pytest.approx([r[column] for r in shipped["rows"]],
                                                                   abs=SCORE_TOLERANCE)
    enabled = SemanticSettings(verifier=VerifierSettings(enabled=True))
    found = calibration.band_threshold(table, enabled)
    assert found.threshold is not None and found.upper_bound <= enabled.max_error_rate
    assert calibration.verifier_bars(enabled, record).band == pytest.approx(found.threshold, abs=SCORE_TOLERANCE)


def test_a_score_does_not_depend_on_the_pairs_scored_beside_it(verifier: OnnxPairVerifier) -> None:
    """int8 dynamic quantisation scales activations over the whole input: pairs are run one by one."""
    pair = ("How do I reset my password?", "What's the way to reset my password?")
    others = [("What is the capital of France?", "Which city is the capital of France?"), ("a " * 100, "b")]
    alone = verifier.score([pair])
    assert verifier.score([*others, pair])[-1] == alone[0]
    assert verifier.score([]).shape == (0,)
