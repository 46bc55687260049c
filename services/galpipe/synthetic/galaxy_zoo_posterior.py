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
   seeing); the relative ones
   (:data:`~galpipe.synthetic.galaxy_zoo_fisher.RELATIVE_PARAMETERS`) are factors on the true
   value. The centre is taken as known, and so is a star (a point source). Whether a galaxy is
   smooth or a disk is inferred by default (``known_kind`` tells it), and so is a disk's
   structure (:data:`STRUCTURE`: whether it has a bar and arms, their strengths, the number
   of arms; ``known_structure`` tells it, as for the Fisher reference).
2. The likelihood is Gaussian in every band and pixel, with the stamp's noise variance at the
   proposed noiseless stamp (sky plus the source's Poisson noise,
   :func:`~galpipe.synthetic.galaxy_zoo.noise_variance`): ``-1/2 sum ((x - mu)^2 / var +
   ln var)``.
3. The prior is the population's (:func:`log_prior`): uniform on each range of
   :class:`~galpipe.synthetic.galaxy_zoo.MorphologyConfig`, the disks' axis ratio as a
   uniform inclination makes it, uniform angles; the fluxes flat (the stamp fixes them far
   better than their log-uniform population does). Inferred, a bar's or the arms' strength is
   0 (no feature) with the population's probability and uniform on its range otherwise (a
   spike and slab), and the number of arms has the population's probabilities.
4. Metropolis-Hastings (:func:`metropolis_hastings`) with random-walk steps
   (:func:`random_walk`) drawn from the Fisher posterior covariance
   (:func:`~galpipe.synthetic.galaxy_zoo_fisher.stamp_fisher` plus the prior's precision)
   scaled by ``2 / sqrt(P)``. The chains start at the galaxy's true parameters (an absent
   feature's from its prior): the galaxy was drawn from the prior and the stamp from the
   likelihood, so the truth is itself a draw from the posterior and the chains start in
   equilibrium. But a chain that has not yet forgotten its start is correlated with the
   truth, and the truth is what the votes are drawn from: a chain that never moved would
   score the vote-noise floor. So the first ``burn`` steps are dropped, many autocorrelation
   times (600 by default; with 130, 30 galaxies scored 1.28 times the floor where 600 gave
   1.34). With the structure inferred, each step of a disk adds an
   independence move (:func:`structure_move`) that draws one block of the structure afresh
   from the prior, so that bars and arms appear and disappear under the chains (the walk
   leaves an absent feature absent); with the kind inferred, a reversible-jump move
   (:func:`kind_move`) between the smooth galaxy and the disk of the same fluxes, size,
   angle, seeing and axis ratio, the other kind's own parameters drawn from its prior. About
   three times the renderings of a galaxy whose kind and structure are told.

The result is the Bayes predictor up to its Monte Carlo error (which adds to its RMSE once the
chains have forgotten their start) and to what it is given for free (the centre, and which
galaxies are stars; with ``known_kind`` the kind, with ``known_structure`` the bar, the arms
and their number too): a model trained on votes cannot expect to score below it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from galpipe.science import gz2
from galpipe.survey.layout import BANDS
from galpipe.synthetic.galaxy_zoo import (
    DISK,
    SMOOTH,
    STAR,
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
    "STRUCTURE",
    "Move",
    "PosteriorReference",
    "kind_move",
    "log_prior",
    "metropolis_hastings",
    "posterior_reference",
    "random_walk",
    "structure_move",
]

#: Metropolis steps are the Fisher posterior covariance times (this / sqrt(P))^2: near the
#: 2.38 of Roberts, Gelman & Gilks (1997) for a Gaussian target, a little shorter because the
#: prior's bounds and the answers' non-linearity make the true posterior narrower in places.
STEP_SCALE = 2.0
#: Chains per galaxy, steps per chain and the steps dropped from each chain's average.
DEFAULT_CHAINS = 8
DEFAULT_STEPS = 730
DEFAULT_BURN = 600


#: A Metropolis-Hastings move: ``(state (C, P), rng) -> (proposal (C, P), log q ratio (C,))``,
#: the second the proposal's ``log q(state | proposal) - log q(proposal | state)`` (0 for a
#: symmetric move).
Move = Callable[
    [npt.NDArray[np.float64], np.random.Generator],
    tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]],
]


def random_walk(
    step_cholesky: npt.NDArray[np.float64],
    frozen: Callable[[npt.NDArray[np.float64]], npt.NDArray[np.bool_]] | None = None,
    factor_of: Callable[[npt.NDArray[np.float64]], npt.NDArray[np.intp]] | None = None,
) -> Move:
    """A Gaussian random-walk move, optionally holding some coordinates of each chain.

    Parameters
    ----------
    step_cholesky : numpy.ndarray
        ``(P, P)`` lower-triangular factor of the step's covariance; ``(K, P, P)``, one per
        class of chain, with ``factor_of``.
    frozen : callable, optional
        ``state (C, P) -> (C, P) bool``: coordinates the step leaves alone.
    factor_of : callable, optional
        ``state (C, P) -> (C,)`` the factor each chain steps with.

    Returns
    -------
    Move
        Symmetric, its log q ratio 0, as long as what decides the mask and the factor is
        itself never moved by this step (e.g. a strength held at exactly 0 while it is 0, a
        galaxy's kind).
    """
    factors = np.asarray(step_cholesky, dtype=np.float64)

    def move(
        state: npt.NDArray[np.float64], rng: np.random.Generator
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        z = rng.standard_normal(state.shape)
        if factor_of is None:
            step = z @ factors.T
        else:
            step = np.einsum("cq,cpq->cp", z, factors[factor_of(state)])
        if frozen is not None:
            step = np.where(frozen(state), 0.0, step)
        return state + step, np.zeros(len(state))

    return move


def metropolis_hastings(
    log_density: Callable[[npt.NDArray[np.float64]], tuple[npt.NDArray[np.float64], npt.NDArray]],
    start: npt.NDArray[np.float64],
    moves: list[Move],
    steps: int,
    burn: int,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Metropolis-Hastings over parallel chains; the average of a quantity over the draws.

    Each step applies every move in turn, each accepted or rejected on its own: a composition
    of kernels that each leave the target invariant, so the composition does too.

    Parameters
    ----------
    log_density : callable
        ``theta (C, P) -> (log p (C,), values (C, V))``: the unnormalised log density of each
        chain's point (``-inf`` outside the support) and the quantity to average there.
    start : numpy.ndarray
        ``(C, P)`` the chains' starting points (each inside the support).
    moves : list of Move
        The moves of one step (:data:`Move`, e.g. :func:`random_walk`), at least one.
    steps : int
        Steps per chain, > ``burn``.
    burn : int
        Steps dropped from the average, >= 0.
    rng : numpy.random.Generator
        Draws the moves and the acceptances.

    Returns
    -------
    mean : numpy.ndarray
        ``(V,)`` the average of ``values`` over every chain's states after ``burn`` steps.
    acceptance : numpy.ndarray
        ``(M,)`` the fraction of each move's proposals accepted.
    """
    state = np.array(start, dtype=np.float64)
    log_p, values = log_density(state)
    values = np.array(values, dtype=np.float64)
    if not np.isfinite(log_p).all():
        raise GalaxyZooInputError("metropolis_hastings: a chain starts outside the support")
    total = np.zeros(values.shape[1:])
    accepted = np.zeros(len(moves))
    for step in range(steps):
        for m, move in enumerate(moves):
            proposal, log_q_ratio = move(state, rng)
            threshold = np.log(rng.uniform(size=len(state))) + log_p - log_q_ratio
            # A proposal with log q ratio -inf is refused without evaluating the density.
            live = np.flatnonzero(np.isfinite(threshold))
            if len(live) == 0:
                continue
            proposed_log_p, proposed_values = log_density(proposal[live])
            won = proposed_log_p > threshold[live]
            accept = live[won]
            state[accept] = proposal[accept]
            log_p[accept] = proposed_log_p[won]
            values[accept] = proposed_values[won]
            accepted[m] += len(accept)
        if step >= burn:
            total += values.sum(axis=0)
    return total / (len(state) * (steps - burn)), accepted / (len(state) * steps)


def _support(kind: int, name: str, config: MorphologyConfig) -> tuple[float, float]:
    """The population's range of an absolute parameter of a galaxy of ``kind``."""
    smooth = kind == SMOOTH
    ranges = {
        "bulge_to_total": config.smooth_bulge_to_total if smooth else config.disk_bulge_to_total,
        "axis_ratio": config.smooth_axis_ratio if smooth else (config.disk_thickness, 1.0),
        "bulge_axis_ratio": config.bulge_axis_ratio,
        "bar_strength": config.bar_strength,
        "arm_strength": config.arm_strength,
        "arm_tightness": (0.0, 1.0),
    }
    return ranges.get(name, (-np.inf, np.inf))  # angles: no bound


def _feature_prior(name: str, config: MorphologyConfig) -> tuple[float, tuple[float, float]]:
    """The population's fraction of disks with the feature whose strength is ``name``
    (``"bar_strength"`` or ``"arm_strength"``), and that strength's range."""
    if name == "bar_strength":
        return config.bar_fraction, config.bar_strength
    return config.spiral_fraction, config.arm_strength


def _spike_and_slab(
    value: npt.NDArray[np.float64], fraction: float, bounds: tuple[float, float]
) -> npt.NDArray[np.float64]:
    """Log prior of a feature's strength that is 0 (no feature) with probability
    ``1 - fraction`` and uniform on ``bounds`` otherwise: the mass at 0, the density above."""
    with np.errstate(divide="ignore"):
        absent, present = np.log(1.0 - fraction), np.log(fraction / (bounds[1] - bounds[0]))
    inside = (value >= bounds[0]) & (value <= bounds[1])
    return np.where(value == 0.0, absent, np.where(inside, present, -np.inf))


def log_prior(
    galaxy: Morphologies,
    names: list[str],
    theta: npt.NDArray[np.float64],
    config: MorphologyConfig | None = None,
    *,
    known_structure: bool = True,
) -> npt.NDArray[np.float64]:
    """The population's log prior density (up to a constant) of parameter vectors.

    Parameters
    ----------
    galaxy : Morphologies
        One galaxy: its kind and the true values the relative parameters multiply.
    names : list of str
        The parameters, in ``theta``'s column order; ``"n_arms"`` may be one of them.
    theta : numpy.ndarray
        ``(K, P)`` parameter vectors (relative parameters as factors, angles in degrees).
    config : MorphologyConfig, optional
        The population; the default one if omitted.
    known_structure : bool
        True: a disk's bar and arms are known to be there (their strengths uniform on their
        ranges). False: a strength of exactly 0 is the feature's absence, with the
        population's mass ``1 - bar_fraction`` (``1 - spiral_fraction``), and
        ``bar_fraction`` (``spiral_fraction``) is spread over the range; ``n_arms`` has the
        population's probabilities.

    Returns
    -------
    numpy.ndarray
        ``(K,)``: ``-inf`` outside the population's support; a disk's axis ratio ``q`` has the
        density ``q / sqrt((1 - q0^2) (q^2 - q0^2))`` of a uniform ``cos i`` (``q0`` the disk
        thickness), a smooth galaxy's the uniform one, both normalised; everything else is
        uniform (the fluxes flat and positive) but the structure above.
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
        elif name == "n_arms":
            with np.errstate(divide="ignore"):
                probabilities = np.log(np.asarray(c.arm_number_probabilities))
            count = np.clip(value, 1, len(probabilities)).astype(np.intp)
            inside = (value == count) & np.isfinite(probabilities[count - 1])
            log_p += np.where(inside, probabilities[count - 1], 0.0)
        elif not known_structure and name in ("bar_strength", "arm_strength"):
            log_p += _spike_and_slab(value, *_feature_prior(name, c))
            inside = np.isfinite(log_p)
        else:
            low, high = _support(int(galaxy.kind[0]), name, c)
            inside = (value >= low) & (value <= high)
            if name == "axis_ratio":
                # Normalised: a switch of kind keeps the axis ratio, so its density under each
                # kind enters the acceptance, constants included.
                if int(galaxy.kind[0]) == DISK:
                    q0 = c.disk_thickness
                    safe = np.where(inside & (value > q0), value, 1.0)
                    density = np.log(safe) - 0.5 * np.log((safe**2 - q0**2 + 1e-300) * (1 - q0**2))
                else:
                    density = np.full(len(value), -np.log(high - low))
                log_p += np.where(inside, density, 0.0)
        log_p = np.where(inside, log_p, -np.inf)
    return log_p


#: A disk's structure, when it is not taken as known: the bar's strength (0: none) and angle,
#: the arms' strength (0: none), tightness and number (the arms' phase is the bar's angle).
STRUCTURE = ("bar_strength", "bar_angle_deg", "arm_strength", "arm_tightness", "n_arms")


def _draw_from_prior(
    names: list[str],
    state: npt.NDArray[np.float64],
    which: tuple[str, ...],
    config: MorphologyConfig,
    rng: np.random.Generator,
    kind: int = DISK,
) -> npt.NDArray[np.float64]:
    """``state`` with the columns ``which`` drawn from the population of ``kind``: those of
    :data:`STRUCTURE`, ``bulge_to_total`` and ``bulge_axis_ratio`` (ranges of
    :func:`_support`)."""
    out = state.copy()
    k = len(state)
    for name in which:
        if name in ("bar_strength", "arm_strength"):
            fraction, bounds = _feature_prior(name, config)
            present = rng.uniform(size=k) < fraction
            value = np.where(present, rng.uniform(bounds[0], bounds[1], size=k), 0.0)
        elif name == "bar_angle_deg":
            value = rng.uniform(0.0, 180.0, size=k)
        elif name == "n_arms":
            p = np.asarray(config.arm_number_probabilities)
            value = 1.0 + rng.choice(len(p), size=k, p=p)
        else:  # uniform on the kind's range: tightness, B/T, bulge axis ratio
            low, high = _support(kind, name, config)
            value = rng.uniform(low, high, size=k)
        out[:, names.index(name)] = value
    return out


#: The blocks of :data:`STRUCTURE` one structure move draws afresh, one block per step: the bar,
#: the arms, their number alone, the angle alone.
_STRUCTURE_BLOCKS: tuple[tuple[str, ...], ...] = (
    ("bar_strength",),
    ("arm_strength", "arm_tightness", "n_arms"),
    ("n_arms",),
    ("bar_angle_deg",),
)


def structure_move(
    names: list[str], galaxy: Morphologies, config: MorphologyConfig, kind_column: int | None = None
) -> Move:
    """An independence move that draws one block of a disk's structure from the population.

    Each step picks one of the blocks (the bar; the arms with their tightness and number; the
    number alone; the angle alone), the same for every chain, and draws it afresh from the
    prior. Its log q ratio is the prior's ratio (old over new), so the acceptance is the
    likelihood's ratio: how a bar or arms appear and disappear under the chains.

    Parameters
    ----------
    names : list of str
        The chains' columns; include every name of :data:`STRUCTURE`.
    galaxy : Morphologies
        The one galaxy, as a disk.
    config : MorphologyConfig
        The population (the prior the blocks are drawn from).
    kind_column : int, optional
        The column of each chain's kind: chains that are not disks propose nothing (their
        proposal is refused).
    """
    columns = [names.index(name) for name in STRUCTURE]

    def block_prior(theta: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return log_prior(galaxy, list(STRUCTURE), theta[:, columns], config, known_structure=False)

    def move(
        state: npt.NDArray[np.float64], rng: np.random.Generator
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        block = _STRUCTURE_BLOCKS[int(rng.integers(len(_STRUCTURE_BLOCKS)))]
        proposal = _draw_from_prior(names, state, block, config, rng)
        log_q_ratio = block_prior(state) - block_prior(proposal)
        if kind_column is not None:
            log_q_ratio = np.where(state[:, kind_column] == DISK, log_q_ratio, -np.inf)
        return proposal, log_q_ratio

    return move


#: What a switch of kind draws afresh for the kind it goes to (module docstring): a smooth
#: galaxy's B/T; a disk's B/T, bulge axis ratio and structure. The fluxes, size, position
#: angle, seeing and axis ratio are kept.
_KIND_BLOCKS: dict[int, tuple[str, ...]] = {
    SMOOTH: ("bulge_to_total",),
    DISK: ("bulge_to_total", "bulge_axis_ratio", *STRUCTURE),
}


def kind_move(
    names: list[str],
    templates: dict[int, Morphologies],
    config: MorphologyConfig,
    kind_column: int,
) -> Move:
    """A reversible-jump move between a smooth galaxy and a disk.

    A smooth chain proposes the disk with the same fluxes, size, position angle, seeing and
    axis ratio, its B/T, bulge axis ratio and structure drawn from the disks' prior; a disk
    chain the smooth galaxy with a B/T drawn from the smooth galaxies' prior. The drawn
    parameters' prior densities cancel against the proposal's, so the acceptance is the
    likelihood's ratio times the kinds' prior ratio and the kept axis ratio's density ratio
    (which :func:`log_prior` normalises for this).

    Parameters
    ----------
    names : list of str
        The chains' columns: every parameter of a disk with a bar and arms, ``"n_arms"`` and
        ``"kind"``.
    templates : dict
        The galaxy as a smooth galaxy and as a disk (:data:`SMOOTH`, :data:`DISK`).
    config : MorphologyConfig
        The population.
    kind_column : int
        The column of each chain's kind.
    """
    blocks = {k: [names.index(name) for name in block] for k, block in _KIND_BLOCKS.items()}

    def block_prior(theta: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        out = np.zeros(len(theta))
        for k, columns in blocks.items():
            rows = theta[:, kind_column] == k
            out[rows] = log_prior(
                templates[k],
                list(_KIND_BLOCKS[k]),
                theta[rows][:, columns],
                config,
                known_structure=False,
            )
        return out

    def move(
        state: npt.NDArray[np.float64], rng: np.random.Generator
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        to_disk = state[:, kind_column] == SMOOTH
        as_disk = _draw_from_prior(names, state, _KIND_BLOCKS[DISK], config, rng, DISK)
        as_smooth = _draw_from_prior(names, state, _KIND_BLOCKS[SMOOTH], config, rng, SMOOTH)
        proposal = np.where(to_disk[:, None], as_disk, as_smooth)
        proposal[:, kind_column] = np.where(to_disk, DISK, SMOOTH)
        return proposal, block_prior(state) - block_prior(proposal)

    return move


@dataclass(frozen=True)
class PosteriorReference:
    """The Bayes predictor of a set of galaxies (module docstring).

    Attributes
    ----------
    fractions : numpy.ndarray
        ``(N, 37)`` the posterior mean of each galaxy's true fractions given its stamp.
    acceptance : numpy.ndarray
        ``(N,)`` the random walk's acceptance rate in each galaxy's chains.
    structure_acceptance, kind_acceptance : numpy.ndarray
        ``(N,)`` the acceptance rates of the structure move (:func:`structure_move`) and of
        the switch of kind (:func:`kind_move`), over all chain steps; NaN where the move was
        not made (a star, or what was known).
    """

    fractions: npt.NDArray[np.float64]
    acceptance: npt.NDArray[np.float64]
    structure_acceptance: npt.NDArray[np.float64]
    kind_acceptance: npt.NDArray[np.float64]


def _as_kind(galaxy: Morphologies, kind: int, config: MorphologyConfig) -> Morphologies:
    """The galaxy as a smooth galaxy or a disk with the same fluxes, size, position angle and
    seeing, its B/T and axis ratios moved into the kind's ranges; a disk has a bar and arms at
    mid strength where it has none (the random walk's step sizes of every structure
    parameter come from this galaxy's Fisher matrix)."""
    hlr = galaxy.half_light_radius_arcsec
    if kind == SMOOTH:
        q = np.clip(galaxy.axis_ratio, *config.smooth_axis_ratio)
        return replace(
            galaxy,
            kind=np.array([SMOOTH]),
            bulge_to_total=np.clip(galaxy.bulge_to_total, *config.smooth_bulge_to_total),
            axis_ratio=q,
            bulge_axis_ratio=q.copy(),
            bulge_half_light_radius_arcsec=hlr.copy(),
            bar_strength=np.zeros(1),
            arm_strength=np.zeros(1),
            arm_tightness=np.zeros(1),
            n_arms=np.zeros(1, dtype=np.int64),
        )
    armed = galaxy.arm_strength[0] > 0.0
    mid_bar, mid_arms = (
        0.5 * (low + high) for low, high in (config.bar_strength, config.arm_strength)
    )
    return replace(
        galaxy,
        kind=np.array([DISK]),
        bulge_to_total=np.clip(galaxy.bulge_to_total, *config.disk_bulge_to_total),
        axis_ratio=np.clip(galaxy.axis_ratio, config.disk_thickness, 1.0),
        bulge_axis_ratio=np.clip(galaxy.bulge_axis_ratio, *config.bulge_axis_ratio),
        bulge_half_light_radius_arcsec=config.bulge_size_ratio * hlr,
        bar_strength=np.where(galaxy.bar_strength > 0.0, galaxy.bar_strength, mid_bar),
        arm_strength=galaxy.arm_strength if armed else np.array([mid_arms]),
        arm_tightness=galaxy.arm_tightness if armed else np.array([0.5]),
        n_arms=galaxy.n_arms if armed else np.array([2], dtype=np.int64),
    )


def _step_factor(
    galaxy: Morphologies, size: int, config: MorphologyConfig
) -> tuple[list[str], npt.NDArray[np.float64]]:
    """The galaxy's free parameters and the random walk's step factor for them: the Cholesky
    factor of its Fisher posterior covariance, scaled by ``STEP_SCALE / sqrt(P)``."""
    names, fisher = stamp_fisher(galaxy, size)
    prior = prior_variance(config)
    covariance = np.linalg.inv(fisher + np.diag([1.0 / prior[name] for name in names]))
    return names, np.linalg.cholesky(covariance) * (STEP_SCALE / np.sqrt(len(names)))


def _log_likelihood(
    rows: Morphologies, stamp: npt.NDArray[np.float64], size: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The stamp's Gaussian log likelihood under each of ``rows`` (galaxies of one sky and
    gain), and their true fractions."""
    expected, features = render_noiseless(rows, size)
    sky, gain = rows.sky_sigma[0], rows.gain_e_per_nmgy[0]
    variance = np.stack([noise_variance(mu, sky, gain) for mu in expected])
    chi2 = ((stamp - expected) ** 2 / variance + np.log(variance)).sum(axis=(1, 2, 3))
    return -0.5 * chi2, gz2.fractions_from_shares(answer_shares(rows, features))


@dataclass(frozen=True)
class _ChainSettings:
    """What every galaxy's chains share: the stamp size S (px), the population (the prior),
    the chains' lengths, and what is taken as known (:func:`posterior_reference`)."""

    size: int
    config: MorphologyConfig
    chains: int
    steps: int
    burn: int
    known_kind: bool
    known_structure: bool


def _posterior_fixed(
    galaxy: Morphologies,
    stamp: npt.NDArray[np.float64],
    run: _ChainSettings,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Nothing discrete to infer: one set of parameters, one random walk."""
    size, config = run.size, run.config
    names, step = _step_factor(galaxy, size, config)

    def log_density(theta: npt.NDArray[np.float64]) -> tuple[npt.NDArray, npt.NDArray]:
        log_p = log_prior(galaxy, names, theta, config)
        fractions = np.zeros((len(theta), gz2.N_ANSWERS))
        inside = np.isfinite(log_p)
        if inside.any():
            log_l, fractions[inside] = _log_likelihood(
                with_parameters(galaxy, names, theta[inside]), stamp, size
            )
            log_p[inside] += log_l
        return log_p, fractions

    start = np.repeat(parameter_values(galaxy, names)[None], run.chains, axis=0)
    mean, acceptance = metropolis_hastings(
        log_density, start, [random_walk(step)], run.steps, run.burn, rng
    )
    return mean, np.array([acceptance[0], np.nan, np.nan])


def _posterior_switching(
    galaxy: Morphologies,
    stamp: npt.NDArray[np.float64],
    run: _ChainSettings,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """A disk's structure inferred, and its kind unless ``run.known_kind``."""
    size, config, known_kind = run.size, run.config, run.known_kind
    kind = int(galaxy.kind[0])
    # The chains' columns: a disk's every parameter, its number of arms and the kind. A smooth
    # chain ignores the disk's own columns (bulge axis ratio, structure); a switch of kind
    # draws them afresh.
    kinds = (kind,) if known_kind else (SMOOTH, DISK)
    templates = {k: _as_kind(galaxy, k, config) for k in (SMOOTH, DISK)}
    disk_names, disk_step = _step_factor(templates[DISK], size, config)
    columns = [*disk_names, "n_arms", "kind"]
    kind_column, arms_column = len(columns) - 1, len(columns) - 2
    # Per kind, the columns its galaxies are rendered from, and those its prior covers: a
    # disk's number of arms too (rendered from its own column).
    rendered = {DISK: disk_names}
    factors = np.zeros((2, len(columns), len(columns)))
    steps_of = {DISK: disk_step}
    if SMOOTH in kinds:
        rendered[SMOOTH], steps_of[SMOOTH] = _step_factor(templates[SMOOTH], size, config)
    rendered_index = {
        k: np.array([columns.index(n) for n in names]) for k, names in rendered.items()
    }
    for k, step in steps_of.items():
        factors[k][np.ix_(rendered_index[k], rendered_index[k])] = step
    priored = {k: [*names, "n_arms"] if k == DISK else names for k, names in rendered.items()}
    priored_index = {k: np.array([columns.index(n) for n in names]) for k, names in priored.items()}
    log_kind = {k: 0.0 if known_kind else np.log(config.kind_fractions[k]) for k in kinds}

    # Start at the truth; what the galaxy does not have (an absent feature's parameters, a
    # smooth galaxy's disk columns) is drawn from the prior, as it is a priori.
    start = np.zeros((run.chains, len(columns)))
    start[:, rendered_index[kind]] = parameter_values(galaxy, rendered[kind])
    start[:, arms_column], start[:, kind_column] = galaxy.n_arms[0], kind
    absent: list[str] = []
    if kind == SMOOTH:
        absent = ["bulge_axis_ratio", *STRUCTURE]
    else:
        if galaxy.arm_strength[0] == 0:
            absent += ["arm_tightness", "n_arms"]
        if galaxy.arm_strength[0] == 0 and galaxy.bar_strength[0] == 0:
            absent.append("bar_angle_deg")
    start = _draw_from_prior(columns, start, tuple(absent), config, rng)

    def log_density(theta: npt.NDArray[np.float64]) -> tuple[npt.NDArray, npt.NDArray]:
        log_p = np.full(len(theta), -np.inf)
        fractions = np.zeros((len(theta), gz2.N_ANSWERS))
        for k in kinds:
            rows = np.flatnonzero(theta[:, kind_column] == k)
            if len(rows) == 0:
                continue
            log_p[rows] = log_kind[k] + log_prior(
                templates[k],
                priored[k],
                theta[np.ix_(rows, priored_index[k])],
                config,
                known_structure=False,
            )
            inside = rows[np.isfinite(log_p[rows])]
            if len(inside) == 0:
                continue
            galaxies = with_parameters(
                templates[k], rendered[k], theta[np.ix_(inside, rendered_index[k])]
            )
            if k == DISK:
                arms = np.where(galaxies.arm_strength > 0.0, theta[inside, arms_column], 0.0)
                galaxies = replace(galaxies, n_arms=arms.astype(np.int64))
            log_l, fractions[inside] = _log_likelihood(galaxies, stamp, size)
            log_p[inside] += log_l
        return log_p, fractions

    strengths = [columns.index("bar_strength"), columns.index("arm_strength")]

    def held(state: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        # An absent feature stays absent under the walk (only the structure move adds it);
        # the number of arms and the kind are not a walk's coordinates.
        mask = np.zeros(state.shape, dtype=bool)
        mask[:, strengths] = state[:, strengths] == 0.0
        mask[:, [arms_column, kind_column]] = True
        return mask

    def factor_of(state: npt.NDArray[np.float64]) -> npt.NDArray[np.intp]:
        return state[:, kind_column].astype(np.intp)

    moves = [
        random_walk(factors, held, factor_of),
        structure_move(columns, templates[DISK], config, kind_column),
    ]
    if not known_kind:
        moves.append(kind_move(columns, templates, config, kind_column))
    mean, acceptance = metropolis_hastings(log_density, start, moves, run.steps, run.burn, rng)
    return mean, np.array([*acceptance, np.nan][:3])


def _posterior_one(
    galaxy: Morphologies,
    stamp: npt.NDArray[np.float64],
    run: _ChainSettings,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    kind = int(galaxy.kind[0])
    if kind == STAR or (run.known_kind and (run.known_structure or kind == SMOOTH)):
        return _posterior_fixed(galaxy, stamp, run, rng)
    return _posterior_switching(galaxy, stamp, run, rng)


def _posterior_chunk(
    morphologies: Morphologies,
    stamps: npt.NDArray[np.float64],
    run: _ChainSettings,
    first: int,
    count: int,
    seed: np.random.SeedSequence,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    fractions = np.zeros((count, gz2.N_ANSWERS))
    acceptance = np.zeros((count, 3))
    for row in range(count):
        galaxy = morphologies.take(np.array([first + row]))
        fractions[row], acceptance[row] = _posterior_one(galaxy, stamps[first + row], run, rng)
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
    known_kind: bool = False,
    known_structure: bool = False,
    seed: int = 0,
    processes: int = 1,
) -> PosteriorReference:
    """The Bayes predictor's fractions for each galaxy and its noisy stamp (module docstring).

    About ``chains * steps`` noiseless renderings per galaxy told its kind and structure (some
    40 s of one core with the defaults), three times that inferring them.

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
    known_kind : bool
        True: each galaxy's kind is taken as known. False (the default): smooth galaxies and
        disks are inferred between (:func:`kind_move`); stars are always known.
    known_structure : bool
        True (with ``known_kind``): each disk's bar and arms (their presence, the number of
        arms) are taken as known too, as for the Fisher reference. False (the default): they
        are inferred, with the population's prior (:func:`structure_move`).
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
    if known_structure and not known_kind:
        raise GalaxyZooInputError(
            "known_structure=True needs known_kind=True: a disk's bar and arms can only be told "
            "with its kind"
        )
    if not (chains >= 1 and 0 <= burn < steps):
        raise GalaxyZooInputError(
            f"chains = {chains}, steps = {steps}, burn = {burn}: need chains >= 1 and "
            "0 <= burn < steps"
        )
    if n == 0:
        return PosteriorReference(np.zeros((0, gz2.N_ANSWERS)), *np.zeros((3, 0)))
    run = _ChainSettings(
        size=images.shape[-1],
        config=config or MorphologyConfig(),
        chains=chains,
        steps=steps,
        burn=burn,
        known_kind=known_kind,
        known_structure=known_structure,
    )
    work = functools.partial(_posterior_chunk, morphologies, images, run)
    parts = run_in_chunks(work, n, _CHUNK, seed, processes)
    acceptance = np.concatenate([p[1] for p in parts])
    return PosteriorReference(
        fractions=np.concatenate([p[0] for p in parts]),
        acceptance=acceptance[:, 0],
        structure_acceptance=acceptance[:, 1],
        kind_acceptance=acceptance[:, 2],
    )
