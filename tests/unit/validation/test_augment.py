"""The paper's augmentations (section 5): rotation, blur, Poisson resampling, the protocol."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from galpipe.validation.augment import (
    BLUR_SIGMA_RANGE_PX,
    TOTAL_COUNTS_RANGE,
    AugmentationParams,
    apply_augmentations,
    blur,
    expected_scene,
    poisson_resample,
    rotate,
    rotation_no_data,
    sample_augmentations,
)


def axial_difference(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    """|a - b| for axial angles in degrees, in [0, 90]."""
    return np.abs(np.mod(np.asarray(a) - np.asarray(b) + 90.0, 180.0) - 90.0)


def gaussian_stamp(
    size: int, angle_deg: float, sigma_major: float = 5.0, sigma_minor: float = 2.5
) -> np.ndarray:
    """An analytic elongated Gaussian centred on the stamp, major axis at image angle
    ``angle_deg`` (counter-clockwise from +x = column towards +y = row)."""
    rows, cols = np.indices((size, size), dtype=np.float64)
    y = rows - (size - 1) / 2.0
    x = cols - (size - 1) / 2.0
    angle = np.deg2rad(angle_deg)
    along = x * np.cos(angle) + y * np.sin(angle)
    across = -x * np.sin(angle) + y * np.cos(angle)
    return np.exp(-0.5 * ((along / sigma_major) ** 2 + (across / sigma_minor) ** 2))


def second_moments(image: np.ndarray) -> tuple[float, float, float]:
    """(Mxx, Myy, Mxy) about the centroid with x = column, y = row, in pixels^2."""
    rows, cols = np.indices(image.shape, dtype=np.float64)
    total = image.sum()
    x0, y0 = (cols * image).sum() / total, (rows * image).sum() / total
    mxx = ((cols - x0) ** 2 * image).sum() / total
    myy = ((rows - y0) ** 2 * image).sum() / total
    mxy = ((cols - x0) * (rows - y0) * image).sum() / total
    return float(mxx), float(myy), float(mxy)


def moment_angle(image: np.ndarray) -> float:
    """Second-moment orientation in degrees, CCW from +x (column) to +y (row), in [0, 180)."""
    mxx, myy, mxy = second_moments(image)
    return float(np.mod(0.5 * np.rad2deg(np.arctan2(2.0 * mxy, mxx - myy)), 180.0))


def batch_of(stamps: list[np.ndarray], bands: int = 4) -> np.ndarray:
    """(N, bands, S, S) float32 with each stamp repeated in every band at different fluxes."""
    flux = np.linspace(1.0, 2.5, bands)[None, :, None, None]
    return (np.stack(stamps)[:, None] * flux).astype(np.float32)


# --- rotation --------------------------------------------------------------------------------


def test_moment_helper_reads_the_convention() -> None:
    # Guard the test's own yardstick: a Gaussian drawn at 30 deg measures 30 deg.
    for beta in (0.0, 30.0, 90.0, 150.0):
        # 0.01 deg: the square stamp truncates the wings a little anisotropically.
        assert axial_difference(moment_angle(gaussian_stamp(41, beta)), beta) < 0.01


@pytest.mark.parametrize("size", [40, 41])
def test_rotation_adds_alpha_to_the_moment_angle(size: int) -> None:
    betas = [10.0, 40.0, 100.0, 150.0, 170.0]
    alphas = np.array([25.0, 70.0, 135.0, 179.0, 90.0])
    images = batch_of([gaussian_stamp(size, beta) for beta in betas])
    rotated = rotate(images, alphas)
    for index, (beta, alpha) in enumerate(zip(betas, alphas, strict=True)):
        for band in range(images.shape[1]):
            measured = moment_angle(rotated[index, band])
            assert axial_difference(measured, beta + alpha) < 0.05
        # ... and the rotated image is the Gaussian drawn at beta + alpha.
        expected = gaussian_stamp(size, beta + alpha)
        np.testing.assert_allclose(rotated[index, 0], expected, atol=2e-3)


def test_rotation_equals_ndimage_rotate_by_minus_alpha() -> None:
    rng = np.random.default_rng(3)
    images = rng.random((3, 2, 40, 40)).astype(np.float32)
    alphas = np.array([12.5, 95.0, 250.0])
    rotated = rotate(images, alphas)
    for galaxy, alpha in enumerate(alphas):
        for band in range(2):
            literal = ndimage.rotate(images[galaxy, band], -alpha, reshape=False, order=3)
            np.testing.assert_allclose(rotated[galaxy, band], literal, atol=1e-6)
            opposite = ndimage.rotate(images[galaxy, band], alpha, reshape=False, order=3)
            assert np.abs(rotated[galaxy, band] - opposite).max() > 0.1


def test_rotation_by_zero_is_the_identity() -> None:
    images = np.random.default_rng(4).random((2, 4, 41, 41)).astype(np.float32)
    np.testing.assert_allclose(rotate(images, 0.0), images, atol=1e-5)
    np.testing.assert_allclose(rotate(images, 360.0), images, atol=1e-5)
    # Half a turn maps the grid onto itself too (the centre is (S-1)/2): both axes reversed.
    np.testing.assert_allclose(rotate(images, 180.0), images[..., ::-1, ::-1], atol=1e-5)


@pytest.mark.parametrize("size", [41, 40])
def test_rotation_by_90_is_rot90_clockwise_in_array_order(size: int) -> None:
    # +x (column) turns into +y (row): out[r, c] = in[S-1-c, r], numpy's rot90 with k=-1.
    images = np.random.default_rng(5).random((2, 3, size, size)).astype(np.float32)
    rotated = rotate(images, 90.0)
    np.testing.assert_allclose(rotated, np.rot90(images, k=-1, axes=(-2, -1)), atol=1e-5)
    assert np.abs(rotated - np.rot90(images, k=1, axes=(-2, -1))).max() > 0.1
    # A single bright pixel on +x from the centre moves to +y from the centre.
    centre = (size - 1) // 2
    spot = np.zeros((1, 1, size, size), dtype=np.float32)
    spot[0, 0, centre, centre + 5 + (size % 2 == 0)] = 1.0
    moved = rotate(spot, 90.0)[0, 0]
    row, col = np.unravel_index(np.argmax(moved), moved.shape)
    assert col - (size - 1) / 2 == pytest.approx(0.0, abs=0.5)
    assert row - (size - 1) / 2 > 4


def test_rotation_leaves_its_input_untouched_and_returns_float32() -> None:
    images = np.random.default_rng(6).random((2, 4, 20, 20)).astype(np.float32)
    before = images.copy()
    out = rotate(images, np.array([30.0, 60.0]))
    np.testing.assert_array_equal(images, before)
    assert out.dtype == np.float32
    assert out.shape == images.shape


# --- blur ------------------------------------------------------------------------------------


def test_blur_equals_gaussian_filter_with_zero_padding() -> None:
    rng = np.random.default_rng(8)
    images = rng.random((5, 4, 40, 40)).astype(np.float32)
    sigmas = np.array([0.0, 0.5, 1.3, 2.0, 3.7])
    blurred = blur(images, sigmas)
    for galaxy, sigma in enumerate(sigmas):
        expected = ndimage.gaussian_filter(
            images[galaxy].astype(np.float64), (0.0, sigma, sigma), mode="constant", cval=0.0
        )
        np.testing.assert_allclose(blurred[galaxy], expected, atol=2e-6)
    np.testing.assert_array_equal(blurred[0], images[0])


def sampled_kernel_variance(sigma: float) -> float:
    """Variance (pixels^2) of the Gaussian sampled at integer lags and cut at 4 sigma: below
    sigma^2 for sigma < 1 (0.215 at sigma = 0.5), within 0.1 % of it for sigma >= 1."""
    lags = np.arange(-int(4 * sigma + 0.5), int(4 * sigma + 0.5) + 1)
    weights = np.exp(-0.5 * (lags / sigma) ** 2)
    return float((lags**2 * weights).sum() / weights.sum())


def test_blur_preserves_flux_and_adds_the_kernel_variance_to_the_moments() -> None:
    # Galaxy well inside the stamp (zero padding loses flux only near the edge).
    images = batch_of([gaussian_stamp(61, 30.0, 4.0, 2.0)] * 4)
    sigmas = np.array([0.5, 1.0, 1.2, 2.0])
    blurred = blur(images, sigmas)
    np.testing.assert_allclose(blurred.sum(axis=(2, 3)), images.sum(axis=(2, 3)), rtol=1e-5)
    for galaxy, sigma in enumerate(sigmas):
        added = sampled_kernel_variance(sigma)
        if sigma >= 1.0:
            assert added == pytest.approx(sigma**2, rel=1e-3)
        mxx, myy, mxy = second_moments(images[galaxy, 1].astype(np.float64))
        bxx, byy, bxy = second_moments(blurred[galaxy, 1].astype(np.float64))
        assert bxx - mxx == pytest.approx(added, rel=1e-3)
        assert byy - myy == pytest.approx(added, rel=1e-3)
        assert bxy == pytest.approx(mxy, rel=1e-3)


def test_blur_near_the_edge_loses_flux_through_the_zero_padding() -> None:
    stamp = np.zeros((1, 1, 21, 21), dtype=np.float32)
    stamp[0, 0, 10, 0] = 1.0  # on the left edge: the taps at negative columns are lost
    lags = np.arange(-8, 9)
    kernel = np.exp(-0.5 * (lags / 2.0) ** 2)
    kept = kernel[lags >= 0].sum() / kernel.sum()  # about 0.6
    assert blur(stamp, 2.0).sum() == pytest.approx(kept, rel=1e-5)


@pytest.mark.parametrize("size", [40, 41])
def test_rotation_no_data_is_exactly_what_rotate_leaves_empty(size: int) -> None:
    alpha = np.concatenate([[0.0, 45.0, 90.0, 180.0], np.random.default_rng(3).uniform(0, 180, 60)])
    ones = np.ones((alpha.size, 1, size, size), dtype=np.float32)
    empty = rotate(ones, alpha)[:, 0] == 0

    no_data = rotation_no_data(alpha, size)

    np.testing.assert_array_equal(no_data, empty)
    assert not no_data[[0, 2, 3]].any()  # multiples of 90 deg map the grid onto itself
    # At 45 deg: all but the regular octagon the square shares with its turned copy, whose
    # area is 2 / (1 + sqrt 2) of the square's, so ~0.17 of the pixels.
    assert no_data[1].mean() == pytest.approx(1 - 2 / (1 + np.sqrt(2)), abs=0.03)
    # The inscribed circle always has data.
    radius = np.hypot(
        *np.meshgrid(np.arange(size) - (size - 1) / 2, np.arange(size) - (size - 1) / 2)
    )
    assert not no_data[:, radius <= (size - 1) / 2].any()


def test_blur_with_no_data_keeps_it_empty_and_blurs_over_the_data_only() -> None:
    rng = np.random.default_rng(12)
    images = (1.0 + 0.1 * rng.standard_normal((3, 2, 40, 40))).astype(np.float32)
    alpha = np.array([30.0, 0.0, 60.0])
    no_data = rotation_no_data(alpha, 40)
    rotated = rotate(images, alpha)

    plain = blur(rotated, 1.5)
    masked = blur(rotated, 1.5, no_data)

    # No data stays exactly 0 (a plain blur spreads a rim of data into it) ...
    assert np.all(masked[0][:, no_data[0]] == 0)
    assert np.all(masked[2][:, no_data[2]] == 0)
    assert np.all(plain[0][:, no_data[0]].max(axis=-1) > 0.1)
    # ... a galaxy without no-data pixels gets the plain blur ...
    np.testing.assert_array_equal(masked[1], plain[1])
    # ... and next to the no-data region the level is kept (a flat field stays flat), where
    # the plain blur darkens it by mixing in the zeros.
    rim = ndimage.binary_dilation(no_data[0], iterations=2) & ~no_data[0]
    np.testing.assert_allclose(masked[0][:, rim].mean(axis=-1), 1.0, atol=0.02)
    assert plain[0][:, rim].mean() < 0.9
    # The normalised convolution equals G*(X M) / G*M computed with scipy.
    data = np.where(no_data[0], 0.0, rotated[0, 0]).astype(np.float64)
    weight = (~no_data[0]).astype(np.float64)
    expected = ndimage.gaussian_filter(data, 1.5, mode="constant") / ndimage.gaussian_filter(
        weight, 1.5, mode="constant"
    )
    np.testing.assert_allclose(masked[0, 0][~no_data[0]], expected[~no_data[0]], rtol=1e-5)


def test_blur_of_a_batch_equals_blur_one_by_one() -> None:
    images = np.random.default_rng(9).random((4, 4, 32, 32)).astype(np.float32)
    sigmas = np.array([0.6, 1.1, 1.7, 2.0])
    together = blur(images, sigmas)
    for galaxy in range(4):
        np.testing.assert_array_equal(
            together[galaxy], blur(images[galaxy : galaxy + 1], sigmas[galaxy])[0]
        )


# --- Poisson resampling ----------------------------------------------------------------------


def test_poisson_resample_is_unbiased_with_the_expected_variance() -> None:
    draws = 4000
    galaxy = batch_of([gaussian_stamp(21, 60.0, 3.0, 1.5)])[0].astype(np.float64)
    total_counts = 2.0e4
    resampled = poisson_resample(
        np.broadcast_to(galaxy, (draws, *galaxy.shape)), total_counts, rng=11
    ).astype(np.float64)
    photons_per_flux = total_counts / galaxy.sum()
    expected_variance = galaxy / photons_per_flux
    bright = galaxy > 0.05 * galaxy.max()  # enough expected photons for the normal limit

    mean = resampled.mean(axis=0)
    z = (mean - galaxy)[bright] / np.sqrt(expected_variance[bright] / draws)
    assert np.abs(z).max() < 5.0
    # mean z^2 of n independent standard normals: 1 +- sqrt(2 / n); allow 5 of those.
    assert np.mean(z**2) == pytest.approx(1.0, abs=5 * np.sqrt(2 / z.size))

    variance_ratio = resampled.var(axis=0, ddof=1)[bright] / expected_variance[bright]
    # The sample variance of 4000 draws scatters by ~sqrt(2/4000) = 2.2 % per pixel.
    assert np.mean(variance_ratio) == pytest.approx(1.0, abs=0.01)
    assert np.abs(variance_ratio - 1.0).max() < 0.15

    photon_totals = resampled.sum(axis=(1, 2, 3)) * photons_per_flux
    np.testing.assert_allclose(photon_totals, np.round(photon_totals), atol=1e-2)
    standard_error = np.sqrt(total_counts / draws)
    assert photon_totals.mean() == pytest.approx(total_counts, abs=5 * standard_error)


def test_fewer_counts_make_a_noisier_image() -> None:
    galaxy = batch_of([gaussian_stamp(21, 60.0, 3.0, 1.5)])
    noisy = poisson_resample(np.repeat(galaxy, 2, axis=0), np.array([1e3, 1e5]), rng=1)
    residual = np.abs(noisy - galaxy).sum(axis=(1, 2, 3))
    assert residual[0] > 5 * residual[1]


def test_poisson_resample_clips_negatives_and_keeps_empty_galaxies_zero() -> None:
    rng = np.random.default_rng(12)
    noisy_sky = rng.normal(0.0, 1.0, (1, 4, 21, 21)).astype(np.float32)
    empty = -np.abs(noisy_sky)  # no positive pixel at all
    out = poisson_resample(np.concatenate([noisy_sky, empty]), 1e4, rng=rng)
    assert np.all(out >= 0.0)
    assert np.all(out[0][noisy_sky[0] < 0] == 0.0)
    np.testing.assert_array_equal(out[1], 0.0)
    assert np.all(np.isfinite(out))


def test_poisson_resample_is_seeded() -> None:
    images = batch_of([gaussian_stamp(21, 20.0)] * 3)
    counts = np.array([1e3, 1e4, 1e5])
    first = poisson_resample(images, counts, rng=42)
    np.testing.assert_array_equal(first, poisson_resample(images, counts, rng=42))
    np.testing.assert_array_equal(
        first, poisson_resample(images, counts, rng=np.random.default_rng(42))
    )
    assert not np.array_equal(first, poisson_resample(images, counts, rng=43))


# --- the protocol ----------------------------------------------------------------------------


def test_sampled_subsets_are_never_empty_and_parameters_in_bounds() -> None:
    n = 21000
    params = sample_augmentations(n, rng=2024)
    assert len(params) == n
    flags = np.stack([params.apply_rotation, params.apply_blur, params.apply_resample])
    assert flags.any(axis=0).all()
    subset = flags[0] * 1 + flags[1] * 2 + flags[2] * 4
    frequencies = np.bincount(subset, minlength=8)[1:] / n
    # Seven equally likely subsets: each frequency is 1/7 within 5 standard errors.
    assert np.abs(frequencies - 1 / 7).max() < 5 * np.sqrt((1 / 7) * (6 / 7) / n)

    assert np.all((params.alpha_deg >= 0.0) & (params.alpha_deg < 180.0))
    low_sigma, high_sigma = BLUR_SIGMA_RANGE_PX
    assert np.all((params.blur_sigma_px >= low_sigma) & (params.blur_sigma_px <= high_sigma))
    low_counts, high_counts = TOTAL_COUNTS_RANGE
    assert np.all((params.total_counts >= low_counts) & (params.total_counts <= high_counts))
    # Uniform in angle and sigma, log-uniform in counts: the means of uniform variables.
    assert params.alpha_deg.mean() == pytest.approx(90.0, abs=2.0)
    assert params.blur_sigma_px.mean() == pytest.approx(1.25, abs=0.02)
    assert np.log10(params.total_counts).mean() == pytest.approx(4.0, abs=0.02)
    assert np.median(params.total_counts) == pytest.approx(1e4, rel=0.05)

    np.testing.assert_array_equal(params.angle_shift_deg[~params.apply_rotation], 0.0)
    np.testing.assert_array_equal(
        params.angle_shift_deg[params.apply_rotation], params.alpha_deg[params.apply_rotation]
    )


def test_sampling_is_seeded() -> None:
    first, second = sample_augmentations(50, rng=7), sample_augmentations(50, rng=7)
    for name in ("apply_rotation", "apply_blur", "apply_resample", "alpha_deg", "total_counts"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert not np.array_equal(first.alpha_deg, sample_augmentations(50, rng=8).alpha_deg)


def test_apply_augmentations_applies_exactly_the_flagged_operations() -> None:
    images = batch_of([gaussian_stamp(41, beta) for beta in (20.0, 50.0, 80.0, 110.0)])
    params = AugmentationParams(
        apply_rotation=np.array([True, False, False, True]),
        apply_blur=np.array([False, True, False, True]),
        apply_resample=np.array([False, False, True, False]),
        alpha_deg=np.array([30.0, 60.0, 90.0, 45.0]),
        blur_sigma_px=np.array([1.0, 1.5, 2.0, 0.8]),
        total_counts=np.array([1e3, 1e4, 5e4, 1e5]),
    )
    before = images.copy()
    out = apply_augmentations(images, params, rng=5)
    np.testing.assert_array_equal(images, before)
    np.testing.assert_array_equal(out[0], rotate(images[:1], 30.0)[0])
    np.testing.assert_array_equal(out[1], blur(images[1:2], 1.5)[0])
    np.testing.assert_array_equal(
        out[2], poisson_resample(images[2:3], 5e4, rng=np.random.default_rng(5))[0]
    )
    corners = rotation_no_data([45.0], 41)
    np.testing.assert_array_equal(out[3], blur(rotate(images[3:4], 45.0), 0.8, corners)[0])
    assert np.all(out[3][:, corners[0]] == 0)  # R then B: the empty corners stay empty
    # The prediction of the protocol holds for the noiseless ones: angle + shift.
    for index in (0, 1, 3):
        beta = (20.0, 50.0, 80.0, 110.0)[index]
        predicted = beta + params.angle_shift_deg[index]
        assert axial_difference(moment_angle(out[index, 2]), predicted) < 0.05
    np.testing.assert_array_equal(out, apply_augmentations(images, params, rng=5))


def test_expected_scene_is_r_and_b_and_the_mean_of_n() -> None:
    images = batch_of([gaussian_stamp(41, beta) for beta in (20.0, 80.0, 110.0)]) * 5.0
    params = AugmentationParams(
        apply_rotation=np.array([True, False, True]),
        apply_blur=np.array([False, True, True]),
        apply_resample=np.array([True, True, True]),
        alpha_deg=np.array([30.0, 60.0, 45.0]),
        blur_sigma_px=np.array([1.0, 1.5, 0.8]),
        total_counts=np.full(3, 1e5),
    )
    scene = expected_scene(images, params)
    without_n = dataclasses.replace(params, apply_resample=np.zeros(3, dtype=bool))
    np.testing.assert_array_equal(scene, apply_augmentations(images, without_n, rng=0))
    # The mean of N over many draws converges to the scene (the light is non-negative).
    draws = np.mean([apply_augmentations(images, params, rng=k) for k in range(200)], axis=0)
    peak = scene.max()
    assert np.abs(draws - scene).max() < 0.05 * peak
    assert np.abs(draws - scene).max() > 0  # N did resample
    with pytest.raises(ValueError, match="one each"):
        expected_scene(images[:2], params)


def test_errors_name_the_input() -> None:
    images = np.zeros((2, 4, 20, 20), dtype=np.float32)
    with pytest.raises(ValueError, match="alpha_deg has shape"):
        rotate(images, np.zeros(3))
    with pytest.raises(ValueError, match=r"images has shape \(4, 20, 20\)"):
        blur(images[0], 1.0)
    with pytest.raises(ValueError, match="sigma_px must be >= 0"):
        blur(images, -1.0)
    with pytest.raises(ValueError, match=r"no_data: expected shape \(2, 20, 20\)"):
        blur(images, 1.0, np.zeros((2, 4, 20, 20), dtype=bool))
    with pytest.raises(ValueError, match="total_counts must be > 0"):
        poisson_resample(images, 0.0, rng=1)
    bad = images.copy()
    bad[1, 2, 3, 4] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN/inf pixels \(galaxies \[1\]"):
        rotate(bad, 10.0)
    with pytest.raises(TypeError, match="rng"):
        poisson_resample(images, 1e3, rng=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one each"):
        apply_augmentations(images, sample_augmentations(3, rng=1), rng=1)
