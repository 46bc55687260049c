"""Synthetic SDSS DR10 frames: the synthetic sky's galaxies, served as the SAS serves frames.

``GET /sas/dr10/boss/photoObj/frames/RERUN/RUN/CAMCOL/frame-BAND-RUN6-CAMCOL-FIELD4.fits.bz2``
(the path of :func:`galpipe.survey.sdss.frame_url` under the sky's ``/sas`` root) answers a
bzip2-compressed FITS frame in the SDSS data-model layout that
:func:`galpipe.survey.sdss.parse_frame` reads: the sky-subtracted image in nanomaggies with a TAN
WCS, ``CALIB`` (nanomaggies per DN, one per column), the sky table (``ALLSKY`` on a coarse grid
with ``XINTERP``/``YINTERP``) and a small frame-information table.

The frames are small (:data:`FRAME_ROWS` x :data:`FRAME_COLS` pixels of 0.396 arcsec, about
100 x 76 arcsec instead of a real frame's 2048 x 1489) and tile the sky in a synthetic layout,
one field per box of the frame's size (:func:`field_of`, :func:`field_centre`), so a catalogue
row's ``run``/``camcol``/``field`` follow from its position. Every catalogued galaxy in the box
(with its neighbours) is drawn by :func:`galpipe.synthetic.render.render_cutout` without noise;
the noise is then drawn from the frame's own error model (the data model's recipe,
:func:`galpipe.survey.sdss.error_image`), so the error image the parser computes from the sky
HDU describes the noise that is really there. Each band's grid is shifted by a fraction of a
pixel from the others, as the bands of a real field are, so the bands must be registered.

Only g, r, i and z are drawn (the synthetic truths have no u flux): a u frame is a 404, as a
frame the SAS does not have.
"""

from __future__ import annotations

import bz2
import io
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from galpipe.survey.sdss import (
    DEFAULT_RERUN,
    dark_variance,
    error_image,
    frame_name,
    gain,
    interpolate_sky,
)
from galpipe.synthetic.render import render_cutout, tangent_offset_arcsec
from galpipe.synthetic.truth import TruthGalaxy

__all__ = [
    "FRAMES_PREFIX",
    "FRAME_COLS",
    "FRAME_ROWS",
    "PIXSCALE_ARCSEC",
    "SYNTHETIC_BANDS",
    "FrameId",
    "RenderedFrame",
    "SyntheticFrames",
    "field_centre",
    "field_of",
    "frame_fits",
    "parse_frame_path",
    "render_frame",
]

#: Where the frames are served, below the sky's base URL (the SAS root is ``{url}/sas``).
FRAMES_PREFIX = "/sas/dr10/boss/photoObj/frames/"
#: Rows (``NAXIS2``) and columns (``NAXIS1``) of a synthetic frame, pixels.
FRAME_ROWS = 192
FRAME_COLS = 256
#: SDSS pixel scale, arcseconds per pixel.
PIXSCALE_ARCSEC = 0.396
#: Bands the synthetic frames have.
SYNTHETIC_BANDS = "griz"
#: The coarse sky grid, (rows, cols) nodes.
_SKY_NODES = (6, 8)
#: Sky level (DN) and calibration (nanomaggies per DN) per band: SDSS-like values.
_SKY_DN = {"g": 110.0, "r": 160.0, "i": 230.0, "z": 190.0}
_CALIB = {"g": 0.0039, "r": 0.0051, "i": 0.0068, "z": 0.031}
#: Each band's grid offset from the field's, pixels (x, y): the bands of a real field are read
#: by different CCD rows as the sky drifts past, so their grids differ by fractions of a pixel.
_BAND_SHIFT_PX = {"g": (0.0, 0.0), "r": (0.37, -0.21), "i": (-0.29, 0.44), "z": (0.18, 0.31)}
#: Runs of the synthetic layout start here, so that every declination has a positive run.
_RUN_OFFSET = 5000
_HEIGHT_DEG = FRAME_ROWS * PIXSCALE_ARCSEC / 3600.0
_WIDTH_DEG = FRAME_COLS * PIXSCALE_ARCSEC / 3600.0
_NOISE_SALT = 0x5D55
_PATH = re.compile(
    r"(?P<rerun>[0-9A-Za-z_.-]+)/(?P<run>\d+)/(?P<camcol>[1-6])/"
    r"frame-(?P<band>[ugriz])-(?P<run6>\d{6})-(?P<camcol2>[1-6])-(?P<field>\d{4})\.fits\.bz2"
)


@dataclass(frozen=True)
class FrameId:
    """One frame: ``rerun``, ``run``, ``camcol`` (1 … 6), ``field`` and ``band``."""

    rerun: str
    run: int
    camcol: int
    field: int
    band: str

    @property
    def name(self) -> str:
        """``'run-camcol-field-band'``, as :func:`galpipe.survey.sdss.frame_name`."""
        return frame_name(self.run, self.camcol, self.field, self.band)


def parse_frame_path(path: str) -> FrameId | None:
    """The frame a request path names, or None if it is not a frame path of this layout."""
    if not path.startswith(FRAMES_PREFIX):
        return None
    match = _PATH.fullmatch(path[len(FRAMES_PREFIX) :])
    if match is None:
        return None
    run, camcol = int(match["run"]), int(match["camcol"])
    if int(match["run6"]) != run or int(match["camcol2"]) != camcol:
        return None
    return FrameId(match["rerun"], run, camcol, int(match["field"]), match["band"])


def field_of(ra: float, dec: float) -> tuple[int, int, int]:
    """``(run, camcol, field)`` of the synthetic field whose box holds ``(ra, dec)`` degrees.

    Boxes are :data:`FRAME_ROWS` pixels high in declination and :data:`FRAME_COLS` pixels wide
    along the parallel at the box's central declination; the box index along declination gives
    the run, the one along right ascension the camcol (modulo 6) and the field.
    """
    j = math.floor(dec / _HEIGHT_DEG)
    dec_c = (j + 0.5) * _HEIGHT_DEG
    i = math.floor((ra % 360.0) * math.cos(math.radians(dec_c)) / _WIDTH_DEG)
    return _RUN_OFFSET + j, 1 + i % 6, i // 6


def field_centre(run: int, camcol: int, field: int) -> tuple[float, float]:
    """``(ra, dec)`` in degrees of the centre of a synthetic field's box (:func:`field_of`)."""
    j = run - _RUN_OFFSET
    i = 6 * field + camcol - 1
    dec_c = (j + 0.5) * _HEIGHT_DEG
    return ((i + 0.5) * _WIDTH_DEG / math.cos(math.radians(dec_c))) % 360.0, dec_c


def _band_wcs_header(ra_c: float, dec_c: float, band: str) -> fits.Header:
    """The band's 2-D TAN WCS: north up, east left, centred on the field, shifted by the band's
    fraction of a pixel."""
    dx, dy = _BAND_SHIFT_PX[band]
    scale = PIXSCALE_ARCSEC / 3600.0
    header = fits.Header()
    for key, value in (
        ("CTYPE1", "RA---TAN"),
        ("CTYPE2", "DEC--TAN"),
        ("CRVAL1", ra_c),
        ("CRVAL2", dec_c),
        ("CRPIX1", (FRAME_COLS + 1) / 2 + dx),
        ("CRPIX2", (FRAME_ROWS + 1) / 2 + dy),
        ("CD1_1", -scale),
        ("CD1_2", 0.0),
        ("CD2_1", 0.0),
        ("CD2_2", scale),
        ("RADESYS", "ICRS"),
        ("EQUINOX", 2000.0),
        ("BUNIT", "nanomaggy"),
        ("FILTER", band),
    ):
        header[key] = value
    return header


def _sky_table(band: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``ALLSKY`` (DN, a gentle gradient), ``XINTERP`` and ``YINTERP`` of a band's frame."""
    ny, nx = _SKY_NODES
    j, i = np.mgrid[0:ny, 0:nx]
    allsky = _SKY_DN[band] * (1.0 + 0.02 * i / nx + 0.03 * j / ny)
    xinterp = (np.arange(FRAME_COLS) + 0.5) * nx / FRAME_COLS - 0.5
    yinterp = (np.arange(FRAME_ROWS) + 0.5) * ny / FRAME_ROWS - 0.5
    return allsky, xinterp, yinterp


def _calib(band: str) -> np.ndarray:
    """``CALIB`` of a band's frame, nanomaggies per DN, a few per cent across the columns.

    Rounded to float32, the precision the frame stores, so that the error model the noise is
    drawn from is the one the parser computes.
    """
    ramp = np.linspace(-1.0, 1.0, FRAME_COLS)
    return (_CALIB[band] * (1.0 + 0.03 * ramp)).astype(np.float32).astype(np.float64)


@dataclass(frozen=True, eq=False)
class RenderedFrame:
    """The content of a synthetic frame's HDUs.

    Attributes
    ----------
    image
        float32 ``(FRAME_ROWS, FRAME_COLS)``, sky-subtracted flux with noise, nanomaggies.
    calib
        float64 ``(FRAME_COLS,)``, nanomaggies per DN.
    allsky, xinterp, yinterp
        The sky table: the coarse sky in DN ``(6, 8)`` and the positions of every column and
        row in its pixel coordinates.
    header
        The image header with its TAN WCS.
    """

    image: np.ndarray
    calib: np.ndarray
    allsky: np.ndarray
    xinterp: np.ndarray
    yinterp: np.ndarray
    header: fits.Header


def render_frame(frame: FrameId, truths: Sequence[TruthGalaxy]) -> RenderedFrame:
    """Draw a synthetic frame: ``truths`` without noise, then the noise of its error model."""
    ra_c, dec_c = field_centre(frame.run, frame.camcol, frame.field)
    header = _band_wcs_header(ra_c, dec_c, frame.band)
    dx, dy = _BAND_SHIFT_PX[frame.band]
    scale = PIXSCALE_ARCSEC / 3600.0
    # The sky at the frame's central pixel: CRVAL moved by the band's shift (east is -x).
    centre = (
        ra_c + dx * scale / math.cos(math.radians(dec_c)),
        dec_c - dy * scale,
    )
    size = FRAME_COLS
    crop = (size - FRAME_ROWS) // 2
    signal = np.zeros((FRAME_ROWS, FRAME_COLS), dtype=np.float64)
    for truth in truths:
        stamp = render_cutout(truth, size, PIXSCALE_ARCSEC, frame.band, centre=centre, noise=False)
        signal += stamp[0, crop : crop + FRAME_ROWS, :]
    calib = _calib(frame.band)
    allsky, xinterp, yinterp = _sky_table(frame.band)
    sky_dn = interpolate_sky(allsky, signal.shape, xinterp, yinterp)
    sigma = error_image(
        signal,
        calib,
        sky_dn,
        gain=gain(frame.camcol, frame.band, frame.run),
        dark_variance=dark_variance(frame.camcol, frame.band, frame.run),
    )
    seed = np.random.SeedSequence(
        [_NOISE_SALT, frame.run, frame.camcol, frame.field, SYNTHETIC_BANDS.index(frame.band)]
    )
    noise = np.random.default_rng(seed).standard_normal(signal.shape)
    image = (signal + noise * sigma).astype(np.float32)
    return RenderedFrame(image, calib, allsky, xinterp, yinterp, header)


def frame_fits(frame: FrameId, truths: Sequence[TruthGalaxy]) -> bytes:
    """The uncompressed FITS file of a synthetic frame, in the SDSS data-model layout."""
    rendered = render_frame(frame, truths)
    allsky = rendered.allsky
    ny, nx = allsky.shape
    sky = fits.BinTableHDU.from_columns(
        [
            # TDIM is (NAXIS1, NAXIS2) = (columns, rows): numpy reads the cell as (rows, cols).
            fits.Column(
                name="ALLSKY",
                format=f"{allsky.size}E",
                dim=f"({nx},{ny})",
                array=allsky[np.newaxis].astype(np.float32),
            ),
            fits.Column(
                name="XINTERP",
                format=f"{FRAME_COLS}E",
                array=rendered.xinterp[np.newaxis].astype("f4"),
            ),
            fits.Column(
                name="YINTERP",
                format=f"{FRAME_ROWS}E",
                array=rendered.yinterp[np.newaxis].astype("f4"),
            ),
        ]
    )
    info = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="RUN", format="J", array=np.array([frame.run])),
            fits.Column(name="CAMCOL", format="J", array=np.array([frame.camcol])),
            fits.Column(name="FIELD", format="J", array=np.array([frame.field])),
        ]
    )
    hdul = fits.HDUList(
        [
            fits.PrimaryHDU(data=rendered.image, header=rendered.header),
            fits.ImageHDU(data=rendered.calib.astype(np.float32)),
            sky,
            info,
        ]
    )
    out = io.BytesIO()
    hdul.writeto(out)
    return out.getvalue()


class SyntheticFrames:
    """The frames of a synthetic sky: rendered on request from its catalogue, cached.

    Parameters
    ----------
    truths : sequence of TruthGalaxy
        The catalogue; a frame draws every galaxy whose position is within the frame's box
        plus a margin (its light reaches in).
    damaged : collection of str
        Frame names (``'run-camcol-field-band'``) served damaged at the source: the bzip2
        file cut to half its length, sent whole with a matching ``Content-Length`` (a file that
        is broken on the server, not in transit).
    cache_size : int
        Compressed frames kept (about 0.2 MB each).
    """

    def __init__(
        self,
        truths: Sequence[TruthGalaxy],
        *,
        damaged: Collection[str] = (),
        cache_size: int = 64,
    ) -> None:
        self._truths = list(truths)
        self._ra = np.array([t.ra for t in self._truths], dtype=np.float64)
        self._dec = np.array([t.dec for t in self._truths], dtype=np.float64)
        self.damaged = frozenset(damaged)
        self._cache_size = cache_size
        self._cache: OrderedDict[FrameId, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.renders = 0

    def truths_in(self, frame: FrameId) -> list[TruthGalaxy]:
        """The catalogued galaxies drawn into ``frame``: within its box plus 10 arcsec."""
        if not self._truths:
            return []
        ra_c, dec_c = field_centre(frame.run, frame.camcol, frame.field)
        margin = 10.0
        half_w = FRAME_COLS * PIXSCALE_ARCSEC / 2 + margin
        half_h = FRAME_ROWS * PIXSCALE_ARCSEC / 2 + margin
        # A cheap box cut first (degrees), then the exact tangent-plane offsets.
        near = np.flatnonzero(
            (np.abs(self._dec - dec_c) * 3600.0 < half_h + 60.0)
            & (np.abs((self._ra - ra_c + 180.0) % 360.0 - 180.0) < 1.0)
        )
        kept = []
        for k in near:
            truth = self._truths[int(k)]
            try:
                xi, eta = tangent_offset_arcsec(ra_c, dec_c, truth.ra, truth.dec)
            except ValueError:
                continue
            if abs(xi) <= half_w and abs(eta) <= half_h:
                kept.append(truth)
        return kept

    def frame_bytes(self, frame: FrameId) -> bytes | None:
        """The ``.fits.bz2`` body of ``frame`` (damaged if so configured), or None for a frame
        this sky does not have (another rerun, the u band)."""
        if frame.rerun != DEFAULT_RERUN or frame.band not in SYNTHETIC_BANDS:
            return None
        with self._lock:
            body = self._cache.get(frame)
            if body is not None:
                self._cache.move_to_end(frame)
        if body is None:
            body = bz2.compress(frame_fits(frame, self.truths_in(frame)))
            with self._lock:
                self.renders += 1
                if self._cache_size > 0:
                    self._cache[frame] = body
                    while len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
        if frame.name in self.damaged:
            return body[: len(body) // 2]
        return body
