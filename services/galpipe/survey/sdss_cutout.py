"""One galaxy's cutout from SDSS frames, in the layout of a Legacy Survey cutout plus errors.

The fetch pipeline's SDSS source (:mod:`galpipe.pipelines.sdss_fetch`) fetches the frames of the
galaxy's field, one per band (:class:`~galpipe.survey.sdss.SdssFrameClient`, which computes each
frame's error image from its sky HDU), and this module turns them into the one file every
downstream stage reads:

1. the stamp grid (:func:`stamp_wcs`) is the grid of a Legacy Survey cutout of the same layout:
   ``size`` x ``size`` pixels of ``pixscale`` arcsec, a TAN projection centred on the galaxy
   (``CRVAL`` = its position, ``CRPIX = (size + 1) / 2``), north up, east left -- so the galaxy
   is at the stamp's centre and radon, morphology and photo-z read it as any cutout;
2. every frame, image and error alike, is resampled onto it with ``reproject`` (bilinear,
   :func:`~galpipe.survey.sdss.register_frames`; the method's document resamples the errors as
   the images, it does not propagate variances);
3. a stamp that leaves a frame (the galaxy within half a stamp of the frame's edge) is refused:
   the pixels beyond the edge have no data in that band, and the neighbouring field has them;
4. the file (:func:`sdss_cutout_bytes`) is the cube as the primary HDU (cards ``BANDS``,
   ``BANDn``, ``SURVEY = 'SDSS'``, ``VERSION = 'DR10'``, the frame's ``RUN``, ``RERUN``,
   ``CAMCOL``, ``FIELD``, the 2-D TAN WCS) and the errors as the ``ERROR`` extension
   (:mod:`galpipe.survey.error_planes`, ``ERRSRC = 'sdss_sky_hdu'``).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from galpipe.errors import InputError
from galpipe.survey.error_planes import error_hdu
from galpipe.survey.sdss import SdssFrame, register_frames

__all__ = [
    "ERROR_SOURCE",
    "LAYER",
    "SURVEY",
    "VERSION",
    "SdssStamp",
    "StampOffFrameError",
    "sdss_cutout_bytes",
    "sdss_stamp",
    "stamp_header",
    "stamp_wcs",
]

#: The ``layer`` of the cutouts rows and object keys of SDSS cutouts.
LAYER = "sdss-dr10"
#: ``SURVEY`` and ``VERSION`` cards of an SDSS cutout.
SURVEY = "SDSS"
VERSION = "DR10"
#: Where an SDSS cutout's errors come from (``photoz_predictions.error_source``).
ERROR_SOURCE = "sdss_sky_hdu"


class StampOffFrameError(InputError, ValueError):
    """The galaxy's stamp is not wholly on a frame; the message names the frame."""


@dataclass(frozen=True, eq=False)
class SdssStamp:
    """A galaxy's registered stamp.

    Attributes
    ----------
    images, errors
        float32 ``(nbands, size, size)`` in nanomaggies, bands as the frames were given.
    header
        The stamp grid's WCS cards (:func:`stamp_header`).
    bands
        Band letters of the planes.
    """

    images: np.ndarray
    errors: np.ndarray
    header: fits.Header
    bands: str


def stamp_header(ra: float, dec: float, size: int, pixscale: float) -> fits.Header:
    """The 2-D TAN WCS cards of a cutout centred on ``(ra, dec)`` degrees: ``size`` pixels of
    ``pixscale`` arcsec, north up, east left (the Legacy Survey cutout's grid)."""
    scale = pixscale / 3600.0
    header = fits.Header()
    for key, value in (
        ("CTYPE1", "RA---TAN"),
        ("CTYPE2", "DEC--TAN"),
        ("CRVAL1", float(ra)),
        ("CRVAL2", float(dec)),
        ("CRPIX1", (size + 1) / 2),
        ("CRPIX2", (size + 1) / 2),
        ("CD1_1", -scale),
        ("CD1_2", 0.0),
        ("CD2_1", 0.0),
        ("CD2_2", scale),
        ("RADESYS", "ICRS"),
    ):
        header[key] = value
    return header


def stamp_wcs(ra: float, dec: float, size: int, pixscale: float) -> WCS:
    """The :func:`stamp_header` grid as an astropy WCS."""
    wcs = WCS(stamp_header(ra, dec, size, pixscale), naxis=2)
    wcs.pixel_shape = (size, size)
    return wcs


def sdss_stamp(
    frames: Sequence[SdssFrame], ra: float, dec: float, size: int, pixscale: float
) -> SdssStamp:
    """Register ``frames`` onto the stamp grid centred on the galaxy.

    Parameters
    ----------
    frames
        One frame per band, in the cutout's band order.
    ra, dec
        The galaxy's position, degrees.
    size, pixscale
        The cutout's side (pixels) and pixel scale (arcsec per pixel).

    Raises
    ------
    StampOffFrameError
        If the galaxy is not on a frame, or part of the stamp falls beyond a frame's edge; the
        message names the frame, the position and how many pixels are missing.
    """
    if not frames:
        raise StampOffFrameError("no frames to cut a stamp from")
    for frame in frames:
        x, y = (float(v) for v in frame.wcs.world_to_pixel_values(ra, dec))
        rows, cols = frame.shape
        if not (math.isfinite(x) and math.isfinite(y)) or not (
            -0.5 <= x < cols - 0.5 and -0.5 <= y < rows - 0.5
        ):
            raise StampOffFrameError(
                f"SDSS frame {frame.name}: the galaxy at (ra, dec) = ({ra}, {dec}) falls at pixel "
                f"(x, y) = ({x:.1f}, {y:.1f}), outside the {rows} x {cols} frame; the "
                "catalogue's run/camcol/field do not hold this position"
            )
    header = stamp_header(ra, dec, size, pixscale)
    registered = register_frames(frames, stamp_wcs(ra, dec, size, pixscale), (size, size))
    for i, frame in enumerate(frames):
        missing = ~(np.isfinite(registered.images[i]) & np.isfinite(registered.errors[i]))
        if missing.any():
            raise StampOffFrameError(
                f"SDSS frame {frame.name}: the {size} x {size} stamp of the galaxy at (ra, dec) "
                f"= ({ra}, {dec}) leaves the frame's edge ({int(missing.sum())} of {size * size} "
                "pixels have no data); the galaxy is too close to the edge of its field"
            )
    return SdssStamp(
        images=registered.images.astype(np.float32),
        errors=registered.errors.astype(np.float32),
        header=header,
        bands="".join(f.band for f in frames),
    )


def sdss_cutout_bytes(stamp: SdssStamp, *, run: int, rerun: str, camcol: int, field: int) -> bytes:
    """The cutout file of an SDSS stamp: the cube (primary) and its ``ERROR`` extension.

    Deterministic: the same stamp gives the same bytes (no dates, no checksums).
    """
    primary = fits.PrimaryHDU(data=stamp.images)
    header = primary.header
    header["BANDS"] = (stamp.bands, "bands of the planes, in order")
    for i, band in enumerate(stamp.bands):
        header[f"BAND{i}"] = (band, f"band of plane {i}")
    header["IMAGETYP"] = "IMAGE"
    header["SURVEY"] = SURVEY
    header["VERSION"] = VERSION
    header["BUNIT"] = "nanomaggy"
    header["RUN"] = (int(run), "SDSS imaging run of the frames")
    header["RERUN"] = (str(rerun), "SDSS processing rerun")
    header["CAMCOL"] = (int(camcol), "SDSS camera column")
    header["FIELD"] = (int(field), "SDSS field")
    header.extend(stamp.header)
    hdul = fits.HDUList([primary, error_hdu(stamp.errors, stamp.bands, ERROR_SOURCE)])
    hdul[1].header.extend(stamp.header)
    out = io.BytesIO()
    hdul.writeto(out)
    return out.getvalue()
