"""A parsed multi-band cutout and the checks that turn FITS bytes into one.

The layout is the one the DESI Legacy Surveys viewer writes for ``/viewer/fits-cutout`` (confirmed
in the public server code, ``legacysurvey/imagine``, ``map/views.py``: ``MapLayer.write_cutout``
and ``LegacySurveySplitLayer.populate_fits_cutout_header``), and the one the synthetic sky copies:

- the primary HDU holds a float32 cube of shape ``(nbands, H, W)`` in nanomaggies, bands in the
  requested order (``cube = np.empty((len(bands), height, width), np.float32)``); a single-band
  request gives a plain 2-D image (``cube = ims[0]``), which :func:`parse_cutout` reshapes to
  ``(1, H, W)``;
- header cards ``BANDS`` (e.g. ``'griz'``), ``BAND0``, ``BAND1`` … (one band each), ``IMAGETYP``
  (``'IMAGE'``), ``SURVEY`` (``'LegacySurvey'`` for the ``ls-dr10`` layer) and ``VERSION``
  (``'DR10'``);
- a 2-D TAN WCS from astrometry.net's ``Tan(ra, dec, (W+1)/2, (H+1)/2, -pixscale/3600, 0, 0,
  +pixscale/3600, W, H)``: north up, east left, and no third WCS axis, so it is read with
  ``WCS(header, naxis=2)``;
- pixels and bands without data are 0.0: the renderer accumulates only the bricks that have the
  band, so in the north (``ls-dr9-north`` under ``ls-dr10``, no i band) the i plane is all zero.

Image convention: ``data[b]`` row 0 is FITS pixel y = 1 (south), column 0 is x = 1 (east).
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS, FITSFixedWarning

from galpipe.errors import InputError

__all__ = [
    "FITS_BLOCK_BYTES",
    "Cutout",
    "CutoutFormatError",
    "FormatProblem",
    "band_coverage",
    "describe_body",
    "parse_cutout",
]

#: FITS files are made of 2,880-byte blocks (FITS standard 4.0, section 3.1).
FITS_BLOCK_BYTES = 2880
_CARD_BYTES = 80
_FITS_MAGIC = b"SIMPLE  ="
_GZIP_MAGIC = b"\x1f\x8b"
_FLOAT_BITPIX: dict[int, np.dtype] = {-32: np.dtype(">f4"), -64: np.dtype(">f8")}
_PREVIEW_CHARS = 60

#: What is wrong with a body that is not a usable cutout.
#:
#: - ``empty``: no bytes at all;
#: - ``truncated``: the body ends before the header or data that its own header announces;
#: - ``corrupt``: the header carries ``DATASUM``/``CHECKSUM`` cards (FITS standard 4.0,
#:   appendix J) and the bytes do not match them;
#: - ``not_fits``: the body is not a FITS file (text, HTML, gzip …);
#: - ``wrong_type``: the image is not floating point;
#: - ``wrong_shape``: the cube is not ``(nbands, size, size)``;
#: - ``wrong_bands``: ``BANDS``/``BANDn`` do not name the requested bands in order;
#: - ``bad_wcs``: no 2-D celestial TAN WCS can be read from the header;
#: - ``wrong_position``: the WCS reference point is not the requested position.
FormatProblem = Literal[
    "empty",
    "truncated",
    "corrupt",
    "not_fits",
    "wrong_type",
    "wrong_shape",
    "wrong_bands",
    "bad_wcs",
    "wrong_position",
]


class CutoutFormatError(InputError, ValueError):
    """The bytes are not a cutout of the requested layout; ``problem`` says what is wrong."""

    def __init__(self, problem: FormatProblem, message: str) -> None:
        self.problem: FormatProblem = problem
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.problem, str(self)))


@dataclass(frozen=True, eq=False)
class Cutout:
    """One multi-band cutout, as parsed from the service's FITS answer.

    Attributes
    ----------
    data
        float32 array ``(nbands, H, W)`` in nanomaggies; row 0 is south, column 0 is east.
        Kept as received: uncovered pixels are 0.0 (the service's fill value).
    bands
        Band names in the order of ``data``'s first axis, e.g. ``('g', 'r', 'i', 'z')``.
    header
        The primary header as received (3-D image keywords plus the 2-D WCS cards).
    coverage
        bool array ``(nbands,)``: True where the band plane holds data (see
        :func:`band_coverage`).
    """

    data: np.ndarray
    bands: tuple[str, ...]
    header: fits.Header
    coverage: np.ndarray

    @cached_property
    def wcs(self) -> WCS:
        """The 2-D celestial TAN WCS, ``WCS(header, naxis=2)``, built on first access.

        :func:`parse_cutout` has already checked the WCS cards, so building it cannot fail for
        a parsed cutout; it is deferred because astropy takes about 1 ms per WCS and the fetch
        path never needs it.
        """
        return _build_wcs(self.header)

    @property
    def missing_bands(self) -> tuple[str, ...]:
        """Bands whose plane is blank (all zero or non-finite), in cube order."""
        return tuple(b for b, ok in zip(self.bands, self.coverage, strict=True) if not ok)

    @property
    def covered_bands(self) -> tuple[str, ...]:
        """Bands whose plane holds data, in cube order."""
        return tuple(b for b, ok in zip(self.bands, self.coverage, strict=True) if ok)

    @property
    def shape(self) -> tuple[int, int]:
        """Image size ``(H, W)`` in pixels."""
        return (int(self.data.shape[1]), int(self.data.shape[2]))


def band_coverage(data: np.ndarray) -> np.ndarray:
    """Per-band coverage of a cube: True where a band plane has a finite, non-zero pixel.

    The service fills pixels and bands without data with exactly 0.0 (it accumulates only the
    bricks that have the band into a zero-initialised image), so a plane whose pixels are all zero
    or non-finite carries no measurement. Real sky-subtracted data are never exactly zero
    everywhere.

    Parameters
    ----------
    data
        Array ``(nbands, H, W)``.

    Returns
    -------
    numpy.ndarray
        bool ``(nbands,)``.
    """
    covered = np.isfinite(data) & (data != 0)
    return np.asarray(covered.reshape(data.shape[0], -1).any(axis=1))


def parse_cutout(
    body: bytes,
    *,
    bands: str,
    size: int,
    center: tuple[float, float] | None = None,
    pixscale: float | None = None,
) -> Cutout:
    """Check and parse the FITS answer of a cutout request.

    Parameters
    ----------
    body
        The response body, byte for byte.
    bands
        The requested bands in order, e.g. ``'griz'`` (one character per band).
    size
        The requested width and height in pixels.
    center
        The requested ``(ra, dec)`` in degrees; when given with ``pixscale``, the WCS reference
        point must lie within half a pixel of it.
    pixscale
        The requested pixel scale in arcsec per pixel (for the ``center`` check).

    Returns
    -------
    Cutout
        Its ``wcs`` is built on first access; the WCS cards are checked here.

    Raises
    ------
    CutoutFormatError
        If the body is empty, truncated, not FITS, or not a cube of the requested layout; its
        ``problem`` says which and the message names the card or the numbers at fault.
    """
    if not body:
        raise CutoutFormatError("empty", "empty body (0 bytes) instead of a FITS cutout")
    if not body.startswith(_FITS_MAGIC):
        raise CutoutFormatError("not_fits", f"body is not FITS: {describe_body(body)}")
    header_bytes = _header_length(body)
    header = _read_header(body[:header_bytes])
    simple = _card_value(header, "SIMPLE")
    if simple is not True:
        # SIMPLE = F declares a file that does not follow the standard: its layout is unknown.
        raise CutoutFormatError("not_fits", f"SIMPLE = {simple!r}: not a standard FITS file")
    dtype = _image_dtype(header)
    scale, offset = _scaling(header)
    axes = _axes(header)
    n_pixels = math.prod(axes) if axes else 0  # NAXIS = 0: a header without data
    data_bytes = dtype.itemsize * n_pixels
    if len(body) < header_bytes + data_bytes:
        raise CutoutFormatError(
            "truncated",
            f"FITS body truncated: {len(body)} bytes, but its header announces "
            f"{header_bytes} header bytes + {data_bytes} data bytes for a "
            f"{'x'.join(str(n) for n in reversed(axes))} image",
        )
    if "DATASUM" in header or "CHECKSUM" in header:
        _verify_checksums(body)
    data = _read_data(body, header_bytes, dtype, axes, scale=scale, offset=offset)
    data = _as_cube(data, bands=bands, size=size)
    _check_bands(header, bands)
    crval = _check_wcs_cards(header)
    if center is not None and pixscale is not None:
        _check_center(crval, center, pixscale)
    return Cutout(
        data=data,
        bands=tuple(bands),
        header=header,
        coverage=band_coverage(data),
    )


def describe_body(body: bytes) -> str:
    """A short, printable description of a body that is not FITS (for error messages)."""
    if body.startswith(_GZIP_MAGIC):
        return f"gzip-compressed data ({len(body)} bytes); the service sends plain FITS"
    text = body[: _PREVIEW_CHARS * 4].decode("utf-8", errors="replace")
    preview = " ".join(text.split())[:_PREVIEW_CHARS]
    if not preview.isprintable() or "\ufffd" in preview:
        return f"{len(body)} bytes of binary data"
    return f"{len(body)} bytes of text starting {preview!r}"


def _header_length(body: bytes) -> int:
    """Bytes of the primary header: whole blocks up to the one that holds the END card."""
    for block_start in range(0, len(body), FITS_BLOCK_BYTES):
        block = body[block_start : block_start + FITS_BLOCK_BYTES]
        for card_start in range(0, len(block), _CARD_BYTES):
            if block[card_start : card_start + _CARD_BYTES].rstrip(b" ") == b"END":
                if len(block) < FITS_BLOCK_BYTES:
                    break  # the END card arrived but the block it closes did not
                return block_start + FITS_BLOCK_BYTES
    raise CutoutFormatError(
        "truncated",
        f"FITS body truncated: {len(body)} bytes and no complete header (no END card "
        f"closing a {FITS_BLOCK_BYTES}-byte block)",
    )


def _read_header(raw: bytes) -> fits.Header:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            return fits.Header.fromstring(raw)
    except (ValueError, fits.VerifyError) as exc:
        raise CutoutFormatError("not_fits", f"unreadable FITS header: {exc}") from None


def _card_value(
    header: fits.Header,
    key: str,
    default: object = None,
    *,
    problem: FormatProblem = "not_fits",
) -> object:
    """``header.get(key, default)``, with a card astropy cannot parse reported as ``problem``.

    astropy parses card values on first access, so a mangled value (corruption in transit)
    surfaces here as a ``VerifyError`` rather than when the header is read.
    """
    try:
        return header.get(key, default)
    except (ValueError, fits.VerifyError) as exc:
        raise CutoutFormatError(problem, f"unreadable {key} card: {exc}") from None


def _image_dtype(header: fits.Header) -> np.dtype:
    bitpix = _card_value(header, "BITPIX")
    dtype: np.dtype | None = _FLOAT_BITPIX.get(bitpix) if isinstance(bitpix, int) else None
    if dtype is None:
        raise CutoutFormatError(
            "wrong_type",
            f"BITPIX = {bitpix!r}: expected a floating-point image (-32, float32) in nanomaggies",
        )
    return dtype


def _axes(header: fits.Header) -> tuple[int, ...]:
    naxis = _card_value(header, "NAXIS")
    if not isinstance(naxis, int) or not 0 <= naxis <= 999:
        raise CutoutFormatError("not_fits", f"NAXIS = {naxis!r} is not a FITS axis count")
    axes = tuple(_card_value(header, f"NAXIS{i}") for i in range(1, naxis + 1))
    if not all(isinstance(n, int) and n >= 0 for n in axes):
        raise CutoutFormatError("not_fits", f"NAXISn = {axes!r} are not axis lengths")
    return tuple(int(n) for n in axes if isinstance(n, int))  # all are, as just checked


def _scaling(header: fits.Header) -> tuple[float, float]:
    """``(BSCALE, BZERO)``, each 1.0 / 0.0 when absent (FITS standard 4.0, section 4.4.2.5)."""
    values = []
    for key, default in (("BSCALE", 1.0), ("BZERO", 0.0)):
        value = _card_value(header, key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CutoutFormatError("not_fits", f"{key} = {value!r} is not a number")
        if not math.isfinite(value) or (key == "BSCALE" and value == 0):
            raise CutoutFormatError("not_fits", f"{key} = {value!r} is not a usable scale")
        values.append(float(value))
    return values[0], values[1]


def _read_data(
    body: bytes,
    header_bytes: int,
    dtype: np.dtype,
    axes: tuple[int, ...],
    *,
    scale: float,
    offset: float,
) -> np.ndarray:
    """The primary image as native float32, read straight from the bytes after the header.

    The caller has checked that ``body`` holds the whole data array; any bytes after it (the
    padding to a 2,880-byte block, or nothing when a server leaves the padding out) are ignored.
    FITS stores ``NAXIS1`` fastest, so the array is ``axes`` reversed in C order.
    """
    count = math.prod(axes) if axes else 0
    raw = np.frombuffer(body, dtype=dtype, count=count, offset=header_bytes)
    shape = tuple(reversed(axes)) if axes else (0,)
    if scale == 1.0 and offset == 0.0:
        return raw.reshape(shape).astype(np.float32)  # the copy also swaps to native order
    return (raw.reshape(shape) * scale + offset).astype(np.float32)


def _verify_checksums(body: bytes) -> None:
    """Check ``DATASUM``/``CHECKSUM`` (FITS standard 4.0, appendix J) with astropy.

    The Legacy Surveys viewer writes no checksums, so this slower path (astropy reads the HDU
    again) only runs for a server that does; the synthetic sky's corrupt bodies are random
    bytes and fail earlier, on the ``SIMPLE`` card.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            with fits.open(io.BytesIO(body), memmap=False) as hdul:
                hdu = hdul[0]
                # verify_*: 0 = mismatch, 1 = match, 2 = card absent.
                if "DATASUM" in hdu.header and hdu.verify_datasum() == 0:
                    raise CutoutFormatError(
                        "corrupt", f"data do not match DATASUM = {hdu.header['DATASUM']!r}"
                    )
                if "CHECKSUM" in hdu.header and hdu.verify_checksum() == 0:
                    raise CutoutFormatError(
                        "corrupt", f"HDU does not match CHECKSUM = {hdu.header['CHECKSUM']!r}"
                    )
    except (OSError, ValueError, TypeError, fits.VerifyError) as exc:
        if isinstance(exc, CutoutFormatError):
            raise
        raise CutoutFormatError("not_fits", f"astropy cannot read the FITS image: {exc}") from None


def _as_cube(data: np.ndarray, *, bands: str, size: int) -> np.ndarray:
    nbands = len(bands)
    expected = (nbands, size, size)
    if data.ndim == 2 and nbands == 1:
        data = data[np.newaxis]  # the service writes a single band as a plain 2-D image
    if data.shape != expected:
        raise CutoutFormatError(
            "wrong_shape",
            f"image shape {data.shape}: expected (nbands, H, W) = {expected} for bands "
            f"{bands!r} and size {size}",
        )
    return data


def _check_bands(header: fits.Header, bands: str) -> None:
    declared = _card_value(header, "BANDS")
    if declared is None:
        raise CutoutFormatError("wrong_bands", f"no BANDS card; expected BANDS = {bands!r}")
    if str(declared).strip() != bands:
        raise CutoutFormatError(
            "wrong_bands", f"BANDS = {declared!r}: expected {bands!r} (the requested bands)"
        )
    for i, band in enumerate(bands):
        card = _card_value(header, f"BAND{i}")
        if card is None or str(card).strip() != band:
            raise CutoutFormatError(
                "wrong_bands", f"BAND{i} = {card!r}: expected {band!r} (plane {i} of {bands!r})"
            )


_EXPECTED_CTYPES = ("RA---TAN", "DEC--TAN")


def _check_wcs_cards(header: fits.Header) -> tuple[float, float]:
    """Check the 2-D TAN WCS cards without building an astropy WCS; return ``CRVAL`` (deg).

    Requires ``CTYPE1, CTYPE2 = 'RA---TAN', 'DEC--TAN'``, finite ``CRVALi`` and ``CRPIXi``
    (``CRVAL2`` within ±90°), and an invertible linear transform: the ``CDi_j`` matrix when any
    ``CD`` card is present (absent elements are 0, as in WCSLIB), else ``CDELTi`` (default 1)
    times ``PCi_j`` (default the identity). These are the cards :func:`_build_wcs` reads, so a
    cutout that passes here always yields its WCS.
    """
    ctype = (_string_card(header, "CTYPE1"), _string_card(header, "CTYPE2"))
    if ctype != _EXPECTED_CTYPES:
        raise CutoutFormatError(
            "bad_wcs", f"CTYPE1, CTYPE2 = {ctype}: expected ('RA---TAN', 'DEC--TAN')"
        )
    crval = (_number_card(header, "CRVAL1"), _number_card(header, "CRVAL2"))
    _number_card(header, "CRPIX1")
    _number_card(header, "CRPIX2")
    if not -90.0 <= crval[1] <= 90.0:
        raise CutoutFormatError("bad_wcs", f"CRVAL2 = {crval[1]!r} is not a declination")
    cd_keys = ("CD1_1", "CD1_2", "CD2_1", "CD2_2")
    if any(key in header for key in cd_keys):
        m11, m12, m21, m22 = (_number_card(header, key, 0.0) for key in cd_keys)
        source = "CDi_j"
    else:
        cdelt1, cdelt2 = (_number_card(header, f"CDELT{i}", 1.0) for i in (1, 2))
        pc11, pc12, pc21, pc22 = (
            _number_card(header, key, default)
            for key, default in (("PC1_1", 1.0), ("PC1_2", 0.0), ("PC2_1", 0.0), ("PC2_2", 1.0))
        )
        m11, m12, m21, m22 = cdelt1 * pc11, cdelt1 * pc12, cdelt2 * pc21, cdelt2 * pc22
        source = "CDELTi x PCi_j"
    if m11 * m22 - m12 * m21 == 0.0:
        raise CutoutFormatError(
            "bad_wcs",
            f"singular pixel-to-sky matrix from {source}: [[{m11!r}, {m12!r}], [{m21!r}, {m22!r}]]",
        )
    return crval


def _string_card(header: fits.Header, key: str) -> str:
    value = _card_value(header, key, "", problem="bad_wcs")
    return value if isinstance(value, str) else repr(value)


def _number_card(header: fits.Header, key: str, default: float | None = None) -> float:
    """A finite real-valued WCS card; ``default`` where absent (None: the card is required)."""
    value = _card_value(header, key, default, problem="bad_wcs")
    if value is None:
        raise CutoutFormatError("bad_wcs", f"no {key} card: the 2-D TAN WCS needs it")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CutoutFormatError("bad_wcs", f"{key} = {value!r}: expected a finite number")
    return float(value)


def _build_wcs(header: fits.Header) -> WCS:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            return WCS(header, naxis=2)
    except Exception as exc:  # astropy raises several unrelated types for bad WCS cards
        raise CutoutFormatError("bad_wcs", f"unreadable 2-D WCS: {exc}") from None


def _check_center(crval: tuple[float, float], center: tuple[float, float], pixscale: float) -> None:
    ra, dec = center
    crval_ra, crval_dec = crval
    # Angular separation of CRVAL from the requested position (haversine, degrees).
    d_ra = math.radians((crval_ra - ra + 180.0) % 360.0 - 180.0)
    d_dec = math.radians(crval_dec - dec)
    h = (
        math.sin(d_dec / 2) ** 2
        + math.cos(math.radians(dec)) * math.cos(math.radians(crval_dec)) * math.sin(d_ra / 2) ** 2
    )
    separation_arcsec = math.degrees(2 * math.asin(min(1.0, math.sqrt(h)))) * 3600.0
    if not separation_arcsec <= 0.5 * pixscale:
        raise CutoutFormatError(
            "wrong_position",
            f"WCS reference point CRVAL = ({crval_ra}, {crval_dec}) is {separation_arcsec:.3g} "
            f"arcsec from the requested (ra, dec) = ({ra}, {dec})",
        )
