"""The truth population: S/N scaling, the cutout format, determinism."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from galpipe.pipelines.stored_cutouts import decode_cutout
from galpipe.survey.layout import BANDS
from galpipe.synthetic.catalog import make_truths
from galpipe.synthetic.fitsfile import cutout_fits_bytes
from galpipe.synthetic.truth import SkyConfig, TruthGalaxy
from galpipe.validation.population import (
    PIXSCALE_ARCSEC,
    PopulationConfig,
    draw_truths,
    images_digest,
    render_neighbour_light,
    render_population,
    snr_half_light,
)


def test_fluxes_are_scaled_to_the_drawn_snr_keeping_colours_and_neighbour_contrast() -> None:
    config = PopulationConfig(n=60, seed=5, sky=SkyConfig(neighbour_fraction=1.0))
    truths, snr = draw_truths(config)
    assert snr.min() >= 5.0
    assert snr.max() <= 200.0
    assert [snr_half_light(t) for t in truths] == pytest.approx(list(snr), rel=1e-12)
    # The same galaxies before scaling: every flux changed by one factor per galaxy.
    unscaled = make_truths(60, seed=5, config=config.sky)
    for before, after in zip(unscaled, truths, strict=True):
        factor = after.flux["r"] / before.flux["r"]
        assert {b: after.flux[b] / before.flux[b] for b in "griz"} == pytest.approx(
            dict.fromkeys("griz", factor)
        )
        for nb_before, nb_after in zip(before.neighbours, after.neighbours, strict=True):
            assert nb_after.flux["r"] / nb_before.flux["r"] == pytest.approx(factor)


def test_snr_definition_worked_example() -> None:
    truths, _ = draw_truths(PopulationConfig(n=1, seed=1))
    truth = truths[0]
    radius_px = truth.half_light_radius_arcsec / PIXSCALE_ARCSEC
    expected = 0.5 * truth.flux["r"] / (truth.sky_sigma["r"] * np.sqrt(np.pi) * radius_px)
    assert snr_half_light(truth) == pytest.approx(expected)


def test_rendering_is_the_cutout_format_and_deterministic() -> None:
    bright_and_alone = SkyConfig(neighbour_fraction=0.0)
    truths, _ = draw_truths(
        PopulationConfig(n=3, seed=2, snr_range=(150, 200), sky=bright_and_alone)
    )
    images, jacobians = render_population(truths)
    again, _ = render_population(list(reversed(truths)))
    assert images.shape == (3, 4, 40, 40)
    assert images.dtype == np.float32
    assert np.array_equal(images, again[::-1])
    assert images_digest(images) == images_digest(again[::-1].copy())
    scale = PIXSCALE_ARCSEC / 3600.0
    assert jacobians == pytest.approx(np.broadcast_to([[-scale, 0.0], [0.0, scale]], (3, 2, 2)))
    # The galaxy sits at the stamp centre: the brightest pixel of r is near the middle.
    peak = np.unravel_index(images[:, 1].reshape(3, -1).argmax(axis=1), (40, 40))
    assert np.all(np.abs(np.stack(peak) - 19.5) <= 2.5)


def test_population_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="n=0"):
        PopulationConfig(n=0)
    with pytest.raises(ValueError, match="snr_range"):
        PopulationConfig(n=1, snr_range=(0.0, 10.0))


def test_neighbour_light_is_the_stamp_less_the_galaxy_and_zero_when_alone() -> None:
    config = PopulationConfig(n=8, seed=3, sky=SkyConfig(neighbour_fraction=0.5))
    truths, _ = draw_truths(config)
    crowded = [t.neighbours != () for t in truths]
    assert any(crowded)
    assert not all(crowded)
    light = render_neighbour_light(truths)
    assert light.shape == (8, 4, 40, 40)
    assert light.dtype == np.float32
    assert not light[~np.array(crowded)].any()
    noiseless = [dataclasses.replace(t, neighbours=()) for t in truths]
    # Without noise, a stamp is its galaxy plus its neighbours' light, in the decoded frame.
    full = _noiseless(truths)
    alone = _noiseless(noiseless)
    peak = full.max()
    np.testing.assert_allclose(light, full - alone, atol=1e-6 * peak)
    assert np.all(light >= -1e-6 * peak)
    assert np.array_equal(light, render_neighbour_light(truths, workers=2))


def _noiseless(truths: list[TruthGalaxy]) -> np.ndarray:
    return np.stack(
        [decode_cutout(cutout_fits_bytes(t, noise=False), 40, BANDS).data for t in truths]
    )
