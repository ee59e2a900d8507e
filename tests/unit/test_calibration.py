"""The error bound → threshold step (orchestrator.calibration): the Clopper-Pearson bound, fixed-sequence
search, the veto bar for a paraphrase-loss budget, and what the layer takes from settings and the
calibration table."""

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


def band(settings: SemanticSettings, rows: list) -> float:
    return calibration.verifier_bars(settings, record(rows)).band


def test_the_layer_takes_tau_from_the_setting_or_from_delta_and_the_tables_band() -> None:
    # 440 lookups in the band (cosine 0.7 < the 0.8 threshold): 40 wrong hits are 9 %
    rows = [[0.95, True, 0.7]] * 400 + [[0.6, False, 0.7]] * 40
    assert band(SemanticSettings(verifier=ON), rows) == 0.95
    assert band(SemanticSettings(max_error_rate=0.2, verifier=ON), rows) == 0.6
    assert band(SemanticSettings(verifier=VerifierSettings(enabled=True, threshold=0.5)), rows) == 0.5
    assert calibration.verifier_bars(SemanticSettings(verifier=VerifierSettings(enabled=False))) is None
    assert band(SemanticSettings(verifier=ON), [[0.9, False, 0.7]] * 5) == math.inf


def test_only_the_band_counts_against_delta() -> None:
    """Wrong hits above the threshold are the cosine rule's (the verifier only vetoes there); pairs below the
    band's lower bar are never served: neither moves τ."""
    in_band = [[0.95, True, 0.7]] * 400 + [[0.6, False, 0.7]] * 40
    above = [[0.6, False, 0.9]] * 300
    below = [[0.6, False, 0.55]] * 300
    loose = SemanticSettings(max_error_rate=0.1, verifier=ON)
    assert band(loose, in_band + above) == 0.6
    narrow = SemanticSettings(max_error_rate=0.1, verifier=VerifierSettings(enabled=True, min_similarity=0.6))
    assert band(narrow, in_band + below) == 0.6
    assert band(loose, in_band + below) == 0.95  # from 0.5: those count


def test_the_veto_is_the_highest_bar_that_refuses_at_most_epsilon_of_the_paraphrases_above_the_threshold() -> None:
    # 200 paraphrases above the 0.8 threshold scored 0.001, 0.002, ..., 0.2; near misses and the band ignored
    paraphrases = [[i / 1000, True, 0.9] for i in range(1, 201)]
    rows = paraphrases + [[0.0001, False, 0.9]] * 50 + [[0.0001, True, 0.7]] * 50
    veto = calibration.verifier_bars(SemanticSettings(verifier=ON), record(rows)).veto  # ε = 1 %: 2 of 200
    assert veto == 0.003 and sum(r[0] < veto for r in paraphrases) == 2
    five = SemanticSettings(verifier=VerifierSettings(enabled=True, max_veto_loss=0.05))
    assert calibration.verifier_bars(five, record(rows)).veto == 0.011
    none = SemanticSettings(verifier=VerifierSettings(enabled=True, max_veto_loss=0.0))
    assert calibration.verifier_bars(none, record(rows)).veto == 0.001  # refuses no paraphrase seen
    assert calibration.verifier_bars(SemanticSettings(verifier=ON), record([[0.5, False, 0.9]])).veto == 0.0
    fixed = SemanticSettings(verifier=VerifierSettings(enabled=True, threshold=0.7, veto_below=0.2))
    assert calibration.verifier_bars(fixed, {}) == calibration.Bars(0.7, 0.2)  # both set: no table read


def test_veto_effect_counts_what_the_veto_removes_and_costs_above_the_threshold() -> None:
    rows = [[0.01, False, 0.9]] * 3 + [[0.02, True, 0.9]] + [[0.5, False, 0.9]] * 2 + [[0.01, False, 0.7]] * 4
    effect = calibration.veto_effect(record(rows)["calibration"], SemanticSettings(verifier=ON), 0.05)
    assert effect == {"veto_below": 0.05, "wrong_hits_removed_per_lookup": 0.3,
                      "paraphrase_hits_lost_per_lookup": 0.1, "wrong_hits_left_per_lookup": 0.2}


def test_a_table_for_other_settings_still_gives_bars_with_a_warning_naming_the_fix(
        caplog: pytest.LogCaptureFixture) -> None:
    rows = [[0.95, True, 0.7]] * 400
    wider_band = SemanticSettings(verifier=VerifierSettings(enabled=True, min_similarity=0.4))
    assert band(wider_band, rows) == 0.95
    assert "ORCH_SEMANTIC__VERIFIER__THRESHOLD" in caplog.text
    caplog.clear()
    no_guard = SemanticSettings(guard=GuardSettings(enabled=False), verifier=ON)
    assert band(no_guard, rows) == 0.95
    assert "eval calibrate" in caplog.text
    caplog.clear()
    band(SemanticSettings(verifier=VerifierSettings(enabled=True, min_similarity=0.6)), rows)
    calibration.verifier_bars(SemanticSettings(verifier=ON), record(rows))  # the defaults the table was made for
    assert caplog.text == ""
