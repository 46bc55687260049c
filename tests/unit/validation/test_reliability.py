"""Choosing the unreliable-angle thresholds on truth (galpipe.validation.reliability)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from galpipe.validation.reliability import (
    DetectionScore,
    ReliabilitySummary,
    choose_thresholds,
    detection_score,
    reliability_summary,
    sweep_thresholds,
)

# Six measured galaxies and one without an angle. Errors > 10 deg: galaxies 0, 1, 2.
ERRORS = np.array([40.0, 15.0, 12.0, 2.0, 1.0, 0.5, np.nan])
ANISOTROPY = np.array([0.002, 0.004, 0.05, 0.003, 0.05, 0.08, np.nan])
SPREAD = np.array([5.0, 5.0, 30.0, 3.0, 25.0, 1.0, np.nan])


def test_purity_and_completeness_of_a_hand_computed_case() -> None:
    flagged = np.array([True, True, False, True, False, False, True])
    score = detection_score(ERRORS, flagged, bad_deg=10.0)
    # The galaxy without an angle is left out: 6 measured, 3 bad, 3 flagged of which 2 bad.
    assert (score.n, score.n_bad, score.n_flagged) == (6, 3, 3)
    assert score.purity == pytest.approx(2 / 3)
    assert score.completeness == pytest.approx(2 / 3)
    nothing = detection_score(ERRORS, np.zeros(7, bool))
    assert nothing.n_flagged == 0
    assert math.isnan(nothing.purity)
    assert nothing.completeness == 0.0


def test_the_sweep_scores_every_pair_and_the_choice_is_the_most_complete_pure_one() -> None:
    scores = sweep_thresholds(
        ERRORS,
        ANISOTROPY,
        SPREAD,
        anisotropy_grid=(0.01,),
        band_spread_grid_deg=(math.inf, 20.0),
        bad_deg=10.0,
    )
    by_pair = {(s.min_anisotropy, s.max_band_spread_deg): s for s in scores}
    assert set(by_pair) == {(0.01, math.inf), (0.01, 20.0)}
    # b/a < 0.01 marks 0, 1, 3: two of three bad, two of three bad ones found.
    alone = by_pair[(0.01, math.inf)]
    assert (alone.n_flagged, alone.purity, alone.completeness) == (3, 2 / 3, 2 / 3)
    # ... or spread > 20 adds 2 (bad) and 4 (good): 3 of 5 bad, all bad ones found.
    both = by_pair[(0.01, 20.0)]
    assert (both.n_flagged, both.purity, both.completeness) == (5, 3 / 5, 1.0)
    assert choose_thresholds(scores, min_purity=0.6) == both
    assert choose_thresholds(scores, min_purity=0.65) == alone
    assert choose_thresholds(scores, min_purity=0.9) is None


# What the measurement flagged UNRELIABLE: galaxies 0 and 4 (and 6, which has no angle).
SHIPPED = np.array([True, False, False, False, True, False, True])


def _summary(**kwargs: float) -> ReliabilitySummary:
    return reliability_summary(
        ERRORS,
        ANISOTROPY,
        SPREAD,
        shipped_flagged=SHIPPED,
        shipped_min_anisotropy=0.003,
        shipped_max_band_spread_deg=20.0,
        bad_deg=10.0,
        **kwargs,
    )


def test_the_shipped_flag_is_scored_on_its_own_bits_with_its_thresholds() -> None:
    shipped = _summary(min_purity=0.6).shipped
    assert shipped is not None
    # Flagged 0 (bad) and 4 (good) of the six measured; of the three bad ones only 0 is found.
    assert (shipped.n, shipped.n_bad, shipped.n_flagged) == (6, 3, 2)
    assert shipped.purity == pytest.approx(1 / 2)
    assert shipped.completeness == pytest.approx(1 / 3)
    assert (shipped.min_anisotropy, shipped.max_band_spread_deg) == (0.003, 20.0)


def test_the_summary_survives_json_with_an_unused_spread_threshold() -> None:
    summary = _summary(min_purity=0.6)
    assert summary.chosen is not None
    assert summary.chosen in summary.sweep
    assert any(math.isinf(s.max_band_spread_deg) for s in summary.sweep)
    back = ReliabilitySummary.from_json(json.loads(json.dumps(summary.to_json(), allow_nan=False)))
    assert back.chosen == summary.chosen
    assert back.shipped == summary.shipped
    for a, b in zip(back.sweep, summary.sweep, strict=True):
        assert (a.min_anisotropy, a.max_band_spread_deg, a.n_flagged) == (
            b.min_anisotropy,
            b.max_band_spread_deg,
            b.n_flagged,
        )
        assert isinstance(a, DetectionScore)


def test_a_shipped_flag_that_marks_nothing_survives_json() -> None:
    summary = reliability_summary(
        ERRORS,
        ANISOTROPY,
        SPREAD,
        shipped_flagged=np.zeros(7, bool),
        shipped_min_anisotropy=0.0,
        shipped_max_band_spread_deg=math.inf,
    )
    assert summary.shipped is not None
    assert math.isnan(summary.shipped.purity)
    back = ReliabilitySummary.from_json(json.loads(json.dumps(summary.to_json(), allow_nan=False)))
    assert back.shipped is not None
    assert math.isnan(back.shipped.purity)
    assert math.isinf(back.shipped.max_band_spread_deg)
    assert back.shipped.n_flagged == 0


def test_a_summary_written_before_the_flag_reads_without_a_shipped_score() -> None:
    values = _summary(min_purity=0.6).to_json()
    del values["shipped"]
    old = ReliabilitySummary.from_json(json.loads(json.dumps(values, allow_nan=False)))
    assert old.shipped is None
    assert old.chosen is not None
