"""Steps 4-5: pooling, the sinusoid fit and its errors, second moments, band combination."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from galpipe.science import features
from galpipe.science.radon import DEFAULT_ANGLES_DEG, RadonOperator
from tests.unit.science import gaussian, image_angle_from_moments, operator_for

ANGLES = DEFAULT_ANGLES_DEG


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory) -> RadonOperator:
    return operator_for(tmp_path_factory)


def _sinusoid(a: float, b: float, theta0: float) -> np.ndarray:
    return a + b * np.cos(2 * np.deg2rad(ANGLES - theta0))


# -- the sign convention ------------------------------------------------------------------------


@pytest.mark.parametrize("theta", [10.0, 35.0, -20.0, 100.0])
def test_ndimage_rotate_turns_image_angle_by_minus_theta(theta: float) -> None:
    """The fact the image-angle mapping rests on (features module docstring)."""
    image = gaussian(20.0, q=0.4, sigma_major=6.0)
    turned = ndimage.rotate(image, theta, reshape=False, order=3)
    assert features.axial_difference(image_angle_from_moments(image), 20.0) < 0.1
    assert features.axial_difference(image_angle_from_moments(turned), 20.0 - theta) < 0.3
    # and not the other way round
    assert features.axial_difference(image_angle_from_moments(turned), 20.0 + theta) > 15.0


@pytest.mark.parametrize("beta", [0.0, 30.0, 90.0, 147.0])
def test_max_pooled_curve_peaks_at_theta0_equal_beta_minus_90(
    operator: RadonOperator, beta: float
) -> None:
    curve = features.max_pool(operator.apply(gaussian(beta)))
    peak = ANGLES[np.argmax(curve)]
    assert features.axial_difference(peak, beta - 90.0) <= 1.0
    assert features.peak_angle_to_image_angle(peak) == pytest.approx((peak + 90.0) % 180.0)


# -- pooling --------------------------------------------------------------------------------------


def test_max_and_top_fraction_pooling() -> None:
    column = np.arange(40, dtype=np.float32)[::-1].copy()  # 39, 38, ..., 0
    sino = np.stack([column, column * 2], axis=-1)[None]  # (1, 40, 2)
    np.testing.assert_allclose(features.max_pool(sino), [[39.0, 78.0]])
    # 10 % of 40 = the 4 brightest: mean(39, 38, 37, 36) = 37.5.
    np.testing.assert_allclose(features.top_fraction_pool(sino, 0.10), [[37.5, 75.0]])
    np.testing.assert_allclose(features.top_fraction_pool(sino, 0.01), [[39.0, 78.0]])
    np.testing.assert_allclose(features.top_fraction_pool(sino, 1.0), [[19.5, 39.0]])
    with pytest.raises(ValueError, match="fraction"):
        features.top_fraction_pool(sino, 0.0)
    with pytest.raises(ValueError, match="method"):
        features.pool(sino, "mean")  # type: ignore[arg-type]


def test_folded_features_equal_those_of_the_unfolded_sinogram(operator: RadonOperator) -> None:
    rng = np.random.default_rng(11)
    images = np.stack([rng.random((40, 40)), gaussian(70.0, centre=(4.0, 2.0))])[:, None]
    folded = operator.apply_folded(images)
    full = folded.unfold()
    np.testing.assert_allclose(features.max_pool_folded(folded), features.max_pool(full), rtol=1e-6)
    np.testing.assert_allclose(
        features.projection_variance_folded(folded),
        features.projection_variance(full),
        rtol=1e-5,
    )


# -- the sinusoid -------------------------------------------------------------------------------


@pytest.mark.parametrize("theta0", [0.0, 12.3, 89.9, 90.0, 179.5])
def test_sinusoid_fit_recovers_its_parameters_for_every_curve_at_once(theta0: float) -> None:
    curves = np.stack([_sinusoid(5.0, 2.0, theta0), _sinusoid(1.0, 0.1, theta0 + 45.0)])
    fit = features.fit_sinusoid(curves, ANGLES)
    np.testing.assert_allclose(fit.offset, [5.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(fit.amplitude, [2.0, 0.1], atol=1e-12)
    assert features.axial_difference(fit.theta0_deg, [theta0, theta0 + 45.0]).max() < 1e-9
    assert (fit.theta0_err_deg < 1e-6).all()


def test_sinusoid_standard_error_matches_the_scatter_of_noisy_fits() -> None:
    rng = np.random.default_rng(5)
    sigma = 0.2
    curves = _sinusoid(3.0, 0.5, 40.0) + rng.normal(0.0, sigma, size=(4000, ANGLES.size))
    fit = features.fit_sinusoid(curves, ANGLES)
    scatter = np.std(features.axial_difference(fit.theta0_deg, 40.0) * np.sign(fit.theta0_deg - 40))
    assert np.median(fit.theta0_err_deg) == pytest.approx(scatter, rel=0.1)
    # Analytic: sigma_theta = sigma / (b sqrt(2 n)) rad for n = 180 independent samples.
    assert scatter == pytest.approx(np.rad2deg(sigma / (0.5 * np.sqrt(2 * 180))), rel=0.1)


def test_flat_curve_gives_finite_values_and_the_maximum_error() -> None:
    fit = features.fit_sinusoid(np.full((2, ANGLES.size), 3.0), ANGLES)
    for value in vars(fit).values():
        assert np.isfinite(value).all()
    np.testing.assert_allclose(fit.theta0_err_deg, 90.0)
    np.testing.assert_allclose(features.sinusoid_anisotropy(fit), 0.0, atol=1e-12)
    empty = features.fit_sinusoid(np.zeros(ANGLES.size), ANGLES)
    assert features.sinusoid_anisotropy(empty) == 0.0


# -- the window-drop error ----------------------------------------------------------------------


def test_window_error_decreases_for_sharper_curves() -> None:
    rng = np.random.default_rng(9)
    noise = rng.normal(0.0, 0.05, size=ANGLES.size)
    amplitudes = [0.2, 0.5, 1.0, 2.0, 4.0]
    curves = np.stack([_sinusoid(10.0, b, 60.0) + noise for b in amplitudes])
    err = features.window_drop_error(curves, ANGLES)
    assert np.all(np.diff(err.mean_deg) < 0)
    assert err.per_window_deg.shape == (5, 4)
    assert (features.axial_difference(err.peak_deg, 60.0) <= 5.0).all()
    # A peak narrower than a sinusoid (same noise, same height) has a smaller error.
    theta = np.deg2rad(ANGLES - 60.0)
    narrow = 10.0 + 2.0 * np.exp(-(np.sin(theta) ** 2) / (2 * 0.1**2)) + noise
    broad = 10.0 + 2.0 * np.exp(-(np.sin(theta) ** 2) / (2 * 0.5**2)) + noise
    pair = features.window_drop_error(np.stack([narrow, broad]), ANGLES)
    assert pair.mean_deg[0] < pair.mean_deg[1]


def test_window_error_is_consistent_across_windows_for_a_sinusoid() -> None:
    rng = np.random.default_rng(2)
    # Noise well below the drop over the narrowest window (2b (1 - cos 4 deg) ~ 0.005 b).
    curve = _sinusoid(10.0, 1.0, 100.0) + rng.normal(0.0, 1e-4, size=ANGLES.size)
    err = features.window_drop_error(curve, ANGLES)
    # Every window estimates sqrt(sigma / 2b) rad for a sinusoid: the normal fit is narrow.
    assert err.std_deg < 0.25 * err.mean_deg
    expected = np.rad2deg(np.sqrt(err.noise / 2.0))
    assert err.mean_deg == pytest.approx(expected, rel=0.1)


def test_window_error_of_a_flat_curve_is_the_maximum() -> None:
    err = features.window_drop_error(np.full(ANGLES.size, 2.0), ANGLES)
    assert err.mean_deg == 90.0
    assert err.std_deg == 0.0


def test_window_error_needs_a_uniform_grid() -> None:
    with pytest.raises(ValueError, match="uniform"):
        features.window_drop_error(np.ones(5), np.array([0.0, 10.0, 20.0, 50.0, 90.0]))


# -- second moments -------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.0, 25.0, 90.0, 160.0])
def test_projection_variance_gives_the_second_moments(operator: RadonOperator, beta: float) -> None:
    sigma_major, q = 4.0, 0.5
    variance = features.projection_variance(operator.apply(gaussian(beta, q, sigma_major)))
    fit = features.fit_sinusoid(variance, ANGLES)
    assert features.axial_difference(fit.theta0_deg, beta) < 0.05
    # Var(theta) = (l1 + l2)/2 + (l1 - l2)/2 cos 2(theta - beta); bicubic smoothing adds a little.
    l1, l2 = sigma_major**2, (q * sigma_major) ** 2
    assert fit.offset == pytest.approx((l1 + l2) / 2, rel=0.03)
    assert fit.amplitude == pytest.approx((l1 - l2) / 2, rel=0.03)


# -- combining the bands ------------------------------------------------------------------------


def test_combination_is_circular_and_wraps_at_0_and_180() -> None:
    angles = np.array([[179.0, 1.0, 179.5, 0.5], [10.0, 20.0, 0.0, 0.0], [50.0, 50.0, 50.0, 50.0]])
    errors = np.ones_like(angles)
    valid = np.array([[True] * 4, [True, True, False, False], [True] * 4])
    out = features.combine_axial(angles, errors, valid)
    assert features.axial_difference(out.angle_deg[0], 0.0) < 1e-9
    assert out.angle_deg[1] == pytest.approx(15.0)
    assert out.angle_deg[2] == pytest.approx(50.0)
    assert out.spread_deg[0] == pytest.approx(0.79, abs=0.02)  # not ~89
    assert out.spread_deg[2] == pytest.approx(0.0, abs=1e-6)
    assert out.n_bands.tolist() == [4, 2, 4]
    assert out.err_deg[0] == pytest.approx(0.5)  # 1 / sqrt(4 bands of 1 degree)


def test_combination_weights_by_inverse_variance_and_handles_no_band() -> None:
    angles = np.array([[10.0, 40.0], [10.0, 40.0]])
    errors = np.array([[1.0, 3.0], [1.0, 1.0]])
    valid = np.array([[True, True], [False, False]])
    out = features.combine_axial(angles, errors, valid)
    assert out.angle_deg[0] < 15.0  # pulled towards the precise band (weights 9 : 1)
    doubled = np.deg2rad([20.0, 80.0])
    expected = 0.5 * np.rad2deg(
        np.arctan2(
            9 * np.sin(doubled[0]) + np.sin(doubled[1]), 9 * np.cos(doubled[0]) + np.cos(doubled[1])
        )
    )
    assert out.angle_deg[0] == pytest.approx(expected)
    # The bands disagree by far more than their errors (chi^2 per degree of freedom >> 1), so
    # the weighted-mean error 1/sqrt(1 + 1/9) is scaled up by the Birge ratio sqrt(chi^2 / 1).
    chi2 = (10.0 - expected) ** 2 / 1.0 + (40.0 - expected) ** 2 / 9.0
    assert out.err_deg[0] == pytest.approx(np.sqrt(chi2) / np.sqrt(1.0 + 1.0 / 9.0))
    assert np.isnan(out.angle_deg[1])
    assert np.isnan(out.err_deg[1])
    assert np.isnan(out.spread_deg[1])
    assert out.n_bands.tolist() == [2, 0]


def test_bands_that_agree_within_their_errors_keep_the_weighted_mean_error() -> None:
    # Residuals of 0.5 deg against errors of 1 deg: chi^2 / dof = 0.5 < 1, never scaled down.
    out = features.combine_axial(
        np.array([[10.0, 11.0]]), np.array([[1.0, 1.0]]), np.array([[True, True]])
    )
    assert out.angle_deg[0] == pytest.approx(10.5)
    assert out.err_deg[0] == pytest.approx(1.0 / np.sqrt(2.0))
    # A single band has no scatter to judge: its own error.
    one = features.combine_axial(np.array([[10.0]]), np.array([[2.0]]), np.array([[True]]))
    assert one.err_deg[0] == pytest.approx(2.0)


def test_axial_difference() -> None:
    np.testing.assert_allclose(
        features.axial_difference(
            np.array([179.0, 0.0, 90.0, 10.0]), np.array([1.0, 90.0, 0.0, 370.0])
        ),
        [2.0, 90.0, 90.0, 0.0],
        atol=1e-12,
    )
