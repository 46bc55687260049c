"""The information reference of the synthetic Galaxy Zoo: Fisher matrix, prior, answers' error."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("galsim")

from galpipe.synthetic import galaxy_zoo_fisher
from galpipe.synthetic.galaxy_zoo import (
    SMOOTH,
    STAR,
    GalaxyZooInputError,
    Morphologies,
    MorphologyConfig,
    add_stamp_noise,
    draw_morphologies,
    render_noiseless,
)
from galpipe.synthetic.galaxy_zoo_fisher import (
    FisherReference,
    fisher_reference,
    free_parameters,
    prior_variance,
    stamp_fisher,
)
from galpipe.synthetic.rows import concatenate_rows
from tests.unit.synthetic.galaxies import barred_spiral

SIZE = 32


def _first(kind: int, seed: int = 0) -> Morphologies:
    m = draw_morphologies(400, MorphologyConfig(), np.random.default_rng(seed))
    return m.take(np.flatnonzero(m.kind == kind)[:1])


def test_free_parameters_follow_the_galaxy() -> None:
    assert free_parameters(_first(STAR)) == ["flux_g", "flux_r", "flux_i", "flux_z", "psf_fwhm"]
    smooth = free_parameters(_first(SMOOTH))
    assert {"size", "axis_ratio", "bulge_to_total"} <= set(smooth)
    assert "bar_strength" not in smooth
    assert "bulge_axis_ratio" not in smooth  # one body
    spiral = free_parameters(barred_spiral())
    assert {"bar_strength", "bar_angle_deg", "arm_strength", "arm_tightness"} <= set(spiral)
    plain = replace(barred_spiral(), bar_strength=np.zeros(1), arm_strength=np.zeros(1))
    assert not {"bar_strength", "bar_angle_deg", "arm_strength"} & set(free_parameters(plain))


def test_fisher_is_what_a_linear_estimator_measures_in_noisy_stamps() -> None:
    """The Fisher matrix against a Monte Carlo: the linearised estimator of B/T from noisy
    stamps follows a true change of B/T and scatters by ``1 / sqrt(F)``."""
    galaxy = barred_spiral()
    names, fisher = stamp_fisher(galaxy, SIZE)
    k = names.index("bulge_to_total")
    expected, _ = render_noiseless(galaxy, SIZE)
    # The derivative the matrix was built from, rebuilt here from two renders.
    step = 0.02
    low, high = (
        render_noiseless(replace(galaxy, bulge_to_total=galaxy.bulge_to_total + s), SIZE)[0][0]
        for s in (-step, step)
    )
    derivative = (high - low) / (2 * step)
    variance = galaxy.sky_sigma[0][:, None, None] ** 2 + expected[0] / galaxy.gain_e_per_nmgy[0]
    information = float(np.sum(derivative**2 / variance))
    assert fisher[k, k] == pytest.approx(information, rel=0.02)
    # Stamps of B/T 0.3 and 0.35, each 400 times with the noise the stamps get.
    repeats = 400
    rng = np.random.default_rng(3)
    estimates = []
    for shift in (0.0, 0.05):
        moved = replace(galaxy, bulge_to_total=galaxy.bulge_to_total + shift)
        mean, _ = render_noiseless(moved, SIZE)
        many = moved.take(np.zeros(repeats, dtype=np.int64))
        noisy = add_stamp_noise(np.repeat(mean, repeats, axis=0), many, rng)
        residual = noisy - expected[0]
        estimates.append(
            0.3 + np.einsum("nbyx,byx->n", residual, derivative / variance) / information
        )
    assert estimates[0].mean() == pytest.approx(0.3, abs=3 / np.sqrt(information * repeats))
    assert estimates[1].mean() - estimates[0].mean() == pytest.approx(0.05, rel=0.1)
    assert estimates[0].std() == pytest.approx(1 / np.sqrt(fisher[k, k]), rel=0.1)


def test_stamp_fisher_takes_one_galaxy() -> None:
    two = draw_morphologies(2, MorphologyConfig(), np.random.default_rng(0))
    with pytest.raises(GalaxyZooInputError, match="2 rows"):
        stamp_fisher(two, SIZE)


def test_the_reference_error_falls_with_the_signal_and_the_prior_bounds_it() -> None:
    galaxy = barred_spiral()
    faint = replace(galaxy, flux=galaxy.flux * 1e-3)
    bright = replace(galaxy, flux=galaxy.flux * 4.0)
    reference = fisher_reference(concatenate_rows([faint, galaxy, bright]), SIZE)
    errors = reference.variance.mean(axis=1)
    # The faint galaxy shows nothing, not even its elongation: its answers are the blind ones,
    # known whatever its parameters. Brighter, its features show and their answers carry
    # their uncertainty.
    assert reference.variance[0].max() < 1e-8
    assert reference.variance[1].max() > 1e-3
    # Brighter, every answer is better known.
    assert errors[2] < errors[1]
    prior = prior_variance()
    # A stamp that shows nothing leaves each parameter as uncertain as the population is.
    faint_sigma = reference.parameter_sigma[0]
    for name in ("bar_strength", "arm_tightness", "bulge_to_total"):
        assert faint_sigma[name] == pytest.approx(np.sqrt(prior[name]), rel=0.02)
        assert reference.parameter_sigma[2][name] < faint_sigma[name]
    # The set's spread of true fractions caps each answer's error: a wide one leaves the
    # variance as it is, a narrow one bounds it.
    visible = FisherReference(reference.variance[1:], reference.parameter_sigma[1:])
    assert visible.variance.max() < 0.25
    wide = np.array([np.zeros(37), np.ones(37)])  # variance 0.25 per answer
    assert visible.rmse(0.03, wide) == pytest.approx(np.sqrt(0.03**2 + errors[1:].mean()))
    narrow = np.array([np.zeros(37), np.full(37, 0.02)])  # variance 1e-4
    capped = np.minimum(visible.variance, 1e-4)
    assert visible.rmse(0.03, narrow) == pytest.approx(np.sqrt(0.03**2 + capped.mean()))
    assert visible.rmse(0.03, narrow) < visible.rmse(0.03, wide)


def test_a_stars_answers_carry_no_parameter_error() -> None:
    reference = fisher_reference(_first(STAR), SIZE)
    assert reference.variance.max() < 1e-8


def test_the_reference_is_the_same_whatever_the_process_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(galaxy_zoo_fisher, "_CHUNK", 1)
    galaxies = draw_morphologies(3, MorphologyConfig(), np.random.default_rng(5))
    one = fisher_reference(galaxies, SIZE)
    two = fisher_reference(galaxies, SIZE, processes=2)
    np.testing.assert_array_equal(one.variance, two.variance)
    assert one.parameter_sigma == two.parameter_sigma
    assert fisher_reference(galaxies.take(np.arange(0)), SIZE).variance.shape == (0, 37)
