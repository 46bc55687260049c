"""Per-pixel error planes carried in a cutout file, beside its griz cube.

A cutout's griz cube is its primary HDU (:mod:`galpipe.survey.cutout`). Two kinds of
extension after it carry each pixel's error, and :func:`read_error_planes` reads either:

- **The cutout service's inverse variance.** Asked with ``invvar`` in the query
  (``GALPIPE_CUTOUT_INVVAR``), the Legacy Surveys service appends one image HDU with
  ``IMAGETYP = 'INVVAR'``: the coadds' inverse variance resampled like the image, float32
  ``(nbands, H, W)`` (``(H, W)`` for one band) in the primary's band order, in 1/nanomaggy², 0
  where no exposure covers the pixel; no ``EXTNAME`` (the service's ``write_cutout``, which
  copies the primary header and changes ``IMAGETYP`` only). ``&maskbits`` would append a
  ``IMAGETYP = 'MASKBITS'`` plane after it, which is allowed and not read. The errors are
  ``1 / sqrt(invvar)``: infinite where the inverse variance is 0 (no data), ``error_source``
  ``'invvar'``.
- **galpipe's own error planes.** A cutout galpipe builds from SDSS frames
  (:mod:`galpipe.survey.sdss_cutout`) appends:

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
    "INVVAR_ERROR_SOURCE",
    "INVVAR_IMAGETYP",
    "ErrorPlaneError",
    "ErrorPlanes",
    "error_hdu",
    "read_error_planes",
]

#: ``EXTNAME`` of the error extension.
ERROR_EXTNAME = "ERROR"
#: The values ``ERRSRC`` may take (the ``photoz_predictions.error_source`` vocabulary).
ERROR_SOURCES = ("sky_noise", "invvar", "sdss_sky_hdu")
#: ``IMAGETYP`` of the cutout service's inverse-variance HDU (compared case-insensitively: the
#: service's per-brick answers write it in lower case).
INVVAR_IMAGETYP = "INVVAR"
#: ``IMAGETYP`` of the service's mask-bits plane, which may follow and is not read.
_MASKBITS_IMAGETYP = "MASKBITS"
#: ``error_source`` of errors read from the service's inverse variance.
INVVAR_ERROR_SOURCE = "invvar"
_CARD_BYTES = 80


class ErrorPlaneError(InputError, ValueError):
    """A cutout's error extension is unusable; the message says why.

    Attributes
    ----------
    truncated
        True when the file ends before an extension's data does (the body broke off: another
        request may bring it whole); False for an extension that is there but wrong.
    """

    def __init__(self, message: str, *, truncated: bool = False) -> None:
        super().__init__(message)
        self.truncated = truncated

    def __reduce__(self) -> tuple[object, ...]:
        return (_error_plane_error, (str(self), self.truncated))


def _error_plane_error(message: str, truncated: bool) -> ErrorPlaneError:
    return ErrorPlaneError(message, truncated=truncated)


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
    cutout asked without ``invvar``: nothing after the primary HDU).

    Parameters
    ----------
    body
        The cutout file's bytes (already checked by :func:`~galpipe.survey.cutout.parse_cutout`).
    bands, size
        The cutout's layout: the planes must be ``(len(bands), size, size)`` of those bands.

    Returns
    -------
    ErrorPlanes or None
        From galpipe's ``ERROR`` extension when there is one, else from the service's
        ``INVVAR`` HDU (module docstring); None when neither is there.

    Raises
    ------
    ErrorPlaneError
        If an extension follows the primary HDU but is not a readable error or inverse-variance
        extension of that layout (the message names the card, the shape or the values at
        fault), or the file ends inside one (``truncated``).
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
                    if len(body) % FITS_BLOCK_BYTES:
                        # astropy drops an extension whose header the file cuts short.
                        raise ErrorPlaneError(
                            f"the file ends at byte {len(body)}, inside a header after the "
                            "primary HDU",
                            truncated=True,
                        )
                    return None  # a float64 cube, or padding: still no extension
                for index in range(1, len(hdul)):
                    _check_whole(hdul, index, len(body))
                if ERROR_EXTNAME in hdul:
                    return _own_planes(hdul[ERROR_EXTNAME], bands, size)
                kinds = [_imagetyp(hdu) for hdu in hdul[1:]]
                if INVVAR_IMAGETYP in kinds:
                    return _invvar_planes(hdul[1 + kinds.index(INVVAR_IMAGETYP)], bands, size)
                if all(kind == _MASKBITS_IMAGETYP for kind in kinds):
                    return None
                names = [hdu.name or _imagetyp(hdu) or "(unnamed)" for hdu in hdul[1:]]
                raise ErrorPlaneError(
                    f"extension(s) {names} after the cube but neither an {ERROR_EXTNAME!r} "
                    f"extension nor an IMAGETYP = {INVVAR_IMAGETYP!r} one"
                )
    except (OSError, ValueError, TypeError, KeyError) as exc:
        if isinstance(exc, ErrorPlaneError):
            raise
        # FITS files are whole 2880-byte blocks: a body that is not ended inside one.
        raise ErrorPlaneError(
            f"error extension unreadable: {exc}", truncated=len(body) % FITS_BLOCK_BYTES != 0
        ) from None


def _imagetyp(hdu: fits.hdu.base.ExtensionHDU) -> str:
    return str(hdu.header.get("IMAGETYP", "")).strip().upper()


def _check_whole(hdul: fits.HDUList, index: int, body_bytes: int) -> None:
    """Raise ``ErrorPlaneError(truncated=True)`` if the file ends inside extension ``index``."""
    data_start = int(hdul.fileinfo(index)["datLoc"])
    if data_start + int(hdul[index].size) > body_bytes:
        raise ErrorPlaneError(
            f"the file ends at byte {body_bytes}, inside extension {index} (its data needs "
            f"bytes {data_start}-{data_start + int(hdul[index].size)})",
            truncated=True,
        )


def _own_planes(hdu: fits.hdu.base.ExtensionHDU, bands: str, size: int) -> ErrorPlanes:
    data = None if hdu.data is None else np.array(hdu.data, dtype=np.float32)
    declared = str(hdu.header.get("BANDS", "")).strip()
    source = str(hdu.header.get("ERRSRC", "")).strip()
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


def _invvar_planes(hdu: fits.hdu.base.ExtensionHDU, bands: str, size: int) -> ErrorPlanes:
    name = f"IMAGETYP = {INVVAR_IMAGETYP!r} HDU"
    data = None if hdu.data is None else np.array(hdu.data, dtype=np.float64)
    if data is not None and data.ndim == 2 and len(bands) == 1:
        data = data[np.newaxis]
    expected = (len(bands), size, size)
    if data is None or data.shape != expected:
        shape = None if data is None else data.shape
        raise ErrorPlaneError(f"{name} of shape {shape}: expected {expected}")
    declared = str(hdu.header.get("BANDS", bands)).strip()
    if declared != bands:
        raise ErrorPlaneError(f"{name}: BANDS = {declared!r}, expected {bands!r}")
    bad = ~np.isfinite(data) | (data < 0.0)
    if bad.any():
        band, row, col = (int(v) for v in np.argwhere(bad)[0])
        raise ErrorPlaneError(
            f"{name}: {int(bad.sum())} pixel(s) with an inverse variance that is negative or "
            f"not finite (first: band {bands[band]!r}, row {row}, column {col}: "
            f"{data[band, row, col]!r}); expected finite values >= 0 in 1/nanomaggy^2"
        )
    with np.errstate(divide="ignore"):
        errors = (1.0 / np.sqrt(data)).astype(np.float32)  # inf where no exposure covers it
    return ErrorPlanes(errors, bands, INVVAR_ERROR_SOURCE)
