"""Render a synthetic galaxy into a multi-band cutout with GalSim.

Image convention (the same as the Legacy Surveys cutouts): ``cube[b, row, col]`` with row 0 =
FITS pixel ``y = 1`` (south, bottom) and column 0 = ``x = 1`` (east, left); north is up and
east is left, so sky offsets map to pixels as ``dx = -east / pixscale``, ``dy = +north /
pixscale``. GalSim's ``Image.array[row, col]`` already has row 0 = ``y = 1``, so its arrays are
used as they come.

Position angle: GalSim's ``shear(q, beta)`` puts the major axis at ``beta`` counter-clockwise
from the image +x axis. North (+y) is at 90 degrees and east (-x) at 180 degrees, so a position
angle ``pa`` east of north is ``beta = 90 + pa`` degrees.

Shear: ``render_cutout(..., shear=(g1, g2))`` applies a gravitational shear with GalSim's
``shear(g1=g1, g2=g2)`` to the galaxy's (and its companion galaxies') intrinsic profile before
the PSF convolution. ``(g1, g2)`` are GalSim's reduced shear in the *image* frame: ``g1 > 0``
stretches along +x (columns), ``g2 > 0`` along the diagonal at image angle 45 degrees. Positions
are not remapped. The default ``(0, 0)`` leaves the profile untouched.

The profile is the same in every band (no colour gradients), so each source is drawn once with
unit flux and the bands are flux-weighted sums of these templates; the noise of each band comes
from its own seeded stream, so a band's pixels do not depend on which other bands were asked for.
"""

from __future__ import annotations

import math

import galsim
import numpy as np

from galpipe.survey.layout import BANDS, CUTOUT_SIZE_PX, PIXSCALE_ARCSEC
from galpipe.synthetic.truth import Neighbour, TruthGalaxy

__all__ = ["GSPARAMS", "image_beta_deg", "psf_profile", "render_cutout", "tangent_offset_arcsec"]

#: GalSim's settings for every synthetic profile: an FFT large enough for the sharpest
#: PSF-convolved component (a bar, a compact bulge) on the biggest stamps.
GSPARAMS = galsim.GSParams(maximum_fft_size=16384)
_NOISE_SALT = 0x7015E


def image_beta_deg(position_angle_deg: float) -> float:
    """GalSim's ``beta`` (CCW from image +x, degrees) for a position angle east of north.

    Valid for north-up, east-left images (``CD1_1 < 0``, ``CD2_2 > 0``).
    """
    return (90.0 + position_angle_deg) % 180.0


def tangent_offset_arcsec(ra0: float, dec0: float, ra: float, dec: float) -> tuple[float, float]:
    """Gnomonic (TAN) projection of ``(ra, dec)`` about ``(ra0, dec0)``.

    Returns
    -------
    tuple of float
        ``(xi, eta)`` in arcsec: ``xi`` towards east, ``eta`` towards north -- exactly the
        intermediate world coordinates of a FITS ``RA---TAN``/``DEC--TAN`` WCS.
    """
    a0, d0, a, d = map(math.radians, (ra0, dec0, ra, dec))
    cos_c = math.sin(d0) * math.sin(d) + math.cos(d0) * math.cos(d) * math.cos(a - a0)
    if cos_c <= 0.0:
        raise ValueError(f"({ra}, {dec}) is 90 degrees or more from ({ra0}, {dec0})")
    xi = math.cos(d) * math.sin(a - a0) / cos_c
    eta = (math.cos(d0) * math.sin(d) - math.sin(d0) * math.cos(d) * math.cos(a - a0)) / cos_c
    return math.degrees(xi) * 3600.0, math.degrees(eta) * 3600.0


def psf_profile(fwhm_arcsec: float, moffat_beta: float) -> galsim.GSObject:
    """The synthetic sky's PSF: a Moffat of index ``moffat_beta``, or a Gaussian where it is
    NaN, of full width at half maximum ``fwhm_arcsec`` (arcsec)."""
    if math.isnan(moffat_beta):
        return galsim.Gaussian(fwhm=fwhm_arcsec, gsparams=GSPARAMS)
    return galsim.Moffat(beta=moffat_beta, fwhm=fwhm_arcsec, gsparams=GSPARAMS)


def _psf(truth: TruthGalaxy) -> galsim.GSObject:
    beta = truth.moffat_beta if truth.psf_model == "moffat" else math.nan
    return psf_profile(truth.psf_fwhm_arcsec, beta)


def _sersic(
    n: float, hlr: float, q: float, pa_deg: float, shear: tuple[float, float] = (0.0, 0.0)
) -> galsim.GSObject:
    profile = galsim.Sersic(n=n, half_light_radius=hlr, flux=1.0, gsparams=GSPARAMS)
    profile = profile.shear(q=q, beta=image_beta_deg(pa_deg) * galsim.degrees)
    # An exact zero skips the transformation, so unsheared stamps stay bit-identical.
    if shear != (0.0, 0.0):
        profile = profile.shear(g1=shear[0], g2=shear[1])
    return profile


def _draw(obj: galsim.GSObject, size: int, pixscale: float, dx: float, dy: float) -> np.ndarray:
    # Sources far outside the stamp add nothing visible but cost an FFT each.
    if abs(dx) > 1.5 * size or abs(dy) > 1.5 * size:
        return np.zeros((size, size), dtype=np.float64)
    image = galsim.ImageD(size, size, scale=pixscale)
    obj.drawImage(image=image, offset=(dx, dy))
    return image.array


def _neighbour_object(
    nb: Neighbour, psf: galsim.GSObject, shear: tuple[float, float]
) -> galsim.GSObject:
    if nb.kind == "star":
        return psf
    profile = _sersic(
        nb.sersic_n, nb.half_light_radius_arcsec, nb.axis_ratio, nb.position_angle_deg, shear
    )
    return galsim.Convolve(profile, psf)


def _band_noise_rng(source_id: int, band: str) -> np.random.Generator:
    seed = np.random.SeedSequence([_NOISE_SALT, int(source_id), BANDS.index(band)])
    return np.random.default_rng(seed)


def render_cutout(
    truth: TruthGalaxy,
    size: int = CUTOUT_SIZE_PX,
    pixscale: float = PIXSCALE_ARCSEC,
    bands: str = BANDS,
    *,
    centre: tuple[float, float] | None = None,
    noise: bool = True,
    shear: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Render ``truth`` (and its neighbours) as a ``(nbands, size, size)`` float32 cube.

    Parameters
    ----------
    truth : TruthGalaxy
        The galaxy.
    size : int
        Stamp side, pixels.
    pixscale : float
        Pixel scale, arcsec per pixel.
    bands : str
        Band letters from ``"griz"``, in the order of the planes returned.
    centre : tuple of float, optional
        ``(ra, dec)`` of the stamp centre (FITS pixel ``((size+1)/2, (size+1)/2)``), degrees;
        the galaxy's own position when omitted.
    noise : bool
        Add Poisson noise of the sources and Gaussian sky noise (deterministic per
        ``source_id`` and band).
    shear : tuple of float
        ``(g1, g2)``, GalSim's reduced shear in the image frame (module docstring), applied to
        the galaxy and companion galaxies before the PSF; ``|g| < 1``. Default: none.

    Returns
    -------
    numpy.ndarray
        float32 ``(len(bands), size, size)`` in nanomaggies per pixel; ``[b, row, col]`` with
        row 0 the southern (bottom) row and column 0 the eastern (left) column.
    """
    if size < 1:
        raise ValueError(f"size {size}: must be a positive number of pixels")
    if pixscale <= 0:
        raise ValueError(f"pixscale {pixscale}: must be positive (arcsec per pixel)")
    unknown = set(bands) - set(BANDS)
    if unknown or not bands:
        raise ValueError(f"bands {bands!r}: expected letters from {BANDS!r}")
    g1, g2 = (float(v) for v in shear)
    if not math.hypot(g1, g2) < 1.0:
        raise ValueError(f"shear {shear}: |g| must be below 1")
    ra0, dec0 = centre if centre is not None else (truth.ra, truth.dec)
    xi, eta = tangent_offset_arcsec(ra0, dec0, truth.ra, truth.dec)
    gx, gy = -xi / pixscale, eta / pixscale

    psf = _psf(truth)
    galaxy = galsim.Convolve(
        _sersic(
            truth.sersic_n,
            truth.half_light_radius_arcsec,
            truth.axis_ratio,
            truth.position_angle_deg,
            (g1, g2),
        ),
        psf,
    )
    templates = [_draw(galaxy, size, pixscale, gx, gy)]
    fluxes = [truth.flux]
    for nb in truth.neighbours:
        dx = gx - nb.east_arcsec / pixscale
        dy = gy + nb.north_arcsec / pixscale
        templates.append(_draw(_neighbour_object(nb, psf, (g1, g2)), size, pixscale, dx, dy))
        fluxes.append(nb.flux)

    cube = np.empty((len(bands), size, size), dtype=np.float32)
    for b, band in enumerate(bands):
        plane = sum(
            (flux[band] * template for flux, template in zip(fluxes, templates, strict=True)),
            start=np.zeros((size, size)),
        )
        if noise:
            rng = _band_noise_rng(truth.source_id, band)
            electrons = rng.poisson(np.clip(plane, 0.0, None) * truth.gain_e_per_nmgy)
            plane = electrons / truth.gain_e_per_nmgy + rng.normal(
                0.0, truth.sky_sigma[band], plane.shape
            )
        cube[b] = plane
    return cube
