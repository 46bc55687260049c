"""SDSS DR10 corrected frames for the image-photo-z method: URL, noise tables, parser, registration.

One *frame* is one band of one field of one imaging run, observed by one camera column
(``camcol`` 1 … 6). The method reads the five frames (``ugriz``) of the field that holds a
galaxy (:class:`SdssFrameClient`, :func:`parse_frame`), computes a per-pixel error image for each,
resamples them onto one band's pixel grid (:func:`register_frames`) and cuts the galaxy's stamp
(:func:`stamp`). :func:`check_shared_wcs` verifies, for any source, that images already share a
pixel grid (the Legacy Survey griz planes) rather than assuming it.

The frame file (SDSS data model, ``frame`` of ``photoObj/frames/RERUN/RUN/CAMCOL``), as
:func:`parse_frame` reads it:

- HDU0: the calibrated, sky-subtracted image in nanomaggies, float32, 2048 columns x 1489 rows
  (``NAXIS1 = 2048``, ``NAXIS2 = 1489``; numpy shape ``(1489, 2048)``), with a TAN WCS;
- HDU1: ``CALIB``, float32 ``[2048]``, one value per column: nanomaggies per DN (counts);
- HDU2: a binary table of one row: ``ALLSKY``, the sky in DN on a coarse grid (IDL
  ``float[256, 192]``, so numpy shape ``(192, 256)``: axis 0 is the frame's rows, y; axis 1 its
  columns, x), and ``XINTERP`` ``[2048]`` / ``YINTERP`` ``[1489]``, the position of every column /
  row of the full image in the coarse grid's pixel coordinates (the data model interpolates with
  IDL ``interpolate(allsky, xinterp, yinterp, /grid)``: the first IDL index is x);
- HDU3: frame information (astrometry and PSF bookkeeping); not used.

Per-pixel error in nanomaggies (the data model's recipe, used by the method's document)::

    simg   = ALLSKY interpolated to each pixel          (DN)
    cimg   = CALIB broadcast over rows                  (nanomaggies / DN)
    dn     = img / cimg + simg                          (DN: source plus sky)
    dn_err = sqrt(|dn / gain + darkVariance|)           (DN)
    err    = dn_err * cimg                              (nanomaggies)

``gain`` (electrons per DN) and ``darkVariance`` (DN^2) depend on camcol, band and run
(:func:`gain`, :func:`dark_variance`).

The sky interpolation is the document's ``interp2d(kind='cubic')``: the interpolating bicubic
spline with not-a-knot ends, i.e. ``RegularGridInterpolator(method='cubic')`` solved exactly.
It is evaluated as two 1-D not-a-knot splines (columns, then rows): the same tensor-product
spline (a test checks it against ``RegularGridInterpolator(method='cubic')`` with an exact
solver, and against FITPACK's ``RectBivariateSpline``), 0.05 s for a full frame where
``RegularGridInterpolator`` takes about 1 s, and exact where that class's default iterative
solver leaves errors of up to a few per cent of the sky's node-to-node scatter near the edges.

Registration: :func:`register_frames` resamples whole frames onto a reference grid (about 2 s
per full frame); for one galaxy, register onto :func:`stamp_grid` instead, which gives the
stamp directly (about 0.01 s per frame).

Image convention: ``image[row, col]``, row 0 is FITS pixel y = 1, column 0 is x = 1.
"""

from __future__ import annotations

import bz2
import dataclasses
import io
import math
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import numpy as np
import requests
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS, Sip
from scipy.interpolate import make_interp_spline

from galpipe.errors import InputError
from galpipe.survey.cutout import FITS_BLOCK_BYTES, describe_body
from galpipe.survey.legacysurvey import (
    CONNECT_TIMEOUT_S,
    READ_TIMEOUT_S,
    FetchObserver,
    HttpTransfer,
    NoCoverage,
    Permanent,
    PermanentKind,
    Retryable,
    RetryKind,
    classify_status,
    make_session,
)

__all__ = [
    "BANDS",
    "CAMCOLS",
    "DEFAULT_BASE_URL",
    "DEFAULT_RERUN",
    "FRAME_HEIGHT_PX",
    "FRAME_WIDTH_PX",
    "MAX_BODY_BYTES",
    "MAX_DECOMPRESSED_BYTES",
    "FrameFetchResult",
    "FrameProblem",
    "FrameSuccess",
    "RegisteredFrames",
    "SdssFrame",
    "SdssFrameClient",
    "SdssFrameError",
    "StampError",
    "WcsMismatchError",
    "check_shared_wcs",
    "dark_variance",
    "error_image",
    "frame_name",
    "frame_url",
    "gain",
    "interpolate_sky",
    "parse_frame",
    "register_frames",
    "stamp",
    "stamp_grid",
]


#: The Science Archive Server (SAS) root of SDSS data releases.
DEFAULT_BASE_URL = "https://data.sdss.org/sas"
#: The DR10 imaging rerun of the corrected frames.
DEFAULT_RERUN = "301"
#: SDSS bands, bluest first.
BANDS = "ugriz"
#: Camera columns of the SDSS imaging camera.
CAMCOLS = (1, 2, 3, 4, 5, 6)
#: Width (columns, ``NAXIS1``) and height (rows, ``NAXIS2``) of a full frame, in pixels. The
#: parser accepts other sizes (small synthetic frames); these document the real layout.
FRAME_WIDTH_PX = 2048
FRAME_HEIGHT_PX = 1489
#: Largest decompressed frame accepted. A real frame is about 12.6 MB (a float32 image of
#: 2048 x 1489 plus calibration and sky tables); the cap refuses a bz2 bomb before it fills
#: memory.
MAX_DECOMPRESSED_BYTES = 64 << 20
#: Largest body the client reads: a bz2 frame is 3 … 5 MB; anything far larger is not a frame.
MAX_BODY_BYTES = 32 << 20
#: Cubic splines need four nodes per axis.
_MIN_SKY_NODES = 4
_BZ2_MAGIC = b"BZh"
_FITS_MAGIC = b"SIMPLE  ="
_RERUN_PATTERN = re.compile(r"[0-9A-Za-z_.-]+")

# --------------------------------------------------------------------------------------------
# Identifiers and URL


def _check_ids(run: object, camcol: object, field: object, band: object) -> None:
    """Raise :class:`SdssFrameError` (``invalid_id``) unless the frame identifiers are valid."""
    for name, value in (("run", run), ("field", field)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise SdssFrameError("invalid_id", f"{name}={value!r}: expected a non-negative integer")
    if (
        isinstance(camcol, bool)
        or not isinstance(camcol, int | np.integer)
        or camcol not in CAMCOLS
    ):
        raise SdssFrameError("invalid_id", f"camcol={camcol!r}: expected an integer 1 … 6")
    if not isinstance(band, str) or len(band) != 1 or band not in BANDS:
        raise SdssFrameError("invalid_id", f"band={band!r}: expected one of {', '.join(BANDS)}")


def _check_rerun(rerun: object) -> None:
    """Raise :class:`SdssFrameError` (``invalid_id``) unless ``rerun`` is one path segment."""
    if not isinstance(rerun, str) or not _RERUN_PATTERN.fullmatch(rerun):
        raise SdssFrameError("invalid_id", f"rerun={rerun!r}: expected a rerun name such as '301'")


def frame_name(run: int, camcol: int, field: int, band: str) -> str:
    """The frame's short name for messages, ``'run-camcol-field-band'``, e.g. ``'3704-3-91-r'``."""
    return f"{run}-{camcol}-{field}-{band}"


def frame_url(
    run: int,
    camcol: int,
    field: int,
    band: str,
    *,
    rerun: str = DEFAULT_RERUN,
    base_url: str = DEFAULT_BASE_URL,
) -> str:
    """URL of one DR10 corrected frame (bzip2-compressed FITS).

    ``{base_url}/dr10/boss/photoObj/frames/{rerun}/{run}/{camcol}/
    frame-{band}-{run:06d}-{camcol}-{field:04d}.fits.bz2``

    Parameters
    ----------
    run, camcol, field
        Imaging run (>= 0), camera column (1 … 6) and field number (>= 0).
    band
        One of ``u``, ``g``, ``r``, ``i``, ``z``.
    rerun
        Processing rerun; ``'301'`` for DR10.
    base_url
        SAS root, ``https://data.sdss.org/sas`` by default (no trailing slash needed).

    Raises
    ------
    SdssFrameError
        ``invalid_id``: an identifier is out of range or of the wrong type, or ``rerun`` is not a
        plain path segment.

    Examples
    --------
    >>> frame_url(3704, 3, 91, "r")
    'https://data.sdss.org/sas/dr10/boss/photoObj/frames/301/3704/3/frame-r-003704-3-0091.fits.bz2'
    """
    _check_ids(run, camcol, field, band)
    _check_rerun(rerun)
    return (
        f"{base_url.rstrip('/')}/dr10/boss/photoObj/frames/{rerun}/{run}/{camcol}/"
        f"frame-{band}-{run:06d}-{camcol}-{field:04d}.fits.bz2"
    )


# --------------------------------------------------------------------------------------------
# Gain and dark variance (SDSS data model, frame: "calculating the noise")


def _frozen(table: dict[int, dict[str, float]]) -> Mapping[int, Mapping[str, float]]:
    return MappingProxyType({k: MappingProxyType(dict(v)) for k, v in table.items()})


#: Gain in electrons per DN by camcol and band, before the run-dependent exceptions.
_GAIN: Mapping[int, Mapping[str, float]] = _frozen(
    {
        1: {"u": 1.62, "g": 3.32, "r": 4.71, "i": 5.165, "z": 4.745},
        2: {"u": 1.595, "g": 3.855, "r": 4.6, "i": 6.565, "z": 5.155},
        3: {"u": 1.59, "g": 3.845, "r": 4.72, "i": 4.86, "z": 4.885},
        4: {"u": 1.6, "g": 3.995, "r": 4.76, "i": 4.885, "z": 4.775},
        5: {"u": 1.47, "g": 4.05, "r": 4.725, "i": 4.64, "z": 3.48},
        6: {"u": 2.17, "g": 4.035, "r": 4.895, "i": 4.76, "z": 4.69},
    }
)
#: Runs after this one use the camcol 2 u gain below.
_GAIN_RUN_THRESHOLD = 1100
_GAIN_LATE: Mapping[tuple[int, str], float] = MappingProxyType({(2, "u"): 1.825})

#: Dark variance in DN^2 by camcol and band, before the run-dependent exceptions.
_DARK_VARIANCE: Mapping[int, Mapping[str, float]] = _frozen(
    {
        1: {"u": 9.61, "g": 15.6025, "r": 1.8225, "i": 7.84, "z": 0.81},
        2: {"u": 12.6025, "g": 1.44, "r": 1.0, "i": 5.76, "z": 1.0},
        3: {"u": 8.7025, "g": 1.3225, "r": 1.3225, "i": 4.6225, "z": 1.0},
        4: {"u": 12.6025, "g": 1.96, "r": 1.3225, "i": 6.25, "z": 9.61},
        5: {"u": 9.3025, "g": 1.1025, "r": 0.81, "i": 7.84, "z": 1.8225},
        6: {"u": 7.0225, "g": 1.8225, "r": 0.9025, "i": 5.0625, "z": 1.21},
    }
)
#: Runs after this one use the dark variances below.
_DARK_RUN_THRESHOLD = 1500
_DARK_LATE: Mapping[tuple[int, str], float] = MappingProxyType(
    {(2, "i"): 6.25, (4, "i"): 7.5625, (4, "z"): 12.6025, (5, "z"): 2.1025}
)


def gain(camcol: int, band: str, run: int) -> float:
    """CCD gain in electrons per DN of one camcol and band, for ``run``.

    A pure lookup: runs after 1100 have a camcol 2 u gain of 1.825 instead of 1.595.

    Raises
    ------
    SdssFrameError
        ``invalid_id`` for an unknown camcol or band or a negative run.
    """
    _check_ids(run, camcol, 0, band)
    if run > _GAIN_RUN_THRESHOLD and (camcol, band) in _GAIN_LATE:
        return _GAIN_LATE[(camcol, band)]
    return _GAIN[int(camcol)][band]


def dark_variance(camcol: int, band: str, run: int) -> float:
    """Dark variance in DN^2 (dark current plus read noise) of one camcol and band, for ``run``.

    A pure lookup: runs after 1500 use 6.25 (camcol 2 i), 7.5625 (camcol 4 i), 12.6025
    (camcol 4 z) and 2.1025 (camcol 5 z).

    Raises
    ------
    SdssFrameError
        ``invalid_id`` for an unknown camcol or band or a negative run.
    """
    _check_ids(run, camcol, 0, band)
    if run > _DARK_RUN_THRESHOLD and (camcol, band) in _DARK_LATE:
        return _DARK_LATE[(camcol, band)]
    return _DARK_VARIANCE[int(camcol)][band]


# --------------------------------------------------------------------------------------------
# Errors

#: What is wrong with a frame or its identifiers.
#:
#: - ``invalid_id``: run, camcol, field, band or rerun out of range;
#: - ``empty``: no bytes;
#: - ``not_fits``: neither bzip2 nor FITS, or FITS astropy cannot read;
#: - ``corrupt_bz2``: bzip2 data that do not decompress;
#: - ``truncated``: the bzip2 stream or the FITS file ends early;
#: - ``too_large``: decompresses to more than :data:`MAX_DECOMPRESSED_BYTES`;
#: - ``missing_hdu``: fewer than the three HDUs the error image needs, or one of the wrong kind;
#: - ``wrong_shape``: the image is not 2-D, or CALIB/XINTERP/YINTERP do not match its size;
#: - ``bad_calib``: CALIB holds a non-finite or non-positive value;
#: - ``bad_sky``: the sky table lacks ALLSKY, or ALLSKY is not a usable 2-D grid (too small,
#:   transposed, non-finite);
#: - ``bad_wcs``: no 2-D celestial TAN WCS in the image header.
FrameProblem = Literal[
    "invalid_id",
    "empty",
    "not_fits",
    "corrupt_bz2",
    "truncated",
    "too_large",
    "missing_hdu",
    "wrong_shape",
    "bad_calib",
    "bad_sky",
    "bad_wcs",
]


class SdssFrameError(InputError, ValueError):
    """An SDSS frame (or its identifiers) cannot be used; ``problem`` says why."""

    def __init__(self, problem: FrameProblem, message: str) -> None:
        self.problem: FrameProblem = problem
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.problem, str(self)))


class WcsMismatchError(InputError, ValueError):
    """Images that should share one pixel grid do not: their WCSs disagree."""


class StampError(InputError, ValueError):
    """A stamp cannot be cut: the position is outside the frame, or the inputs disagree."""


# --------------------------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True, eq=False)
class SdssFrame:
    """One parsed SDSS frame with its per-pixel error.

    Attributes
    ----------
    run, camcol, field, band
        The frame's identifiers.
    image
        float32 ``(rows, cols)``, calibrated sky-subtracted flux in nanomaggies per pixel.
    error
        float32 ``(rows, cols)``, the 1-sigma error of ``image`` in nanomaggies.
    calib
        float64 ``(cols,)``, nanomaggies per DN of each column.
    wcs
        The image's 2-D celestial WCS.
    header
        The image (HDU0) header.
    """

    run: int
    camcol: int
    field: int
    band: str
    image: np.ndarray = dataclasses.field(repr=False)
    error: np.ndarray = dataclasses.field(repr=False)
    calib: np.ndarray = dataclasses.field(repr=False)
    wcs: WCS = dataclasses.field(repr=False)
    header: fits.Header = dataclasses.field(repr=False)

    @property
    def name(self) -> str:
        """``'run-camcol-field-band'``."""
        return frame_name(self.run, self.camcol, self.field, self.band)

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` in pixels."""
        return (int(self.image.shape[0]), int(self.image.shape[1]))


def parse_frame(body: bytes, *, run: int, camcol: int, field: int, band: str) -> SdssFrame:
    """Parse a frame file (``.fits.bz2`` or plain FITS bytes) and compute its error image.

    Parameters
    ----------
    body
        The file's bytes: bzip2-compressed FITS as the SAS serves it, or the decompressed FITS.
    run, camcol, field, band
        The frame's identifiers: they select gain and dark variance and name the frame in errors.

    Returns
    -------
    SdssFrame

    Raises
    ------
    SdssFrameError
        If the identifiers are invalid or the bytes are not a usable frame; the message starts
        with ``SDSS frame run-camcol-field-band`` and says what is wrong, ``problem`` names it.
    """
    _check_ids(run, camcol, field, band)
    name = frame_name(run, camcol, field, band)
    try:
        raw = _decompress(body)
        with _open_fits(raw) as hdul:
            image, header, calib, sky = _read_hdus(hdul, raw)
        wcs = _read_wcs(header, image.shape)
        sky_dn = interpolate_sky(sky.allsky, image.shape, sky.xinterp, sky.yinterp)
        err = error_image(
            image,
            calib,
            sky_dn,
            gain=gain(camcol, band, run),
            dark_variance=dark_variance(camcol, band, run),
        )
    except SdssFrameError as exc:
        raise SdssFrameError(exc.problem, f"SDSS frame {name}: {exc}") from None
    return SdssFrame(
        run=int(run),
        camcol=int(camcol),
        field=int(field),
        band=band,
        image=image,
        error=err,
        calib=calib,
        wcs=wcs,
        header=header,
    )


@dataclass(frozen=True)
class _SkyTable:
    """HDU2: the coarse sky grid (rows, cols) in DN and the optional per-row/column positions."""

    allsky: np.ndarray
    xinterp: np.ndarray | None
    yinterp: np.ndarray | None


def _decompress(body: bytes) -> bytes:
    """The FITS bytes of ``body``: bzip2-decompressed (capped), or ``body`` if plain FITS."""
    if not body:
        raise SdssFrameError("empty", "empty body (0 bytes) instead of a .fits.bz2 frame")
    if body.startswith(_FITS_MAGIC):
        if len(body) > MAX_DECOMPRESSED_BYTES:
            raise SdssFrameError(
                "too_large", f"{len(body)} bytes of FITS, more than {MAX_DECOMPRESSED_BYTES}"
            )
        return body
    if not body.startswith(_BZ2_MAGIC):
        raise SdssFrameError("not_fits", f"neither bzip2 nor FITS: {describe_body(body)}")
    parts: list[bytes] = []
    size = 0
    rest = body
    # A .bz2 file may hold several concatenated streams (parallel compressors write them).
    while rest:
        decompressor = bz2.BZ2Decompressor()
        try:
            part = decompressor.decompress(rest, max_length=MAX_DECOMPRESSED_BYTES + 1 - size)
        except OSError as exc:
            raise SdssFrameError(
                "corrupt_bz2", f"bzip2 data do not decompress ({len(body)} bytes): {exc}"
            ) from None
        parts.append(part)
        size += len(part)
        if size > MAX_DECOMPRESSED_BYTES:
            raise SdssFrameError(
                "too_large",
                f"{len(body)} bzip2 bytes decompress to more than {MAX_DECOMPRESSED_BYTES} "
                "bytes, far more than a frame; refused",
            )
        if not decompressor.eof:
            raise SdssFrameError(
                "truncated",
                f"bzip2 stream truncated: {len(body)} bytes end before the end of the stream "
                f"({size} bytes decompressed)",
            )
        rest = decompressor.unused_data
        if rest and not rest.startswith(_BZ2_MAGIC):
            raise SdssFrameError(
                "corrupt_bz2", f"{len(rest)} bytes of trailing garbage after the bzip2 stream"
            )
    return b"".join(parts)


def _open_fits(raw: bytes) -> fits.HDUList:
    """Open every HDU of ``raw`` eagerly; a file shorter than its headers announce is refused."""
    if not raw.startswith(_FITS_MAGIC):
        raise SdssFrameError("not_fits", f"decompressed data are not FITS: {describe_body(raw)}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", AstropyWarning)
            hdul = fits.open(io.BytesIO(raw), memmap=False, lazy_load_hdus=False)
    except (OSError, ValueError, TypeError, fits.VerifyError) as exc:
        raise SdssFrameError("not_fits", f"astropy cannot read the FITS file: {exc}") from None
    if any("truncated" in str(w.message) for w in caught):
        hdul.close()
        raise SdssFrameError(
            "truncated",
            f"FITS file truncated: {len(raw)} bytes are fewer than its headers announce",
        )
    # astropy drops an HDU whose header broke off silently (with a VerifyWarning): bytes after
    # the last HDU it read that are not padding are the remains of a truncated HDU.
    info = hdul.fileinfo(len(hdul) - 1)
    end = int(info["datLoc"]) + int(info["datSpan"]) if info else len(raw)
    if raw[end:].strip(b"\0 "):
        hdul.close()
        raise SdssFrameError(
            "truncated",
            f"FITS file truncated or damaged: {len(raw) - end} bytes after the last complete "
            f"HDU (HDU{len(hdul) - 1}, ending at byte {end}) do not form a whole HDU",
        )
    return hdul


def _read_hdus(
    hdul: fits.HDUList, raw: bytes
) -> tuple[np.ndarray, fits.Header, np.ndarray, _SkyTable]:
    """Image, its header, CALIB and the sky table, each checked against the image's size."""
    if len(hdul) < 3:
        hint = ""
        if len(raw) % FITS_BLOCK_BYTES:
            hint = (
                f" (the file may be truncated: {len(raw)} bytes is not a whole number of "
                f"{FITS_BLOCK_BYTES}-byte FITS blocks)"
            )
        raise SdssFrameError(
            "missing_hdu",
            f"{len(hdul)} HDU(s); a frame has the image (HDU0), CALIB (HDU1) and the sky "
            f"table (HDU2){hint}",
        )
    try:
        image_data = hdul[0].data
        calib_data = hdul[1].data
    except (OSError, ValueError, TypeError) as exc:
        raise SdssFrameError("truncated", f"image or CALIB data unreadable: {exc}") from None
    if image_data is None or np.ndim(image_data) != 2:
        shape = None if image_data is None else np.shape(image_data)
        raise SdssFrameError("wrong_shape", f"HDU0 image has shape {shape}: expected 2-D")
    if not np.issubdtype(image_data.dtype, np.floating):
        raise SdssFrameError(
            "wrong_shape", f"HDU0 image is {image_data.dtype}: expected float nanomaggies"
        )
    image = np.asarray(image_data, dtype=np.float32)  # native byte order
    rows, cols = image.shape
    if calib_data is None or np.ndim(calib_data) != 1 or np.shape(calib_data)[0] != cols:
        shape = None if calib_data is None else np.shape(calib_data)
        raise SdssFrameError(
            "wrong_shape",
            f"HDU1 CALIB has shape {shape}: expected ({cols},), one value per image column",
        )
    calib = np.asarray(calib_data, dtype=np.float64)
    bad = ~np.isfinite(calib) | (calib <= 0)
    if bad.any():
        first = int(np.argmax(bad))
        raise SdssFrameError(
            "bad_calib",
            f"HDU1 CALIB has {int(bad.sum())} non-finite or non-positive value(s) (first: "
            f"column {first}, {calib[first]!r}); expected positive nanomaggies per DN",
        )
    sky = _read_sky_table(hdul[2], rows, cols)
    return image, hdul[0].header, calib, sky


def _read_sky_table(hdu: fits.hdu.base.ExtensionHDU, rows: int, cols: int) -> _SkyTable:
    if not isinstance(hdu, fits.BinTableHDU):
        raise SdssFrameError(
            "missing_hdu", f"HDU2 is a {type(hdu).__name__}: expected the sky binary table"
        )
    names = {n.upper() for n in hdu.columns.names}
    if "ALLSKY" not in names:
        raise SdssFrameError(
            "bad_sky", f"HDU2 sky table has no ALLSKY column (columns: {sorted(names)})"
        )
    try:
        data = hdu.data
        if data is None or len(data) < 1:
            raise SdssFrameError("bad_sky", "HDU2 sky table has no row")
        allsky = np.asarray(data["ALLSKY"][0], dtype=np.float64)
        xinterp = _interp_column(data, names, "XINTERP", cols)
        yinterp = _interp_column(data, names, "YINTERP", rows)
    except (OSError, ValueError, TypeError, IndexError) as exc:
        if isinstance(exc, SdssFrameError):
            raise
        raise SdssFrameError("bad_sky", f"HDU2 sky table unreadable: {exc}") from None
    if (xinterp is None) != (yinterp is None):
        raise SdssFrameError(
            "bad_sky", "HDU2 sky table has only one of XINTERP and YINTERP: expected both or none"
        )
    if allsky.ndim != 2 or min(allsky.shape) < _MIN_SKY_NODES:
        raise SdssFrameError(
            "bad_sky",
            f"ALLSKY has shape {allsky.shape}: expected a 2-D grid (rows, cols) of at least "
            f"{_MIN_SKY_NODES} x {_MIN_SKY_NODES} (256 x 192 in a real frame, stored "
            "(192, 256))",
        )
    if not np.isfinite(allsky).all():
        raise SdssFrameError("bad_sky", "ALLSKY holds non-finite values")
    return _SkyTable(allsky, xinterp, yinterp)


def _interp_column(
    data: fits.FITS_rec, names: set[str], name: str, length: int
) -> np.ndarray | None:
    """``XINTERP``/``YINTERP`` as float64 ``(length,)``, or None when the column is absent."""
    if name not in names:
        return None
    values = np.asarray(data[name][0], dtype=np.float64).ravel()
    if values.shape != (length,):
        axis = "column" if name == "XINTERP" else "row"
        raise SdssFrameError(
            "wrong_shape",
            f"{name} has {values.size} values: expected {length}, one per image {axis}",
        )
    if not np.isfinite(values).all():
        raise SdssFrameError("bad_sky", f"{name} holds non-finite values")
    return values


def _read_wcs(header: fits.Header, shape: tuple[int, ...]) -> WCS:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            wcs = WCS(header, naxis=2)
    except Exception as exc:  # astropy raises a variety of types for malformed cards
        raise SdssFrameError("bad_wcs", f"HDU0 WCS unreadable: {exc}") from None
    ctypes = [str(c) for c in wcs.wcs.ctype]
    if not wcs.has_celestial or not all(c.endswith("-TAN") for c in ctypes):
        raise SdssFrameError(
            "bad_wcs",
            f"HDU0 WCS has CTYPE = {ctypes}: expected a celestial TAN projection "
            "('RA---TAN', 'DEC--TAN')",
        )
    rows, cols = shape
    try:
        ra, dec = wcs.pixel_to_world_values((cols - 1) / 2, (rows - 1) / 2)
    except Exception as exc:
        raise SdssFrameError("bad_wcs", f"HDU0 WCS cannot map pixels to the sky: {exc}") from None
    if not (np.isfinite(ra) and np.isfinite(dec)):
        raise SdssFrameError(
            "bad_wcs", "HDU0 WCS maps the image centre to no sky position (singular CD matrix?)"
        )
    return wcs


# --------------------------------------------------------------------------------------------
# Error image


def interpolate_sky(
    allsky: np.ndarray,
    shape: tuple[int, int],
    xinterp: np.ndarray | None = None,
    yinterp: np.ndarray | None = None,
) -> np.ndarray:
    """The coarse sky grid interpolated to every pixel of an image (bicubic, not-a-knot).

    Parameters
    ----------
    allsky
        ``(ny_coarse, nx_coarse)`` sky in DN; axis 0 runs along the image's rows (y).
    shape
        ``(rows, cols)`` of the image.
    xinterp, yinterp
        Position of each image column / row in the coarse grid's pixel coordinates (the frame's
        ``XINTERP``/``YINTERP``). When absent, the image-photo-z method's scaled positions
        (``docs/photoz.md``) ``col * nx_coarse / cols`` and ``row * ny_coarse / rows`` are used.

    Returns
    -------
    numpy.ndarray
        float64 ``(rows, cols)`` in DN. Positions outside the grid are clamped to its edge.

    Raises
    ------
    SdssFrameError
        ``bad_sky`` if the grid's axes do not fit the image (a transposed ALLSKY).
    """
    rows, cols = shape
    ny, nx = allsky.shape
    if xinterp is None or yinterp is None:
        if (cols - rows) * (nx - ny) < 0:
            raise SdssFrameError(
                "bad_sky",
                f"ALLSKY has shape {allsky.shape} (rows, cols) but the image is {shape}: the "
                "grid is wider where the image is taller, so ALLSKY looks transposed "
                "(axis 0 must run along the image's rows)",
            )
        xinterp = np.arange(cols) * (nx / cols)
        yinterp = np.arange(rows) * (ny / rows)
    else:
        _check_interp_range(xinterp, nx, "XINTERP", "columns (axis 1)", allsky.shape)
        _check_interp_range(yinterp, ny, "YINTERP", "rows (axis 0)", allsky.shape)
    x = np.clip(xinterp, 0.0, nx - 1.0)
    y = np.clip(yinterp, 0.0, ny - 1.0)
    # Tensor-product spline = 1-D splines along x for each coarse row, then along y.
    along_x = make_interp_spline(np.arange(nx, dtype=np.float64), allsky, k=3, axis=1)(x)
    return np.asarray(make_interp_spline(np.arange(ny, dtype=np.float64), along_x, k=3, axis=0)(y))


def _check_interp_range(
    values: np.ndarray, nodes: int, name: str, axis: str, shape: tuple[int, ...]
) -> None:
    """Positions more than one coarse pixel outside the grid mean the wrong axis was used."""
    low, high = float(values.min()), float(values.max())
    if low < -1.0 or high > nodes:
        raise SdssFrameError(
            "bad_sky",
            f"{name} spans {low:.4g} … {high:.4g} but ALLSKY {shape} has {nodes} {axis}: "
            "ALLSKY looks transposed (it must be stored (rows, cols), as the data model's "
            "float[256, 192] reads in numpy: (192, 256))",
        )


def error_image(
    image: np.ndarray,
    calib: np.ndarray,
    sky_dn: np.ndarray,
    *,
    gain: float,
    dark_variance: float,
) -> np.ndarray:
    """Per-pixel 1-sigma error of a frame in nanomaggies (the SDSS data model's recipe).

    Parameters
    ----------
    image
        ``(rows, cols)`` flux in nanomaggies.
    calib
        ``(cols,)`` nanomaggies per DN.
    sky_dn
        ``(rows, cols)`` sky in DN at every pixel (:func:`interpolate_sky`).
    gain
        Electrons per DN.
    dark_variance
        DN^2.

    Returns
    -------
    numpy.ndarray
        float32 ``(rows, cols)``: ``sqrt(|(image/calib + sky)/gain + dark_variance|) * calib``.
        The absolute value keeps pixels whose sky-subtracted flux is far below the sky (bad
        columns, ghosts) from giving NaN, as in the data model's recipe.
    """
    rows, cols = image.shape
    cimg = np.broadcast_to(np.asarray(calib, dtype=np.float64), (rows, cols))
    dn = image / cimg + sky_dn
    dn_err = np.sqrt(np.abs(dn / gain + dark_variance))
    return np.asarray(dn_err * cimg, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Registration and stamps


@dataclass(frozen=True, eq=False)
class RegisteredFrames:
    """Frames resampled onto one pixel grid.

    Attributes
    ----------
    images, errors
        float64 ``(nframes, rows, cols)`` in nanomaggies; NaN where a frame does not cover the
        reference grid.
    wcs
        The reference grid's WCS.
    bands
        Band of each plane, in the order of the frames given.
    """

    images: np.ndarray = dataclasses.field(repr=False)
    errors: np.ndarray = dataclasses.field(repr=False)
    wcs: WCS = dataclasses.field(repr=False)
    bands: tuple[str, ...]


def register_frames(
    frames: Sequence[SdssFrame],
    reference: SdssFrame | WCS,
    shape: tuple[int, int] | None = None,
) -> RegisteredFrames:
    """Resample every frame (image and error alike) onto the reference pixel grid.

    Uses :func:`reproject.reproject_interp` (bilinear), as the method's document does; the
    errors are resampled the same way as the images, which is the document's choice (it does
    not propagate them as variances).

    Parameters
    ----------
    frames
        The frames to register, e.g. the five bands of one field.
    reference
        A frame (its WCS and shape) or a WCS, which then needs ``shape``.
    shape
        ``(rows, cols)`` of the output grid; required with a bare WCS, and overrides the
        reference frame's shape when given.

    Returns
    -------
    RegisteredFrames
        NaN outside the overlap of each frame with the reference grid.

    Raises
    ------
    WcsMismatchError
        If no frames are given or no output shape is known.
    """
    from reproject import reproject_interp  # imported here: it takes ~0.5 s to import

    if not frames:
        raise WcsMismatchError("register_frames: no frames given")
    if isinstance(reference, SdssFrame):
        wcs_out = reference.wcs
        shape_out = shape if shape is not None else reference.shape
    else:
        if shape is None:
            raise WcsMismatchError("register_frames: a bare reference WCS needs shape=(rows, cols)")
        wcs_out, shape_out = reference, shape
    images = np.empty((len(frames), *shape_out), dtype=np.float64)
    errors = np.empty_like(images)
    for i, frame in enumerate(frames):
        # Image and error stacked: reproject broadcasts the leading axis, so the pixel mapping,
        # most of the cost, is computed once per frame.
        planes = np.stack([frame.image, frame.error])
        resampled, _footprint = reproject_interp((planes, frame.wcs), wcs_out, shape_out=shape_out)
        images[i], errors[i] = resampled  # NaN where the frame does not reach
    return RegisteredFrames(images, errors, wcs_out, tuple(f.band for f in frames))


def check_shared_wcs(
    wcss: Sequence[WCS] | Mapping[str, WCS],
    shape: tuple[int, int],
    *,
    tolerance_px: float = 1e-3,
) -> None:
    """Raise unless every WCS puts the image's corners and centre at the same sky positions.

    For images that are meant to share one pixel grid already (the bands of a Legacy Survey
    cutout, a registered stack): instead of assuming it, the pixel positions of the four corners
    and the centre are mapped to the sky with each WCS and back to pixels with the first one.

    Parameters
    ----------
    wcss
        The WCSs, in band order or keyed by band (the key names the culprit in the message).
    shape
        ``(rows, cols)`` of the image the WCSs describe.
    tolerance_px
        Largest allowed disagreement, in pixels of the first WCS.

    Raises
    ------
    WcsMismatchError
        Naming the band (or index), the point and the offset in pixels.
    """
    items = list(wcss.items()) if isinstance(wcss, Mapping) else list(enumerate(wcss))
    if not items:
        raise WcsMismatchError("check_shared_wcs: no WCS given")
    rows, cols = shape
    xs = np.array([0.0, cols - 1.0, 0.0, cols - 1.0, (cols - 1) / 2])
    ys = np.array([0.0, 0.0, rows - 1.0, rows - 1.0, (rows - 1) / 2])
    labels = ("corner (0, 0)", "corner (0, W-1)", "corner (H-1, 0)", "corner (H-1, W-1)", "centre")
    ref_key, ref = items[0]
    for key, wcs in items[1:]:
        ra, dec = wcs.pixel_to_world_values(xs, ys)
        x_back, y_back = ref.world_to_pixel_values(ra, dec)
        offset = np.hypot(np.asarray(x_back) - xs, np.asarray(y_back) - ys)
        offset = np.where(np.isfinite(offset), offset, np.inf)
        worst = int(np.argmax(offset))
        if offset[worst] > tolerance_px:
            raise WcsMismatchError(
                f"WCS of {_label(key)} does not share the pixel grid of {_label(ref_key)}: "
                f"at the {labels[worst]} of the {rows} x {cols} image it is off by "
                f"{offset[worst]:.4g} px (tolerance {tolerance_px:g} px); register the "
                "images first"
            )


def _label(key: object) -> str:
    return f"band {key!r}" if isinstance(key, str) else f"image {key}"


def stamp(
    registered_images: np.ndarray,
    registered_errors: np.ndarray,
    wcs: WCS,
    ra: float,
    dec: float,
    size: int = 40,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut the ``size`` x ``size`` stamp centred on (``ra``, ``dec``) from registered cubes.

    The galaxy lands within half a pixel of the stamp's centre, ``((size-1)/2, (size-1)/2)``
    (0-based), as in a Legacy Survey cutout whose ``CRPIX`` is ``(size+1)/2``; the stamp is an
    integer-pixel cut, not resampled.

    Parameters
    ----------
    registered_images, registered_errors
        ``(bands, rows, cols)`` on the grid of ``wcs`` (e.g. :class:`RegisteredFrames`).
    wcs
        The grid's 2-D celestial WCS.
    ra, dec
        The galaxy's position in degrees.
    size
        Stamp width and height in pixels.

    Returns
    -------
    tuple of numpy.ndarray
        ``(cube, err)``, float64 ``(bands, size, size)``; NaN where the stamp leaves the frame.

    Raises
    ------
    StampError
        If the cubes differ in shape, ``size`` is not a positive integer, or the position is not
        on the frame.
    """
    images = np.asarray(registered_images)
    errors = np.asarray(registered_errors)
    if images.ndim != 3 or images.shape != errors.shape:
        raise StampError(
            f"images {images.shape} and errors {errors.shape}: expected two cubes of the same "
            "shape (bands, rows, cols)"
        )
    _, rows, cols = images.shape
    x0, y0 = _stamp_origin(wcs, (rows, cols), ra, dec, size)
    cube = np.full((images.shape[0], size, size), np.nan)
    err = np.full_like(cube, np.nan)
    # Overlap of the stamp [y0, y0+size) x [x0, x0+size) with the frame.
    ya, yb = max(y0, 0), min(y0 + size, rows)
    xa, xb = max(x0, 0), min(x0 + size, cols)
    cube[:, ya - y0 : yb - y0, xa - x0 : xb - x0] = images[:, ya:yb, xa:xb]
    err[:, ya - y0 : yb - y0, xa - x0 : xb - x0] = errors[:, ya:yb, xa:xb]
    return cube, err


def stamp_grid(wcs: WCS, shape: tuple[int, int], ra: float, dec: float, size: int = 40) -> WCS:
    """The WCS of the pixel grid that :func:`stamp` would cut from a frame of ``shape``.

    Registering frames onto it (``register_frames(frames, stamp_grid(...), (size, size))``)
    gives the stamp directly, at a fraction of the cost of registering whole frames (a full
    frame is 3 million pixels; a stamp 1,600).

    Parameters
    ----------
    wcs
        The frame's 2-D celestial WCS.
    shape
        ``(rows, cols)`` of the frame.
    ra, dec
        The galaxy's position in degrees.
    size
        Stamp width and height in pixels.

    Returns
    -------
    astropy.wcs.WCS
        A copy of ``wcs`` whose pixel (0, 0) is the stamp's first pixel.

    Raises
    ------
    StampError
        As :func:`stamp`.
    """
    x0, y0 = _stamp_origin(wcs, shape, ra, dec, size)
    shifted = wcs.deepcopy()
    shifted.wcs.crpix = shifted.wcs.crpix - np.array([x0, y0], dtype=np.float64)
    if shifted.sip is not None:
        # SIP keeps its own copy of the reference pixel.
        sip = shifted.sip
        shifted.sip = Sip(sip.a, sip.b, sip.ap, sip.bp, np.asarray(sip.crpix) - [x0, y0])
    if any(t is not None for t in (wcs.cpdis1, wcs.cpdis2, wcs.det2im1, wcs.det2im2)):
        raise StampError("stamp_grid: WCS with distortion lookup tables are not supported")
    shifted.pixel_shape = (size, size)
    return shifted


def _stamp_origin(
    wcs: WCS, shape: tuple[int, int], ra: float, dec: float, size: int
) -> tuple[int, int]:
    """Frame pixel ``(x0, y0)`` of the stamp's first pixel; the position lands within half a
    pixel of the stamp's centre ``(size - 1) / 2``."""
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise StampError(f"size={size!r}: expected a positive number of pixels")
    rows, cols = shape
    x, y = (float(v) for v in wcs.world_to_pixel_values(ra, dec))
    if not (math.isfinite(x) and math.isfinite(y)) or not (
        -0.5 <= x < cols - 0.5 and -0.5 <= y < rows - 0.5
    ):
        raise StampError(
            f"(ra, dec) = ({ra}, {dec}) falls at pixel (x, y) = ({x:.1f}, {y:.1f}), outside the "
            f"{rows} x {cols} frame"
        )
    half = (size - 1) / 2
    return math.floor(x - half + 0.5), math.floor(y - half + 0.5)


# --------------------------------------------------------------------------------------------
# HTTP client


@dataclass(frozen=True, eq=False)
class FrameSuccess:
    """A parsed frame and the bytes it came from (store these)."""

    frame: SdssFrame
    raw_bytes: bytes = dataclasses.field(repr=False)


FrameFetchResult = FrameSuccess | NoCoverage | Retryable | Permanent

#: Problems of a body that a later attempt may not repeat (a broken transfer, a proxy page).
_RETRYABLE_PROBLEMS: Mapping[str, RetryKind] = MappingProxyType(
    {
        "empty": "truncated",
        "truncated": "truncated",
        "corrupt_bz2": "corrupt",
        "not_fits": "not_fits",
    }
)
#: Problems of a compressed stream that, in a body whose every announced byte arrived, are the
#: file's own: permanent (``not_fits``) rather than retried.
_DAMAGED_FILE_PROBLEMS = frozenset({"truncated", "corrupt_bz2"})
#: The closest :data:`PermanentKind` of the other problems; the reason carries the detail.
_PERMANENT_PROBLEMS: Mapping[str, PermanentKind] = MappingProxyType(
    {
        "too_large": "too_large",
        "missing_hdu": "wrong_shape",
        "wrong_shape": "wrong_shape",
        "bad_sky": "wrong_shape",
        "bad_calib": "wrong_type",
        "bad_wcs": "bad_wcs",
        "invalid_id": "invalid_position",
    }
)


class SdssFrameClient:
    """Fetches, parses and classifies SDSS DR10 frames; safe to share between threads.

    Statuses mean what they mean for the Legacy Survey client
    (:func:`~galpipe.survey.legacysurvey.classify_status`), except: 404 is :class:`NoCoverage`
    (the SAS has no such frame), and 500 is a plain server error (kind ``server_error``), not
    the Legacy Survey viewer's "no data here". A bzip2 or FITS stream that is truncated or
    corrupt although every byte the ``Content-Length`` announced arrived is a file damaged on
    the server: :class:`Permanent` (``not_fits``), naming the frame; without a
    ``Content-Length`` it may have been cut in transit, and is :class:`Retryable`.

    Parameters
    ----------
    base_url
        SAS root (:data:`DEFAULT_BASE_URL`), or a local server's URL in tests.
    rerun
        Imaging rerun (:data:`DEFAULT_RERUN`).
    session_factory
        Builds one :class:`requests.Session` per thread;
        :func:`~galpipe.survey.legacysurvey.make_session` by default.
    connect_timeout, read_timeout
        Seconds to wait for the connection and for each read.
    max_body_bytes
        Largest body read; a longer one is :class:`Permanent` (``too_large``).
    observer
        ``observer(status_class, latency_s, nbytes)``, once per request; exceptions are logged.
    clock, wall_clock
        Monotonic seconds (latency) and Unix seconds (``Retry-After`` dates).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        rerun: str = DEFAULT_RERUN,
        *,
        session_factory: Callable[[], requests.Session] = make_session,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        read_timeout: float = READ_TIMEOUT_S,
        max_body_bytes: int = MAX_BODY_BYTES,
        observer: FetchObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not (connect_timeout > 0 and read_timeout > 0 and max_body_bytes > 0):
            raise ValueError(
                f"connect_timeout={connect_timeout!r}, read_timeout={read_timeout!r}, "
                f"max_body_bytes={max_body_bytes!r}: expected positive values"
            )
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url={base_url!r}: expected http(s)://host[:port][/prefix]")
        _check_rerun(rerun)
        self.base_url = base_url
        self.rerun = rerun
        self._wall_clock = wall_clock
        self.transfer = HttpTransfer(
            max_body_bytes=max_body_bytes,
            what="frame",
            largest="frame",
            session_factory=session_factory,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            observer=observer,
            clock=clock,
        )

    def session(self) -> requests.Session:
        """This thread's session, created on first use."""
        return self.transfer.session()

    def close(self) -> None:
        """Close every thread's session."""
        self.transfer.close()

    def __enter__(self) -> SdssFrameClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, run: int, camcol: int, field: int, band: str) -> str:
        """The frame's URL on this client's server (:func:`frame_url`)."""
        return frame_url(run, camcol, field, band, rerun=self.rerun, base_url=self.base_url)

    def fetch(self, run: int, camcol: int, field: int, band: str) -> FrameFetchResult:
        """Fetch, parse and classify one frame; never raises.

        Returns
        -------
        FrameFetchResult
            :class:`FrameSuccess`, :class:`NoCoverage` (404), :class:`Retryable` (429, 5xx,
            timeouts, broken or truncated bodies) or :class:`Permanent` (other 4xx, bodies that
            are not a usable frame, invalid identifiers: nothing sent).
        """
        try:
            url = self.url(run, camcol, field, band)
        except SdssFrameError as exc:
            return Permanent(f"invalid frame identifiers, nothing sent: {exc}", "invalid_position")
        name = frame_name(run, camcol, field, band)

        def finish(response: requests.Response, body: bytes) -> FrameFetchResult:
            return self._classify(name, url, response, body, run, camcol, field, band)

        return self.transfer.get(url, finish)

    def _classify(
        self,
        name: str,
        url: str,
        response: requests.Response,
        body: bytes,
        run: int,
        camcol: int,
        field: int,
        band: str,
    ) -> FrameFetchResult:
        status = response.status_code
        if status == 404:
            return NoCoverage(f"SDSS frame {name}: HTTP 404, no such frame at {url}")
        outcome = classify_status(status, response.headers, body, now=self._wall_clock())
        if isinstance(outcome, Retryable) and outcome.kind == "http_500":
            # The SAS serves static files: a 500 is a fault, never "no data here".
            outcome = dataclasses.replace(outcome, kind="server_error")
        if outcome is not None:
            return dataclasses.replace(outcome, reason=f"SDSS frame {name}: {outcome.reason}")
        try:
            frame = parse_frame(body, run=run, camcol=camcol, field=field, band=band)
        except SdssFrameError as exc:
            reason = f"HTTP {status} but {exc}"
            declared = response.headers.get("Content-Length", "").strip()
            if exc.problem in _DAMAGED_FILE_PROBLEMS and declared == str(len(body)):
                # Every byte the server announced arrived (the transfer checks Content-Length),
                # so the stream was broken before it was sent: the file on the server is
                # damaged, and another download gives the same bytes.
                return Permanent(
                    f"{reason}; all {declared} bytes the server announced arrived, so the "
                    "file itself is damaged on the server",
                    "not_fits",
                )
            if exc.problem in _RETRYABLE_PROBLEMS:
                return Retryable(reason, None, _RETRYABLE_PROBLEMS[exc.problem])
            return Permanent(reason, _PERMANENT_PROBLEMS[exc.problem])
        return FrameSuccess(frame, body)
