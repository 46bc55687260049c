"""Shear from position angles alone: the estimator, its response, its statistics, the renderer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

galsim = pytest.importorskip("galsim")

from galpipe.science.features import axial_difference  # noqa: E402 -- after the galsim skip
from galpipe.science.orientation import (  # noqa: E402
    image_angle_to_position_angle,
    position_angle_to_image_angle,
)
from galpipe.synthetic.catalog import make_truths  # noqa: E402
from galpipe.synthetic.render import render_cutout  # noqa: E402
from galpipe.synthetic.truth import SkyConfig  # noqa: E402
from galpipe.validation.lensing import (  # noqa: E402
    RING,
    bootstrap_bias,
    estimate_shear,
    fit_bias,
    grid_angle_bins,
    image_shear,
    intrinsic_ellipticity,
    ks_uniform,
    orientation_response,
    response_curve,
    ring_truths,
    sheared_position_angle,
)

SCALE_DEG = 0.262 / 3600.0
SERVICE_JACOBIAN = np.diag([-SCALE_DEG, SCALE_DEG])  # north up, east left
MIRRORED_JACOBIAN = np.diag([SCALE_DEG, SCALE_DEG])  # north up, east right


def _population(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform intrinsic angles (deg) and ``|eps|`` of q uniform on [0.2, 1] (the truth's)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 180.0, n), intrinsic_ellipticity(rng.uniform(0.2, 1.0, n))


def test_sheared_angle_is_galsims_shear_composition() -> None:
    # GalSim: profile.shear(e).shear(g) has the shape Shear(g) + Shear(e).
    for q, beta, g1, g2 in [
        (0.5, 30.0, 0.05, -0.02),
        (0.9, 100.0, -0.03, 0.04),
        (0.3, 170, 0.0, 0.1),
    ]:
        e = galsim.Shear(q=q, beta=beta * galsim.degrees)
        total = galsim.Shear(g1=g1, g2=g2) + e
        expected = total.beta.deg % 180.0
        got = sheared_position_angle(np.array(beta), intrinsic_ellipticity(np.array(q)), g1, g2)
        assert axial_difference(got, expected) < 1e-9


def test_round_galaxy_takes_the_shear_direction_and_no_shear_changes_nothing() -> None:
    # g along PA 30 degrees: arg(g) = 60 degrees.
    g = 0.02 * np.exp(2j * np.deg2rad(30.0))
    assert sheared_position_angle(np.array(77.0), np.array(0.0), g.real, g.imag) == pytest.approx(
        30.0
    )
    angles = np.array([0.0, 45.0, 123.4])
    assert np.allclose(sheared_position_angle(angles, np.full(3, 0.4), 0.0, 0.0), angles)


def test_response_has_the_weak_shear_slope_and_saturates_for_round_galaxies() -> None:
    # Weak limit, |g| << |eps|: R / |g| = (|eps| + 1/|eps|) / 2 (first-order expansion).
    eps = np.array([0.3])
    assert orientation_response(eps, 1e-5) / 1e-5 == pytest.approx(0.5 * (0.3 + 1 / 0.3), rel=1e-3)
    # A round galaxy points along the shear whatever its size: R = 1.
    assert orientation_response(np.array([0.0]), 0.01) == pytest.approx(1.0)
    _, r = response_curve(_population(500, 1)[1])
    assert np.all(np.diff(r) > 0)
    assert r[0] == pytest.approx(0.0, abs=1e-12)


def test_estimator_recovers_an_input_shear_from_true_angles_within_its_error() -> None:
    n = 20_000
    pa, eps = _population(n, seed=3)
    g_true = (0.03, -0.02)
    sheared = sheared_position_angle(pa, eps, *g_true)
    g_hat = np.array(estimate_shear(sheared, response_curve(eps)))
    # Shape noise of the mean of cos 2theta (or sin 2theta): 1/sqrt(2N); divided by the response.
    alpha = float(orientation_response(eps, np.hypot(*g_true))) / np.hypot(*g_true)
    sigma = 1.0 / (alpha * np.sqrt(2.0 * n))
    assert np.all(np.abs(g_hat - g_true) < 3.0 * sigma), (g_hat, sigma)
    # ...and a null shear gives a null estimate, within the same error.
    g_null = np.array(estimate_shear(pa, response_curve(eps)))
    assert np.all(np.abs(g_null) < 3.0 * sigma)


def test_ring_cancels_shape_noise_exactly_without_shear() -> None:
    truths = ring_truths(make_truths(10, seed=2, config=SkyConfig(neighbour_fraction=0.0)))
    pa = np.array([t.position_angle_deg for t in truths])
    eps = intrinsic_ellipticity(np.array([t.axis_ratio for t in truths]))
    assert len(truths) == 10 * RING
    assert np.allclose(estimate_shear(pa, response_curve(eps)), 0.0, atol=1e-12)


def test_estimator_leaves_out_unmeasured_angles() -> None:
    pa, eps = _population(2000, seed=4)
    sheared = sheared_position_angle(pa, eps, 0.05, 0.0)
    with_nan = np.concatenate([sheared, np.full(50, np.nan)])
    assert estimate_shear(with_nan, response_curve(eps)) == estimate_shear(
        sheared, response_curve(eps)
    )
    assert np.isnan(estimate_shear(np.full(3, np.nan), response_curve(eps))[0])


def test_sky_shear_becomes_galsims_image_shear_through_the_wcs() -> None:
    # East left: PA = image angle - 90, so g_image = -g_sky.
    assert image_shear((0.02, -0.01), SERVICE_JACOBIAN) == pytest.approx((-0.02, 0.01))
    # East right (mirrored): PA = 90 - image angle, so g_image = (-g1, +g2).
    assert image_shear((0.02, -0.01), MIRRORED_JACOBIAN) == pytest.approx((-0.02, -0.01))


def test_fit_bias_recovers_a_linear_response() -> None:
    g_in = np.array([[0.0, 0.0], [0.01, 0.0], [0.0, -0.02], [0.03, 0.03], [0.05, 0.0]])
    g_hat = 1.07 * g_in + np.array([0.002, -0.001])
    fit = fit_bias(g_in, g_hat)
    assert (fit.m, fit.c1, fit.c2) == pytest.approx((0.07, 0.002, -0.001), abs=1e-12)


def test_bootstrap_bias_errors_shrink_with_the_sample_and_cover_the_truth() -> None:
    g_in = np.array([[0.0, 0.0], [0.02, 0.0], [0.0, 0.04]])

    def run(n: int) -> tuple[float, float]:
        pa, eps = _population(n, seed=n)
        # A measurement that scatters every angle by 5 degrees: no bias, only noise.
        rng = np.random.default_rng(n + 1)
        angles = np.stack(
            [sheared_position_angle(pa, eps, *g) + rng.normal(0, 5.0, n) for g in g_in]
        )
        fit = bootstrap_bias(angles, g_in, eps, n_boot=60, seed=0)
        return fit.m, fit.m_err

    _, err_small = run(1000)
    m_large, err_large = run(8000)
    assert err_large < 0.6 * err_small  # ~1/sqrt(8) = 0.35 expected
    # 5-degree Gaussian scatter dilutes <cos 2theta> by exp(-2 sigma^2) = 0.985: m ~ -0.015.
    assert abs(m_large - (np.exp(-2 * np.deg2rad(5.0) ** 2) - 1)) < 4 * err_large


def test_ks_uniform_accepts_uniform_and_rejects_clustered_angles() -> None:
    rng = np.random.default_rng(5)
    assert ks_uniform(rng.uniform(0, 180, 2000))[1] > 0.01
    clustered = np.mod(rng.normal(90.0, 40.0, 2000), 180.0)
    assert ks_uniform(clustered)[1] < 1e-6


def test_grid_bins_detect_an_error_that_depends_on_the_angle_to_the_grid() -> None:
    rng = np.random.default_rng(6)
    true = rng.uniform(0, 180, 3000)
    flat = np.abs(rng.normal(0, 2.0, 3000))
    assert grid_angle_bins(flat, true)[3] > 0.01
    # Twice the error near the diagonals (45 degrees mod 90) as along the axes.
    shaped = flat * (1.0 + np.sin(np.deg2rad(2 * true)) ** 2)
    median, median_err, count, p = grid_angle_bins(shaped, true)
    assert p < 1e-6
    assert count.sum() == 3000
    assert median.shape == median_err.shape == (9,)


def _moments_image_angle(image: np.ndarray) -> float:
    size = image.shape[-1]
    y, x = np.mgrid[:size, :size] - (size - 1) / 2.0
    f = image.sum()
    xx, yy, xy = (image * x * x).sum() / f, (image * y * y).sum() / f, (image * x * y).sum() / f
    return float(np.rad2deg(0.5 * np.arctan2(2 * xy, xx - yy)) % 180.0)


def test_rendered_shear_turns_the_galaxy_as_the_composition_says() -> None:
    truth = make_truths(1, seed=7, config=SkyConfig(neighbour_fraction=0.0))[0]
    truth = dataclasses.replace(truth, axis_ratio=0.7, sersic_n=1.0, half_light_radius_arcsec=1.0)
    size = 160  # wide enough that unweighted moments are not truncated
    unsheared = render_cutout(truth, size, bands="r", noise=False)
    assert np.array_equal(
        unsheared, render_cutout(truth, size, bands="r", noise=False, shear=(0, 0))
    )
    g_sky = (0.0, 0.08)
    sheared = render_cutout(
        truth, size, bands="r", noise=False, shear=image_shear(g_sky, SERVICE_JACOBIAN)
    )
    measured_pa = image_angle_to_position_angle(
        np.array(_moments_image_angle(sheared[0])), SERVICE_JACOBIAN
    )
    expected_pa = sheared_position_angle(
        np.array(truth.position_angle_deg), intrinsic_ellipticity(np.array(0.7)), *g_sky
    )
    unsheared_pa = image_angle_to_position_angle(
        np.array(_moments_image_angle(unsheared[0])), SERVICE_JACOBIAN
    )
    assert axial_difference(unsheared_pa, np.array(truth.position_angle_deg)) < 0.2
    # The shear turns the galaxy by more than the test's tolerance.
    assert axial_difference(expected_pa, np.array(truth.position_angle_deg)) > 2.0
    assert axial_difference(measured_pa, expected_pa) < 0.2
    assert position_angle_to_image_angle(expected_pa, SERVICE_JACOBIAN) >= 0.0


def test_render_rejects_a_shear_of_modulus_one() -> None:
    truth = make_truths(1, seed=8)[0]
    with pytest.raises(ValueError, match="shear"):
        render_cutout(truth, 20, bands="r", shear=(0.8, 0.6))
