"""The unreliable-angle rule (galpipe.science.reliability)."""

from __future__ import annotations

import numpy as np

from galpipe.science.reliability import unreliable_angle


def test_round_or_disagreeing_bands_are_unreliable_and_the_rest_not() -> None:
    anisotropy = np.array([0.05, 0.005, 0.05, 0.01, 0.05, np.nan])
    spread = np.array([2.0, 2.0, 30.0, 20.0, np.nan, np.nan])
    flagged = unreliable_angle(anisotropy, spread, min_anisotropy=0.01, max_band_spread_deg=20.0)
    # elongated and agreeing; too round; bands disagree; exactly at both thresholds (kept);
    # no spread; no angle at all.
    assert flagged.tolist() == [False, True, True, False, True, True]


def test_thresholds_that_cannot_bite_flag_only_missing_angles() -> None:
    anisotropy = np.array([0.0, 0.3, np.nan])
    spread = np.array([80.0, 0.0, np.nan])
    flagged = unreliable_angle(
        anisotropy, spread, min_anisotropy=0.0, max_band_spread_deg=float("inf")
    )
    assert flagged.tolist() == [False, False, True]
