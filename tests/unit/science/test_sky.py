"""The sky level and noise of a stamp's corners (galpipe.science.sky)."""

from __future__ import annotations

import numpy as np
import pytest

from galpipe.science.preprocess import circular_mask
from galpipe.science.sky import photon_quantum, sky_level_and_noise

SIZE = 40


def _measure(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    batch = np.asarray(images, dtype=np.float32)
    return sky_level_and_noise(batch, np.zeros(batch.shape, dtype=bool))


def test_gaussian_sky_level_and_noise_are_recovered() -> None:
    rng = np.random.default_rng(3)
    images = 5.0 + 0.2 * rng.standard_normal((200, 1, SIZE, SIZE))
    level, sigma = _measure(images)
    assert np.median(level) == pytest.approx(5.0, abs=0.005)
    assert np.median(sigma) == pytest.approx(0.2, rel=0.03)


def test_photon_counting_sky_has_the_noise_of_its_photons() -> None:
    # 0.2 photons per pixel: over 80 % of the corner pixels hold 0 counts, the quartiles
    # coincide, and the interquartile range alone would call the sky noiseless.
    rng = np.random.default_rng(4)
    photons_per_pixel, flux_per_photon = 0.2, 0.05
    images = flux_per_photon * rng.poisson(photons_per_pixel, (300, 1, SIZE, SIZE))
    _, sigma = _measure(images)
    expected = flux_per_photon * np.sqrt(photons_per_pixel)
    assert (sigma > 0).all()
    assert np.median(sigma) == pytest.approx(expected, rel=0.1)


def test_light_in_a_corner_does_not_count_as_photon_noise() -> None:
    rng = np.random.default_rng(5)
    images = 0.05 * rng.poisson(0.2, (100, 1, SIZE, SIZE)).astype(np.float64)
    clean = _measure(images)[1]
    corner = ~circular_mask(SIZE)
    corner[SIZE // 2 :, :] = False  # one neighbour's light in the top corners only
    corner[:, SIZE // 2 :] = False
    bright = np.flatnonzero(corner.ravel())[:3]
    flat = images.reshape(100, 1, -1)
    flat[..., bright] += 50.0
    _, sigma = _measure(flat.reshape(images.shape))
    assert np.median(sigma / clean) < 1.2


def test_noiseless_and_blank_bands_have_zero_noise() -> None:
    images = np.zeros((2, 2, SIZE, SIZE), dtype=np.float32)
    images[0, 0] = 3.0  # constant: noiseless
    level, sigma = sky_level_and_noise(images, images == 0)
    assert sigma[0, 0] == 0.0
    assert level[0, 0] == pytest.approx(3.0)
    # blank (no data at all)
    assert sigma[0, 1] == 0.0
    assert level[0, 1] == 0.0


def test_photon_quantum_is_the_value_of_one_count() -> None:
    rng = np.random.default_rng(6)
    counts = rng.poisson(0.5, (3, 2, SIZE, SIZE))
    images = (0.0643 * counts).astype(np.float32)
    images[1, 1] = 0.02 * rng.standard_normal((SIZE, SIZE)) + 1.0  # a continuous band
    images[2, 0] = 0.0
    images[2, 0, 5, 30] = 7.0  # a hot pixel on a blank band
    no_data = np.zeros(images.shape, dtype=bool)
    no_data[0, 0, :4] = True
    images[0, 0, :4] = 0.013  # what the no-data pixels hold is not looked at

    quantum = photon_quantum(images, no_data)

    np.testing.assert_allclose(quantum[0], 0.0643, rtol=1e-6)
    assert quantum[1, 0] == pytest.approx(0.0643, rel=1e-6)
    assert quantum[1, 1] == 0.0
    assert quantum[2, 0] == 0.0
    assert quantum[2, 1] == pytest.approx(0.0643, rel=1e-6)


def test_photon_quantum_is_zero_for_sky_subtracted_and_blank_bands() -> None:
    images = np.zeros((1, 2, SIZE, SIZE), dtype=np.float32)
    images[0, 0] = 0.05 * np.random.default_rng(7).poisson(2.0, (SIZE, SIZE)) - 0.1
    assert photon_quantum(images, np.zeros(images.shape, dtype=bool)).tolist() == [[0.0, 0.0]]
