"""The truth population: synthetic galaxies with known orientation, in the cutout format.

Each galaxy is a :class:`~galpipe.synthetic.truth.TruthGalaxy` of the synthetic sky
(GalSim Sérsic profile convolved with a Moffat PSF, Poisson noise of the source, Gaussian sky
noise), with its fluxes rescaled to a drawn signal-to-noise ratio. It is rendered by the sky's
own FITS writer (:func:`~galpipe.synthetic.fitsfile.cutout_fits_bytes`: the bytes the cutout
service would send, WCS included) and decoded by the pipelines' decoder
(:func:`~galpipe.pipelines.stored_cutouts.decode_cutout`), so the images and the pixel-to-sky
Jacobians are exactly what production measures.

Signal-to-noise (the definition every table uses)
-------------------------------------------------
``S/N`` is the r band's, within the half-light aperture of the intrinsic (pre-PSF) profile
(:func:`galpipe.synthetic.truth.half_light_snr`, which the demo's catalogue uses too)::

    S/N = (F_r / 2) / (sigma_r * sqrt(pi * R_e^2 / p^2))

``F_r`` the r-band flux (nanomaggies), ``sigma_r`` the r-band sky noise per pixel (nanomaggies),
``R_e`` the half-light radius (arcsec; GalSim's ``shear(q)`` keeps the area, so the half-light
ellipse has area ``pi R_e^2``), ``p`` the pixel scale (arcsec/pixel). It is the background-limited
S/N of the light inside the half-light ellipse (half the flux, before the PSF); the source's own
Poisson noise is left out of the definition (it is in the images). The other bands follow by the
drawn colours and their own sky noise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from galpipe.pipelines.stored_cutouts import decode_cutout
from galpipe.survey.layout import BANDS, CUTOUT_SIZE_PX, PIXSCALE_ARCSEC
from galpipe.synthetic.catalog import make_truths
from galpipe.synthetic.fitsfile import cutout_fits_bytes
from galpipe.synthetic.truth import SkyConfig, TruthGalaxy, half_light_snr
from galpipe.validation.parallel import map_chunks

__all__ = [
    "PopulationConfig",
    "TruthPopulation",
    "draw_truths",
    "images_digest",
    "make_population",
    "render_neighbour_light",
    "render_population",
    "snr_half_light",
]

#: Galaxies rendered per task of the process pool.
_RENDER_CHUNK = 250
#: Mixed into the S/N draws so that they are independent of the catalogue's own streams.
_SNR_SALT = 0x5A1_0


@dataclass(frozen=True)
class PopulationConfig:
    """The distributions of the truth population (all stated in the report).

    Attributes
    ----------
    n : int
        Number of galaxies.
    seed : int
        Seeds the catalogue (ids, positions; each galaxy's shape is then seeded by its id) and
        the S/N draws.
    snr_range : tuple of float
        ``S/N`` (module docstring) is drawn log-uniform on this range.
    sky : SkyConfig
        Everything else: Sérsic index, half-light radius, axis ratio, colours, seeing, sky
        noise, neighbours (see :class:`~galpipe.synthetic.truth.SkyConfig`). Its ``r_mag``
        only fixes the colours' starting point: the fluxes are rescaled to the drawn S/N.
    size : int
        Stamp side, pixels.
    pixscale : float
        Arcsec per pixel.
    """

    n: int
    seed: int = 0
    snr_range: tuple[float, float] = (5.0, 200.0)
    sky: SkyConfig = field(default_factory=SkyConfig)
    size: int = CUTOUT_SIZE_PX
    pixscale: float = PIXSCALE_ARCSEC

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n={self.n}: the population needs at least one galaxy")
        low, high = self.snr_range
        if not 0 < low <= high:
            raise ValueError(f"snr_range={self.snr_range}: expected 0 < low <= high")

    def describe(self) -> dict[str, Any]:
        """Every distribution, in words and numbers, for the report and ``summary.json``."""
        sky = self.sky
        return {
            "n_galaxies": self.n,
            "seed": self.seed,
            "stamp": f"{self.size}x{self.size} pixels, {self.pixscale} arcsec/pixel, bands griz, "
            "north up, east left (the cutout service's FITS, decoded by the radon pipeline)",
            "snr": f"log-uniform on [{self.snr_range[0]:g}, {self.snr_range[1]:g}] (r band, "
            "half-light aperture, background-limited; see 'S/N definition')",
            "axis_ratio": f"q = b/a uniform on [{sky.axis_ratio[0]:g}, {sky.axis_ratio[1]:g}]",
            "position_angle": "uniform on [0, 180) deg east of north",
            "sersic_n": f"uniform on [{sky.sersic_n[0]:g}, {sky.sersic_n[1]:g}], on a 0.05 grid",
            "half_light_radius_arcsec": f"uniform on [{sky.half_light_radius_arcsec[0]:g}, "
            f"{sky.half_light_radius_arcsec[1]:g}] (geometric mean of the axes)",
            "psf": f"{sky.psf_model} (beta {sky.moffat_beta:g}), FWHM uniform on "
            f"[{sky.psf_fwhm_arcsec[0]:g}, {sky.psf_fwhm_arcsec[1]:g}] arcsec, same in all bands",
            "colours": f"g-r U{list(sky.g_minus_r)}, r-i U{list(sky.r_minus_i)}, "
            f"i-z U{list(sky.i_minus_z)} mag",
            "sky_noise_nmgy": {b: list(sky.sky_sigma_nmgy[b]) for b in BANDS},
            "source_noise": f"Poisson, gain {sky.gain_e_per_nmgy:g} e-/nanomaggy",
            "neighbours": f"with probability {sky.neighbour_fraction:g}: 1-{sky.max_neighbours} "
            f"neighbours, each a star with probability {sky.star_fraction:g} else a Sersic "
            f"galaxy; {sky.neighbour_offset_arcsec[0]:g}-{sky.neighbour_offset_arcsec[1]:g} "
            f"arcsec away, r magnitude {sky.neighbour_mag_offset[0]:+g} to "
            f"{sky.neighbour_mag_offset[1]:+g} relative to the galaxy",
            "snr_definition": "S/N = (F_r/2) / (sigma_r sqrt(pi R_e^2 / p^2)): half the r flux "
            "over the r sky noise in the intrinsic half-light ellipse",
        }


@dataclass(frozen=True)
class TruthPopulation:
    """The truth galaxies and their decoded cutouts, in one order.

    Attributes
    ----------
    truths : tuple of TruthGalaxy
        What was rendered (fluxes already rescaled to ``snr``).
    snr : numpy.ndarray
        ``(N,)`` S/N (module docstring).
    images : numpy.ndarray
        ``(N, 4, S, S)`` float32 cutouts, bands g, r, i, z, nanomaggies.
    jacobians : numpy.ndarray
        ``(N, 2, 2)`` pixel -> (east, north) Jacobians from each cutout's WCS, degrees/pixel.
    """

    truths: tuple[TruthGalaxy, ...]
    snr: np.ndarray
    images: np.ndarray
    jacobians: np.ndarray

    def __len__(self) -> int:
        return len(self.truths)

    @property
    def source_id(self) -> np.ndarray:
        """``(N,)`` int64 ids."""
        return np.array([t.source_id for t in self.truths], dtype=np.int64)

    @property
    def axis_ratio(self) -> np.ndarray:
        """``(N,)`` true ``q = b/a``."""
        return np.array([t.axis_ratio for t in self.truths])

    @property
    def position_angle_deg(self) -> np.ndarray:
        """``(N,)`` true position angle east of north, degrees in [0, 180)."""
        return np.array([t.position_angle_deg for t in self.truths])

    @property
    def n_neighbours(self) -> np.ndarray:
        """``(N,)`` number of stars and companions rendered with each galaxy."""
        return np.array([len(t.neighbours) for t in self.truths], dtype=np.int64)


def snr_half_light(truth: TruthGalaxy, pixscale: float = PIXSCALE_ARCSEC) -> float:
    """The galaxy's r-band S/N (:func:`galpipe.synthetic.truth.half_light_snr`)."""
    return half_light_snr(
        truth.flux["r"], truth.sky_sigma["r"], truth.half_light_radius_arcsec, pixscale
    )


def _scaled(truth: TruthGalaxy, factor: float) -> TruthGalaxy:
    """``truth`` with its and its neighbours' fluxes times ``factor`` (contrast kept)."""
    neighbours = tuple(
        dataclasses.replace(nb, flux={b: v * factor for b, v in nb.flux.items()})
        for nb in truth.neighbours
    )
    return dataclasses.replace(
        truth, flux={b: v * factor for b, v in truth.flux.items()}, neighbours=neighbours
    )


def draw_truths(config: PopulationConfig) -> tuple[list[TruthGalaxy], np.ndarray]:
    """The population's truths, fluxes rescaled to S/N drawn log-uniform on ``snr_range``.

    Returns
    -------
    truths : list of TruthGalaxy
    snr : numpy.ndarray
        ``(N,)`` the drawn S/N, equal to :func:`snr_half_light` of each truth.
    """
    truths = make_truths(config.n, seed=config.seed, config=config.sky)
    rng = np.random.default_rng(np.random.SeedSequence([_SNR_SALT, config.seed]))
    low, high = config.snr_range
    snr = np.exp(rng.uniform(math.log(low), math.log(high), size=config.n))
    scaled = [
        _scaled(truth, float(target) / snr_half_light(truth, config.pixscale))
        for truth, target in zip(truths, snr, strict=True)
    ]
    return scaled, snr


def _render_chunk(task: tuple[Sequence[TruthGalaxy], int, float]) -> tuple[np.ndarray, np.ndarray]:
    """Render, serialise and decode a chunk of truths (one process-pool task)."""
    truths, size, pixscale = task
    images = np.empty((len(truths), len(BANDS), size, size), dtype=np.float32)
    jacobians = np.empty((len(truths), 2, 2))
    for index, truth in enumerate(truths):
        decoded = decode_cutout(cutout_fits_bytes(truth, size, pixscale, BANDS), size, BANDS)
        images[index] = decoded.data
        jacobians[index] = decoded.jacobian
    return images, jacobians


def render_population(
    truths: Sequence[TruthGalaxy],
    size: int = CUTOUT_SIZE_PX,
    pixscale: float = PIXSCALE_ARCSEC,
    workers: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Cutouts ``(N, 4, S, S)`` float32 and Jacobians ``(N, 2, 2)`` of ``truths``.

    Each galaxy goes through the cutout service's FITS bytes and the radon pipeline's decoder.
    Deterministic: a galaxy's noise is seeded by its ``source_id``.
    """
    tasks = [
        (list(truths[start : start + _RENDER_CHUNK]), size, pixscale)
        for start in range(0, len(truths), _RENDER_CHUNK)
    ]
    parts = map_chunks(_render_chunk, tasks, workers)
    if not parts:
        return np.empty((0, len(BANDS), size, size), np.float32), np.empty((0, 2, 2))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _neighbour_light_chunk(task: tuple[Sequence[TruthGalaxy], int, float]) -> np.ndarray:
    """Render, serialise and decode the neighbours alone of a chunk of truths (one task)."""
    truths, size, pixscale = task
    light = np.zeros((len(truths), len(BANDS), size, size), dtype=np.float32)
    for index, truth in enumerate(truths):
        if not truth.neighbours:
            continue
        # The galaxy at zero flux: the same stamp, WCS and neighbours, its own light gone.
        alone = dataclasses.replace(truth, flux=dict.fromkeys(truth.flux, 0.0))
        fits = cutout_fits_bytes(alone, size, pixscale, BANDS, noise=False)
        light[index] = decode_cutout(fits, size, BANDS).data
    return light


def render_neighbour_light(
    truths: Sequence[TruthGalaxy],
    size: int = CUTOUT_SIZE_PX,
    pixscale: float = PIXSCALE_ARCSEC,
    workers: int = 1,
) -> np.ndarray:
    """The noiseless light of each galaxy's neighbours alone, ``(N, 4, S, S)`` float32.

    What an oracle that knew every neighbour exactly would subtract: each stamp rendered with
    the galaxy's own flux set to zero and no noise, through the cutout service's FITS bytes and
    the radon pipeline's decoder like :func:`render_population` (same frame, same float32
    rounding), in nanomaggies. All zero for an isolated galaxy.
    """
    tasks = [
        (list(truths[start : start + _RENDER_CHUNK]), size, pixscale)
        for start in range(0, len(truths), _RENDER_CHUNK)
    ]
    parts = map_chunks(_neighbour_light_chunk, tasks, workers)
    if not parts:
        return np.empty((0, len(BANDS), size, size), np.float32)
    return np.concatenate(parts)


def make_population(config: PopulationConfig, workers: int = 1) -> TruthPopulation:
    """Draw and render the truth population of ``config``."""
    truths, snr = draw_truths(config)
    images, jacobians = render_population(truths, config.size, config.pixscale, workers)
    return TruthPopulation(tuple(truths), snr, images, jacobians)


def images_digest(images: np.ndarray) -> str:
    """SHA-256 of a batch of images (shape, dtype and bytes): proves two methods saw one input."""
    array = np.ascontiguousarray(images)
    digest = hashlib.sha256(f"{array.shape}{array.dtype.str}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()
