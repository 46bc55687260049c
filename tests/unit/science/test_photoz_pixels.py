"""Pixels of a galaxy at its catalogue position, and their feature vectors (photo-z step 1).

Stamps are analytic Gaussians on a 40×40 grid in the conventions of docs/science.md: axes
``[row, col]``, x = column, y = row, pixel centres at integers. Expected feature values come
from the luptitude formula written out here, not from the module.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from galpipe.science.photoz_pixels import (
    FEATURE_NAMES,
    PixelVectorConfig,
    PixelVectorError,
    assign_pixels,
    feature_names,
    luptitudes,
    pixel_vectors,
)

SIZE = 40
CENTRE = (SIZE - 1) / 2.0
SED = np.array([0.5, 1.0, 1.3, 1.5])  # relative flux in g, r, i, z
NOISE = 0.005  # nanomaggies per pixel
ROW, COL = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)


def gaussian(x: float, y: float, sigma_px: float, peak: float) -> np.ndarray:
    return peak * np.exp(-((COL - x) ** 2 + (ROW - y) ** 2) / (2 * sigma_px**2))


def two_objects(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A galaxy at the stamp centre and a compact companion at (x, y) = (31, 9), with noise."""
    rng = np.random.default_rng(seed)
    light = gaussian(CENTRE, CENTRE, 2.5, 1.0) + gaussian(31.0, 9.0, 1.5, 0.8)
    cube = SED[:, None, None] * light + rng.normal(0.0, NOISE, (4, SIZE, SIZE))
    return cube.astype(np.float32), np.full((4, SIZE, SIZE), NOISE, dtype=np.float32)


def expected_luptitude(flux: float, b: float) -> float:
    return 22.5 - 2.5 * math.log10(b) - 2.5 / math.log(10) * math.asinh(flux / (2 * b))


def test_catalogue_position_picks_its_own_segment() -> None:
    cube, sigma = two_objects()
    galaxy, reason = assign_pixels(cube, sigma, (CENTRE, CENTRE))
    assert reason is None
    assert galaxy[19, 19]
    assert galaxy[20, 20]
    assert not galaxy[9, 31]  # the companion's peak (row 9, column 31)
    companion, reason = assign_pixels(cube, sigma, (31.0, 9.0))
    assert reason is None
    assert companion[9, 31]
    assert not companion[19, 19]
    assert not (galaxy & companion).any()
    # The galaxy is the larger source.
    assert galaxy.sum() > companion.sum() > 0


def test_position_within_the_radius_matches_the_nearest_segment() -> None:
    cube, sigma = two_objects()
    shifted, reason = assign_pixels(cube, sigma, (CENTRE + 3.0, CENTRE - 2.0))
    exact, _ = assign_pixels(cube, sigma, (CENTRE, CENTRE))
    assert reason is None
    np.testing.assert_array_equal(shifted, exact)


def test_no_segment_within_the_radius_gives_an_empty_mask_and_a_reason() -> None:
    cube, sigma = two_objects()
    mask, reason = assign_pixels(cube, sigma, (5.0, 35.0))
    assert not mask.any()
    assert reason is not None
    assert "no segment within 5 px" in reason
    # A larger radius still matches nothing that far, a smaller one misses a 3 px offset.
    tight = PixelVectorConfig(assoc_radius_px=1.0)
    mask, reason = assign_pixels(cube, sigma, (CENTRE + 3.0, CENTRE), tight)
    assert not mask.any()
    assert reason is not None
    assert "within 1 px" in reason


def test_blank_stamp_has_no_source() -> None:
    rng = np.random.default_rng(3)
    cube = rng.normal(0.0, NOISE, (4, SIZE, SIZE)).astype(np.float32)
    mask, reason = assign_pixels(cube, np.full_like(cube, NOISE), (CENTRE, CENTRE))
    assert not mask.any()
    assert reason is not None


def test_pixels_without_data_in_any_band_are_dropped() -> None:
    cube, sigma = two_objects()
    clean, _ = assign_pixels(cube, sigma, (CENTRE, CENTRE))
    cube[2, 19, 21] = np.nan  # i band lacks this pixel
    sigma[0, 21, 18] = 0.0  # zero coverage in g
    sigma[3, 18, 18] = np.inf
    mask, reason = assign_pixels(cube, sigma, (CENTRE, CENTRE))
    assert reason is None
    assert clean[19, 21]
    assert clean[21, 18]
    assert clean[18, 18]
    assert not mask[19, 21]
    assert not mask[21, 18]
    assert not mask[18, 18]
    assert mask[19, 19]
    assert mask[20, 20]
    vectors = pixel_vectors(cube[None], sigma[None], [(CENTRE, CENTRE)])
    assert np.isfinite(vectors.features).all()
    assert vectors.n_pixels[0] == mask.sum()


def test_feature_names_document_the_columns() -> None:
    assert FEATURE_NAMES == (
        "lup_g",
        "lup_r",
        "lup_i",
        "lup_z",
        "lup_err_g",
        "lup_err_r",
        "lup_err_i",
        "lup_err_z",
        "r_norm",
        "dx_arcsec",
        "dy_arcsec",
    )
    assert len(feature_names("ugriz")) == 2 * 5 + 3


def test_luptitudes_follow_the_asinh_law() -> None:
    b = 0.01
    flux = np.array([-0.02, 0.0, 0.01, 4.0])
    mu, err = luptitudes(flux, np.full(4, 0.005), b)
    for value, f in zip(mu, flux, strict=True):
        assert value == pytest.approx(expected_luptitude(float(f), b), abs=1e-9)
    # Bright: the AB magnitude; zero flux: finite, 22.5 - 2.5 log10(b).
    assert mu[3] == pytest.approx(22.5 - 2.5 * math.log10(4.0), abs=1e-4)
    assert mu[1] == pytest.approx(22.5 - 2.5 * math.log10(b))
    assert err[1] == pytest.approx(2.5 / math.log(10) * 0.005 / (2 * b))
    assert np.isfinite(mu).all()
    assert np.all(err > 0)


def test_feature_values_of_a_hand_made_stamp() -> None:
    """A noiseless 3×3 block, fluxes 1, 2, 3, 4 nmgy in g, r, i, z, at (x, y) = (12, 12)."""
    size = 25
    cube = np.zeros((4, size, size), dtype=np.float32)
    cube[:, 11:14, 11:14] = np.array([1.0, 2.0, 3.0, 4.0])[:, None, None]
    sigma = np.full_like(cube, 0.01)
    b, scale = 0.02, 0.5
    config = PixelVectorConfig(softening_nmgy=b)
    vectors = pixel_vectors(
        cube[None], sigma[None], [(12.0, 12.0)], config, pixel_scale_arcsec=scale
    )
    mask, _ = assign_pixels(cube, sigma, (12.0, 12.0), config)
    rows, cols = np.nonzero(mask)
    assert vectors.n_pixels.tolist() == [rows.size]
    assert mask[11:14, 11:14].all()
    np.testing.assert_allclose(vectors.centre_xy[0], [12.0, 12.0], atol=1e-6)
    features = vectors.features
    assert features.shape == (rows.size, 11)
    assert features.dtype == np.float32
    distance = np.hypot(cols - 12.0, rows - 12.0) * scale
    for p, (row, col) in enumerate(zip(rows, cols, strict=True)):
        for band in range(4):
            flux = float(cube[band, row, col])
            assert features[p, band] == pytest.approx(expected_luptitude(flux, b), abs=1e-4)
            expected_err = 2.5 / math.log(10) * 0.01 / math.sqrt(flux**2 + 4 * b**2)
            assert features[p, 4 + band] == pytest.approx(expected_err, rel=1e-4)
        assert features[p, 8] == pytest.approx(distance[p] / distance.max(), abs=1e-6)
        assert features[p, 9] == pytest.approx((col - 12.0) * scale, abs=1e-5)
        assert features[p, 10] == pytest.approx((row - 12.0) * scale, abs=1e-5)
    np.testing.assert_allclose(vectors.segment_flux[0], [9.0, 18.0, 27.0, 36.0], rtol=1e-6)
    np.testing.assert_allclose(vectors.segment_flux_err[0], 0.01 * math.sqrt(rows.size), rtol=1e-5)
    np.testing.assert_allclose(vectors.flux_weight, cube[:, rows, cols].sum(axis=0), rtol=1e-6)
    assert vectors.column("r_norm").max() == pytest.approx(1.0)


def test_batch_vectors_index_their_galaxies_and_keep_reasons() -> None:
    cube, sigma = two_objects()
    cubes = np.stack([cube, cube, cube])
    sigmas = np.stack([sigma, sigma, sigma])
    positions = [(CENTRE, CENTRE), (5.0, 35.0), (31.0, 9.0)]
    vectors = pixel_vectors(cubes, sigmas, positions)
    masks = [assign_pixels(cube, sigma, p)[0] for p in positions]
    assert vectors.n_pixels.tolist() == [int(m.sum()) for m in masks]
    assert vectors.n_pixels[1] == 0
    assert vectors.reasons[0] is None
    assert vectors.reasons[2] is None
    assert vectors.reasons[1] is not None
    assert "no segment" in vectors.reasons[1]
    assert np.all(np.diff(vectors.galaxy_index) >= 0)
    assert np.bincount(vectors.galaxy_index, minlength=3).tolist() == vectors.n_pixels.tolist()
    assert np.isnan(vectors.centre_xy[1]).all()
    assert vectors.segment_flux[1].tolist() == [0.0, 0.0, 0.0, 0.0]
    np.testing.assert_allclose(vectors.segment_flux[2], cube[:, masks[2]].sum(axis=1), rtol=1e-5)
    # The galaxy (more pixels, redder bands brighter) has brighter r luptitudes at its core.
    r = vectors.column("lup_r")
    assert r[vectors.galaxy_index == 0].min() < r[vectors.galaxy_index == 2].min()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"assoc_radius_px": 0.0},
        {"detect_sigma": -1.0},
        {"minarea": 0},
        {"deblend_nthresh": 0},
        {"deblend_cont": 1.5},
        {"softening_nmgy": 0.0},
        {"softening_nmgy": (0.01, -0.01)},
        {"noise_floor_rel": 1.0},
    ],
)
def test_config_refuses_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(PixelVectorError, match=next(iter(kwargs))):
        PixelVectorConfig(**kwargs)  # type: ignore[arg-type]


def test_inputs_that_do_not_fit_are_refused() -> None:
    cube, sigma = two_objects()
    with pytest.raises(PixelVectorError, match="softening_nmgy"):
        pixel_vectors(
            cube[None], sigma[None], [(CENTRE, CENTRE)], PixelVectorConfig(softening_nmgy=(1, 2))
        )
    with pytest.raises(PixelVectorError, match="positions"):
        pixel_vectors(cube[None], sigma[None], [(np.nan, CENTRE)])
    with pytest.raises(PixelVectorError, match="positions"):
        pixel_vectors(cube[None], sigma[None], [(CENTRE, CENTRE), (1.0, 1.0)])
    with pytest.raises(PixelVectorError, match="sigmas"):
        pixel_vectors(cube[None], sigma[None, :2], [(CENTRE, CENTRE)])
    with pytest.raises(PixelVectorError, match="bands"):
        pixel_vectors(cube[None], sigma[None], [(CENTRE, CENTRE)], bands="gri")
    with pytest.raises(PixelVectorError, match="pixel_scale_arcsec"):
        pixel_vectors(cube[None], sigma[None], [(CENTRE, CENTRE)], pixel_scale_arcsec=0.0)
