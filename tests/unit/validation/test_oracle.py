"""The oracle of the information floor: its noise model, its fit, its bookkeeping."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import integrate, stats

from galpipe.science.core import RadonConfig
from galpipe.survey.layout import BANDS
from galpipe.synthetic.truth import SkyConfig, TruthGalaxy
from galpipe.validation import augment
from galpipe.validation.oracle import (
    FloorResult,
    angle_templates,
    augmented_model,
    best_offset_deg,
    clipped_normal_moments,
    floor_tables,
    run_floor,
)
from galpipe.validation.population import (
    PopulationConfig,
    TruthPopulation,
    draw_truths,
    make_population,
)

ALONE = SkyConfig(neighbour_fraction=0.0)


def _truth(snr: float = 60.0, seed: int = 3, q: float = 0.45) -> TruthGalaxy:
    truths, _ = draw_truths(PopulationConfig(n=1, seed=seed, snr_range=(snr, snr), sky=ALONE))
    return dataclasses.replace(truths[0], axis_ratio=q)


@pytest.mark.parametrize(("mean", "sigma"), [(0.0, 1.0), (-1.5, 0.7), (2.0, 0.5), (0.3, 2.0)])
def test_clipped_normal_moments_match_numerical_integration(mean: float, sigma: float) -> None:
    density = stats.norm(mean, sigma).pdf
    first = integrate.quad(lambda x: x * density(x), 0.0, np.inf)[0]
    second = integrate.quad(lambda x: x * x * density(x), 0.0, np.inf)[0]
    got_mean, got_var = clipped_normal_moments(np.array(mean), np.array(sigma))
    assert got_mean == pytest.approx(first, rel=1e-7, abs=1e-12)
    assert got_var == pytest.approx(second - first**2, rel=1e-6, abs=1e-12)


def test_clipped_normal_moments_without_noise_are_the_clipped_value() -> None:
    mean, var = clipped_normal_moments(np.array([-1.0, 0.0, 2.5]), np.zeros(3))
    assert mean.tolist() == [0.0, 0.0, 2.5]
    assert var.tolist() == [0.0, 0.0, 0.0]


def test_templates_turn_the_galaxy_by_the_offset() -> None:
    truth = _truth(q=0.3)
    templates = angle_templates(truth, 40, offsets_deg=np.array([0.0, 90.0]))
    assert templates.shape == (2, len(BANDS), 40, 40)
    # 90 degrees on the sky is a quarter turn of the stamp about its centre (north up, row 0
    # south: counter-clockwise is numpy's k=-1, as augment.rotate documents).
    turned = np.rot90(templates[0], k=-1, axes=(-2, -1))
    assert np.abs(turned - templates[1]).max() < 0.02 * templates.max()
    # The r band holds the truth's flux, less what a Sersic profile spills out of the stamp.
    assert 0.7 * truth.flux["r"] < templates[0, 1].sum() <= 1.001 * truth.flux["r"]


def test_the_fit_recovers_an_offset_between_grid_points() -> None:
    truth = _truth(q=0.4)
    templates = angle_templates(truth, 40).astype(np.float64)
    for offset in (12.3, -47.6, 89.7):
        image = angle_templates(truth, 40, offsets_deg=np.array([offset]))[0].astype(np.float64)
        sigma2 = np.array([truth.sky_sigma[b] ** 2 for b in BANDS])[None, :, None, None]
        variance = np.broadcast_to(sigma2, templates.shape)
        found = best_offset_deg(image, templates, variance)
        # Axial: 89.7 may come back as -90.3's neighbour on the circular grid.
        assert abs((found - offset + 90.0) % 180.0 - 90.0) < 0.15, (offset, found)


def test_the_noise_model_matches_the_augmentation_it_models() -> None:
    """Mean and variance of R+B+N on many noisy renders of one galaxy vs the model's."""
    truth = _truth(snr=40.0, q=0.5)
    template = angle_templates(truth, 40, offsets_deg=np.array([0.0]))
    sigma = np.array([truth.sky_sigma[b] for b in BANDS])
    rng = np.random.default_rng(8)
    draws = 600
    noisy = template + rng.standard_normal((draws, *template.shape[1:])) * sigma[:, None, None]
    one = augment.AugmentationParams(
        apply_rotation=np.ones(1, bool),
        apply_blur=np.ones(1, bool),
        apply_resample=np.ones(1, bool),
        alpha_deg=np.array([33.0]),
        blur_sigma_px=np.array([1.2]),
        total_counts=np.array([3000.0]),
    )
    batch = augment.AugmentationParams(
        **{f.name: np.repeat(getattr(one, f.name), draws) for f in dataclasses.fields(one)}
    )
    augmented = augment.apply_augmentations(noisy.astype(np.float32), batch, rng)
    # The source's photon noise is not in ``noisy``: an infinite gain leaves it out.
    mean, var = augmented_model(template, noisy[0], one, sigma, np.inf, rng)
    inside = ~augment.rotation_no_data(np.array([33.0]), 40)[0]
    empirical_mean = augmented.mean(axis=0)[:, inside]
    empirical_var = augmented.var(axis=0)[:, inside]
    assert empirical_mean.sum() == pytest.approx(mean[0][:, inside].sum(), rel=0.02)
    # Per band, the variance summed over the stamp (its per-pixel sampling error is ~6 %).
    assert empirical_var.sum(axis=1) == pytest.approx(var[0][:, inside].sum(axis=1), rel=0.08)


@pytest.fixture(scope="module")
def small_population() -> TruthPopulation:
    elongated = dataclasses.replace(ALONE, axis_ratio=(0.25, 0.5))
    return make_population(PopulationConfig(n=3, seed=11, snr_range=(40, 200), sky=elongated))


def test_floor_is_deterministic_and_the_oracle_finds_bright_angles(
    small_population: TruthPopulation,
) -> None:
    config = RadonConfig(mask_neighbours=False)
    result = run_floor(small_population, 3, 4, seed=2, config=config)
    again = run_floor(small_population, 3, 4, seed=2, config=config)
    assert len(result) == 12
    assert result.galaxy_index.tolist() == np.repeat([0, 1, 2], 4).tolist()
    for field in dataclasses.fields(result):
        np.testing.assert_allclose(
            getattr(result, field.name), getattr(again, field.name), atol=1e-9
        )
    # Bright, elongated and alone: both methods land near the truth unless N starved them.
    plenty = ~result.apply_resample | (result.total_counts > 1e4)
    assert plenty.sum() >= 4
    assert np.nanmedian(result.error_oracle_deg[plenty]) < 3.0
    assert np.nanmedian(result.error_ours_deg[plenty]) < 3.0
    # Alone in the stamp and bright, masking finds nothing: ours is the paper's method there.
    same = result.deviation_ours_deg[plenty] == result.deviation_ours_nomask_deg[plenty]
    assert same.mean() >= 0.75
    tables = floor_tables(result, small_population.axis_ratio)
    assert tables.n_galaxies == 3
    assert tables.n_images == 12
    overall = tables.oracle.deviation.overall
    assert overall.mean_deg == pytest.approx(float(np.mean(result.deviation_oracle_deg)))
    error = tables.ours.error
    assert error.resample_low.n + error.resample_high.n + error.no_resample.n == 12


def test_floor_rejects_bad_sizes_and_may_be_empty(small_population: TruthPopulation) -> None:
    with pytest.raises(ValueError, match="repeats"):
        run_floor(small_population, 2, 0, seed=0)
    with pytest.raises(ValueError, match="n_galaxies"):
        run_floor(small_population, -1, 4, seed=0)
    empty = run_floor(small_population, 0, 4, seed=0)
    assert len(empty) == 0
    tables = floor_tables(empty, small_population.axis_ratio)
    assert tables.n_images == 0
    assert tables.oracle.deviation.overall.n_measured == 0
    assert np.isnan(tables.deviation_mean_se_deg.oracle)
    assert tables.to_json()["deviation_mean_se_deg"]["oracle"] is None


def test_floor_standard_errors_are_over_galaxies() -> None:
    # Two galaxies, two images each: ours is 1 deg worse than the oracle on every image.
    result = FloorResult(
        galaxy_index=np.array([5, 5, 9, 9]),
        apply_resample=np.array([True, False, True, False]),
        total_counts=np.array([2e3, 1.0, 5e4, 1.0]),
        deviation_ours_deg=np.array([3.0, 5.0, 9.0, 11.0]),
        deviation_ours_nomask_deg=np.array([3.0, 5.0, 9.0, 11.0]),
        deviation_oracle_deg=np.array([2.0, 4.0, 8.0, 10.0]),
        error_ours_deg=np.zeros(4),
        error_ours_nomask_deg=np.zeros(4),
        error_oracle_deg=np.zeros(4),
    )
    tables = floor_tables(result, np.linspace(0.2, 1.0, 10))
    assert tables.n_galaxies == 2
    assert tables.deviation_ours_minus_oracle_deg == pytest.approx(1.0)
    se = tables.deviation_mean_se_deg
    assert se.ours_minus_oracle == pytest.approx(0.0)
    # Galaxy means 4 and 10: standard deviation 3 * sqrt(2), over sqrt(2) galaxies.
    assert se.ours == pytest.approx(3.0)
    assert tables.ours.deviation.resample_low.n == 1
    assert tables.ours.deviation.resample_high.n == 1
