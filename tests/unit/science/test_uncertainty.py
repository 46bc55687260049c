"""The calibrated uncertainty of the combined angle, on hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from galpipe.science.uncertainty import AngleErrCalibration, calibrated_angle_err

#: Round constants, so that the expected values can be worked out by hand below.
HAND = AngleErrCalibration(
    log_scale=math.log(2.0),
    sigma_power=0.5,
    anisotropy_power=-1.0,
    contaminated_log_factor=math.log(3.0),
    anisotropy_floor=0.01,
)


def test_hand_values() -> None:
    raw = np.array([4.0, 4.0, 16.0, 9.0])
    anisotropy = np.array([0.5, 0.5, 0.25, 0.001])  # the last is below the floor of 0.01
    contaminated = np.array([False, True, False, False])
    sigma = calibrated_angle_err(raw, anisotropy, contaminated, HAND)
    # 2 * sqrt(raw) / max(b/a, 0.01) * (3 if contaminated): 2*2/0.5, *3, 2*4/0.25, 2*3/0.01 -> cap
    np.testing.assert_allclose(sigma, [8.0, 24.0, 32.0, 90.0], rtol=1e-12)


def test_nan_inputs_give_nan_and_zero_stays_zero() -> None:
    sigma = calibrated_angle_err(
        np.array([np.nan, 5.0, 0.0]), np.array([0.1, np.nan, 0.1]), np.zeros(3, bool), HAND
    )
    assert np.isnan(sigma[:2]).all()
    assert sigma[2] == 0.0


def test_identity_returns_the_raw_error_bit_for_bit() -> None:
    raw = np.array([0.0, 0.37, 12.5, 89.9, 120.0])
    sigma = calibrated_angle_err(
        raw, np.full(5, 0.02), np.array([1, 0, 1, 0, 1], bool), AngleErrCalibration.identity()
    )
    np.testing.assert_array_equal(sigma, np.minimum(raw, 90.0))


def test_default_constants_widen_round_and_contaminated_and_shrink_elongated() -> None:
    raw = np.full(3, 5.0)
    sigma = calibrated_angle_err(
        raw, np.array([0.2, 0.005, 0.005]), np.array([False, False, True]), AngleErrCalibration()
    )
    assert sigma[0] < 5.0 < sigma[1] < sigma[2]


def test_non_positive_floor_is_rejected() -> None:
    with pytest.raises(ValueError, match="anisotropy_floor"):
        AngleErrCalibration(anisotropy_floor=0.0)
