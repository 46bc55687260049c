"""Per-pixel error planes carried in a cutout file, beside its griz cube.

A Legacy Survey cutout is one primary HDU (:mod:`galpipe.survey.cutout`). A cutout that knows
its pixels' errors -- one galpipe builds from SDSS frames (:mod:`galpipe.survey.sdss_cutout`) --
appends one image extension after it:

- ``EXTNAME = 'ERROR'``: float32 ``(nbands, H, W)``, the 1-sigma error of every pixel of the
  primary cube, in nanomaggies, bands in the primary's order (``BANDS`` repeats them);
- ``ERRSRC``: where the errors come from, the photo-z ``error_source`` vocabulary
  (``'sdss_sky_hdu'``: the SDSS frame's sky HDU, calibration and the camcol's gain and dark
  variance, :func:`galpipe.survey.sdss.error_image`).

The primary HDU is untouched, so :func:`~galpipe.survey.cutout.parse_cutout` (which reads the
primary only) and every stage that measures the cube read such a file as they read any cutout;
:func:`read_error_planes` is for the stages that use the errors.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning

from galpipe.errors import InputError
from galpipe.survey.cutout import FITS_BLOCK_BYTES

__all__ = [
    "ERROR_EXTNAME",
    "ERROR_SOURCES",
    "ErrorPlaneError",
    "ErrorPlanes",
    "error_hdu",
    "read_error_planes",
]

#: ``EXTNAME`` of the error extension.
ERROR_EXTNAME = "ERROR"
#: The values ``ERRSRC`` may take (the ``photoz_predictions.error_source`` vocabulary).
ERROR_SOURCES = ("sky_noise", "invvar", "sdss_sky_hdu")
_CARD_BYTES = 80


class ErrorPlaneError(InputError, ValueError):
    """A cutout's error extension is unusable; the message says why."""


@dataclass(frozen=True, eq=False)
class ErrorPlanes:
    """The error planes of a cutout.

    Attributes
    ----------
    errors
        float32 ``(nbands, H, W)``, 1-sigma errors in nanomaggies, bands as in ``bands``.
    bands
        Band letters of the planes, in order.
    source
        Where the errors come from (:data:`ERROR_SOURCES`).
    """

    errors: np.ndarray
    bands: str
    source: str


def error_hdu(errors: np.ndarray, bands: str, source: str) -> fits.ImageHDU:
    """The error extension of a cutout: ``errors`` ``(nbands, H, W)`` nanomaggies.

    Raises
    ------
    ValueError
        If the planes do not match the bands or ``source`` is not one of :data:`ERROR_SOURCES`.
    """
    data = np.asarray(errors, dtype=np.float32)
    if data.ndim != 3 or data.shape[0] != len(bands):
        raise ValueError(f"errors of shape {data.shape}: expected ({len(bands)}, H, W)")
    if source not in ERROR_SOURCES:
        raise ValueError(f"error source {source!r}: expected one of {', '.join(ERROR_SOURCES)}")
    hdu = fits.ImageHDU(data=data, name=ERROR_EXTNAME)
    hdu.header["BUNIT"] = ("nanomaggy", "1-sigma error of each pixel of the primary cube")
    hdu.header["BANDS"] = (bands, "bands of the planes, in order")
    hdu.header["ERRSRC"] = (source, "where the errors come from")
    return hdu


def _header_end(body: bytes) -> int | None:
    """Byte offset where the primary header (its whole blocks) ends; None without an END card."""
    for block_start in range(0, len(body), FITS_BLOCK_BYTES):
        block = body[block_start : block_start + FITS_BLOCK_BYTES]
        for card_start in range(0, len(block), _CARD_BYTES):
            if block[card_start : card_start + _CARD_BYTES].rstrip(b" ") == b"END":
                return block_start + FITS_BLOCK_BYTES
    return None


def read_error_planes(body: bytes, bands: str, size: int) -> ErrorPlanes | None:
    """The error planes of a cutout file, or None when it carries none (a Legacy Survey
    cutout: nothing after the primary HDU).

    Parameters
    ----------
    body
        The cutout file's bytes (already checked by :func:`~galpipe.survey.cutout.parse_cutout`).
    bands, size
        The cutout's layout: the planes must be ``(len(bands), size, size)`` of those bands.

    Raises
    ------
    ErrorPlaneError
        If an extension follows the primary HDU but is not a readable error extension of that
        layout (the message names the card or the shape at fault).
    """
    header_end = _header_end(body)
    float32_bytes = 4 * len(bands) * size * size
    primary_end = (header_end or 0) + -(-float32_bytes // FITS_BLOCK_BYTES) * FITS_BLOCK_BYTES
    if header_end is None or len(body) <= primary_end:
        # Nothing after a float32 cube of the layout (every Legacy Survey cutout): no astropy.
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            with fits.open(io.BytesIO(body), memmap=False, lazy_load_hdus=False) as hdul:
                if len(hdul) == 1:
                    return None  # a float64 cube, or padding: still no extension
                if ERROR_EXTNAME not in hdul:
                    names = [hdu.name for hdu in hdul[1:]]
                    raise ErrorPlaneError(
                        f"extension(s) {names} after the cube but no {ERROR_EXTNAME!r} extension"
                    )
                hdu = hdul[ERROR_EXTNAME]
                data = None if hdu.data is None else np.array(hdu.data, dtype=np.float32)
                declared = str(hdu.header.get("BANDS", "")).strip()
                source = str(hdu.header.get("ERRSRC", "")).strip()
    except (OSError, ValueError, TypeError, KeyError) as exc:
        if isinstance(exc, ErrorPlaneError):
            raise
        raise ErrorPlaneError(f"error extension unreadable: {exc}") from None
    expected = (len(bands), size, size)
    if data is None or data.shape != expected:
        shape = None if data is None else data.shape
        raise ErrorPlaneError(f"{ERROR_EXTNAME} planes of shape {shape}: expected {expected}")
    if declared != bands:
        raise ErrorPlaneError(f"{ERROR_EXTNAME} BANDS = {declared!r}: expected {bands!r}")
    if source not in ERROR_SOURCES:
        raise ErrorPlaneError(
            f"{ERROR_EXTNAME} ERRSRC = {source!r}: expected one of {', '.join(ERROR_SOURCES)}"
        )
    return ErrorPlanes(data, bands, source)
