"""Axial error statistics, bins and calibration (galpipe.validation.stats)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from galpipe.validation.stats import (
    AXIS_RATIO_EDGES,
    SNR_EDGES,
    BinnedCalibration,
    Calibration,
    ErrorStats,
    bin_labels,
    binned_calibration,
    binned_stats,
    calibration,
    error_stats,
)


def test_error_stats_of_known_values_and_nan_counts_as_unmeasured() -> None:
    errors = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    stats = error_stats(errors)
    assert (stats.n, stats.n_measured) == (5, 4)
    assert stats.median_deg == pytest.approx(2.5)
    assert stats.mean_deg == pytest.approx(2.5)
    assert stats.p68_deg == pytest.approx(np.percentile([1, 2, 3, 4], 68))
    assert stats.p95_deg == pytest.approx(np.percentile([1, 2, 3, 4], 95))


def test_error_stats_of_nothing_measured_is_none_in_json() -> None:
    stats = error_stats(np.array([np.nan, np.nan]))
    assert stats.n == 2
    assert stats.n_measured == 0
    assert math.isnan(stats.median_deg)
    assert stats.to_json()["median_deg"] is None
    back = ErrorStats.from_json(stats.to_json())
    assert (back.n, back.n_measured) == (2, 0)
    assert math.isnan(back.median_deg)


def test_stats_survive_a_json_round_trip() -> None:
    stats = error_stats(np.array([0.5, 1.25, 7.0]))
    assert ErrorStats.from_json(json.loads(json.dumps(stats.to_json()))) == stats
    coverage = calibration(np.array([1.0, 3.0]), np.array([2.0, 2.0]))
    assert Calibration.from_json(json.loads(json.dumps(coverage.to_json()))) == coverage


def test_bins_are_half_open_with_the_last_closed_and_outliers_dropped() -> None:
    edges = (0.2, 0.5, 1.0)
    values = np.array([0.1, 0.2, 0.49, 0.5, 1.0, 1.1])
    errors = np.array([100.0, 1.0, 2.0, 3.0, 4.0, 100.0])
    low, high = binned_stats(errors, values, edges)
    assert (low.n, low.mean_deg) == (2, 1.5)
    assert (high.n, high.mean_deg) == (2, 3.5)
    assert bin_labels(edges) == ["[0.2, 0.5)", "[0.5, 1]"]


def test_calibration_of_gaussian_errors_with_their_true_sigma() -> None:
    rng = np.random.default_rng(3)
    sigma = rng.uniform(0.5, 5.0, 200_000)
    errors = np.abs(rng.normal(0.0, sigma))
    calib = calibration(errors, sigma)
    assert calib.within_1sigma == pytest.approx(0.6827, abs=0.005)
    assert calib.within_2sigma == pytest.approx(0.9545, abs=0.003)
    assert calib.median_ratio == pytest.approx(0.6745, abs=0.01)
    # Uncertainties half as large as they should be: the coverage drops, as it must.
    assert calibration(errors, sigma / 2).within_1sigma == pytest.approx(0.383, abs=0.005)


def test_calibration_skips_missing_errors_and_sigmas() -> None:
    calib = calibration(np.array([1.0, np.nan, 1.0]), np.array([2.0, 1.0, np.nan]))
    assert calib.n == 1
    assert calib.within_1sigma == 1.0


def test_binned_calibration_of_a_hand_computed_population() -> None:
    # Six galaxies in two q bins; the ratios |error|/sigma are, bin by bin:
    #   [0.2, 0.5): 0.5, 1.5, 3.0, and one with no sigma  -> 1 of 3 within 1, 2 of 3 within 2
    #   [0.5, 1]:   1.0 (exactly 1 counts), 2.0 (exactly 2 counts)  -> 1/2 and 2/2
    # q = 0.1 lies outside every bin.
    edges = (0.2, 0.5, 1.0)
    q = np.array([0.2, 0.3, 0.49, 0.4, 0.5, 1.0, 0.1])
    errors = np.array([1.0, 3.0, 6.0, 1.0, 2.0, 4.0, 0.0])
    sigma = np.array([2.0, 2.0, 2.0, np.nan, 2.0, 2.0, 1.0])
    low, high = binned_calibration(errors, sigma, q, edges)
    assert (low.n, low.within_1sigma, low.within_2sigma) == (3, 1 / 3, 2 / 3)
    assert low.median_ratio == 1.5
    assert (high.n, high.within_1sigma, high.within_2sigma) == (2, 0.5, 1.0)
    empty = binned_calibration(errors, sigma, q, (2.0, 3.0))[0]
    assert empty.n == 0
    assert math.isnan(empty.within_1sigma)


def test_binned_calibration_uses_the_validation_bins_and_survives_json() -> None:
    rng = np.random.default_rng(5)
    n = 200
    q = rng.uniform(0.2, 1.0, n)
    snr = rng.uniform(5.0, 200.0, n)
    sigma = rng.uniform(0.5, 5.0, n)
    errors = np.abs(rng.normal(0.0, sigma))
    coverage = BinnedCalibration.of(errors, sigma, q, snr)
    assert len(coverage.by_axis_ratio) == len(AXIS_RATIO_EDGES) - 1
    assert len(coverage.by_snr) == len(SNR_EDGES) - 1
    assert sum(c.n for c in coverage.by_axis_ratio) == sum(c.n for c in coverage.by_snr) == n
    assert coverage.overall == calibration(errors, sigma)
    # The overall fraction is the bins' count-weighted mean.
    within = sum(c.n * c.within_1sigma for c in coverage.by_axis_ratio) / n
    assert within == pytest.approx(coverage.overall.within_1sigma)
    assert BinnedCalibration.from_json(json.loads(json.dumps(coverage.to_json()))) == coverage
