"""The error bound → threshold step (orchestrator.calibration): the Clopper-Pearson bound, fixed-sequence
search, and what the layer takes from settings and the calibration table."""

from __future__ import annotations

import math

import pytest

from orchestrator import calibration
from orchestrator.config import GuardSettings, SemanticSettings, VerifierSettings


def test_upper_bound_matches_the_closed_forms() -> None:
    # no wrong hit in n: the bound solves (1 - p)^n = 0.05
    assert calibration.upper_bound(0, 150) == pytest.approx(1 - 0.05 ** (1 / 150), abs=1e-6)
    # one wrong hit in n: (1 - p)^n + n p (1 - p)^(n-1) = 0.05, checked by putting the bound back in
    bound = calibration.upper_bound(1, 200)
    assert calibration.binomial_cdf(1, 200, bound) == pytest.approx(0.05, abs=1e-6)
    assert calibration.upper_bound(5, 5) == 1.0 and calibration.upper_bound(0, 0) == 1.0


def test_threshold_is_the_loosest_whose_bound_on_wrong_hits_per_lookup_holds() -> None:
    table = [(0.99, True)] * 300 + [(0.9, False)] * 2 + [(0.8, True)] * 100 + [(0.7, False)] * 20
    found = calibration.threshold_for(table, 1000, 0.02)  # 1,000 lookups, 422 of them decided
    assert found.threshold == 0.8 and (found.hits, found.wrong_hits, found.decided) == (402, 2, 422)
    assert found.upper_bound <= 0.02 < calibration.upper_bound(22, 1000)
    # the bound is per lookup: the same table out of fewer lookups supports a stricter threshold only
    assert calibration.threshold_for(table, 100, 0.05).threshold == 0.99
    assert calibration.threshold_for([(0.9, False)] * 5, 100, 0.05).threshold is None
    # ties: a threshold admits every pair with its score
    assert calibration.threshold_for([(0.9, True), (0.9, False), (0.9, False)], 10, 0.6).hits == 3


def record(rows: list, min_similarity: float = 0.5) -> dict:
    return {"calibration": {"pairs": len(rows), "min_similarity": min_similarity,
                            "guard": GuardSettings().model_dump(mode="json"), "rows": rows}}


ON = VerifierSettings(enabled=True)


def test_the_layer_takes_tau_from_the_setting_or_from_delta_and_the_tables_band() -> None:
    # 440 lookups in the band (cosine 0.7 < the 0.8 threshold): 40 wrong hits are 9 %
    rows = [[0.95, True, 0.7]] * 400 + [[0.6, False, 0.7]] * 40
    assert calibration.verifier_threshold(SemanticSettings(verifier=ON), record(rows)) == 0.95
    assert calibration.verifier_threshold(SemanticSettings(max_error_rate=0.2, verifier=ON), record(rows)) == 0.6
    explicit = SemanticSettings(verifier=VerifierSettings(enabled=True, threshold=0.5))
    assert calibration.verifier_threshold(explicit, record(rows)) == 0.5
    assert calibration.verifier_threshold(SemanticSettings()) is None  # off by default
    assert calibration.verifier_threshold(SemanticSettings(verifier=ON), record([[0.9, False, 0.7]] * 5)) == math.inf


def test_only_the_band_counts_against_delta() -> None:
    """Wrong hits above the threshold are the cosine rule's (the verifier only vetoes there); pairs below the
    band's lower bar are never served: neither moves τ."""
    band = [[0.95, True, 0.7]] * 400 + [[0.6, False, 0.7]] * 40
    above = [[0.6, False, 0.9]] * 300
    below = [[0.6, False, 0.55]] * 300
    loose = SemanticSettings(max_error_rate=0.1, verifier=ON)
    assert calibration.verifier_threshold(loose, record(band + above)) == 0.6
    narrow = SemanticSettings(max_error_rate=0.1, verifier=VerifierSettings(enabled=True, min_similarity=0.6))
    assert calibration.verifier_threshold(narrow, record(band + below)) == 0.6
    assert calibration.verifier_threshold(loose, record(band + below)) == 0.95  # from 0.5: those count


def test_veto_effect_counts_what_the_veto_removes_and_costs_above_the_threshold() -> None:
    rows = [[0.01, False, 0.9]] * 3 + [[0.02, True, 0.9]] + [[0.5, False, 0.9]] * 2 + [[0.01, False, 0.7]] * 4
    effect = calibration.veto_effect(record(rows)["calibration"], SemanticSettings(verifier=ON))
    assert effect == {"veto_below": 0.05, "wrong_hits_removed_per_lookup": 0.3,
                      "paraphrase_hits_lost_per_lookup": 0.1, "wrong_hits_left_per_lookup": 0.2}


def test_a_table_for_other_settings_still_gives_tau_with_a_warning_naming_the_fix(
        caplog: pytest.LogCaptureFixture) -> None:
    rows = [[0.95, True, 0.7]] * 400
    wider_band = SemanticSettings(verifier=VerifierSettings(enabled=True, min_similarity=0.4))
    assert calibration.verifier_threshold(wider_band, record(rows)) == 0.95
    assert "ORCH_SEMANTIC__VERIFIER__THRESHOLD" in caplog.text
    caplog.clear()
    no_guard = SemanticSettings(guard=GuardSettings(enabled=False), verifier=ON)
    assert calibration.verifier_threshold(no_guard, record(rows)) == 0.95
    assert "eval calibrate" in caplog.text
    caplog.clear()
    narrower_band = SemanticSettings(verifier=VerifierSettings(enabled=True, min_similarity=0.6))
    calibration.verifier_threshold(narrower_band, record(rows))
    calibration.verifier_threshold(SemanticSettings(), record(rows))
    assert caplog.text == ""
