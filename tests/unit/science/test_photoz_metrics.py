"""Photo-z figures: bias, σ_NMAD and outlier fraction against hand computation."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from galpipe.science.photoz_metrics import (
    PhotozMetricsError,
    binned_redshift_metrics,
    redshift_metrics,
)


def by_hand(z_phot: list[float], z_spec: list[float]) -> tuple[float, float, float]:
    """The three definitions in plain Python."""
    dz = [p - s for p, s in zip(z_phot, z_spec, strict=True)]
    bias = statistics.median(d / (1 + s) for d, s in zip(dz, z_spec, strict=True))
    mid = statistics.median(dz)
    nmad = 1.48 * statistics.median(abs(d - mid) / (1 + s) for d, s in zip(dz, z_spec, strict=True))
    outliers = sum(abs(d) / (1 + s) > 0.15 for d, s in zip(dz, z_spec, strict=True)) / len(dz)
    return bias, nmad, outliers


def test_worked_example() -> None:
    # dz = 0.1, 0.2, -0.05, 0, 0.5; dz/(1+z) = 0.1, 0.1, -0.05, 0, 0.5 -> median 0.1.
    # median(dz) = 0.1; |dz - 0.1|/(1+z) = 0, 0.05, 0.15, 0.05, 0.4 -> median 0.05.
    # Outliers: only 0.5 > 0.15 -> 1 of 5.
    z_spec = [0.0, 1.0, 0.0, 1.0, 0.0]
    z_phot = [0.1, 1.2, -0.05, 1.0, 0.5]
    figures = redshift_metrics(z_phot, z_spec)
    assert figures.bias == pytest.approx(0.1)
    assert figures.sigma_nmad == pytest.approx(1.48 * 0.05)
    assert figures.outlier_fraction == pytest.approx(0.2)
    assert figures.n == 5
    assert figures.n_excluded == 0


def test_matches_plain_python_on_random_redshifts() -> None:
    rng = np.random.default_rng(7)
    z_spec = rng.uniform(0.0, 2.0, 501)
    z_phot = z_spec + rng.normal(0.01, 0.05, 501) * (1 + z_spec)
    z_phot[:40] = rng.uniform(0.0, 3.0, 40)  # catastrophic outliers
    figures = redshift_metrics(z_phot, z_spec)
    bias, nmad, outliers = by_hand(z_phot.tolist(), z_spec.tolist())
    assert figures.bias == pytest.approx(bias)
    assert figures.sigma_nmad == pytest.approx(nmad)
    assert figures.outlier_fraction == pytest.approx(outliers)
    # σ_NMAD is robust: near the 0.05 of the core despite 8 % outliers.
    assert 0.04 < figures.sigma_nmad < 0.065


def test_missing_redshifts_are_excluded_and_counted() -> None:
    z_spec = np.array([0.0, 1.0, np.nan, 1.0, 0.0, 0.3])
    z_phot = np.array([0.1, 1.2, 0.4, 1.0, 0.5, np.nan])
    figures = redshift_metrics(z_phot, z_spec)
    assert figures.n == 4
    assert figures.n_excluded == 2
    expected = by_hand([0.1, 1.2, 1.0, 0.5], [0.0, 1.0, 1.0, 0.0])
    assert (figures.bias, figures.sigma_nmad, figures.outlier_fraction) == pytest.approx(expected)
    assert figures.as_dict()["n_excluded"] == 2


def test_nothing_to_score_gives_nan() -> None:
    figures = redshift_metrics([np.nan], [0.5])
    assert figures.n == 0
    assert figures.n_excluded == 1
    assert math.isnan(figures.bias)
    assert math.isnan(figures.sigma_nmad)
    assert math.isnan(redshift_metrics([], []).outlier_fraction)


def test_impossible_inputs_are_refused() -> None:
    with pytest.raises(PhotozMetricsError, match="z_spec"):
        redshift_metrics([0.1, 0.2], [0.1, -1.0])
    with pytest.raises(PhotozMetricsError, match="same length"):
        redshift_metrics([0.1, 0.2], [0.1])
    with pytest.raises(PhotozMetricsError, match="z_phot"):
        redshift_metrics([-2.0], [0.1])


def test_binned_figures_are_those_of_each_bin() -> None:
    rng = np.random.default_rng(11)
    z_spec = rng.uniform(0.0, 1.5, 400)
    mag = rng.uniform(18.0, 24.0, 400)
    # Fainter galaxies scatter more.
    z_phot = z_spec + rng.normal(0.0, 1.0, 400) * 0.01 * (mag - 17.0) * (1 + z_spec)
    mag[0] = 26.0  # on the last edge: in the last bin
    z_phot[1] = np.nan
    edges = [18.0, 20.0, 22.0, 24.0, 26.0]
    binned = binned_redshift_metrics(z_phot, z_spec, mag, edges)
    assert binned.n_excluded == 1
    for i in range(4):
        lo, hi = edges[i], edges[i + 1]
        member = (mag >= lo) & ((mag < hi) | ((i == 3) & (mag == hi))) & np.isfinite(z_phot)
        expected = by_hand(z_phot[member].tolist(), z_spec[member].tolist())
        got = (binned.bias[i], binned.sigma_nmad[i], binned.outlier_fraction[i])
        assert got == pytest.approx(expected)
        assert binned.n[i] == member.sum()
    assert binned.n[3] == 1
    assert binned.sigma_nmad[0] < binned.sigma_nmad[2]
    np.testing.assert_allclose(binned.centres, [19.0, 21.0, 23.0, 25.0])
    # Galaxies outside the edges are in no bin; an empty bin has NaN figures.
    outside = binned_redshift_metrics(z_phot, z_spec, mag, [10.0, 12.0, 30.0])
    assert outside.n.tolist() == [0, 399]
    assert math.isnan(outside.sigma_nmad[0])


@pytest.mark.parametrize("edges", [[1.0], [1.0, 1.0], [2.0, 1.0], [0.0, np.inf]])
def test_binned_refuses_bad_edges(edges: list[float]) -> None:
    with pytest.raises(PhotozMetricsError, match="edges"):
        binned_redshift_metrics([0.1], [0.1], [0.5], edges)


def test_binned_refuses_a_quantity_of_another_length() -> None:
    with pytest.raises(PhotozMetricsError, match="by"):
        binned_redshift_metrics([0.1, 0.2], [0.1, 0.2], [0.5], [0.0, 1.0])
