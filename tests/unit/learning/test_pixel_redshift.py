"""Pixel redshifts: kNN, k by validation split by galaxy, combiners, baseline, serialisation.

The synthetic pixels have colours that are a known linear function of their galaxy's redshift
plus noise, so a learner that works predicts the redshift of galaxies it never saw.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from galpipe.errors import ConfigurationError
from galpipe.learning.pixel_redshift import (
    COMBINERS,
    PixelRedshiftError,
    PixelRedshiftModel,
    combine_pixel_redshifts,
    default_columns,
    fit_integrated_baseline,
)
from galpipe.science.photoz_metrics import redshift_metrics
from galpipe.science.photoz_pixels import FEATURE_NAMES, PixelVectors, pixel_vectors

# Colour slopes per unit redshift of g-r, r-i, i-z (mag).
SLOPES = np.array([1.5, 0.8, 0.4])


def synthetic_vectors(
    z: np.ndarray, rng: np.random.Generator, colour_noise: float = 0.05, empty: int = 0
) -> PixelVectors:
    """Pixel vectors whose colours are SLOPES·z + noise; the last ``empty`` galaxies have none."""
    n = z.size
    n_pixels = rng.integers(8, 30, n)
    n_pixels[n - empty :] = 0
    galaxy = np.repeat(np.arange(n), n_pixels)
    p = galaxy.size
    colours = 0.2 + SLOPES * z[galaxy, None] + rng.normal(0.0, colour_noise, (p, 3))
    lup_r = 23.0 + rng.normal(0.0, 0.7, p)
    features = np.zeros((p, len(FEATURE_NAMES)), dtype=np.float32)
    features[:, 1] = lup_r
    features[:, 0] = lup_r + colours[:, 0]
    features[:, 2] = lup_r - colours[:, 1]
    features[:, 3] = features[:, 2] - colours[:, 2]
    features[:, 4:8] = rng.uniform(0.05, 0.2, (p, 4))
    features[:, 8] = rng.uniform(0.0, 1.0, p)
    features[:, 9:] = rng.normal(0.0, 1.0, (p, 2))
    reasons = tuple(None if k else "no segment within 5 px" for k in n_pixels)
    # The whole segment: the galaxy's noiseless colours at r = 20 mag, its flux in nanomaggies.
    magnitudes = np.empty((n, 4))
    magnitudes[:, 1] = 20.0
    galaxy_colours = 0.2 + SLOPES * z[:, None]
    magnitudes[:, 0] = 20.0 + galaxy_colours[:, 0]
    magnitudes[:, 2] = 20.0 - galaxy_colours[:, 1]
    magnitudes[:, 3] = magnitudes[:, 2] - galaxy_colours[:, 2]
    segment_flux = 10.0 ** ((22.5 - magnitudes) / 2.5)
    segment_flux[n_pixels == 0] = 0.0
    return PixelVectors(
        features=features,
        galaxy_index=galaxy.astype(np.int64),
        flux_weight=rng.uniform(0.1, 1.0, p).astype(np.float32),
        n_pixels=n_pixels.astype(np.int64),
        reasons=reasons,
        segment_flux=segment_flux,
        segment_flux_err=np.full_like(segment_flux, 0.01),
        centre_xy=np.zeros((n, 2)),
    )


@pytest.fixture(scope="module")
def trained() -> tuple[PixelRedshiftModel, np.random.Generator]:
    rng = np.random.default_rng(5)
    z = rng.uniform(0.05, 1.2, 300)
    model = PixelRedshiftModel()
    model.fit(synthetic_vectors(z, rng), z, k_grid=(2, 8, 32))
    return model, rng


def test_knn_predicts_unseen_galaxies(
    trained: tuple[PixelRedshiftModel, np.random.Generator],
) -> None:
    model, _ = trained
    rng = np.random.default_rng(6)
    z = rng.uniform(0.05, 1.2, 120)
    result = model.predict_galaxies(synthetic_vectors(z, rng, empty=3))
    figures = redshift_metrics(result.z, z)
    assert figures.n == 117
    assert figures.n_excluded == 3
    assert figures.sigma_nmad < 0.02
    assert abs(figures.bias) < 0.01
    assert figures.outlier_fraction == 0.0
    # Galaxies without pixels: NaN with their reason.
    assert np.isnan(result.z[-3:]).all()
    assert np.isnan(result.z_err[-3:]).all()
    assert result.reasons[-1] == "no segment within 5 px"
    assert result.n_pixels[-1] == 0
    assert np.all(result.z_err[:-3] >= 0)


def test_k_is_chosen_from_the_grid_by_validation(
    trained: tuple[PixelRedshiftModel, np.random.Generator],
) -> None:
    model, _ = trained
    assert [p.k for p in model.validation_curve] == [2, 8, 32]
    best = min(model.validation_curve, key=lambda p: p.sigma_nmad)
    assert model.k == best.k
    assert all(p.n_galaxies > 30 for p in model.validation_curve)
    assert model.columns == default_columns("griz")
    assert model.n_train_galaxies == 300


def test_noisy_pixels_choose_a_larger_k() -> None:
    rng = np.random.default_rng(8)
    z = rng.uniform(0.05, 1.2, 200)
    # Colour noise of 0.5 mag: one neighbour is a poor guess, the average of many is not
    # (the pixels' own columns: their segment's colours are noiseless here).
    model = PixelRedshiftModel(columns=default_columns("griz", with_segment=False))
    model.fit(synthetic_vectors(z, rng, colour_noise=0.5), z, k_grid=(1, 64))
    curve = {p.k: p.sigma_nmad for p in model.validation_curve}
    assert curve[64] < curve[1]
    assert model.k == 64


def test_the_segments_colours_give_noisy_pixels_their_galaxys_redshift() -> None:
    rng = np.random.default_rng(12)
    z = rng.uniform(0.05, 1.2, 300)
    vectors = synthetic_vectors(z, rng, colour_noise=0.5)
    test = np.arange(300) >= 200
    scores = {}
    for with_segment in (False, True):
        model = PixelRedshiftModel(
            columns=default_columns("griz", with_segment=with_segment), combiner="density_mode"
        )
        model.fit(_subset(vectors, ~test), z[~test], k_grid=(8, 32))
        predicted = model.predict_galaxies(_subset(vectors, test)).z
        scores[with_segment] = redshift_metrics(predicted, z[test]).sigma_nmad
    assert scores[True] < 0.5 * scores[False]


def _subset(vectors: PixelVectors, keep: np.ndarray) -> PixelVectors:
    """The vectors of the galaxies where ``keep`` is true, renumbered."""
    rows = keep[vectors.galaxy_index]
    renumber = np.cumsum(keep) - 1
    return PixelVectors(
        features=vectors.features[rows],
        galaxy_index=renumber[vectors.galaxy_index[rows]],
        flux_weight=vectors.flux_weight[rows],
        n_pixels=vectors.n_pixels[keep],
        reasons=tuple(r for r, k in zip(vectors.reasons, keep, strict=True) if k),
        segment_flux=vectors.segment_flux[keep],
        segment_flux_err=vectors.segment_flux_err[keep],
        centre_xy=vectors.centre_xy[keep],
    )


def test_segment_columns_need_the_segments_flux() -> None:
    rng = np.random.default_rng(13)
    z = rng.uniform(0.05, 1.2, 40)
    vectors = synthetic_vectors(z, rng)
    bare = PixelVectors(
        vectors.features,
        vectors.galaxy_index,
        vectors.flux_weight,
        vectors.n_pixels,
        vectors.reasons,
    )
    with pytest.raises(PixelRedshiftError, match=r"segment flux: expected shape \(40, 4\)"):
        PixelRedshiftModel().fit(bare, z, k_grid=(4,))


def test_validation_is_split_by_galaxy_not_by_pixel() -> None:
    """Every pixel of a galaxy is the same vector and z is unrelated to it: a split by pixel
    would find each validation pixel's twin (distance 0) and score perfectly."""
    rng = np.random.default_rng(9)
    n = 150
    z = rng.uniform(0.0, 1.5, n)
    vectors = synthetic_vectors(rng.uniform(0.0, 1.5, n), rng, colour_noise=0.0)
    first = np.searchsorted(vectors.galaxy_index, np.arange(n))
    twins = vectors.features[first][vectors.galaxy_index]
    vectors = PixelVectors(
        twins, vectors.galaxy_index, vectors.flux_weight, vectors.n_pixels, vectors.reasons
    )
    # The pixels' own columns only: the segment's are one vector per galaxy too, by design.
    model = PixelRedshiftModel(columns=default_columns("griz", with_segment=False))
    model.fit(vectors, z, k_grid=(1, 4))
    assert all(p.sigma_nmad > 0.1 for p in model.validation_curve)
    assert all(p.pixel_rmse > 0.2 for p in model.validation_curve)


def test_split_follows_galaxy_ids_not_row_order() -> None:
    rng = np.random.default_rng(10)
    z = rng.uniform(0.05, 1.2, 120)
    vectors = synthetic_vectors(z, rng)
    ids = rng.permutation(10_000)[:120].astype(np.int64)
    a = PixelRedshiftModel(seed=3).fit(vectors, z, ids, k_grid=(4, 16))
    b = PixelRedshiftModel(seed=3).fit(vectors, z, ids, k_grid=(4, 16))
    c = PixelRedshiftModel(seed=4).fit(vectors, z, ids, k_grid=(4, 16))
    assert a.validation_curve == b.validation_curve
    assert a.validation_curve != c.validation_curve


def test_combiners_on_an_outlier_pixel() -> None:
    # Galaxy 0: four pixels at 0.5 and one stray at 3.0; galaxy 1: none; galaxy 2: two pixels
    # at 0.2 (flux 3) and 0.8 (flux 1); galaxy 3: the same with the fluxes swapped.
    pixel_z = np.array([0.5, 0.5, 0.5, 0.5, 3.0, 0.2, 0.8, 0.2, 0.8])
    galaxy = np.array([0, 0, 0, 0, 0, 2, 2, 3, 3])
    flux = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 3.0, 1.0, 1.0, 3.0])
    mean, _ = combine_pixel_redshifts(pixel_z, galaxy, flux, 4, "mean")
    median, _ = combine_pixel_redshifts(pixel_z, galaxy, flux, 4, "flux_weighted_median")
    mode, _ = combine_pixel_redshifts(pixel_z, galaxy, flux, 4, "density_mode")
    assert mean[0] == pytest.approx(1.0)
    assert median[0] == pytest.approx(0.5)
    assert mode[0] == pytest.approx(0.5, abs=0.01)
    assert np.isnan(mean[1])
    assert np.isnan(median[1])
    assert np.isnan(mode[1])
    assert median[2] == pytest.approx(0.2)
    assert median[3] == pytest.approx(0.8)
    assert mean[2] == pytest.approx(0.5)


def test_negative_flux_pixels_do_not_weigh() -> None:
    pixel_z = np.array([0.3, 0.3, 0.9, 0.9, 0.9])
    flux = np.array([1.0, 1.0, -5.0, -5.0, 0.0])
    median, _ = combine_pixel_redshifts(
        pixel_z, np.zeros(5, dtype=int), flux, 1, "flux_weighted_median"
    )
    assert median[0] == pytest.approx(0.3)
    # All weights 0: every pixel counts alike.
    median, _ = combine_pixel_redshifts(
        pixel_z, np.zeros(5, dtype=int), -flux.clip(0), 1, "flux_weighted_median"
    )
    assert median[0] == pytest.approx(0.9)


def test_density_mode_picks_the_larger_group() -> None:
    pixel_z = np.concatenate([np.full(10, 0.3), np.full(6, 0.9)])
    mode, _ = combine_pixel_redshifts(
        pixel_z, np.zeros(16, dtype=int), np.ones(16), 1, "density_mode"
    )
    mean, _ = combine_pixel_redshifts(pixel_z, np.zeros(16, dtype=int), np.ones(16), 1, "mean")
    assert mode[0] == pytest.approx(0.3, abs=0.01)
    assert mean[0] == pytest.approx(0.525)


def test_spread_is_half_the_16_84_range() -> None:
    rng = np.random.default_rng(12)
    pixel_z = rng.normal(0.6, 0.1, 4000)
    for combiner in COMBINERS:
        z, z_err = combine_pixel_redshifts(
            pixel_z, np.zeros(4000, dtype=int), np.ones(4000), 1, combiner
        )
        assert z[0] == pytest.approx(0.6, abs=0.02)
        assert z_err[0] == pytest.approx(0.1, abs=0.01)


def test_unknown_combiner_and_columns_are_refused(
    trained: tuple[PixelRedshiftModel, np.random.Generator],
) -> None:
    with pytest.raises(PixelRedshiftError, match="combiner"):
        combine_pixel_redshifts([0.1], [0], [1.0], 1, "max")
    with pytest.raises(PixelRedshiftError, match="learner"):
        PixelRedshiftModel(learner="forest")
    rng = np.random.default_rng(13)
    z = rng.uniform(0.05, 1.2, 20)
    with pytest.raises(PixelRedshiftError, match="'u-g'"):
        PixelRedshiftModel(columns=("u-g",)).fit(synthetic_vectors(z, rng), z)
    with pytest.raises(PixelRedshiftError, match="z_spec"):
        PixelRedshiftModel().fit(synthetic_vectors(z, rng), np.where(z > 1, np.nan, z))
    with pytest.raises(PixelRedshiftError, match="not fitted"):
        PixelRedshiftModel().predict_pixels(synthetic_vectors(z, rng))
    with pytest.raises(PixelRedshiftError, match="k_grid"):
        PixelRedshiftModel().fit(synthetic_vectors(z, rng), z, k_grid=(0, 2))


def _rebuild(data: bytes, change: dict[str, object]) -> bytes:
    """The model bytes with header fields changed (the documented layout: magic line, 8-byte
    big-endian header length, JSON header, payload)."""
    magic_end = data.index(b"\n") + 1
    (length,) = struct.unpack(">Q", data[magic_end : magic_end + 8])
    start = magic_end + 8
    header = json.loads(data[start : start + length])
    header.update(change)
    encoded = json.dumps(header).encode()
    return data[:magic_end] + struct.pack(">Q", len(encoded)) + encoded + data[start + length :]


def test_serialisation_round_trip_and_refusals(
    trained: tuple[PixelRedshiftModel, np.random.Generator],
) -> None:
    model, _ = trained
    rng = np.random.default_rng(14)
    z = rng.uniform(0.05, 1.2, 30)
    vectors = synthetic_vectors(z, rng)
    data = model.to_bytes()
    loaded = PixelRedshiftModel.from_bytes(data)
    np.testing.assert_array_equal(loaded.predict_pixels(vectors), model.predict_pixels(vectors))
    assert loaded.k == model.k
    assert loaded.validation_curve == model.validation_curve
    assert loaded.columns == model.columns
    with pytest.raises(ConfigurationError, match=r"scikit-learn 0\.99\.0"):
        PixelRedshiftModel.from_bytes(_rebuild(data, {"sklearn_version": "0.99.0"}))
    with pytest.raises(PixelRedshiftError, match="format version"):
        PixelRedshiftModel.from_bytes(_rebuild(data, {"format_version": 99}))
    with pytest.raises(PixelRedshiftError, match="not a galpipe photo-z model"):
        PixelRedshiftModel.from_bytes(b"\x80\x05" + data[40:])
    with pytest.raises(PixelRedshiftError, match="do not load"):
        PixelRedshiftModel.from_bytes(data[:-100])


def test_gradient_boosting_learns_too() -> None:
    rng = np.random.default_rng(15)
    z = rng.uniform(0.05, 1.2, 150)
    model = PixelRedshiftModel(learner="gradient_boosting", boosting_max_iter=50)
    model.fit(synthetic_vectors(z, rng), z)
    assert model.k is None
    assert len(model.validation_curve) == 1
    test_z = rng.uniform(0.1, 1.1, 60)
    result = model.predict_galaxies(synthetic_vectors(test_z, rng), "flux_weighted_median")
    assert redshift_metrics(result.z, test_z).sigma_nmad < 0.03
    again = PixelRedshiftModel.from_bytes(model.to_bytes())
    assert again.learner == "gradient_boosting"


def test_integrated_baseline_predicts_from_total_fluxes() -> None:
    rng = np.random.default_rng(16)

    def fluxes(z: np.ndarray) -> np.ndarray:
        # Magnitudes whose colours are SLOPES·z; r from 18 to 21.
        r = rng.uniform(18.0, 21.0, z.size)
        colours = 0.2 + SLOPES * z[:, None] + rng.normal(0.0, 0.03, (z.size, 3))
        mags = np.stack(
            [r + colours[:, 0], r, r - colours[:, 1], r - colours[:, 1] - colours[:, 2]], axis=1
        )
        return 10 ** ((22.5 - mags) / 2.5)

    z = rng.uniform(0.05, 1.2, 400)
    baseline = fit_integrated_baseline(fluxes(z), z, k_grid=(1, 8, 32))
    assert baseline.k in (1, 8, 32)
    assert baseline.k == min(baseline.validation_curve, key=lambda p: p.sigma_nmad).k
    assert baseline.columns == ("g-r", "r-i", "i-z", "lup_r")
    test_z = rng.uniform(0.1, 1.1, 100)
    assert redshift_metrics(baseline.predict(fluxes(test_z)), test_z).sigma_nmad < 0.03
    with pytest.raises(PixelRedshiftError, match="total_fluxes"):
        baseline.predict(np.ones((3, 3)))


def test_from_stamps_to_redshifts() -> None:
    """End to end on analytic stamps: the SED reddens with z, pixels carry it."""
    rng = np.random.default_rng(17)
    size = 40
    row, col = np.mgrid[0:size, 0:size]
    centre = (size - 1) / 2

    def stamps(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        radius2 = (col - centre) ** 2 + (row - centre) ** 2
        light = np.exp(-radius2 / (2 * 3.0**2))
        # Flux ratios to r of g, r, i, z; redder with z.
        sed = np.stack(
            [
                10 ** (-0.4 * (0.2 + 1.5 * z)),
                np.ones_like(z),
                10 ** (0.4 * (0.2 + 0.8 * z)),
                10 ** (0.4 * (0.3 + 1.2 * z)),
            ],
            axis=1,
        )
        cubes = 2.0 * sed[:, :, None, None] * light + rng.normal(
            0.0, 0.005, (z.size, 4, size, size)
        )
        return cubes.astype(np.float32), np.full(cubes.shape, 0.005, dtype=np.float32)

    z = rng.uniform(0.05, 1.0, 60)
    cubes, sigmas = stamps(z)
    positions = np.full((z.size, 2), centre)
    vectors = pixel_vectors(cubes, sigmas, positions)
    assert (vectors.n_pixels > 20).all()
    model = PixelRedshiftModel(combiner="flux_weighted_median").fit(vectors, z, k_grid=(4, 16))
    test_z = rng.uniform(0.1, 0.95, 20)
    test_cubes, test_sigmas = stamps(test_z)
    result = model.predict_galaxies(pixel_vectors(test_cubes, test_sigmas, positions[:20]))
    assert redshift_metrics(result.z, test_z).sigma_nmad < 0.05
    baseline = fit_integrated_baseline(vectors.segment_flux, z, k_grid=(2, 4))
    assert baseline.predict(vectors.segment_flux).shape == (60,)


def test_a_galaxys_density_mode_does_not_depend_on_the_rest_of_its_batch() -> None:
    rng = np.random.default_rng(5)
    n = 30
    galaxy = np.repeat(np.arange(n), 20)
    pixel_z = rng.uniform(0.05, 1.1, n)[galaxy] + rng.normal(0.0, 0.05, galaxy.size)
    weights = rng.uniform(0.5, 2.0, galaxy.size)
    together, _ = combine_pixel_redshifts(pixel_z, galaxy, weights, n, "density_mode")
    for first in (0, 17):
        alone = galaxy == first
        single, _ = combine_pixel_redshifts(
            pixel_z[alone],
            np.zeros(int(alone.sum()), dtype=np.int64),
            weights[alone],
            1,
            "density_mode",
        )
        assert single[0] == pytest.approx(together[first], abs=1e-12)
