"""The truth of a synthetic galaxy, drawn from a seed that is its ``source_id``.

Everything about a galaxy -- its Sérsic profile, shape, position angle, fluxes, seeing, noise
and neighbours -- follows from ``(source_id, SkyConfig)`` alone, so the same id always renders
the same galaxy, on any machine, in any process, in any order.

Conventions
-----------
- Position angles (of the galaxy and of companion galaxies) are **east of north**, degrees in
  ``[0, 180)``: 0 = major axis along north, 90 = along east.
- Fluxes are in **nanomaggies** (AB magnitude ``m = 22.5 - 2.5 log10(flux)``).
- Neighbour offsets are on the tangent plane at the galaxy, in **arcseconds**: ``east`` is
  ``(ra_nb - ra) * cos(dec)``, ``north`` is ``dec_nb - dec``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt

from galpipe.survey.layout import BANDS

__all__ = [
    "Neighbour",
    "SkyConfig",
    "TruthGalaxy",
    "half_light_snr",
    "source_id_for_position",
    "truth_for",
]

# Mixed into every seed so that the truth stream cannot collide with another use of the id.
_TRUTH_SALT = 0x6A1_5E7
# Sérsic indices are drawn on this grid: GalSim tabulates each distinct index once (about
# 8 ms), so a grid keeps rendering at about 1 ms a galaxy.
SERSIC_STEP = 0.05

PsfModel = Literal["moffat", "gaussian"]
NeighbourKind = Literal["star", "galaxy"]


@dataclass(frozen=True)
class SkyConfig:
    """The distributions truths are drawn from; every range is ``(low, high)``, uniform.

    Attributes
    ----------
    sersic_n : tuple of float
        Sérsic index (dimensionless); GalSim accepts 0.3 to 6.2.
    half_light_radius_arcsec : tuple of float
        Half-light radius along the geometric mean of the axes, arcsec.
    axis_ratio : tuple of float
        Minor over major axis, ``q = b/a``.
    r_mag : tuple of float
        r-band AB magnitude of the galaxy.
    g_minus_r, r_minus_i, i_minus_z : tuple of float
        Colours, AB magnitudes.
    psf_fwhm_arcsec : tuple of float
        Seeing, full width at half maximum, arcsec (one PSF for all bands).
    psf_model : {"moffat", "gaussian"}
        PSF profile.
    moffat_beta : float
        Moffat power-law index.
    sky_sigma_nmgy : dict
        Per band ``(low, high)`` of the Gaussian sky noise, nanomaggies per pixel.
    gain_e_per_nmgy : float
        Electrons per nanomaggy; sets the Poisson noise of the sources.
    neighbour_fraction : float
        Probability that a galaxy has neighbours at all.
    max_neighbours : int
        A galaxy with neighbours has 1 to this many.
    star_fraction : float
        Probability that a neighbour is a star (else a companion galaxy).
    neighbour_offset_arcsec : tuple of float
        Distance of a neighbour from the galaxy, arcsec (uniform in distance and direction).
    neighbour_mag_offset : tuple of float
        Neighbour r magnitude minus the galaxy's r magnitude.
    """

    sersic_n: tuple[float, float] = (0.5, 4.0)
    half_light_radius_arcsec: tuple[float, float] = (0.6, 2.5)
    axis_ratio: tuple[float, float] = (0.2, 1.0)
    r_mag: tuple[float, float] = (16.5, 19.5)
    g_minus_r: tuple[float, float] = (0.3, 1.0)
    r_minus_i: tuple[float, float] = (0.1, 0.5)
    i_minus_z: tuple[float, float] = (0.0, 0.4)
    psf_fwhm_arcsec: tuple[float, float] = (1.0, 1.6)
    psf_model: PsfModel = "moffat"
    moffat_beta: float = 3.5
    sky_sigma_nmgy: dict[str, tuple[float, float]] = field(
        default_factory=lambda: {
            "g": (0.003, 0.008),
            "r": (0.004, 0.010),
            "i": (0.006, 0.015),
            "z": (0.008, 0.020),
        }
    )
    gain_e_per_nmgy: float = 1000.0
    neighbour_fraction: float = 0.3
    max_neighbours: int = 3
    star_fraction: float = 0.5
    neighbour_offset_arcsec: tuple[float, float] = (3.0, 7.0)
    neighbour_mag_offset: tuple[float, float] = (-0.5, 3.0)

    def __post_init__(self) -> None:
        for name in (
            "sersic_n",
            "half_light_radius_arcsec",
            "axis_ratio",
            "r_mag",
            "psf_fwhm_arcsec",
            "neighbour_offset_arcsec",
        ):
            low, high = getattr(self, name)
            if not low <= high:
                raise ValueError(f"SkyConfig.{name}: low {low} > high {high}")
        if self.sersic_n[0] < 0.3 or self.sersic_n[1] > 6.2:
            raise ValueError(f"SkyConfig.sersic_n: {self.sersic_n} outside GalSim's 0.3-6.2")
        if not 0.0 < self.axis_ratio[0] <= self.axis_ratio[1] <= 1.0:
            raise ValueError(f"SkyConfig.axis_ratio: {self.axis_ratio} must lie in (0, 1]")
        if not 0.0 <= self.neighbour_fraction <= 1.0:
            raise ValueError(
                f"SkyConfig.neighbour_fraction: {self.neighbour_fraction} not in [0, 1]"
            )
        if self.psf_model not in ("moffat", "gaussian"):
            raise ValueError(f"SkyConfig.psf_model: {self.psf_model!r} is not moffat or gaussian")
        missing = set(BANDS) - set(self.sky_sigma_nmgy)
        if missing:
            raise ValueError(f"SkyConfig.sky_sigma_nmgy: no noise range for band(s) {missing}")


@dataclass(frozen=True)
class Neighbour:
    """A star or companion galaxy near a synthetic galaxy.

    Attributes
    ----------
    kind : {"star", "galaxy"}
        A point source (drawn as the PSF) or a Sérsic galaxy.
    east_arcsec, north_arcsec : float
        Offset from the galaxy on the tangent plane, arcsec.
    flux : dict
        Flux per band, nanomaggies.
    sersic_n, half_light_radius_arcsec, axis_ratio, position_angle_deg : float
        Profile of a companion galaxy (position angle east of north, degrees); 0 for a star.
    """

    kind: NeighbourKind
    east_arcsec: float
    north_arcsec: float
    flux: dict[str, float]
    sersic_n: float = 0.0
    half_light_radius_arcsec: float = 0.0
    axis_ratio: float = 1.0
    position_angle_deg: float = 0.0


@dataclass(frozen=True)
class TruthGalaxy:
    """Everything needed to render one synthetic galaxy, and what a measurement should find.

    Attributes
    ----------
    source_id : int
        The galaxy's id; it seeds every random draw of this galaxy.
    ra, dec : float
        Position, degrees (ICRS).
    sersic_n : float
        Sérsic index.
    half_light_radius_arcsec : float
        Half-light radius, arcsec.
    axis_ratio : float
        ``q = b/a``.
    position_angle_deg : float
        Major-axis position angle east of north, degrees in ``[0, 180)``.
    flux : dict
        Flux per band (``g``, ``r``, ``i``, ``z``), nanomaggies.
    psf_fwhm_arcsec : float
        Seeing FWHM, arcsec.
    psf_model : {"moffat", "gaussian"}
        PSF profile.
    moffat_beta : float
        Moffat index (used when ``psf_model`` is ``"moffat"``).
    sky_sigma : dict
        Gaussian sky noise per band, nanomaggies per pixel.
    gain_e_per_nmgy : float
        Electrons per nanomaggy (Poisson noise of the sources).
    neighbours : tuple of Neighbour
        Stars and companion galaxies around it.
    """

    source_id: int
    ra: float
    dec: float
    sersic_n: float
    half_light_radius_arcsec: float
    axis_ratio: float
    position_angle_deg: float
    flux: dict[str, float]
    psf_fwhm_arcsec: float
    psf_model: PsfModel
    moffat_beta: float
    sky_sigma: dict[str, float]
    gain_e_per_nmgy: float
    neighbours: tuple[Neighbour, ...] = ()

    def neighbours_json(self) -> str:
        """The neighbours as a JSON array (how the catalogue stores them)."""
        return json.dumps([asdict(nb) for nb in self.neighbours], sort_keys=True)

    @staticmethod
    def neighbours_from_json(text: str) -> tuple[Neighbour, ...]:
        """Inverse of :meth:`neighbours_json`."""
        items: list[dict[str, Any]] = json.loads(text) if text else []
        return tuple(Neighbour(**item) for item in items)


def _truth_rng(source_id: int) -> np.random.Generator:
    if source_id < 0:
        raise ValueError(f"source_id {source_id}: must be a non-negative integer")
    # The 0 is the seed's stream index; it stays so that every id keeps drawing the galaxy it
    # always drew.
    return np.random.default_rng(np.random.SeedSequence([_TRUTH_SALT, 0, int(source_id)]))


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _fluxes(r_mag: float, rng: np.random.Generator, config: SkyConfig) -> dict[str, float]:
    g = r_mag + _uniform(rng, config.g_minus_r)
    i = r_mag - _uniform(rng, config.r_minus_i)
    z = i - _uniform(rng, config.i_minus_z)
    mags = {"g": g, "r": r_mag, "i": i, "z": z}
    return {band: 10.0 ** ((22.5 - mags[band]) / 2.5) for band in BANDS}


def _sersic_index(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    value = round(_uniform(rng, bounds) / SERSIC_STEP) * SERSIC_STEP
    return round(min(max(value, bounds[0]), bounds[1]), 4)


def _neighbours(rng: np.random.Generator, r_mag: float, config: SkyConfig) -> tuple[Neighbour, ...]:
    # Neighbours are drawn last from the galaxy's stream, so the fraction never changes the
    # galaxy itself: the same id keeps its shape whatever the neighbour settings.
    has_neighbours = rng.uniform() < config.neighbour_fraction
    count = int(rng.integers(1, max(config.max_neighbours, 1) + 1))
    if not has_neighbours:
        return ()
    result = []
    for _ in range(count):
        is_star = rng.uniform() < config.star_fraction
        distance = _uniform(rng, config.neighbour_offset_arcsec)
        direction = rng.uniform(0.0, 2.0 * math.pi)
        mag = r_mag + _uniform(rng, config.neighbour_mag_offset)
        flux = _fluxes(mag, rng, config)
        n = _sersic_index(rng, config.sersic_n)
        hlr = _uniform(rng, (config.half_light_radius_arcsec[0], 1.2))
        q = _uniform(rng, config.axis_ratio)
        pa = float(rng.uniform(0.0, 180.0))
        common = {
            "east_arcsec": round(distance * math.sin(direction), 4),
            "north_arcsec": round(distance * math.cos(direction), 4),
            "flux": flux,
        }
        if is_star:
            result.append(Neighbour(kind="star", **common))  # type: ignore[arg-type]
        else:
            result.append(
                Neighbour(
                    kind="galaxy",
                    sersic_n=n,
                    half_light_radius_arcsec=hlr,
                    axis_ratio=q,
                    position_angle_deg=pa,
                    **common,  # type: ignore[arg-type]
                )
            )
    return tuple(result)


def truth_for(
    source_id: int, ra: float, dec: float, config: SkyConfig | None = None
) -> TruthGalaxy:
    """The truth of galaxy ``source_id`` at ``(ra, dec)``.

    Parameters
    ----------
    source_id : int
        Non-negative id; the only source of randomness.
    ra, dec : float
        Where the galaxy is, degrees; recorded, never used as a seed.
    config : SkyConfig, optional
        The distributions; the default when omitted.

    Returns
    -------
    TruthGalaxy
        The same value for the same ``(source_id, config)``, always.
    """
    config = config or SkyConfig()
    rng = _truth_rng(source_id)
    sersic_n = _sersic_index(rng, config.sersic_n)
    hlr = _uniform(rng, config.half_light_radius_arcsec)
    q = _uniform(rng, config.axis_ratio)
    pa = float(rng.uniform(0.0, 180.0)) % 180.0
    r_mag = _uniform(rng, config.r_mag)
    flux = _fluxes(r_mag, rng, config)
    fwhm = _uniform(rng, config.psf_fwhm_arcsec)
    sky_sigma = {band: _uniform(rng, config.sky_sigma_nmgy[band]) for band in BANDS}
    neighbours = _neighbours(rng, r_mag, config)
    return TruthGalaxy(
        source_id=int(source_id),
        ra=float(ra),
        dec=float(dec),
        sersic_n=sersic_n,
        half_light_radius_arcsec=hlr,
        axis_ratio=q,
        position_angle_deg=pa,
        flux=flux,
        psf_fwhm_arcsec=fwhm,
        psf_model=config.psf_model,
        moffat_beta=config.moffat_beta,
        sky_sigma=sky_sigma,
        gain_e_per_nmgy=config.gain_e_per_nmgy,
        neighbours=neighbours,
    )


@overload
def half_light_snr(
    flux: float, sky_sigma: float, half_light_radius_arcsec: float, pixscale_arcsec: float
) -> float: ...


@overload
def half_light_snr(
    flux: float | npt.NDArray[np.float64],
    sky_sigma: float | npt.NDArray[np.float64],
    half_light_radius_arcsec: npt.NDArray[np.float64],
    pixscale_arcsec: float,
) -> npt.NDArray[np.float64]: ...


def half_light_snr(
    flux: float | npt.NDArray[np.float64],
    sky_sigma: float | npt.NDArray[np.float64],
    half_light_radius_arcsec: float | npt.NDArray[np.float64],
    pixscale_arcsec: float,
) -> float | npt.NDArray[np.float64]:
    """The signal-to-noise ratio of a galaxy, as every S/N of galpipe is defined.

    ``S/N = (F / 2) / (sigma * sqrt(pi * R_e^2 / p^2))``: half the flux ``F`` over the sky noise
    ``sigma`` (per pixel, the same units as ``F``) summed over the intrinsic (pre-PSF)
    half-light aperture of radius ``R_e`` (arcsec; GalSim's ``shear(q)`` keeps the area, so the
    half-light ellipse has area ``pi R_e^2``) at ``p`` arcsec per pixel. It is background-limited:
    the source's own Poisson noise is left out of the definition (it is in the images). Linear
    in ``F``, so the flux of a given S/N is ``S/N / half_light_snr(1, ...)``.

    Parameters
    ----------
    flux, sky_sigma : float or numpy.ndarray
        The band's flux and sky noise per pixel (nanomaggies in the synthetic sky); galpipe's
        tables use the r band.
    half_light_radius_arcsec : float or numpy.ndarray
        ``R_e``, arcsec.
    pixscale_arcsec : float
        Arcseconds per pixel.

    Returns
    -------
    float or numpy.ndarray
        Dimensionless; an array (broadcast) when the radius is one.
    """
    aperture_px = math.pi * np.square(np.divide(half_light_radius_arcsec, pixscale_arcsec))
    snr = 0.5 * np.asarray(flux) / (np.asarray(sky_sigma) * np.sqrt(aperture_px))
    return float(snr) if np.ndim(snr) == 0 else snr


def source_id_for_position(ra: float, dec: float) -> int:
    """A stable pseudo id for an uncatalogued position (coordinates rounded to 1e-4 degree).

    Returns
    -------
    int
        A non-negative 63-bit integer; the same for every position in one 1e-4 degree cell.
    """
    key = f"{round(ra % 360.0, 4):.4f},{round(dec, 4):.4f}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") >> 1
