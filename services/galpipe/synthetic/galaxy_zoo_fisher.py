"""An information reference for the synthetic Galaxy Zoo: how well any model could predict.

The vote-noise floor (:func:`galpipe.synthetic.galaxy_zoo.vote_noise_floor`) is what predicting
the true fractions scores; a model predicts them from a noisy stamp, so it also carries the
error of what the stamp leaves unknown. This module estimates that error per galaxy with the
Fisher information of its stamp and the population's prior, in the linear (Laplace)
approximation:

1. The parameters a model must infer, those of :data:`FREE_PARAMETERS` that apply to the
   galaxy: the four band fluxes, the size, the axis ratios, the position angle, the
   bulge-to-total ratio, the bar's strength and angle, the arms' strength and tightness (for a
   galaxy that has a bar or arms), and the seeing. The centre, the kind, the number of arms
   and the ratio of bulge to disk size are taken as known (a model is not charged for them).
2. The Fisher matrix of the noiseless stamp ``mu`` (:func:`render_noiseless`),
   ``F_ij = sum d_i mu d_j mu / var`` over bands and pixels, ``var`` the stamp's noise
   variance (:func:`~galpipe.synthetic.galaxy_zoo.noise_variance`); derivatives by central
   differences of :data:`FREE_PARAMETERS`' steps (one-sided at a range's end).
3. The prior's precision: each parameter's population variance (:func:`prior_variance`; a
   uniform range of width ``w`` has ``w^2 / 12``), so a parameter the stamp does not constrain
   is known to its prior and no better.
4. The posterior covariance ``C = (F + diag(1 / prior))^-1`` and the Jacobian ``J`` of the 37
   true fractions (:func:`~galpipe.synthetic.galaxy_zoo.answer_shares` of the parameters and
   of what the stamp shows), by the same differences; the fractions' error variance is
   ``diag(J C J^T)``.

So the reference RMSE of a set, ``sqrt(floor^2 + mean diag(J C J^T))`` with each answer's
variance capped at its variance over the set (:meth:`FisherReference.rmse`), is what a model
that knew the generative model exactly would score against the votes, to first order in the
parameters' errors. It is an estimate, not a bound: the linear approximation misses the
curvature of the answers' logistics (a model can beat it on a galaxy whose answers saturate),
and the known centre, kind and number of arms flatter it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from galpipe.science import gz2
from galpipe.survey.layout import BANDS, CUTOUT_SIZE_PX
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
from galpipe.synthetic.rows import run_in_chunks

__all__ = [
    "FREE_PARAMETERS",
    "RELATIVE_PARAMETERS",
    "FisherReference",
    "fisher_reference",
    "free_parameters",
    "parameter_values",
    "prior_variance",
    "stamp_fisher",
    "with_parameters",
]

#: The parameters a model must infer, with the finite-difference step of each (relative for
#: the fluxes, the size and the seeing; absolute otherwise: degrees for angles).
FREE_PARAMETERS: dict[str, float] = {
    **{f"flux_{band}": 0.01 for band in BANDS},
    "size": 0.01,
    "axis_ratio": 0.01,
    "bulge_axis_ratio": 0.01,
    "position_angle_deg": 0.5,
    "bulge_to_total": 0.01,
    "bar_strength": 0.01,
    "bar_angle_deg": 0.5,
    "arm_strength": 0.01,
    "arm_tightness": 0.01,
    "psf_fwhm": 0.01,
}
#: The parameters moved by a factor (their steps and posterior σ are fractions), not by a value.
RELATIVE_PARAMETERS = frozenset({*(f"flux_{band}" for band in BANDS), "size", "psf_fwhm"})
# Where a parameter's range ends (a step beyond it would leave the model's domain).
_BOUNDS: dict[str, tuple[float, float]] = {
    "axis_ratio": (0.05, 1.0),
    "bulge_axis_ratio": (0.05, 1.0),
    "bulge_to_total": (0.0, 1.0),
    "bar_strength": (0.0, 1.0),
    "arm_strength": (0.0, 1.0),
    "arm_tightness": (0.0, 1.0),
}


def free_parameters(galaxy: Morphologies) -> list[str]:
    """The names of :data:`FREE_PARAMETERS` that apply to the one galaxy ``galaxy``.

    A star has its fluxes and the seeing; a smooth galaxy adds its size, axis ratio (its
    bulge's too: one body), position angle and B/T; a disk adds its bulge's axis ratio, and
    the bar's strength and angle or the arms' strength and tightness when it has them.
    """
    kind = int(galaxy.kind[0])
    names = [f"flux_{band}" for band in BANDS]
    if kind != STAR:
        names += ["size", "axis_ratio", "position_angle_deg", "bulge_to_total"]
    if kind == DISK:
        names.append("bulge_axis_ratio")
        barred, armed = galaxy.bar_strength[0] > 0.0, galaxy.arm_strength[0] > 0.0
        if barred:
            names.append("bar_strength")
        if barred or armed:
            names.append("bar_angle_deg")  # the bar's angle, and the arms' phase
        if armed:
            names += ["arm_strength", "arm_tightness"]
    return [*names, "psf_fwhm"]


def prior_variance(config: MorphologyConfig | None = None) -> dict[str, float]:
    """The population variance of each of :data:`FREE_PARAMETERS` under ``config``.

    Uniform ranges of width ``w`` give ``w^2 / 12``; the angles are uniform on [0, 180)
    degrees; a flux, relative, has the variance of ``ln F`` (the S/N's log-uniform range and
    the colours'); the disks' axis ratio spans thin to face-on; B/T takes the wider of the
    smooth and disk ranges.
    """
    c = config or MorphologyConfig()
    sky = c.sky

    def uniform(bounds: tuple[float, float]) -> float:
        return (bounds[1] - bounds[0]) ** 2 / 12.0

    def relative(bounds: tuple[float, float]) -> float:
        return uniform(bounds) / (0.5 * (bounds[0] + bounds[1])) ** 2

    log_flux = np.log(c.snr_range[1] / c.snr_range[0]) ** 2 / 12.0
    angles = 180.0**2 / 12.0
    return {
        **{f"flux_{band}": float(log_flux) for band in BANDS},
        "size": relative(sky.half_light_radius_arcsec),
        "axis_ratio": uniform((c.disk_thickness, 1.0)),
        "bulge_axis_ratio": uniform(c.bulge_axis_ratio),
        "position_angle_deg": angles,
        "bulge_to_total": max(uniform(c.smooth_bulge_to_total), uniform(c.disk_bulge_to_total)),
        "bar_strength": uniform(c.bar_strength),
        "bar_angle_deg": angles,
        "arm_strength": uniform(c.arm_strength),
        "arm_tightness": uniform((0.0, 1.0)),
        "psf_fwhm": relative(sky.psf_fwhm_arcsec),
    }


def parameter_values(galaxy: Morphologies, names: list[str]) -> npt.NDArray[np.float64]:
    """``(P,)`` the one galaxy's own values of ``names``: 1 for the relative parameters
    (:data:`RELATIVE_PARAMETERS`, factors on the galaxy's value), the value otherwise."""
    return np.array(
        [
            1.0 if name in RELATIVE_PARAMETERS else float(np.asarray(getattr(galaxy, name))[0])
            for name in names
        ]
    )


def with_parameters(
    galaxy: Morphologies, names: list[str], theta: npt.NDArray[np.float64]
) -> Morphologies:
    """``len(theta)`` copies of the one galaxy ``galaxy`` with ``names`` set to the columns of
    ``theta`` ``(K, P)``: the relative parameters multiply the galaxy's value (a size moves the
    bulge's radius with the disk's), the others replace it.
    """
    rows = galaxy.take(np.zeros(len(theta), dtype=np.intp))
    flux = rows.flux.copy()
    fields: dict[str, Any] = {}
    for j, name in enumerate(names):
        value = theta[:, j]
        if name.startswith("flux_"):
            flux[:, BANDS.index(name[5:])] *= value
        elif name == "size":
            fields["half_light_radius_arcsec"] = rows.half_light_radius_arcsec * value
            fields["bulge_half_light_radius_arcsec"] = rows.bulge_half_light_radius_arcsec * value
        elif name == "psf_fwhm":
            fields["psf_fwhm_arcsec"] = rows.psf_fwhm_arcsec * value
        elif name == "axis_ratio" and int(galaxy.kind[0]) == SMOOTH:
            # A smooth galaxy is one body: its bulge is its spheroid.
            fields["axis_ratio"] = fields["bulge_axis_ratio"] = value.copy()
        else:
            fields[name] = value.copy()
    return replace(rows, flux=flux, **fields)


def _steps(name: str, value: float) -> tuple[float, float]:
    """The values of ``name`` on either side of ``value`` (the galaxy's, as
    :func:`parameter_values` gives it), inside its range."""
    step = FREE_PARAMETERS[name]
    if name in RELATIVE_PARAMETERS:
        return 1.0 - step, 1.0 + step
    low, high = _BOUNDS.get(name, (-np.inf, np.inf))
    return max(value - step, low), min(value + step, high)


@dataclass(frozen=True)
class _Differences:
    names: list[str]
    stamp: npt.NDArray[np.float64]  # (4, S, S) the noiseless stamp
    d_stamp: npt.NDArray[np.float64]  # (P, 4, S, S) derivatives
    d_fractions: npt.NDArray[np.float64]  # (P, 37) derivatives


def _differences(galaxy: Morphologies, size: int) -> _Differences:
    names = free_parameters(galaxy)
    own = parameter_values(galaxy, names)
    # Row 0 the galaxy, rows 2j+1 and 2j+2 it with parameter j below and above its value.
    theta = np.repeat(own[None], 1 + 2 * len(names), axis=0)
    widths = []
    for j, name in enumerate(names):
        low, high = _steps(name, float(own[j]))
        theta[2 * j + 1, j], theta[2 * j + 2, j] = low, high
        widths.append(high - low)
    everyone = with_parameters(galaxy, names, theta)
    stamps, features = render_noiseless(everyone, size)
    fractions = gz2.fractions_from_shares(answer_shares(everyone, features))
    width = np.asarray(widths)
    return _Differences(
        names=names,
        stamp=stamps[0],
        d_stamp=(stamps[2::2] - stamps[1::2]) / width[:, None, None, None],
        d_fractions=(fractions[2::2] - fractions[1::2]) / width[:, None],
    )


def stamp_fisher(
    galaxy: Morphologies, size: int = CUTOUT_SIZE_PX
) -> tuple[list[str], npt.NDArray[np.float64]]:
    """The Fisher matrix of one galaxy's griz stamp in its :func:`free_parameters`.

    Parameters
    ----------
    galaxy : Morphologies
        One galaxy.
    size : int
        Stamp side, pixels.

    Returns
    -------
    names : list of str
        The parameters, in the matrix's order.
    fisher : numpy.ndarray
        ``(P, P)`` float64, in the units of :data:`FREE_PARAMETERS` (relative ones per unit
        fraction, angles per degree).
    """
    if len(galaxy) != 1:
        raise GalaxyZooInputError(f"galaxy: {len(galaxy)} rows; stamp_fisher takes one galaxy")
    d = _differences(galaxy, size)
    return d.names, _fisher(galaxy, d)


def _fisher(galaxy: Morphologies, d: _Differences) -> npt.NDArray[np.float64]:
    variance = noise_variance(d.stamp, galaxy.sky_sigma[0], galaxy.gain_e_per_nmgy[0])
    flat = (d.d_stamp / np.sqrt(variance)).reshape(len(d.names), -1)
    return flat @ flat.T


@dataclass(frozen=True)
class FisherReference:
    """The information reference of a set of galaxies (module docstring).

    Attributes
    ----------
    variance : numpy.ndarray
        ``(N, 37)`` the error variance of each galaxy's true fractions that its stamp leaves,
        ``diag(J C J^T)``.
    parameter_sigma : list of dict
        Per galaxy, each free parameter's posterior standard deviation (its units:
        :data:`FREE_PARAMETERS`).
    """

    variance: npt.NDArray[np.float64]
    parameter_sigma: list[dict[str, float]]

    def rmse(self, floor: float, true_fractions: npt.NDArray[np.float64]) -> float:
        """The reference RMSE of the set against the votes.

        ``sqrt(floor^2 + mean min(variance, population variance))``: each answer's error
        variance is capped at that answer's variance over the set's true fractions, the error
        of predicting their mean, which no estimator needs to exceed; the linear approximation
        does exceed it where the posterior is as wide as the prior and the answer's logistic
        saturates.

        Parameters
        ----------
        floor : float
            The vote-noise floor of the same galaxies.
        true_fractions : numpy.ndarray
            ``(N, 37)`` their true fractions, in the order of :attr:`variance`.
        """
        population = np.asarray(true_fractions, dtype=np.float64).var(axis=0)
        return float(np.sqrt(floor**2 + np.minimum(self.variance, population).mean()))


#: Galaxies per unit of parallel work in :func:`fisher_reference`.
_CHUNK = 64


def _reference_chunk(
    morphologies: Morphologies,
    size: int,
    prior: dict[str, float],
    first: int,
    count: int,
    _seed: np.random.SeedSequence,
) -> tuple[npt.NDArray[np.float64], list[dict[str, float]]]:
    variance = np.zeros((count, gz2.N_ANSWERS))
    sigmas: list[dict[str, float]] = []
    for row in range(count):
        galaxy = morphologies.take(np.array([first + row]))
        d = _differences(galaxy, size)
        precision = _fisher(galaxy, d) + np.diag([1.0 / prior[name] for name in d.names])
        covariance = np.linalg.inv(precision)
        jacobian = d.d_fractions.T  # (37, P)
        variance[row] = np.einsum("ap,pq,aq->a", jacobian, covariance, jacobian)
        sigmas.append(dict(zip(d.names, np.sqrt(np.diag(covariance)).tolist(), strict=True)))
    return variance, sigmas


def fisher_reference(
    morphologies: Morphologies,
    size: int = CUTOUT_SIZE_PX,
    config: MorphologyConfig | None = None,
    processes: int = 1,
) -> FisherReference:
    """The information reference of each galaxy (module docstring).

    Parameters
    ----------
    morphologies : Morphologies
        The galaxies.
    size : int
        Stamp side, pixels.
    config : MorphologyConfig, optional
        The population the galaxies were drawn from (its prior); the default one by default.
    processes : int
        Worker processes (1: in this process); the result does not depend on it.

    Returns
    -------
    FisherReference
    """
    if len(morphologies) == 0:
        return FisherReference(variance=np.zeros((0, gz2.N_ANSWERS)), parameter_sigma=[])
    work = functools.partial(_reference_chunk, morphologies, size, prior_variance(config))
    chunks = run_in_chunks(work, len(morphologies), _CHUNK, 0, processes)
    return FisherReference(
        variance=np.concatenate([c[0] for c in chunks]),
        parameter_sigma=[sigma for c in chunks for sigma in c[1]],
    )
