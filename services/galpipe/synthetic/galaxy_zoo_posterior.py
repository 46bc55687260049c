"""The Bayes predictor of the synthetic Galaxy Zoo: what the best possible model would answer.

The vote-noise floor (:func:`galpipe.synthetic.galaxy_zoo.vote_noise_floor`) is what the true
fractions score against the votes; a model sees only the noisy stamp. Under squared error the
best any model can do with a stamp ``x`` is the posterior mean of the true fractions,
``E[f(theta) | x]``, over the parameters ``theta`` the stamp leaves uncertain. This module
computes that predictor for given galaxies and their stamps, by Markov chain Monte Carlo, so
that its RMSE against the votes -- what a model that knew the generative model exactly would
score on the same galaxies -- can stand beside a trained network's:

1. The parameters are those of :func:`galpipe.synthetic.galaxy_zoo_fisher.free_parameters`
   (fluxes, size, axis ratios, position angle, B/T, the bar's and arms' parameters, the
   seeing); the centre, the kind, the number of arms and the ratio of bulge to disk size are
   taken as known, as for the Fisher reference. The relative ones
   (:data:`~galpipe.synthetic.galaxy_zoo_fisher.RELATIVE_PARAMETERS`) are factors on the true
   value.
2. The likelihood is Gaussian in every band and pixel, with the stamp's noise variance at the
   proposed noiseless stamp (sky plus the source's Poisson noise,
   :func:`~galpipe.synthetic.galaxy_zoo.noise_variance`): ``-1/2 sum ((x - mu)^2 / var +
   ln var)``.
3. The prior is the population's (:func:`log_prior`): uniform on each range of
   :class:`~galpipe.synthetic.galaxy_zoo.MorphologyConfig`, the disks' axis ratio as a
   uniform inclination makes it, uniform angles; the fluxes flat (the stamp fixes them far
   better than their log-uniform population does).
4. Random-walk Metropolis (:func:`random_walk_metropolis`) with steps drawn from the Fisher
   posterior covariance (:func:`~galpipe.synthetic.galaxy_zoo_fisher.stamp_fisher` plus the
   prior's precision) scaled by ``2 / sqrt(P)``. The chains start at the galaxy's true
   parameters: the galaxy was drawn from the prior and the stamp from the likelihood, so the
   truth is itself a draw from the posterior and the chains start in equilibrium; the first
   ``burn`` steps are dropped all the same, so that the average does not lean on the start.

The result is the Bayes predictor up to its Monte Carlo error (which only adds to its RMSE)
and to what it is given for free (centre, kind, number of arms): a model trained on votes
cannot expect to score below it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from galpipe.science import gz2
from galpipe.survey.layout import BANDS
from galpipe.synthetic.galaxy_zoo import (
    DISK,
    SMOOTH,
    GalaxyZooInputError,
    Morphologies,
    MorphologyConfig,
    answer_shares,
    noise_variance,
    render_noiseless,
)
from galpipe.synthetic.galaxy_zoo_fisher import (
    RELATIVE_PARAMETERS,
    parameter_values,
    prior_variance,
    stamp_fisher,
    with_parameters,
)
from galpipe.synthetic.rows import run_in_chunks

__all__ = [
    "PosteriorReference",
    "log_prior",
    "posterior_reference",
    "random_walk_metropolis",
]

#: Metropolis steps are the Fisher posterior covariance times (this / sqrt(P))^2: near the
#: 2.38 of Roberts, Gelman & Gilks (1997) for a Gaussian target, a little shorter because the
#: prior's bounds and the answers' non-linearity make the true posterior narrower in places.
STEP_SCALE = 2.0
#: Chains per galaxy, steps per chain and the steps dropped from each chain's average.
DEFAULT_CHAINS = 8
DEFAULT_STEPS = 260
DEFAULT_BURN = 130


def random_walk_metropolis(
    log_density: Callable[[npt.NDArray[np.float64]], tuple[npt.NDArray[np.float64], npt.NDArray]],
    start: npt.NDArray[np.float64],
    step_cholesky: npt.NDArray[np.float64],
    steps: int,
    burn: int,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.float64], float]:
    """Random-walk Metropolis over parallel chains; the average of a quantity over the draws.

    Parameters
    ----------
    log_density : callable
        ``theta (C, P) -> (log p (C,), values (C, V))``: the unnormalised log density of each
        chain's point (``-inf`` outside the support) and the quantity to average there.
    start : numpy.ndarray
        ``(C, P)`` the chains' starting points (each inside the support).
    step_cholesky : numpy.ndarray
        ``(P, P)`` lower-triangular factor of the Gaussian step's covariance.
    steps : int
        Metropolis steps per chain, > ``burn``.
    burn : int
        Steps dropped from the average, >= 0.
    rng : numpy.random.Generator
        Draws the steps and the acceptances.

    Returns
    -------
    mean : numpy.ndarray
        ``(V,)`` the average of ``values`` over every chain's states after ``burn`` steps.
    acceptance : float
        The fraction of proposals accepted.
    """
    state = np.array(start, dtype=np.float64)
    log_p, values = log_density(state)
    values = np.array(values, dtype=np.float64)
    if not np.isfinite(log_p).all():
        raise GalaxyZooInputError("random_walk_metropolis: a chain starts outside the support")
    total = np.zeros(values.shape[1:])
    accepted = 0
    for step in range(steps):
        proposal = state + rng.standard_normal(state.shape) @ step_cholesky.T
        proposed_log_p, proposed_values = log_density(proposal)
        accept = np.log(rng.uniform(size=len(state))) < proposed_log_p - log_p
        state[accept] = proposal[accept]
        log_p[accept] = proposed_log_p[accept]
        values[accept] = proposed_values[accept]
        accepted += int(accept.sum())
        if step >= burn:
            total += values.sum(axis=0)
    return total / (len(state) * (steps - burn)), accepted / (len(state) * steps)


def _support(galaxy: Morphologies, name: str, config: MorphologyConfig) -> tuple[float, float]:
    """The population's range of an absolute parameter of ``galaxy``'s kind."""
    smooth = int(galaxy.kind[0]) == SMOOTH
    ranges = {
        "bulge_to_total": config.smooth_bulge_to_total if smooth else config.disk_bulge_to_total,
        "axis_ratio": config.smooth_axis_ratio if smooth else (config.disk_thickness, 1.0),
        "bulge_axis_ratio": config.bulge_axis_ratio,
        "bar_strength": config.bar_strength,
        "arm_strength": config.arm_strength,
        "arm_tightness": (0.0, 1.0),
    }
    return ranges.get(name, (-np.inf, np.inf))  # angles: no bound


def log_prior(
    galaxy: Morphologies,
    names: list[str],
    theta: npt.NDArray[np.float64],
    config: MorphologyConfig | None = None,
) -> npt.NDArray[np.float64]:
    """The population's log prior density (up to a constant) of parameter vectors.

    Parameters
    ----------
    galaxy : Morphologies
        One galaxy: its kind and the true values the relative parameters multiply.
    names : list of str
        The parameters, in ``theta``'s column order.
    theta : numpy.ndarray
        ``(K, P)`` parameter vectors (relative parameters as factors, angles in degrees).
    config : MorphologyConfig, optional
        The population; the default one if omitted.

    Returns
    -------
    numpy.ndarray
        ``(K,)``: ``-inf`` outside the population's support; a disk's axis ratio ``q`` has the
        density ``q / sqrt(q^2 - q0^2)`` of a uniform ``cos i`` (``q0`` the disk thickness);
        everything else is uniform (the fluxes flat and positive).
    """
    c = config or MorphologyConfig()
    log_p = np.zeros(len(theta))
    for j, name in enumerate(names):
        value = theta[:, j]
        if name.startswith("flux_"):
            inside = value > 0.0
        elif name in RELATIVE_PARAMETERS:
            true, bounds = (
                (galaxy.half_light_radius_arcsec[0], c.sky.half_light_radius_arcsec)
                if name == "size"
                else (galaxy.psf_fwhm_arcsec[0], c.sky.psf_fwhm_arcsec)
            )
            inside = (value * true >= bounds[0]) & (value * true <= bounds[1])
        else:
            low, high = _support(galaxy, name, c)
            inside = (value >= low) & (value <= high)
            if name == "axis_ratio" and int(galaxy.kind[0]) == DISK:
                q0 = c.disk_thickness
                safe = np.where(inside & (value > q0), value, 1.0)
                log_p += np.where(inside, np.log(safe) - 0.5 * np.log(safe**2 - q0**2 + 1e-300), 0)
        log_p = np.where(inside, log_p, -np.inf)
    return log_p


@dataclass(frozen=True)
class PosteriorReference:
    """The Bayes predictor of a set of galaxies (module docstring).

    Attributes
    ----------
    fractions : numpy.ndarray
        ``(N, 37)`` the posterior mean of each galaxy's true fractions given its stamp.
    acceptance : numpy.ndarray
        ``(N,)`` the Metropolis acceptance rate of each galaxy's chains.
    """

    fractions: npt.NDArray[np.float64]
    acceptance: npt.NDArray[np.float64]


def _posterior_one(
    galaxy: Morphologies,
    stamp: npt.NDArray[np.float64],
    size: int,
    config: MorphologyConfig,
    chains: int,
    steps: int,
    burn: int,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.float64], float]:
    names, fisher = stamp_fisher(galaxy, size)
    prior = prior_variance(config)
    covariance = np.linalg.inv(fisher + np.diag([1.0 / prior[name] for name in names]))
    truth = parameter_values(galaxy, names)
    sky, gain = galaxy.sky_sigma[0], galaxy.gain_e_per_nmgy[0]

    def log_density(theta: npt.NDArray[np.float64]) -> tuple[npt.NDArray, npt.NDArray]:
        log_p = log_prior(galaxy, names, theta, config)
        fractions = np.zeros((len(theta), gz2.N_ANSWERS))
        inside = np.isfinite(log_p)
        if inside.any():
            rows = with_parameters(galaxy, names, theta[inside])
            expected, features = render_noiseless(rows, size)
            fractions[inside] = gz2.fractions_from_shares(answer_shares(rows, features))
            variance = np.stack([noise_variance(mu, sky, gain) for mu in expected])
            chi2 = ((stamp - expected) ** 2 / variance + np.log(variance)).sum(axis=(1, 2, 3))
            log_p[inside] -= 0.5 * chi2
        return log_p, fractions

    step = np.linalg.cholesky(covariance) * (STEP_SCALE / np.sqrt(len(names)))
    start = np.repeat(truth[None], chains, axis=0)
    return random_walk_metropolis(log_density, start, step, steps, burn, rng)


def _posterior_chunk(
    morphologies: Morphologies,
    stamps: npt.NDArray[np.float64],
    size: int,
    config: MorphologyConfig,
    chains: int,
    steps: int,
    burn: int,
    first: int,
    count: int,
    seed: np.random.SeedSequence,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    fractions = np.zeros((count, gz2.N_ANSWERS))
    acceptance = np.zeros(count)
    for row in range(count):
        galaxy = morphologies.take(np.array([first + row]))
        fractions[row], acceptance[row] = _posterior_one(
            galaxy, stamps[first + row], size, config, chains, steps, burn, rng
        )
    return fractions, acceptance


#: Galaxies per unit of parallel work: each takes seconds.
_CHUNK = 4


def posterior_reference(
    morphologies: Morphologies,
    stamps: npt.ArrayLike,
    config: MorphologyConfig | None = None,
    *,
    chains: int = DEFAULT_CHAINS,
    steps: int = DEFAULT_STEPS,
    burn: int = DEFAULT_BURN,
    seed: int = 0,
    processes: int = 1,
) -> PosteriorReference:
    """The Bayes predictor's fractions for each galaxy and its noisy stamp (module docstring).

    About ``chains * steps`` noiseless renderings per galaxy: some 15 s of one core with the
    defaults.

    Parameters
    ----------
    morphologies : Morphologies
        The galaxies (their true parameters: the chains' start, and what is taken as known).
    stamps : array_like
        ``(N, 4, S, S)`` their noisy griz stamps, nanomaggies per pixel, as
        :func:`~galpipe.synthetic.galaxy_zoo.add_stamp_noise` made them.
    config : MorphologyConfig, optional
        The population they were drawn from (the prior); the default one if omitted.
    chains, steps, burn : int
        Metropolis chains per galaxy, steps per chain, and steps dropped from each average.
    seed : int
        Root seed of the chains.
    processes : int
        Worker processes (1: in this process); the result does not depend on it.

    Returns
    -------
    PosteriorReference

    Raises
    ------
    GalaxyZooInputError
        If ``stamps`` is not one square griz stamp per galaxy, or the chain lengths do not
        leave steps to average.
    """
    images = np.asarray(stamps, dtype=np.float64)
    n = len(morphologies)
    if (
        images.ndim != 4
        or images.shape[:2] != (n, len(BANDS))
        or images.shape[2] != images.shape[3]
    ):
        raise GalaxyZooInputError(
            f"stamps: expected shape ({n}, {len(BANDS)}, S, S), one square griz stamp per "
            f"galaxy, got {images.shape}"
        )
    if not (chains >= 1 and 0 <= burn < steps):
        raise GalaxyZooInputError(
            f"chains = {chains}, steps = {steps}, burn = {burn}: need chains >= 1 and "
            "0 <= burn < steps"
        )
    if n == 0:
        return PosteriorReference(np.zeros((0, gz2.N_ANSWERS)), np.zeros(0))
    size = images.shape[-1]
    work = functools.partial(
        _posterior_chunk,
        morphologies,
        images,
        size,
        config or MorphologyConfig(),
        chains,
        steps,
        burn,
    )
    parts = run_in_chunks(work, n, _CHUNK, seed, processes)
    return PosteriorReference(
        fractions=np.concatenate([p[0] for p in parts]),
        acceptance=np.concatenate([p[1] for p in parts]),
    )
