"""The Bayes predictor of the synthetic Galaxy Zoo: Metropolis, prior, posterior mean."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("galsim")

from galpipe.science import gz2
from galpipe.synthetic.galaxy_zoo import (
    DISK,
    SMOOTH,
    STAR,
    GalaxyZooInputError,
    Morphologies,
    MorphologyConfig,
    add_stamp_noise,
    answer_shares,
    draw_morphologies,
    render_noiseless,
)
from galpipe.synthetic.galaxy_zoo_fisher import free_parameters, parameter_values
from galpipe.synthetic.galaxy_zoo_posterior import (
    STRUCTURE,
    log_prior,
    metropolis_hastings,
    posterior_reference,
    random_walk,
)
from tests.unit.synthetic.galaxies import barred_spiral, smooth_galaxy

SIZE = 32


def _gaussian_density(mean: np.ndarray, covariance: np.ndarray):  # type: ignore[no-untyped-def]
    precision = np.linalg.inv(covariance)

    def log_density(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = theta - mean
        return -0.5 * np.einsum("kp,pq,kq->k", d, precision, d), np.hstack([theta, theta**2])

    return log_density


def test_metropolis_recovers_a_correlated_gaussian() -> None:
    mean = np.array([1.0, -2.0])
    covariance = np.array([[1.0, 0.8], [0.8, 1.0]])
    rng = np.random.default_rng(0)
    start = rng.multivariate_normal(mean, covariance, size=64)
    step = np.linalg.cholesky(covariance) * (2.38 / np.sqrt(2))
    averaged, acceptance = metropolis_hastings(
        _gaussian_density(mean, covariance), start, [random_walk(step)], 300, 50, rng
    )
    # 64 chains x 250 steps, autocorrelation time ~10: standard error ~0.03.
    np.testing.assert_allclose(averaged[:2], mean, atol=0.15)
    np.testing.assert_allclose(averaged[2:] - averaged[:2] ** 2, np.diag(covariance), rtol=0.15)
    assert 0.2 < acceptance[0] < 0.6


def test_metropolis_forgets_a_start_far_from_the_mass() -> None:
    mean, covariance = np.array([3.0]), np.array([[0.25]])
    rng = np.random.default_rng(1)
    walk = random_walk(np.array([[0.6]]))
    averaged, _ = metropolis_hastings(
        _gaussian_density(mean, covariance), np.zeros((16, 1)), [walk], 400, 200, rng
    )
    assert averaged[0] == pytest.approx(3.0, abs=0.1)


def test_metropolis_refuses_a_start_outside_the_support() -> None:
    def nowhere(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.full(len(theta), -np.inf), theta

    with pytest.raises(GalaxyZooInputError, match="outside the support"):
        metropolis_hastings(
            nowhere, np.zeros((2, 1)), [random_walk(np.eye(1))], 5, 1, np.random.default_rng()
        )


def test_a_spike_and_slab_posterior_by_walk_and_independence_moves() -> None:
    """x is 0 with probability 1/2, else uniform on [0.2, 1]; y = x + N(0, 0.15^2) is 0.3.
    The walk holds x at 0 and the independence move draws x from the prior: together they
    give the exact posterior mass at 0 and mean, by quadrature."""
    y, noise, low, high = 0.3, 0.15, 0.2, 1.0

    def log_prior_x(x: np.ndarray) -> np.ndarray:
        slab = np.where((x >= low) & (x <= high), np.log(0.5 / (high - low)), -np.inf)
        return np.where(x == 0.0, np.log(0.5), slab)

    def log_density(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = theta[:, 0]
        log_p = log_prior_x(x) - 0.5 * ((y - x) / noise) ** 2
        return log_p, np.stack([x == 0.0, x], axis=1).astype(float)

    def from_prior(state: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        present = rng.uniform(size=len(state)) < 0.5
        x = np.where(present, rng.uniform(low, high, size=len(state)), 0.0)[:, None]
        return x, log_prior_x(state[:, 0]) - log_prior_x(x[:, 0])

    walk = random_walk(np.array([[0.1]]), frozen=lambda state: state == 0.0)
    rng = np.random.default_rng(21)
    start = np.where(rng.uniform(size=(64, 1)) < 0.5, 0.0, 0.5)
    averaged, acceptance = metropolis_hastings(
        log_density, start, [walk, from_prior], 1500, 100, rng
    )
    grid = np.linspace(low, high, 20001)
    slab = 0.5 / (high - low) * np.exp(-0.5 * ((y - grid) / noise) ** 2)
    spike = 0.5 * np.exp(-0.5 * (y / noise) ** 2)
    evidence = spike + np.trapezoid(slab, grid)
    assert averaged[0] == pytest.approx(spike / evidence, abs=0.02)
    assert averaged[1] == pytest.approx(np.trapezoid(grid * slab, grid) / evidence, abs=0.01)
    assert acceptance.min() > 0.2


def test_every_drawn_galaxy_lies_in_its_prior_and_the_ranges_bound_it() -> None:
    config = MorphologyConfig()
    m = draw_morphologies(300, config, np.random.default_rng(2))
    for i in range(len(m)):
        galaxy = m.take(np.array([i]))
        names = free_parameters(galaxy)
        assert np.isfinite(
            log_prior(galaxy, names, parameter_values(galaxy, names)[None], config)
        ).all()
    barred = m.take(np.flatnonzero(m.bar_strength > 0)[:1])
    names = free_parameters(barred)
    theta = np.repeat(parameter_values(barred, names)[None], 3, axis=0)
    j, k = names.index("bar_strength"), names.index("size")
    theta[0, j] = config.bar_strength[0] - 0.01  # weaker than any bar of the population
    theta[1, k] = 10.0  # ten times the galaxy's size: beyond the largest
    theta[2, names.index("flux_r")] = -0.5
    assert np.isneginf(log_prior(barred, names, theta, config)).all()


def test_a_disks_axis_ratio_prior_is_that_of_a_uniform_inclination() -> None:
    config = MorphologyConfig()
    m = draw_morphologies(40_000, config, np.random.default_rng(3))
    disks = m.take(np.flatnonzero(m.kind == DISK))
    edges = np.linspace(0.2, 1.0, 9)
    counts, _ = np.histogram(disks.axis_ratio, edges)
    q = np.linspace(0.2, 1.0, 8001)
    names = ["axis_ratio"]
    density = np.exp(log_prior(disks.take(np.array([0])), names, q[:, None], config))
    expected = np.array([density[(q >= a) & (q < b)].sum() for a, b in itertools.pairwise(edges)])
    share = counts / counts.sum()
    np.testing.assert_allclose(share, expected / expected.sum(), rtol=0.08)


def _noisy_stamps(galaxies: Morphologies, seed: int) -> np.ndarray:
    """The galaxies' stamps with their noise drawn from ``seed``."""
    expected, _ = render_noiseless(galaxies, SIZE)
    return add_stamp_noise(expected, galaxies, np.random.default_rng(seed))


def _fractions(galaxy: Morphologies) -> np.ndarray:
    _, features = render_noiseless(galaxy, SIZE)
    return gz2.fractions_from_shares(answer_shares(galaxy, features))[0]


def test_the_posterior_follows_the_stamp_not_the_chains_start() -> None:
    """Chains started at a weak bar, given the stamp of a strong one, end at the strong one's
    answers: the likelihood, not the start, decides."""
    weak, strong = barred_spiral(0.3), barred_spiral(0.95)
    stamp = _noisy_stamps(strong, 4)
    bar = gz2.answer_index("Class3.1")
    started_weak = posterior_reference(
        weak, stamp, chains=4, steps=240, burn=120, seed=5, known_kind=True, known_structure=True
    )
    truth_weak, truth_strong = _fractions(weak)[bar], _fractions(strong)[bar]
    assert truth_strong - truth_weak > 0.1
    found = started_weak.fractions[0, bar]
    assert abs(found - truth_strong) < 0.5 * abs(found - truth_weak)
    assert 0.05 < started_weak.acceptance[0] < 0.8


def test_a_stars_answers_are_known_whatever_its_flux_and_seeing() -> None:
    m = draw_morphologies(400, MorphologyConfig(), np.random.default_rng(11))
    star = m.take(np.flatnonzero(m.kind == STAR)[:1])
    stamp = _noisy_stamps(star, 12)
    result = posterior_reference(star, stamp, chains=4, steps=40, burn=20, seed=13)
    np.testing.assert_allclose(result.fractions[0], _fractions(star), atol=1e-12)
    assert result.acceptance[0] > 0.05  # the chains moved: fluxes and seeing are uncertain


def test_the_reference_is_the_same_whatever_the_process_count() -> None:
    m = draw_morphologies(5, MorphologyConfig(), np.random.default_rng(8))
    stamps = _noisy_stamps(m, 9)
    one = posterior_reference(m, stamps, chains=2, steps=6, burn=3, seed=1, processes=1)
    two = posterior_reference(m, stamps, chains=2, steps=6, burn=3, seed=1, processes=2)
    np.testing.assert_array_equal(one.fractions, two.fractions)
    np.testing.assert_array_equal(one.acceptance, two.acceptance)
    # Averages of tree-normalised fractions: each galaxy's first question sums to 1.
    q1 = [gz2.answer_index(f"Class1.{k}") for k in (1, 2, 3)]
    np.testing.assert_allclose(one.fractions[:, q1].sum(axis=1), 1.0)


def test_bad_stamps_and_chain_lengths_are_refused() -> None:
    m = draw_morphologies(2, MorphologyConfig(), np.random.default_rng(10))
    with pytest.raises(GalaxyZooInputError, match=r"stamps: expected shape \(2, 4, S, S\)"):
        posterior_reference(m, np.zeros((3, 4, SIZE, SIZE)))
    with pytest.raises(GalaxyZooInputError, match="burn = 10"):
        posterior_reference(m, np.zeros((2, 4, SIZE, SIZE)), steps=10, burn=10)


def test_an_unknown_structures_prior_has_mass_at_no_feature() -> None:
    config = MorphologyConfig()
    galaxy = barred_spiral()
    names = list(STRUCTURE)
    theta = np.array(
        [
            [0.0, 30.0, 0.0, 0.5, 2.0],  # no bar, no arms (their tightness and number idle)
            [0.5, 30.0, 0.5, 0.5, 2.0],  # both
            [0.1, 30.0, 0.0, 0.5, 2.0],  # a bar weaker than any
            [0.0, 30.0, 0.0, 0.5, 2.5],  # no such number of arms
            [0.0, 30.0, 0.0, 0.5, 6.0],
        ]
    )
    found = log_prior(galaxy, names, theta, config, known_structure=False)
    none = np.log(1 - config.bar_fraction) + np.log(1 - config.spiral_fraction) + np.log(0.5)
    both = np.log(config.bar_fraction / 0.8) + np.log(config.spiral_fraction / 0.8) + np.log(0.5)
    np.testing.assert_allclose(found[:2], [none, both])
    assert np.isneginf(found[2:]).all()
    # Known to be there, a strength of 0 is outside the prior.
    assert np.isneginf(log_prior(galaxy, names, theta[:1], config, known_structure=True)).all()


def test_an_unknown_bar_is_found_where_a_known_absence_cannot_be() -> None:
    """Chains started at a disk without a bar, given the stamp of one with a strong bar: told
    the structure (no bar), the bar answer stays the unbarred disk's; inferring it, the chains
    draw a bar and the answer is the barred one's."""
    unbarred, strong = barred_spiral(0.0), barred_spiral(0.95)
    stamp = _noisy_stamps(strong, 4)
    bar = gz2.answer_index("Class3.1")
    truth_none, truth_strong = _fractions(unbarred)[bar], _fractions(strong)[bar]
    assert truth_strong - truth_none > 0.3
    run = {"chains": 4, "steps": 300, "burn": 200, "seed": 5}
    told = posterior_reference(unbarred, stamp, known_kind=True, known_structure=True, **run)
    inferred = posterior_reference(unbarred, stamp, known_kind=True, **run)
    assert told.fractions[0, bar] == pytest.approx(truth_none, abs=0.02)
    assert np.isnan(told.structure_acceptance[0])
    # The posterior mean given this stamp is 0.73 (chains told the strong bar, from it), a
    # little short of the truth's 0.81; chains that start without a bar must first draw one.
    found = inferred.fractions[0, bar]
    assert abs(found - truth_strong) < 0.35 * (truth_strong - truth_none)
    assert 0.0 < inferred.structure_acceptance[0] < 0.5


def test_the_axis_ratio_prior_is_normalised_for_both_kinds() -> None:
    """A switch of kind keeps the axis ratio, so its density must be normalised per kind."""
    config = MorphologyConfig()
    m = draw_morphologies(400, config, np.random.default_rng(2))
    # Midpoints: the disk's density has an integrable 1/sqrt singularity at the disk thickness.
    n = 400_000
    q = (np.arange(n) + 0.5) / n
    for kind in (SMOOTH, DISK):
        galaxy = m.take(np.flatnonzero(m.kind == kind)[:1])
        density = np.exp(log_prior(galaxy, ["axis_ratio"], q[:, None], config))
        assert density.sum() / n == pytest.approx(1.0, abs=0.005)


def test_an_unknown_kind_is_found_where_a_known_one_cannot_be() -> None:
    """Chains started at a bulgeless disk, given the stamp of a smooth galaxy: told the kind,
    the smooth answer stays the disk's; inferring it, the chains switch to the smooth galaxy
    and give its answer."""
    smooth = smooth_galaxy()
    as_disk = replace(
        smooth,
        kind=np.array([DISK]),
        bulge_to_total=np.array([0.05]),
        bulge_half_light_radius_arcsec=np.array([0.35 * 1.5]),
        bulge_axis_ratio=np.array([0.8]),
    )
    stamp = _noisy_stamps(smooth, 6)
    answer = gz2.answer_index("Class1.1")
    truth_disk, truth_smooth = _fractions(as_disk)[answer], _fractions(smooth)[answer]
    assert truth_smooth - truth_disk > 0.5
    run = {"chains": 4, "steps": 120, "burn": 60, "seed": 7}
    told = posterior_reference(as_disk, stamp, known_kind=True, **run)
    inferred = posterior_reference(as_disk, stamp, **run)
    assert abs(told.fractions[0, answer] - truth_disk) < 0.25 * (truth_smooth - truth_disk)
    assert np.isnan(told.kind_acceptance[0])
    assert abs(inferred.fractions[0, answer] - truth_smooth) < 0.1 * (truth_smooth - truth_disk)
    assert 0.0 < inferred.kind_acceptance[0] < 0.2
