"""Synthetic truth for pixel-level photo-z: bulge+disk galaxies at known redshift, their griz
cutouts and the spectroscopic catalogue of their redshifts.

The chain, each step a pure function of its inputs and a ``numpy.random.Generator``:

1. :func:`draw_photoz_galaxies` -- ``N`` galaxies (:class:`PhotozGalaxies`) from a
   :class:`PhotozConfig`: redshift, disk SED, bulge-to-total ratio, sizes, shapes, seeing, sky
   noise, S/N, position on the sky, and the griz flux of each component at its redshift.
2. :func:`render_photoz_galaxies` -- ``(N, 4, S, S)`` float32 griz stamps in nanomaggies, the
   per-pixel noise sigma of the same shape, and the noiseless total fluxes ``(N, 4)``
   (:class:`PhotozStamps`); :func:`photoz_model_images` is the noiseless part.
3. :func:`spectroscopic_catalog` -- the galaxies' true redshifts as the document's CasJobs query
   returns them: ``id, ra, dec, redshift, redshiftError, class``.

:func:`sample_photoz_sky` runs the chain in parallel chunks; :func:`photoz_truth_for` and
:func:`render_photoz_galaxy` draw and render one galaxy from nothing but its id, for a server.

Spectra and bandpasses
----------------------
The bulge has the CWW elliptical SED (``CWW_E_ext.sed``), the disk one of the CWW Sbc, Scd or
Im SEDs (:data:`DISK_SEDS`); the files are those GalSim ships (``galsim.meta_data.share_dir``,
Coleman, Wu & Weedman 1980, extended below 1400 A and beyond 10000 A by Bolzonella et al.
2000: 91 A to 22050 A, so griz stay covered at every redshift below 40). DECam's griz
transmission curves are not shipped with GalSim, so **LSST's g, r, i, z bandpasses stand in
for the Legacy Survey's griz** (similar edges; the colours differ from DECam's by a few
hundredths of a magnitude, which no test of the photo-z pipeline depends on). Zeropoints are
AB (``bandpass.withZeropoint("AB")``), so a flux in nanomaggies is ``10**(-0.4 (m_AB - 22.5))``.

Redshifting is GalSim's ``SED.atRedshift(z)``; band fluxes are ``SED.calculateFlux(bandpass)``,
computed exactly for every galaxy's own redshift (about 10 microseconds a band, no grid).

Rendering, and why it is exact
------------------------------
Each component's SED does not vary within the component, and the PSF is achromatic (one PSF
for all bands, as :class:`~galpipe.synthetic.truth.SkyConfig` has it). The image through a
bandpass of ``(bulge * SED_E + disk * SED_disk) (x) PSF`` is then, by linearity,
``F_bulge,b (bulge (x) PSF) + F_disk,b (disk (x) PSF)`` with ``F_c,b`` the flux of component
``c`` through band ``b`` -- exactly what GalSim's ``ChromaticObject.drawImage(bandpass)`` draws
for such objects. So each band is drawn as achromatic unit-flux bulge and disk templates
(two FFT convolutions per galaxy, shared by the four bands) scaled by those fluxes. The unit
tests check this against ``drawImage(bandpass)`` of the true chromatic object.

Distributions (:class:`PhotozConfig`)
-------------------------------------
- Redshift: ``p(z) ∝ z^2 exp(-(z / z0)^alpha)`` truncated to ``redshift_range`` (default
  (0.02, 1.2)), ``z0 = redshift_scale`` = 0.35, ``alpha = redshift_shape`` = 1.5 (the
  Smail et al. 1994 form, median about 0.5, a deep photometric survey's look). With
  ``u = (z / z0)^alpha`` it is a Gamma(3 / alpha) law in ``u``, drawn exactly by inverting its
  regularised incomplete gamma function between the truncation points.
- Bulge-to-total ``B/T``, the bulge's share of the **r-band** light: 0 (pure disk) with
  probability ``pure_disk_fraction``, 1 (pure spheroid) with ``pure_bulge_fraction``, else
  uniform on (0, 1). Its share in the other bands follows from the two SEDs.
- Disk SED: Sbc, Scd, Im with ``disk_sed_probabilities``; the bulge is always elliptical, so
  it is redder than its disk at every redshift and a composite galaxy has a colour gradient.
  Type, B/T and redshift are drawn independently.
- Sizes, seeing, sky noise and gain follow the radon validation population (as
  :mod:`~galpipe.synthetic.galaxy_zoo` draws them) from ``sky`` (a
  :class:`~galpipe.synthetic.truth.SkyConfig`): the galaxy's half-light radius ``R_e``
  uniform on ``sky.half_light_radius_arcsec`` (the disk's; the bulge's is
  ``R_e (s + (1 - s) B/T)`` with ``s = bulge_size_ratio``, so a small bulge sits inside its
  disk and a pure spheroid has the drawn radius), PSF FWHM uniform on
  ``sky.psf_fwhm_arcsec`` (``sky.psf_model``, same in all bands), sky noise per band uniform
  on ``sky.sky_sigma_nmgy``, gain ``sky.gain_e_per_nmgy``. Sizes and brightnesses carry **no
  redshift information** (no size-distance or flux-distance relation): colours and their
  gradients are the only clue, which is what a pixel-colour photo-z has to learn.
- Shapes: the disk is a thin oblate disk of intrinsic thickness ``disk_thickness`` at an
  isotropic inclination (``q = sqrt(q0^2 + (1 - q0^2) cos^2 i)``, ``cos i`` uniform); the bulge
  axis ratio is uniform on ``bulge_axis_ratio``; one position angle for both, uniform on
  [0, 180) degrees east of north.
- Flux: the r-band half-light S/N is log-uniform on ``snr_range`` (default (5, 200)) and fixes
  the total r flux by galpipe's definition
  (:func:`~galpipe.synthetic.truth.half_light_snr`): ``F_r = 2 S/N sigma_r sqrt(pi R_e^2 / p^2)``;
  the bulge has ``B/T F_r`` of it, the disk ``(1 - B/T) F_r``, and each component's g, i, z
  fluxes follow from its SED at the redshift.
- Position: uniform on the sphere within ``sky_patch`` (RA, Dec box, degrees; default the
  document's square degree 180 < RA < 181, 45 < Dec < 46).
- The catalogue's ``redshift`` is the true redshift and ``redshiftError`` is
  ``redshift_error (1 + z)`` (default 1e-4, SDSS's typical ``zErr``); spectroscopic errors are
  negligible next to any photo-z, so no scatter is added.

Noise (:func:`render_photoz_galaxies`)
--------------------------------------
As the other synthetic renderers: Poisson noise of the source at ``gain`` electrons per
nanomaggy plus Gaussian sky noise; the returned ``sigma`` is the true per-pixel standard
deviation ``sqrt(sky_sigma^2 + model / gain)`` of the noiseless model. Images are
``[b, row, col]``, row 0 south, column 0 east, the galaxy at the stamp centre, nanomaggies per
pixel at :data:`~galpipe.survey.layout.PIXSCALE_ARCSEC`.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field

import astropy.units as u
import galsim
import numpy as np
import numpy.typing as npt
from astropy.table import Table
from scipy import special

from galpipe.errors import ConfigurationError, InputError
from galpipe.survey.layout import BANDS, CUTOUT_SIZE_PX, PIXSCALE_ARCSEC

# The population's PSF is built as the Galaxy Zoo population builds it (one place for it).
from galpipe.synthetic.render import GSPARAMS, image_beta_deg, psf_profile
from galpipe.synthetic.rows import check_rows, concatenate_rows, run_in_chunks, take_rows
from galpipe.synthetic.truth import SkyConfig, half_light_snr

__all__ = [
    "BULGE_SED",
    "DISK_SEDS",
    "PHOTOZ_CHUNK",
    "SPEC_CLASS",
    "PhotozConfig",
    "PhotozConfigError",
    "PhotozGalaxies",
    "PhotozInputError",
    "PhotozSample",
    "PhotozStamps",
    "bandpass",
    "component_fluxes",
    "draw_photoz_galaxies",
    "photoz_model_images",
    "photoz_truth_for",
    "render_photoz_galaxies",
    "render_photoz_galaxy",
    "sample_photoz_sky",
    "sed",
    "spectroscopic_catalog",
]

#: The bulge's SED template (CWW elliptical).
BULGE_SED = "E"
#: The disk's SED templates, in the order of the codes of :attr:`PhotozGalaxies.disk_sed`.
DISK_SEDS: tuple[str, ...] = ("Sbc", "Scd", "Im")
#: The catalogue's ``class`` of every synthetic galaxy (SDSS's spectroscopic class).
SPEC_CLASS = "GALAXY"
#: Galaxies drawn and rendered from one child seed: the unit of parallel work, so a sample does
#: not depend on how many processes made it.
PHOTOZ_CHUNK = 256

_R = BANDS.index("r")
# Mixed into the seeds of photoz_truth_for and render_photoz_galaxy so that these streams
# cannot collide with the synthetic sky's (truth.py, render.py) for the same id.
_TRUTH_SALT = 0x9407_02
_NOISE_SALT = 0x9407_05


class PhotozConfigError(ConfigurationError, ValueError):
    """A :class:`PhotozConfig` field is out of range; the message names field and value."""


class PhotozInputError(InputError, ValueError):
    """An argument of the photo-z synthetic sky is unusable; the message names it."""


def _config_error(name: str, value: object, expected: str) -> PhotozConfigError:
    return PhotozConfigError(f"PhotozConfig.{name} = {value!r}: {expected}")


def _check_range(value: tuple[float, float], name: str, low: float, high: float) -> None:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise _config_error(name, value, "expected a (low, high) pair of numbers") from None
    if not (low <= a <= b <= high):
        raise _config_error(name, value, f"expected {low:g} <= low <= high <= {high:g}")


def _check_fraction(value: float, name: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise _config_error(name, value, "must be a probability in [0, 1]")


@dataclass(frozen=True)
class PhotozConfig:
    """The distributions :func:`draw_photoz_galaxies` draws from (module docstring).

    Attributes
    ----------
    redshift_range : tuple of float
        ``(low, high)`` truncation of the redshift law, ``0 <= low < high``.
    redshift_scale : float
        ``z0`` of ``p(z) ∝ z^2 exp(-(z / z0)^alpha)``, > 0.
    redshift_shape : float
        ``alpha`` of that law, > 0.
    disk_sed_probabilities : tuple of float
        Probabilities of the Sbc, Scd and Im disk SEDs (:data:`DISK_SEDS`); sum to 1.
    pure_disk_fraction, pure_bulge_fraction : float
        Probabilities of B/T = 0 and B/T = 1; the rest is uniform on (0, 1). Sum <= 1.
    disk_thickness : float
        Intrinsic axis ratio ``q0`` of a disk seen edge-on, in (0, 1).
    bulge_axis_ratio : tuple of float
        Projected axis ratio of the bulge, uniform, within (0, 1].
    bulge_size_ratio : float
        Bulge half-light radius over the galaxy's as B/T tends to 0, in (0, 1].
    snr_range : tuple of float
        r-band half-light S/N, log-uniform; ``0 < low <= high``.
    redshift_error : float
        The catalogue's ``redshiftError`` per ``(1 + z)``, >= 0.
    sky_patch : tuple of float
        ``(ra_min, ra_max, dec_min, dec_max)`` of the positions, degrees:
        ``0 <= ra_min < ra_max <= 360``, ``-90 <= dec_min < dec_max <= 90``.
    sky : SkyConfig
        Sizes, seeing and PSF, sky noise and gain (its Sérsic, magnitude, colour and
        neighbour ranges are not used).
    """

    redshift_range: tuple[float, float] = (0.02, 1.2)
    redshift_scale: float = 0.35
    redshift_shape: float = 1.5
    disk_sed_probabilities: tuple[float, float, float] = (0.4, 0.35, 0.25)
    pure_disk_fraction: float = 0.15
    pure_bulge_fraction: float = 0.15
    disk_thickness: float = 0.12
    bulge_axis_ratio: tuple[float, float] = (0.6, 1.0)
    bulge_size_ratio: float = 0.35
    snr_range: tuple[float, float] = (5.0, 200.0)
    redshift_error: float = 1e-4
    sky_patch: tuple[float, float, float, float] = (180.0, 181.0, 45.0, 46.0)
    sky: SkyConfig = field(default_factory=SkyConfig)

    def __post_init__(self) -> None:
        _check_range(self.redshift_range, "redshift_range", 0.0, math.inf)
        if not self.redshift_range[0] < self.redshift_range[1]:
            raise _config_error("redshift_range", self.redshift_range, "needs low < high")
        for name in ("redshift_scale", "redshift_shape"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise _config_error(name, value, "must be a finite number > 0")
        p = np.asarray(self.disk_sed_probabilities, dtype=np.float64)
        if p.shape != (len(DISK_SEDS),) or not np.all(np.isfinite(p)) or np.any(p < 0.0):
            raise _config_error(
                "disk_sed_probabilities",
                self.disk_sed_probabilities,
                f"expected {len(DISK_SEDS)} non-negative probabilities ({', '.join(DISK_SEDS)})",
            )
        if abs(float(p.sum()) - 1.0) > 1e-9:
            raise _config_error(
                "disk_sed_probabilities",
                self.disk_sed_probabilities,
                f"must sum to 1, they sum to {float(p.sum()):.9g}",
            )
        _check_fraction(self.pure_disk_fraction, "pure_disk_fraction")
        _check_fraction(self.pure_bulge_fraction, "pure_bulge_fraction")
        if self.pure_disk_fraction + self.pure_bulge_fraction > 1.0:
            raise _config_error(
                "pure_bulge_fraction",
                self.pure_bulge_fraction,
                f"with pure_disk_fraction = {self.pure_disk_fraction!r} sums above 1",
            )
        if not 0.0 < self.disk_thickness < 1.0:
            raise _config_error("disk_thickness", self.disk_thickness, "must be in (0, 1)")
        _check_range(self.bulge_axis_ratio, "bulge_axis_ratio", 1e-6, 1.0)
        if not 0.0 < self.bulge_size_ratio <= 1.0:
            raise _config_error("bulge_size_ratio", self.bulge_size_ratio, "must be in (0, 1]")
        _check_range(self.snr_range, "snr_range", 1e-12, math.inf)
        if not (math.isfinite(self.redshift_error) and self.redshift_error >= 0.0):
            raise _config_error("redshift_error", self.redshift_error, "must be finite and >= 0")
        patch = tuple(self.sky_patch)
        if (
            len(patch) != 4
            or not all(math.isfinite(v) for v in patch)
            or not 0.0 <= patch[0] < patch[1] <= 360.0
            or not -90.0 <= patch[2] < patch[3] <= 90.0
        ):
            raise _config_error(
                "sky_patch",
                self.sky_patch,
                "expected (ra_min, ra_max, dec_min, dec_max) in degrees with "
                "0 <= ra_min < ra_max <= 360 and -90 <= dec_min < dec_max <= 90",
            )
        if not isinstance(self.sky, SkyConfig):
            raise _config_error("sky", self.sky, "must be a galpipe SkyConfig")


@dataclass(frozen=True)
class PhotozGalaxies:
    """``N`` synthetic galaxies; every attribute an array with ``N`` rows (module docstring).

    Attributes
    ----------
    source_id : numpy.ndarray
        int64 ids (the catalogue's ``id``).
    ra, dec : numpy.ndarray
        Position, degrees (ICRS).
    redshift : numpy.ndarray
        True redshift.
    redshift_error : numpy.ndarray
        The catalogue's ``redshiftError``.
    disk_sed : numpy.ndarray
        int64 code into :data:`DISK_SEDS`.
    bulge_to_total : numpy.ndarray
        The bulge's share of the r-band light, [0, 1].
    half_light_radius_arcsec, bulge_half_light_radius_arcsec : numpy.ndarray
        Of the galaxy (its disk) and of its bulge, arcsec.
    disk_axis_ratio, bulge_axis_ratio : numpy.ndarray
        Projected ``b/a``.
    position_angle_deg : numpy.ndarray
        Major axes east of north, degrees in [0, 180).
    psf_fwhm_arcsec : numpy.ndarray
        Seeing, arcsec.
    moffat_beta : numpy.ndarray
        Moffat index of the PSF; NaN for a Gaussian PSF.
    snr : numpy.ndarray
        r-band half-light S/N.
    bulge_flux, disk_flux : numpy.ndarray
        ``(N, 4)`` griz flux of each component, nanomaggies.
    sky_sigma : numpy.ndarray
        ``(N, 4)`` griz Gaussian sky noise, nanomaggies per pixel.
    gain_e_per_nmgy : numpy.ndarray
        Electrons per nanomaggy.
    """

    source_id: npt.NDArray[np.int64]
    ra: npt.NDArray[np.float64]
    dec: npt.NDArray[np.float64]
    redshift: npt.NDArray[np.float64]
    redshift_error: npt.NDArray[np.float64]
    disk_sed: npt.NDArray[np.int64]
    bulge_to_total: npt.NDArray[np.float64]
    half_light_radius_arcsec: npt.NDArray[np.float64]
    bulge_half_light_radius_arcsec: npt.NDArray[np.float64]
    disk_axis_ratio: npt.NDArray[np.float64]
    bulge_axis_ratio: npt.NDArray[np.float64]
    position_angle_deg: npt.NDArray[np.float64]
    psf_fwhm_arcsec: npt.NDArray[np.float64]
    moffat_beta: npt.NDArray[np.float64]
    snr: npt.NDArray[np.float64]
    bulge_flux: npt.NDArray[np.float64]
    disk_flux: npt.NDArray[np.float64]
    sky_sigma: npt.NDArray[np.float64]
    gain_e_per_nmgy: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        check_rows(self, "source_id", PhotozInputError)
        if np.any((self.disk_sed < 0) | (self.disk_sed >= len(DISK_SEDS))):
            raise PhotozInputError(
                f"PhotozGalaxies.disk_sed: codes must be 0..{len(DISK_SEDS) - 1}"
            )

    def __len__(self) -> int:
        return len(self.source_id)

    @property
    def flux(self) -> npt.NDArray[np.float64]:
        """``(N, 4)`` griz total flux (bulge + disk), nanomaggies."""
        return np.asarray(self.bulge_flux + self.disk_flux)

    def take(self, index: npt.NDArray[np.integer] | npt.NDArray[np.bool_]) -> PhotozGalaxies:
        """The galaxies at ``index`` (integer indices or a boolean mask), in that order."""
        return take_rows(self, index)

    @staticmethod
    def concatenate(parts: list[PhotozGalaxies]) -> PhotozGalaxies:
        """The galaxies of ``parts`` one after the other."""
        return concatenate_rows(parts)


def _share_file(*parts: str) -> str:
    return os.path.join(galsim.meta_data.share_dir, *parts)


@functools.cache
def sed(template: str) -> galsim.SED:
    """A CWW SED template GalSim ships, at redshift 0 (``"E"`` or one of :data:`DISK_SEDS`).

    Raises
    ------
    PhotozInputError
        If ``template`` is not one of them.
    """
    if template not in (BULGE_SED, *DISK_SEDS):
        raise PhotozInputError(
            f"template = {template!r}: expected one of {(BULGE_SED, *DISK_SEDS)!r}"
        )
    # The files tabulate F_lambda against wavelength in Angstrom.
    return galsim.SED(_share_file("SEDs", f"CWW_{template}_ext.sed"), "Ang", "flambda")


@functools.cache
def bandpass(band: str) -> galsim.Bandpass:
    """The LSST bandpass standing in for the Legacy Survey's ``band`` (griz), AB zeropoint.

    Raises
    ------
    PhotozInputError
        If ``band`` is not one of g, r, i, z.
    """
    if len(band) != 1 or band not in BANDS:
        raise PhotozInputError(f"band = {band!r}: expected one of {BANDS!r}")
    # The files tabulate throughput against wavelength in nm.
    return galsim.Bandpass(_share_file("bandpasses", f"LSST_{band}.dat"), "nm").withZeropoint("AB")


def component_fluxes(template: str, redshift: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """griz flux of an SED template at each redshift, per nanomaggy of r-band flux.

    ``F_b / F_r`` with ``F_b = 10^(-0.4 (m_AB,b - 22.5))`` the AB flux in nanomaggies, computed
    exactly with GalSim (``SED.atRedshift(z).calculateMagnitude(bandpass)``), one redshift at a
    time: about 50 microseconds per redshift for the four bands.

    Parameters
    ----------
    template : str
        ``"E"`` or one of :data:`DISK_SEDS`.
    redshift : array_like
        ``(N,)`` redshifts, >= 0.

    Returns
    -------
    numpy.ndarray
        ``(N, 4)`` float64, column r exactly 1; ``-2.5 log10`` of it is the colour against r
        (e.g. ``g - r`` in column g).

    Raises
    ------
    PhotozInputError
        If a redshift is negative or not finite, or the template unknown.
    """
    z = np.atleast_1d(np.asarray(redshift, dtype=np.float64))
    if z.ndim != 1 or not np.all(np.isfinite(z)) or np.any(z < 0.0):
        raise PhotozInputError(
            f"redshift: expected a 1-d array of finite redshifts >= 0, got shape {z.shape}"
        )
    rest = sed(template)
    bands = [bandpass(b) for b in BANDS]
    out = np.empty((len(z), len(BANDS)))
    for k, zk in enumerate(z):
        shifted = rest.atRedshift(float(zk))
        mags = np.array([shifted.calculateMagnitude(bp) for bp in bands])
        out[k] = 10.0 ** (-0.4 * (mags - mags[_R]))
    return out


def _uniform(
    rng: np.random.Generator, bounds: tuple[float, float], n: int
) -> npt.NDArray[np.float64]:
    return rng.uniform(bounds[0], bounds[1], size=n)


def _redshifts(config: PhotozConfig, rng: np.random.Generator, n: int) -> npt.NDArray[np.float64]:
    """``n`` draws of the truncated ``z^2 exp(-(z/z0)^alpha)`` law by inverse CDF."""
    z0, alpha = config.redshift_scale, config.redshift_shape
    shape = 3.0 / alpha  # u = (z / z0)^alpha is Gamma(3 / alpha)
    lo, hi = (special.gammainc(shape, (z / z0) ** alpha) for z in config.redshift_range)
    u = special.gammaincinv(shape, rng.uniform(lo, hi, size=n))
    # Rounding at the CDF's flat ends can step a hair outside the truncation.
    return np.clip(z0 * u ** (1.0 / alpha), *config.redshift_range)


def _check_count(n: object, what: str, minimum: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < minimum:
        raise PhotozInputError(f"{what} = {n!r}: must be an integer >= {minimum}")
    return int(n)


def draw_photoz_galaxies(
    n: int, config: PhotozConfig, rng: np.random.Generator, *, start_id: int = 1
) -> PhotozGalaxies:
    """Draw ``n`` galaxies from ``config`` (distributions in the module docstring).

    Every parameter is drawn for every galaxy, in a fixed order, so one seed gives one
    population; the component fluxes then follow from GalSim's SEDs without randomness.

    Parameters
    ----------
    n : int
        Number of galaxies, >= 0.
    config : PhotozConfig
        The distributions.
    rng : numpy.random.Generator
        The only source of randomness.
    start_id : int
        The first galaxy's ``source_id``; the others follow consecutively. >= 0.

    Returns
    -------
    PhotozGalaxies

    Raises
    ------
    PhotozInputError
        If ``n`` or ``start_id`` is not a non-negative integer.
    """
    n = _check_count(n, "n", 0)
    start_id = _check_count(start_id, "start_id", 0)
    sky = config.sky
    z = _redshifts(config, rng, n)
    disk_sed = rng.choice(len(DISK_SEDS), size=n, p=np.asarray(config.disk_sed_probabilities))
    kind = rng.uniform(size=n)  # pure disk, pure bulge or composite
    bt = np.where(
        kind < config.pure_disk_fraction,
        0.0,
        np.where(
            kind < config.pure_disk_fraction + config.pure_bulge_fraction,
            1.0,
            rng.uniform(0.0, 1.0, size=n),
        ),
    )
    hlr = _uniform(rng, sky.half_light_radius_arcsec, n)
    s = config.bulge_size_ratio
    q0 = config.disk_thickness
    cos_i = rng.uniform(0.0, 1.0, size=n)
    disk_q = np.sqrt(q0**2 + (1.0 - q0**2) * cos_i**2)
    bulge_q = _uniform(rng, config.bulge_axis_ratio, n)
    pa = rng.uniform(0.0, 180.0, size=n)
    fwhm = _uniform(rng, sky.psf_fwhm_arcsec, n)
    sky_sigma = np.stack([_uniform(rng, sky.sky_sigma_nmgy[b], n) for b in BANDS], axis=1)
    low, high = config.snr_range
    snr = np.exp(rng.uniform(math.log(low), math.log(high), size=n))
    ra_min, ra_max, dec_min, dec_max = config.sky_patch
    ra = _uniform(rng, (ra_min, ra_max), n)
    # Uniform on the sphere: sin(dec) is uniform.
    sin_dec = _uniform(rng, (math.sin(math.radians(dec_min)), math.sin(math.radians(dec_max))), n)
    dec = np.degrees(np.arcsin(sin_dec))

    # S/N -> total r flux by galpipe's half-light definition, which is linear in the flux.
    r_flux = snr / half_light_snr(1.0, sky_sigma[:, _R], hlr, PIXSCALE_ARCSEC)
    bulge_colour = component_fluxes(BULGE_SED, z)
    disk_colour = np.empty((n, len(BANDS)))
    for code, template in enumerate(DISK_SEDS):
        mask = disk_sed == code
        if np.any(mask):
            disk_colour[mask] = component_fluxes(template, z[mask])
    beta = sky.moffat_beta if sky.psf_model == "moffat" else math.nan
    return PhotozGalaxies(
        source_id=np.arange(start_id, start_id + n, dtype=np.int64),
        ra=ra,
        dec=dec,
        redshift=z,
        redshift_error=config.redshift_error * (1.0 + z),
        disk_sed=disk_sed.astype(np.int64),
        bulge_to_total=bt,
        half_light_radius_arcsec=hlr,
        bulge_half_light_radius_arcsec=hlr * (s + (1.0 - s) * bt),
        disk_axis_ratio=disk_q,
        bulge_axis_ratio=bulge_q,
        position_angle_deg=pa,
        psf_fwhm_arcsec=fwhm,
        moffat_beta=np.full(n, beta),
        snr=snr,
        bulge_flux=(bt * r_flux)[:, None] * bulge_colour,
        disk_flux=((1.0 - bt) * r_flux)[:, None] * disk_colour,
        sky_sigma=sky_sigma,
        gain_e_per_nmgy=np.full(n, float(sky.gain_e_per_nmgy)),
    )


def _profiles(g: PhotozGalaxies, i: int) -> tuple[galsim.GSObject, galsim.GSObject]:
    """Unit-flux bulge and disk of galaxy ``i``, major axes at its position angle."""
    turn = image_beta_deg(float(g.position_angle_deg[i])) * galsim.degrees
    bulge = galsim.DeVaucouleurs(
        half_light_radius=float(g.bulge_half_light_radius_arcsec[i]), gsparams=GSPARAMS
    ).shear(q=float(g.bulge_axis_ratio[i]), beta=turn)
    disk = galsim.Exponential(
        half_light_radius=float(g.half_light_radius_arcsec[i]), gsparams=GSPARAMS
    ).shear(q=float(g.disk_axis_ratio[i]), beta=turn)
    return bulge, disk


def _check_size(size: object) -> int:
    return _check_count(size, "size", 1)


def photoz_model_images(
    galaxies: PhotozGalaxies, size: int = CUTOUT_SIZE_PX
) -> npt.NDArray[np.float64]:
    """Noiseless PSF-convolved griz stamps: ``F_bulge,b (bulge (x) PSF) + F_disk,b (disk (x) PSF)``.

    Exactly the image GalSim's ``drawImage(bandpass)`` draws of the chromatic object
    ``(bulge * SED_E + disk * SED_disk) (x) PSF`` in nanomaggies (module docstring); a component
    with no flux is not drawn.

    Parameters
    ----------
    galaxies : PhotozGalaxies
        The galaxies.
    size : int
        Stamp side, pixels, >= 1.

    Returns
    -------
    numpy.ndarray
        float64 ``(N, 4, size, size)``, nanomaggies per pixel, ``[b, row, col]``, row 0 south,
        column 0 east, each galaxy at its stamp centre.

    Raises
    ------
    PhotozInputError
        If ``size`` is not a positive integer.
    """
    size = _check_size(size)
    g = galaxies
    out = np.zeros((len(g), len(BANDS), size, size))
    image = galsim.ImageD(size, size, scale=PIXSCALE_ARCSEC)
    for i in range(len(g)):
        psf = psf_profile(float(g.psf_fwhm_arcsec[i]), float(g.moffat_beta[i]))
        for profile, flux in zip(_profiles(g, i), (g.bulge_flux[i], g.disk_flux[i]), strict=True):
            if np.any(flux > 0.0):
                galsim.Convolve(profile, psf).drawImage(image=image)
                out[i] += flux[:, None, None] * image.array[None, :, :]
    return out


@dataclass(frozen=True)
class PhotozStamps:
    """Rendered cutouts of ``N`` galaxies.

    Attributes
    ----------
    images : numpy.ndarray
        float32 ``(N, 4, S, S)`` griz, nanomaggies per pixel, with noise.
    sigma : numpy.ndarray
        float32 ``(N, 4, S, S)`` the true noise standard deviation of each pixel,
        ``sqrt(sky_sigma^2 + model / gain)``, nanomaggies.
    flux : numpy.ndarray
        float64 ``(N, 4)`` noiseless total griz flux of each galaxy (all of it, also what falls
        outside the stamp), nanomaggies.
    """

    images: npt.NDArray[np.float32]
    sigma: npt.NDArray[np.float32]
    flux: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.images)


def render_photoz_galaxies(
    galaxies: PhotozGalaxies,
    rng: np.random.Generator,
    size: int = CUTOUT_SIZE_PX,
) -> PhotozStamps:
    """griz cutouts of the galaxies with source Poisson and Gaussian sky noise.

    Parameters
    ----------
    galaxies : PhotozGalaxies
        The galaxies.
    rng : numpy.random.Generator
        Draws the noise: the same seed gives the same stamps.
    size : int
        Stamp side, pixels, >= 1.

    Returns
    -------
    PhotozStamps

    Raises
    ------
    PhotozInputError
        If ``size`` is not a positive integer or ``rng`` is not a Generator.
    """
    if not isinstance(rng, np.random.Generator):
        raise PhotozInputError("rng: render_photoz_galaxies needs a numpy.random.Generator")
    model = np.clip(photoz_model_images(galaxies, size), 0.0, None)
    gain = galaxies.gain_e_per_nmgy[:, None, None, None]
    sky = galaxies.sky_sigma[:, :, None, None]
    noisy = rng.poisson(model * gain) / gain + rng.normal(0.0, 1.0, model.shape) * sky
    return PhotozStamps(
        images=noisy.astype(np.float32),
        sigma=np.sqrt(sky**2 + model / gain).astype(np.float32),
        flux=galaxies.flux,
    )


def spectroscopic_catalog(galaxies: PhotozGalaxies) -> Table:
    """The galaxies' spectroscopic redshifts, with the columns of the document's CasJobs query.

    Returns
    -------
    astropy.table.Table
        ``id`` (int64), ``ra``, ``dec`` (deg), ``redshift``, ``redshiftError`` (the true
        redshift and its nominal error, module docstring) and ``class`` (``"GALAXY"``), one
        row per galaxy in order.
    """
    g = galaxies
    return Table(
        [
            np.asarray(g.source_id, dtype=np.int64),
            np.asarray(g.ra) * u.deg,
            np.asarray(g.dec) * u.deg,
            np.asarray(g.redshift),
            np.asarray(g.redshift_error),
            np.full(len(g), SPEC_CLASS),
        ],
        names=("id", "ra", "dec", "redshift", "redshiftError", "class"),
        meta={"description": "synthetic spectroscopic redshifts (galpipe photo-z sky)"},
    )


@dataclass(frozen=True)
class PhotozSample:
    """A synthetic photo-z training or test set: galaxies and their cutouts.

    Attributes
    ----------
    galaxies : PhotozGalaxies
        The truth (redshifts in ``galaxies.redshift``, ids in ``galaxies.source_id``).
    stamps : PhotozStamps
        Their cutouts, per-pixel sigma and noiseless total fluxes.
    """

    galaxies: PhotozGalaxies
    stamps: PhotozStamps

    def __len__(self) -> int:
        return len(self.galaxies)

    def catalog(self) -> Table:
        """The spectroscopic catalogue (:func:`spectroscopic_catalog`)."""
        return spectroscopic_catalog(self.galaxies)


def _sample_chunk(
    config: PhotozConfig,
    start_id: int,
    size: int,
    first: int,
    n: int,
    seed: np.random.SeedSequence,
) -> tuple[PhotozGalaxies, PhotozStamps]:
    rng = np.random.default_rng(seed)
    galaxies = draw_photoz_galaxies(n, config, rng, start_id=start_id + first)
    return galaxies, render_photoz_galaxies(galaxies, rng, size)


def sample_photoz_sky(
    n: int,
    config: PhotozConfig | None = None,
    *,
    seed: int = 0,
    start_id: int = 1,
    size: int = CUTOUT_SIZE_PX,
    processes: int = 1,
) -> PhotozSample:
    """Draw and render ``n`` galaxies at known redshift.

    Work is split in chunks of :data:`PHOTOZ_CHUNK` galaxies, each from its own child of
    ``seed`` (``numpy.random.SeedSequence.spawn``), so the sample is the same whatever
    ``processes`` is.

    Parameters
    ----------
    n : int
        Galaxies, >= 1.
    config : PhotozConfig, optional
        The distributions; the default when omitted.
    seed : int
        Root seed.
    start_id : int
        The first galaxy's id; ids run ``start_id .. start_id + n - 1``.
    size : int
        Stamp side, pixels.
    processes : int
        Worker processes rendering chunks in parallel (1: in this process).

    Raises
    ------
    PhotozInputError
        If ``n``, ``processes``, ``size`` or ``start_id`` is out of range.
    """
    n = _check_count(n, "n", 1)
    processes = _check_count(processes, "processes", 1)
    size = _check_size(size)
    start_id = _check_count(start_id, "start_id", 0)
    config = config or PhotozConfig()
    work = functools.partial(_sample_chunk, config, start_id, size)
    chunks = run_in_chunks(work, n, PHOTOZ_CHUNK, seed, processes)
    return PhotozSample(
        galaxies=concatenate_rows([c[0] for c in chunks]),
        stamps=concatenate_rows([c[1] for c in chunks]),
    )


def photoz_truth_for(source_id: int, config: PhotozConfig | None = None) -> PhotozGalaxies:
    """The galaxy ``source_id`` of the photo-z sky, drawn from its id alone (one row).

    Like :func:`galpipe.synthetic.truth.truth_for`: the same ``(source_id, config)`` gives the
    same galaxy on any machine, in any process, in any order (a stream of its own, so it is not
    the galaxy with this id in a :func:`sample_photoz_sky` sample). The position is drawn in
    ``config.sky_patch``.

    Raises
    ------
    PhotozInputError
        If ``source_id`` is not a non-negative integer.
    """
    source_id = _check_count(source_id, "source_id", 0)
    rng = np.random.default_rng(np.random.SeedSequence([_TRUTH_SALT, source_id]))
    return draw_photoz_galaxies(1, config or PhotozConfig(), rng, start_id=source_id)


def render_photoz_galaxy(truth: PhotozGalaxies, size: int = CUTOUT_SIZE_PX) -> PhotozStamps:
    """Render one galaxy (from :func:`photoz_truth_for`) with noise seeded by its id.

    Raises
    ------
    PhotozInputError
        If ``truth`` does not hold exactly one galaxy, or ``size`` is out of range.
    """
    if len(truth) != 1:
        raise PhotozInputError(f"truth: expected one galaxy, got {len(truth)}")
    seed = np.random.SeedSequence([_NOISE_SALT, int(truth.source_id[0])])
    return render_photoz_galaxies(truth, np.random.default_rng(seed), size)
