"""Neighbour masking (ours): a star or a companion is replaced, the central galaxy is kept.

The test stamps are analytic elliptical Gaussians on a 40×40 grid in the conventions of
docs/science.md: axes ``[row, col]``, x = column, y = row, angles counter-clockwise from +x
towards +y. The orientation check uses an estimator independent of the code under test: the
second moments of the stamp, φ = ½·atan2(2·Mxy, Mxx − Myy).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pytest
import sep
from scipy import ndimage

from galpipe.science import core
from galpipe.science.neighbours import (
    NeighbourConfig,
    NeighbourMasking,
    asymmetric_segments,
    mask_neighbours,
)
from galpipe.science.preprocess import sanitise_and_shift
from galpipe.validation.augment import rotate

SIZE = 40
CENTRE = (SIZE - 1) / 2.0
# Relative flux of the central galaxy and the companion in g, r, i, z (a red-ish SED).
GALAXY_SED = np.array([0.5, 1.0, 1.4, 1.7])
STAR_SED = np.array([1.0, 1.0, 1.0, 1.0])
BETA_DEG = 30.0

ROW, COL = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)


def elliptical_gaussian(
    beta_deg: float,
    sigma_major: float,
    sigma_minor: float,
    *,
    distance: float = 0.0,
    direction_deg: float = 0.0,
    amplitude: float = 1.0,
) -> np.ndarray:
    """(S, S) Gaussian with major axis at ``beta_deg``, centred ``distance`` px from the centre.

    ``direction_deg`` is the direction of the offset, counter-clockwise from +x (column).
    """
    col0 = CENTRE + distance * np.cos(np.deg2rad(direction_deg))
    row0 = CENTRE + distance * np.sin(np.deg2rad(direction_deg))
    beta = np.deg2rad(beta_deg)
    dx, dy = COL - col0, ROW - row0
    u = dx * np.cos(beta) + dy * np.sin(beta)
    v = -dx * np.sin(beta) + dy * np.cos(beta)
    return amplitude * np.exp(-0.5 * (u**2 / sigma_major**2 + v**2 / sigma_minor**2))


def in_bands(profile: np.ndarray, sed: np.ndarray) -> np.ndarray:
    """(B, S, S) stamp: the profile scaled by the SED in each band."""
    return sed[:, None, None] * profile[None]


def exponential_disk(beta_deg: float, scale_length: float, axis_ratio: float) -> np.ndarray:
    """(S, S) Sérsic n = 1 profile, peak 1, centred, major axis at ``beta_deg``."""
    beta = np.deg2rad(beta_deg)
    dx, dy = COL - CENTRE, ROW - CENTRE
    u = dx * np.cos(beta) + dy * np.sin(beta)
    v = -dx * np.sin(beta) + dy * np.cos(beta)
    return np.exp(-np.hypot(u, v / axis_ratio) / scale_length)


def central_galaxy(
    beta_deg: float = BETA_DEG, axis_ratio: float = 0.5, profile: str = "gaussian"
) -> np.ndarray:
    """The target: a Gaussian (σ_major = 5 px) or an exponential disk (scale length 2.5 px)."""
    if profile == "exponential":
        return in_bands(exponential_disk(beta_deg, 2.5, axis_ratio), GALAXY_SED)
    return in_bands(elliptical_gaussian(beta_deg, 5.0, 5.0 * axis_ratio), GALAXY_SED)


def bright_star(distance: float = 12.0, direction_deg: float = BETA_DEG + 60.0) -> np.ndarray:
    """A PSF-like round Gaussian (σ = 1.3 px) at 60° from the galaxy's major axis."""
    profile = elliptical_gaussian(
        0.0, 1.3, 1.3, distance=distance, direction_deg=direction_deg, amplitude=2.0
    )
    return in_bands(profile, STAR_SED)


def companion_galaxy() -> np.ndarray:
    """An elongated companion at 13 px, major axis at 120°."""
    profile = elliptical_gaussian(
        120.0, 3.0, 1.5, distance=13.0, direction_deg=-40.0, amplitude=0.6
    )
    return in_bands(profile, GALAXY_SED)


NEIGHBOURS = {"star": bright_star, "companion": companion_galaxy}
NEIGHBOUR_CENTRES = {"star": (12.0, BETA_DEG + 60.0), "companion": (13.0, -40.0)}


@dataclass(frozen=True)
class Scene:
    """The same galaxy and noise with and without a neighbour, min-shifted per band."""

    isolated: np.ndarray  # float32 (B, S, S)
    contaminated: np.ndarray  # float32 (B, S, S)
    sky: np.ndarray  # (B,) true sky level of ``contaminated`` after the min-shift


def min_shift(stamp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paper step 2: shift every band to a minimum of 0; returns the stamp and the shift."""
    minimum = stamp.min(axis=(-2, -1))
    return (stamp - minimum[:, None, None]).astype(np.float32), -minimum


def make_scene(
    neighbour: str, noise_sigma: float, seed: int = 11, profile: str = "gaussian"
) -> Scene:
    noise = noise_sigma * np.random.default_rng(seed).standard_normal((4, SIZE, SIZE))
    galaxy = central_galaxy(profile=profile)
    isolated, _ = min_shift(galaxy + noise)
    contaminated, sky = min_shift(galaxy + NEIGHBOURS[neighbour]() + noise)
    return Scene(isolated=isolated, contaminated=contaminated, sky=sky)


def radius_mask(radius: float, distance: float = 0.0, direction_deg: float = 0.0) -> np.ndarray:
    """(S, S) pixels within ``radius`` px of a point ``distance`` px from the centre."""
    col0 = CENTRE + distance * np.cos(np.deg2rad(direction_deg))
    row0 = CENTRE + distance * np.sin(np.deg2rad(direction_deg))
    return np.asarray((COL - col0) ** 2 + (ROW - row0) ** 2 <= radius**2)


def second_moments(stamp: np.ndarray, sky: np.ndarray | float) -> tuple[float, float, float]:
    """``(Mxx, Myy, Mxy)`` of the band-summed, sky-subtracted stamp in the inscribed circle.

    x = column, y = row, pixels².
    """
    signal = (stamp.astype(np.float64) - np.asarray(sky, dtype=np.float64).reshape(-1, 1, 1)).sum(0)
    weight = np.where(radius_mask(SIZE / 2.0), signal, 0.0)
    flux = weight.sum()
    col_mean = (weight * COL).sum() / flux
    row_mean = (weight * ROW).sum() / flux
    mxx = (weight * (COL - col_mean) ** 2).sum() / flux
    myy = (weight * (ROW - row_mean) ** 2).sum() / flux
    mxy = (weight * (COL - col_mean) * (ROW - row_mean)).sum() / flux
    return float(mxx), float(myy), float(mxy)


def moment_angle_deg(stamp: np.ndarray, sky: np.ndarray | float = 0.0) -> float:
    """Second-moment orientation, in [0, 180): φ = ½·atan2(2·Mxy, Mxx − Myy), from +x to +y."""
    mxx, myy, mxy = second_moments(stamp, sky)
    return float(np.rad2deg(0.5 * np.arctan2(2.0 * mxy, mxx - myy)) % 180.0)


def moment_axis_ratio(stamp: np.ndarray, sky: np.ndarray | float = 0.0) -> float:
    """Second-moment axis ratio: the square root of the moment matrix's eigenvalue ratio."""
    mxx, myy, mxy = second_moments(stamp, sky)
    minor, major = np.linalg.eigvalsh(np.array([[mxx, mxy], [mxy, myy]]))
    return float(np.sqrt(minor / major))


def axial_difference(a: float, b: float) -> float:
    return abs(((a - b + 90.0) % 180.0) - 90.0)


def run_one(stamp: np.ndarray, config: NeighbourConfig | None = None) -> NeighbourMasking:
    return mask_neighbours(stamp[None], config=config)


# --- isolated galaxies ---------------------------------------------------------------------


@pytest.mark.parametrize("noise_sigma", [0.0, 0.01])
@pytest.mark.parametrize("profile", ["gaussian", "exponential"])
@pytest.mark.parametrize("beta_deg", [0.0, 30.0, 75.0, 120.0, 165.0])
@pytest.mark.parametrize("axis_ratio", [0.3, 0.6, 1.0])
def test_isolated_galaxy_is_left_untouched(
    beta_deg: float, axis_ratio: float, profile: str, noise_sigma: float
) -> None:
    noise = noise_sigma * np.random.default_rng(3).standard_normal((4, SIZE, SIZE))
    stamp, _ = min_shift(central_galaxy(beta_deg, axis_ratio, profile) + noise)

    result = run_one(stamp)

    np.testing.assert_array_equal(result.masked[0], stamp)
    assert result.masked_fraction[0] == 0.0
    assert not result.contaminated[0]


@pytest.mark.parametrize("beta_deg", [0.0, 30.0, 75.0, 120.0])
def test_no_data_corners_of_a_rotated_stamp_are_not_sky(beta_deg: float) -> None:
    # Rotating by 45 degrees brings exact zeros (no data) into a fifth of the stamp, all in the
    # corners where the sky is estimated. Taken as sky they shrank the noise to ~0 and about
    # 30 % of the stamp -- the galaxy's own outskirts -- was masked as "neighbours".
    noise = 0.01 * np.random.default_rng(3).standard_normal((4, SIZE, SIZE))
    stamp = central_galaxy(beta_deg, 0.5, "exponential") + noise
    rotated = rotate(stamp[None], 45.0)[0]
    assert (rotated == 0).mean() > 0.15

    result = run_one(rotated)

    assert result.masked_fraction[0] == 0.0
    assert not result.contaminated[0]


def test_no_data_survives_the_min_shift() -> None:
    # In measure_batch the masking sees min-shifted stamps: the rotation's zeros sit at -min,
    # inside the sky distribution, so only the no-data mask taken before the shift tells them
    # apart. Passed along, the stamp is untouched; read from the shifted values, it is not.
    noise = 0.01 * np.random.default_rng(3).standard_normal((4, SIZE, SIZE))
    rotated = rotate((central_galaxy(30.0, 0.5, "exponential") + noise)[None], 45.0)
    pre = sanitise_and_shift(rotated)
    assert pre.no_data.mean() > 0.15

    with_mask = mask_neighbours(pre.images, pre.no_data)
    from_values = mask_neighbours(pre.images)

    assert with_mask.masked_fraction[0] == 0.0
    assert not with_mask.contaminated[0]
    assert from_values.masked_fraction[0] > 0.05


@pytest.mark.parametrize("blur_px", [0.7, 1.5])
def test_correlated_noise_is_not_taken_for_neighbours(blur_px: float) -> None:
    # Blurred noise (like a resampled coadd's) passes sep's smoothing filter almost unweakened;
    # a threshold in units of the pixel noise then detected noise blobs around the galaxy.
    rng = np.random.default_rng(5)
    noise = ndimage.gaussian_filter(
        rng.standard_normal((64, 4, SIZE, SIZE)), (0, 0, blur_px, blur_px)
    )
    noise *= 0.01 / noise.std()
    stamps, _ = zip(*(min_shift(central_galaxy(30.0, 0.5) + n) for n in noise), strict=True)

    result = mask_neighbours(np.stack(stamps))

    assert result.masked_fraction.mean() < 0.002
    assert result.contaminated.mean() <= 0.05


def test_light_in_the_corners_is_not_taken_for_correlated_noise() -> None:
    # Half the corner pixels without data (scattered, as a Poisson resampling's clipped sky
    # leaves them) and a star in a corner: the few 3x3 windows of data left lie on the star,
    # and their spread -- light, not noise -- once divided the detection image by ~50.
    rng = np.random.default_rng(21)
    corner_star = in_bands(
        elliptical_gaussian(0.0, 1.5, 1.5, distance=24.0, direction_deg=45.0, amplitude=1.0),
        STAR_SED,
    )
    noise = 0.01 * rng.standard_normal((4, SIZE, SIZE))
    stamp, sky = min_shift(central_galaxy() + companion_galaxy() + corner_star + noise)
    # Where the sky fell below its level, as the clipping to 0 of a resampling does.
    no_data = ~radius_mask(SIZE / 2.0)[None] & (stamp < sky[:, None, None])

    result = mask_neighbours(stamp[None], no_data[None])

    companion = radius_mask(2.5, *NEIGHBOUR_CENTRES["companion"])
    assert np.any(result.masked[0] != stamp, axis=0)[companion].all()
    assert result.contaminated[0]


# --- a star and a companion ----------------------------------------------------------------


@pytest.mark.parametrize("noise_sigma", [0.0, 0.01])
@pytest.mark.parametrize("neighbour", ["star", "companion"])
def test_neighbour_is_replaced_by_the_galaxy_reflection_and_flagged(
    neighbour: str, noise_sigma: float
) -> None:
    scene = make_scene(neighbour, noise_sigma)

    result = run_one(scene.contaminated)
    masked = result.masked[0]

    assert result.contaminated[0]
    assert 0.02 < result.masked_fraction[0] < 0.2
    # The neighbour's core takes the pixels point-reflected through the centre ...
    distance, direction = NEIGHBOUR_CENTRES[neighbour]
    core = radius_mask(2.5, distance, direction)
    assert np.all(scene.contaminated[:, core].max(axis=1) > scene.sky + 0.2)
    np.testing.assert_array_equal(masked[:, core], scene.contaminated[:, ::-1, ::-1][:, core])
    # ... which hold the central galaxy's light there, not the neighbour's.
    expected = scene.isolated[:, core] - scene.isolated.min() + scene.contaminated.min()
    np.testing.assert_allclose(masked[:, core], expected, atol=6 * noise_sigma + 1e-3)
    # The masked count matches the reported fraction.
    changed = np.any(masked != scene.contaminated, axis=0)
    assert changed.sum() / SIZE**2 == pytest.approx(result.masked_fraction[0], abs=1.0 / SIZE**2)


def test_star_on_the_galaxy_wings_leaves_no_hole() -> None:
    """A star on the major axis, 9 px out, where the galaxy is still ~20 % of its peak."""
    star = in_bands(
        elliptical_gaussian(0.0, 1.3, 1.3, distance=9.0, direction_deg=BETA_DEG, amplitude=2.0),
        STAR_SED,
    )
    noise = 0.01 * np.random.default_rng(4).standard_normal((4, SIZE, SIZE))
    isolated, sky = min_shift(central_galaxy() + noise)
    stamp, _ = min_shift(central_galaxy() + star + noise)

    result = run_one(stamp)
    masked = result.masked[0]

    replaced = np.any(masked != stamp, axis=0)
    assert replaced[radius_mask(1.5, 9.0, BETA_DEG)].all()
    # The galaxy's light is back where the star was: within the noise of the isolated stamp.
    # Filled with the sky level instead, those pixels would lie ~0.2-0.5 below it.
    galaxy_there = central_galaxy()[:, replaced]
    assert galaxy_there.max() > 0.15
    difference = (masked - stamp.min() - (isolated - isolated.min()))[:, replaced]
    assert np.abs(difference).max() < 0.06
    # So the galaxy's second-moment axis ratio is kept (a hole on the major axis rounds it).
    isolated_q = moment_axis_ratio(isolated, sky)
    assert moment_axis_ratio(masked, sky) == pytest.approx(isolated_q, abs=0.01)


def test_reflection_that_is_masked_or_without_data_falls_back_to_the_sky() -> None:
    """Two stars opposite each other through the centre, and a no-data column."""
    # Of unequal brightness: two equal stars exactly opposite are point-symmetric like the
    # galaxy's own light, and the symmetry test cannot tell them from it (test below).
    stars = bright_star(direction_deg=90.0) + 0.4 * bright_star(direction_deg=270.0)
    noise = 0.01 * np.random.default_rng(6).standard_normal((4, SIZE, SIZE))
    stamp, sky = min_shift(central_galaxy() + stars + noise)
    no_data = np.zeros_like(stamp, dtype=bool)
    no_data[:, :, -1] = True  # the last column; its reflection is the first column

    result = mask_neighbours(stamp[None], no_data[None])
    masked = result.masked[0]

    both = radius_mask(2.5, 12.0, 90.0) | radius_mask(2.5, 12.0, 270.0)
    sky_level = masked[:, both]
    assert np.all(sky_level == sky_level[:, :1])
    np.testing.assert_allclose(sky_level[:, 0], sky, atol=0.02)
    assert np.all(masked[:, :, 0] == stamp[:, :, 0])  # not masked: untouched


@pytest.mark.parametrize(("neighbour", "tolerance"), [("star", 1e-3), ("companion", 0.05)])
def test_central_galaxy_pixels_are_untouched(neighbour: str, tolerance: float) -> None:
    scene = make_scene(neighbour, noise_sigma=0.01)
    central = radius_mask(6.0)

    masked = run_one(scene.contaminated).masked[0]

    # Not modified at all by the masking ...
    np.testing.assert_array_equal(masked[:, central], scene.contaminated[:, central])
    # ... and equal to the isolated galaxy but for the neighbour's own light there (the star's
    # wings at ≥ 6 px are ~1e-5 of its peak; the companion's are a few % of the galaxy's peak).
    galaxy_peak = scene.isolated.max()
    difference = np.abs(masked[:, central] - scene.isolated[:, central]).max()
    assert difference < tolerance * galaxy_peak


@pytest.mark.parametrize("noise_sigma", [0.0, 0.01])
@pytest.mark.parametrize("neighbour", ["star", "companion"])
def test_second_moment_angle_recovered_with_masking(neighbour: str, noise_sigma: float) -> None:
    scene = make_scene(neighbour, noise_sigma)
    isolated_angle = moment_angle_deg(scene.isolated, scene.sky)
    assert axial_difference(isolated_angle, BETA_DEG) < 1.0  # noise moves it by ~0.6°

    masked = run_one(scene.contaminated).masked[0]

    dragged = moment_angle_deg(scene.contaminated, scene.sky)
    recovered = moment_angle_deg(masked, scene.sky)
    assert axial_difference(dragged, isolated_angle) > 5.0
    assert axial_difference(recovered, isolated_angle) < 1.0


def test_faint_neighbour_is_masked_without_the_flag() -> None:
    faint_star = bright_star() * 0.02  # ~0.5 % of the galaxy's flux
    stamp, _ = min_shift(central_galaxy() + faint_star)

    result = run_one(stamp)

    assert result.masked_fraction[0] > 0.0
    assert not result.contaminated[0]
    core = radius_mask(1.5, *NEIGHBOUR_CENTRES["star"])
    assert np.all(result.masked[0][:, core] < stamp[:, core])


def test_neighbour_blended_without_a_saddle_is_flagged() -> None:
    """A companion 4× brighter at 7.5 px swallows the galaxy: nothing to deblend, but flagged."""
    companion = in_bands(
        elliptical_gaussian(80.0, 2.5, 1.2, distance=7.5, direction_deg=200.0, amplitude=4.0),
        GALAXY_SED,
    )
    noise = 0.02 * np.random.default_rng(5).standard_normal((4, SIZE, SIZE))
    stamp, _ = min_shift(central_galaxy(axis_ratio=0.6) + companion + noise)

    result = run_one(stamp)

    assert result.contaminated[0]


def test_off_centre_source_alone_is_masked_and_flagged() -> None:
    noise = 0.01 * np.random.default_rng(8).standard_normal((4, SIZE, SIZE))
    stamp, sky = min_shift(bright_star() + noise)

    result = run_one(stamp)

    assert result.contaminated[0]
    assert result.masked_fraction[0] > 0.02
    core = radius_mask(2.5, *NEIGHBOUR_CENTRES["star"])
    np.testing.assert_allclose(result.masked[0][:, core].mean(axis=1), sky, atol=0.03)


def test_nearest_segment_is_central_when_none_covers_the_centre() -> None:
    """A compact galaxy 2 px off the centre is still the target (within centre_radius_px)."""
    offset_galaxy = in_bands(
        elliptical_gaussian(BETA_DEG, 1.5, 0.8, distance=2.6, direction_deg=0.0), GALAXY_SED
    )
    stamp, _ = min_shift(offset_galaxy + bright_star())

    result = run_one(stamp, NeighbourConfig(dilate_px=0))
    masked = result.masked[0]

    galaxy_core = radius_mask(1.0, 2.6, 0.0)
    np.testing.assert_array_equal(masked[:, galaxy_core], stamp[:, galaxy_core])
    star_core = radius_mask(1.5, *NEIGHBOUR_CENTRES["star"])
    assert np.all(masked[:, star_core] < 0.01)


# --- degenerate inputs ---------------------------------------------------------------------


def hot_pixel(row: int, col: int) -> np.ndarray:
    stamp = np.zeros((4, SIZE, SIZE), dtype=np.float32)
    stamp[:, row, col] = 100.0
    return stamp


@pytest.mark.parametrize(
    "stamp",
    [
        np.zeros((4, SIZE, SIZE), dtype=np.float32),
        np.full((4, SIZE, SIZE), 5.0, dtype=np.float32),
        hot_pixel(20, 20),
    ],
    ids=["all-zero", "constant", "hot-pixel-at-centre"],
)
def test_degenerate_stamp_is_left_untouched(stamp: np.ndarray) -> None:
    result = run_one(stamp)

    np.testing.assert_array_equal(result.masked[0], stamp)
    assert result.masked_fraction[0] == 0.0
    assert not result.contaminated[0]


def test_hot_pixel_off_centre_on_a_blank_stamp_is_masked_like_any_lone_neighbour() -> None:
    stamp = hot_pixel(5, 30)

    result = run_one(stamp)

    assert np.isfinite(result.masked).all()
    np.testing.assert_array_equal(result.masked[0], np.zeros_like(stamp))
    assert 0.0 < result.masked_fraction[0] < 0.05
    assert result.contaminated[0]


def test_blank_band_stays_blank_and_other_bands_are_masked() -> None:
    scene = make_scene("star", noise_sigma=0.01)
    stamp = scene.contaminated.copy()
    stamp[2] = 0.0  # the i band, as DR10 north cutouts have it

    result = run_one(stamp)

    assert np.isfinite(result.masked).all()
    np.testing.assert_array_equal(result.masked[0, 2], 0.0)
    assert result.contaminated[0]
    core = radius_mask(2.5, *NEIGHBOUR_CENTRES["star"])
    for band in (0, 1, 3):
        assert np.all(result.masked[0, band][core] < stamp[band][core])


def test_empty_batch() -> None:
    result = mask_neighbours(np.zeros((0, 4, SIZE, SIZE), dtype=np.float32))

    assert result.masked.shape == (0, 4, SIZE, SIZE)
    assert result.masked_fraction.shape == (0,)
    assert result.contaminated.shape == (0,)


# --- the batch ------------------------------------------------------------------------------


def mixed_batch() -> np.ndarray:
    return np.stack(
        [
            make_scene("star", 0.01).isolated,
            make_scene("star", 0.01).contaminated,
            make_scene("companion", 0.0).contaminated,
            np.zeros((4, SIZE, SIZE), dtype=np.float32),
            hot_pixel(5, 30),
            np.full((4, SIZE, SIZE), 2.0, dtype=np.float32),
            make_scene("companion", 0.01, seed=4).contaminated,
        ]
    )


def test_batch_equals_one_galaxy_at_a_time() -> None:
    batch = mixed_batch()

    result = mask_neighbours(batch)

    assert result.masked.dtype == np.float32
    assert result.masked.shape == batch.shape
    assert result.masked_fraction.dtype == np.float32
    assert result.contaminated.dtype == np.bool_
    for index in range(len(batch)):
        alone = run_one(batch[index])
        np.testing.assert_array_equal(result.masked[index], alone.masked[0])
        assert result.masked_fraction[index] == alone.masked_fraction[0]
        assert result.contaminated[index] == alone.contaminated[0]
    np.testing.assert_array_equal(
        result.contaminated, [False, True, True, False, True, False, True]
    )


def test_input_is_not_modified_and_any_layout_is_accepted() -> None:
    batch = mixed_batch()
    original = batch.copy()
    reference = mask_neighbours(batch)
    np.testing.assert_array_equal(batch, original)

    big_endian = batch.astype(">f4")
    transposed_twice = np.ascontiguousarray(batch.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    for variant in (big_endian, transposed_twice, batch.astype(np.float64)):
        result = mask_neighbours(variant)
        np.testing.assert_array_equal(result.masked, reference.masked)
        np.testing.assert_array_equal(result.contaminated, reference.contaminated)


def test_sep_pixel_stack_setting_is_restored() -> None:
    before = sep.get_extract_pixstack()

    mask_neighbours(mixed_batch())

    assert sep.get_extract_pixstack() == before


def test_dilation_grows_the_mask() -> None:
    stamp = make_scene("star", 0.0).contaminated

    fractions = [
        run_one(stamp, NeighbourConfig(dilate_px=radius)).masked_fraction[0] for radius in (0, 1, 3)
    ]

    assert 0.0 < fractions[0] < fractions[1] < fractions[2]


def test_time_per_galaxy_is_well_under_half_a_millisecond() -> None:
    """A guard, not the benchmark: 0.25-0.35 ms/galaxy measured here; fail only at 4× that."""
    batch = np.concatenate([mixed_batch()] * 60)
    mask_neighbours(batch[:8])
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        mask_neighbours(batch)
        timings.append((time.perf_counter() - start) / len(batch))
    assert min(timings) < 1.5e-3


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "message"),
    [((4, SIZE, SIZE), r"\(N, B, S, S\)"), ((1, 4, SIZE, SIZE - 1), "square")],
)
def test_wrong_shape_is_rejected(shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mask_neighbours(np.zeros(shape, dtype=np.float32))


def test_non_finite_input_is_rejected() -> None:
    batch = mixed_batch()
    batch[1, 2, 3, 4] = np.nan

    with pytest.raises(ValueError, match="1 non-finite"):
        mask_neighbours(batch)


@pytest.mark.parametrize(
    "field",
    [
        {"detect_sigma": 0.0},
        {"minarea": 0},
        {"deblend_nthresh": 0},
        {"deblend_cont": 1.5},
        {"dilate_px": -1},
        {"centre_radius_px": -1.0},
        {"contaminant_flux_ratio": -0.1},
        {"noise_floor_rel": 0.0},
    ],
    ids=lambda field: next(iter(field)),
)
def test_invalid_config_names_the_field(field: dict[str, float]) -> None:
    name = next(iter(field))
    with pytest.raises(ValueError, match=name):
        NeighbourConfig(**field)  # type: ignore[arg-type]


def test_tag_names_every_parameter() -> None:
    default = NeighbourConfig()
    assert default.tag == "nb6-t1.5-a5-n32-c0.001-d2-r3-f0.05-e0.001-s3-x0.3-i10"
    variants = [
        NeighbourConfig(detect_sigma=2.0),
        NeighbourConfig(minarea=7),
        NeighbourConfig(deblend_nthresh=16),
        NeighbourConfig(deblend_cont=0.005),
        NeighbourConfig(dilate_px=1),
        NeighbourConfig(centre_radius_px=4.0),
        NeighbourConfig(contaminant_flux_ratio=0.1),
        NeighbourConfig(noise_floor_rel=1e-4),
    ]
    tags = {default.tag, *(variant.tag for variant in variants)}
    assert len(tags) == len(variants) + 1


# --- with the Radon core ------------------------------------------------------------------


def test_radon_angle_recovered_with_masking() -> None:
    """The paper's Radon angle: dragged by a neighbour, recovered within 1° with masking."""
    masking_on = core.RadonConfig(mask_neighbours=True)
    masking_off = core.RadonConfig(mask_neighbours=False)

    isolated, contaminated = [], []
    for profile in ("gaussian", "exponential"):
        for neighbour in ("star", "companion"):
            for noise_sigma in (0.0, 0.01):
                scene = make_scene(neighbour, noise_sigma, profile=profile)
                isolated.append(scene.isolated)
                contaminated.append(scene.contaminated)
    isolated_batch, contaminated_batch = np.stack(isolated), np.stack(contaminated)

    reference = core.measure_batch(isolated_batch, masking_off)
    with_masking = core.measure_batch(
        contaminated_batch, masking_on, mask_neighbours=mask_neighbours
    )
    without_masking = core.measure_batch(contaminated_batch, masking_off)

    for index in range(len(isolated)):
        truth = float(reference.angle_image_deg[index])
        assert axial_difference(truth, BETA_DEG) < 1.0
        assert axial_difference(float(with_masking.angle_image_deg[index]), truth) < 1.0
        assert axial_difference(float(without_masking.angle_image_deg[index]), truth) > 3.0
    assert np.all(with_masking.contaminated)


def _blob(
    distance: float, direction_deg: float, amplitude: float, sigma: float = 1.3
) -> np.ndarray:
    return elliptical_gaussian(
        0.0, sigma, sigma, distance=distance, direction_deg=direction_deg, amplitude=amplitude
    )


def _segmap_of(*regions: np.ndarray) -> np.ndarray:
    segmap = np.zeros((SIZE, SIZE), dtype=np.int32)
    for label, region in enumerate(regions, start=1):
        segmap[region & (segmap == 0)] = label
    return segmap


def test_symmetry_test_keeps_what_is_brighter_than_its_reflection() -> None:
    galaxy = 50.0 * elliptical_gaussian(BETA_DEG, 5.0, 2.5)
    lone = _blob(12.0, 20.0, 30.0)
    bright, faint = _blob(13.0, 110.0, 40.0), _blob(13.0, 290.0, 12.0)  # opposite, unequal
    detection = (galaxy + lone + bright + faint).astype(np.float32)
    segmap = _segmap_of(
        radius_mask(4.0),
        radius_mask(3.0, 12.0, 20.0),
        radius_mask(3.0, 13.0, 110.0),
        radius_mask(3.0, 13.0, 290.0),
    )

    passed = asymmetric_segments(segmap, detection, 1, NeighbourConfig())

    assert passed.tolist() == [False, False, True, True, True]


def test_symmetry_test_drops_pieces_of_the_galaxys_own_light() -> None:
    # Deblending split the galaxy's outskirts into two pieces on either side of the core; each
    # is as bright as its reflection (noise decides such splits, and differently in every copy).
    galaxy = (50.0 * elliptical_gaussian(BETA_DEG, 6.0, 3.0)).astype(np.float32)
    offset = radius_mask(30.0) & ~radius_mask(4.0)
    along = np.cos(np.arctan2(ROW - CENTRE, COL - CENTRE) - np.deg2rad(BETA_DEG))
    segmap = _segmap_of(radius_mask(4.0), offset & (along > 0.5), offset & (along < -0.5))

    passed = asymmetric_segments(segmap, galaxy, 1, NeighbourConfig())

    assert not passed.any()


def test_bright_sources_apart_from_the_galaxy_need_no_test() -> None:
    # Two equal stars exactly opposite: point-symmetric, yet separate from the central segment
    # and far too bright to be a piece of the galaxy's light.
    galaxy = 50.0 * elliptical_gaussian(BETA_DEG, 3.0, 1.5)
    stars = _blob(14.0, 70.0, 40.0) + _blob(14.0, 250.0, 40.0)
    detection = (galaxy + stars).astype(np.float32)
    segmap = _segmap_of(
        radius_mask(5.0), radius_mask(3.0, 14.0, 70.0), radius_mask(3.0, 14.0, 250.0)
    )

    assert asymmetric_segments(segmap, detection, 1, NeighbourConfig()).tolist() == [
        False,
        False,
        True,
        True,
    ]
    strict = NeighbourConfig(symmetry_exempt_snr=1e9)
    assert not asymmetric_segments(segmap, detection, 1, strict).any()


def test_symmetry_test_counts_the_shot_noise_of_a_photon_counting_image() -> None:
    # A clump of 8 photons of the galaxy's own light beside an empty reflection: hundreds of
    # sky sigma when the sky is nearly empty, 2.8 sigma of its own shot noise.
    sky_sigma_per_photon = 0.02  # detection units: one photon is 50 sky sigma
    galaxy = (50.0 * elliptical_gaussian(BETA_DEG, 3.0, 1.5)).astype(np.float32)
    clump = radius_mask(1.5, 9.0, 30.0)
    detection = galaxy.copy()
    detection[clump] += 8.0 / sky_sigma_per_photon / clump.sum()
    segmap = _segmap_of(radius_mask(4.0), clump)
    shot = 1.0 + np.maximum(detection, 0) / sky_sigma_per_photon

    assert asymmetric_segments(segmap, detection, 1, NeighbourConfig()).tolist() == [
        False,
        False,
        True,
    ]
    assert not asymmetric_segments(segmap, detection, 1, NeighbourConfig(), shot).any()
