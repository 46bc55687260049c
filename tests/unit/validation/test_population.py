"""The truth population: S/N scaling, the cutout format, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from galpipe.synthetic.catalog import make_truths
from galpipe.synthetic.truth import SkyConfig
from galpipe.validation.population import (
    PIXSCALE_ARCSEC,
    PopulationConfig,
    draw_truths,
    images_digest,
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
