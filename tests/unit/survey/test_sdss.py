"""SDSS DR10 frames: URL, noise tables, parser and error image, registration, stamps, client.

Frames are built here with astropy in the SDSS data-model layout (HDU0 image with a TAN WCS,
HDU1 CALIB, HDU2 a one-row table of ALLSKY/XINTERP/YINTERP, HDU3 frame info), only small:
16 rows x 24 columns and a 6 x 8 sky grid. Expected error images are computed in the tests from
the data model's formula and the gain/dark-variance values as the documentation lists them, with
an interpolation independent of the module's (an exact linear sky, or FITPACK and
RegularGridInterpolator for a random sky). The client runs against a stdlib HTTP server.
"""

from __future__ import annotations

import bz2
import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import requests
from astropy.io import fits
from astropy.wcs import WCS
from scipy.interpolate import RectBivariateSpline, RegularGridInterpolator
from scipy.sparse.linalg import spsolve

from galpipe.errors import InputError
from galpipe.survey import sdss
from galpipe.survey.legacysurvey import NoCoverage, Permanent, Retryable, make_session
from galpipe.survey.sdss import (
    FrameSuccess,
    SdssFrame,
    SdssFrameClient,
    SdssFrameError,
    StampError,
    WcsMismatchError,
    check_shared_wcs,
    dark_variance,
    frame_url,
    gain,
    interpolate_sky,
    parse_frame,
    register_frames,
    stamp,
    stamp_grid,
)

ROWS, COLS = 16, 24
SKY_ROWS, SKY_COLS = 6, 8
RUN, CAMCOL, FIELD, BAND = 3704, 3, 91, "r"
NAME = "3704-3-91-r"
# camcol 3, r, from the documentation's tables (run 3704 is past both thresholds, which do not
# touch camcol 3 r).
GAIN_3R, DARK_3R = 4.72, 1.3225
PIXSCALE_DEG = 0.396 / 3600
RA0, DEC0 = 150.0, 2.0


def xinterp_default() -> np.ndarray:
    # Each coarse cell covers 3 columns; the outermost columns fall outside the grid.
    return (np.arange(COLS) + 0.5) / 3 - 0.5


def yinterp_default() -> np.ndarray:
    return (np.arange(ROWS) + 0.5) * SKY_ROWS / ROWS - 0.5


def linear_sky() -> np.ndarray:
    j, i = np.mgrid[0:SKY_ROWS, 0:SKY_COLS]
    return 100.0 + 2.0 * i + 3.0 * j


def wcs_header(crpix: tuple[float, float] = ((COLS + 1) / 2, (ROWS + 1) / 2)) -> fits.Header:
    header = fits.Header()
    header["CTYPE1"] = "RA---TAN"
    header["CTYPE2"] = "DEC--TAN"
    header["CRVAL1"] = RA0
    header["CRVAL2"] = DEC0
    header["CRPIX1"] = crpix[0]
    header["CRPIX2"] = crpix[1]
    header["CD1_1"] = -PIXSCALE_DEG
    header["CD1_2"] = 0.0
    header["CD2_1"] = 0.0
    header["CD2_2"] = PIXSCALE_DEG
    header["RADESYS"] = "ICRS"
    header["EQUINOX"] = 2000.0
    return header


def make_frame_fits(
    *,
    image: np.ndarray | None = None,
    calib: np.ndarray | None = None,
    allsky: np.ndarray | None = None,
    xinterp: np.ndarray | None = None,
    yinterp: np.ndarray | None = None,
    interp_columns: bool = True,
    header: fits.Header | None = None,
    hdus: int = 4,
    sky_columns: tuple[str, ...] = ("ALLSKY", "XINTERP", "YINTERP"),
) -> bytes:
    """A plain FITS frame in the SDSS data-model layout."""
    rng = np.random.default_rng(3)
    image = image if image is not None else rng.normal(0.0, 0.5, (ROWS, COLS)).astype(np.float32)
    calib = calib if calib is not None else np.linspace(0.004, 0.006, image.shape[1])
    allsky = allsky if allsky is not None else linear_sky()
    xinterp = xinterp if xinterp is not None else xinterp_default()
    yinterp = yinterp if yinterp is not None else yinterp_default()
    ny, nx = allsky.shape
    columns = {
        # TDIM is (NAXIS1, NAXIS2) = (columns, rows), so numpy reads the cell as (rows, cols).
        "ALLSKY": fits.Column(
            name="ALLSKY",
            format=f"{allsky.size}E",
            dim=f"({nx},{ny})",
            array=allsky[np.newaxis].astype(np.float32),
        ),
        "XINTERP": fits.Column(
            name="XINTERP", format=f"{xinterp.size}E", array=xinterp[np.newaxis].astype(np.float32)
        ),
        "YINTERP": fits.Column(
            name="YINTERP", format=f"{yinterp.size}E", array=yinterp[np.newaxis].astype(np.float32)
        ),
    }
    names = sky_columns if interp_columns else tuple(c for c in sky_columns if c == "ALLSKY")
    hdul = fits.HDUList(
        [
            fits.PrimaryHDU(
                data=np.asarray(image, dtype=np.float32),
                header=header if header is not None else wcs_header(),
            ),
            fits.ImageHDU(data=np.asarray(calib, dtype=np.float32)),
            fits.BinTableHDU.from_columns([columns[n] for n in names]),
            fits.BinTableHDU.from_columns(
                [fits.Column(name="RUN", format="J", array=np.array([RUN]))]
            ),
        ][:hdus]
    )
    out = io.BytesIO()
    hdul.writeto(out)
    return out.getvalue()


def parse(body: bytes, **ids: object) -> SdssFrame:
    kwargs: dict = {"run": RUN, "camcol": CAMCOL, "field": FIELD, "band": BAND}
    kwargs.update(ids)
    return parse_frame(body, **kwargs)


def expected_error(image: np.ndarray, calib: np.ndarray, sky_dn: float, row: int, col: int):
    """The data model's formula for one pixel, written out."""
    c = float(np.float32(calib[col]))
    dn = float(image[row, col]) / c + sky_dn
    return np.sqrt(abs(dn / GAIN_3R + DARK_3R)) * c


# ---------------------------------------------------------------------------------------------
# URL


def test_url_is_the_documented_form_with_zero_padding() -> None:
    assert frame_url(3704, 3, 91, "r") == (
        "https://data.sdss.org/sas/dr10/boss/photoObj/frames/301/3704/3/"
        "frame-r-003704-3-0091.fits.bz2"
    )
    assert frame_url(94, 6, 7, "u").endswith("/301/94/6/frame-u-000094-6-0007.fits.bz2")
    assert frame_url(8162, 1, 1234, "z").endswith("/8162/1/frame-z-008162-1-1234.fits.bz2")


def test_url_base_and_rerun_are_parameters() -> None:
    assert (
        frame_url(1, 2, 3, "g", rerun="40", base_url="http://127.0.0.1:8000/mirror/")
        == "http://127.0.0.1:8000/mirror/dr10/boss/photoObj/frames/40/1/2/frame-g-000001-2-0003.fits.bz2"
    )


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"band": "x"}, "band='x'"),
        ({"band": "G"}, "band='G'"),
        ({"band": "gr"}, "band='gr'"),
        ({"camcol": 0}, "camcol=0"),
        ({"camcol": 7}, "camcol=7"),
        ({"camcol": True}, "camcol=True"),
        ({"run": -1}, "run=-1"),
        ({"run": 1.5}, "run=1.5"),
        ({"field": -3}, "field=-3"),
        ({"field": "91"}, "field='91'"),
        ({"rerun": "30/1"}, "rerun='30/1'"),
    ],
)
def test_url_refuses_invalid_identifiers_naming_them(kwargs: dict, words: str) -> None:
    ids: dict = {"run": 3704, "camcol": 3, "field": 91, "band": "r"}
    ids.update(kwargs)
    with pytest.raises(SdssFrameError, match=words.replace("(", r"\(")) as info:
        frame_url(**ids)
    assert info.value.problem == "invalid_id"
    assert isinstance(info.value, InputError)
    assert isinstance(info.value, ValueError)


# ---------------------------------------------------------------------------------------------
# Gain and dark variance

DOC_GAIN = {
    1: {"u": 1.62, "g": 3.32, "r": 4.71, "i": 5.165, "z": 4.745},
    2: {"u": 1.595, "g": 3.855, "r": 4.6, "i": 6.565, "z": 5.155},
    3: {"u": 1.59, "g": 3.845, "r": 4.72, "i": 4.86, "z": 4.885},
    4: {"u": 1.6, "g": 3.995, "r": 4.76, "i": 4.885, "z": 4.775},
    5: {"u": 1.47, "g": 4.05, "r": 4.725, "i": 4.64, "z": 3.48},
    6: {"u": 2.17, "g": 4.035, "r": 4.895, "i": 4.76, "z": 4.69},
}
DOC_DARK = {
    1: {"u": 9.61, "g": 15.6025, "r": 1.8225, "i": 7.84, "z": 0.81},
    2: {"u": 12.6025, "g": 1.44, "r": 1.0, "i": 5.76, "z": 1.0},
    3: {"u": 8.7025, "g": 1.3225, "r": 1.3225, "i": 4.6225, "z": 1.0},
    4: {"u": 12.6025, "g": 1.96, "r": 1.3225, "i": 6.25, "z": 9.61},
    5: {"u": 9.3025, "g": 1.1025, "r": 0.81, "i": 7.84, "z": 1.8225},
    6: {"u": 7.0225, "g": 1.8225, "r": 0.9025, "i": 5.0625, "z": 1.21},
}


def test_early_runs_use_the_documented_tables() -> None:
    for camcol in range(1, 7):
        for band in "ugriz":
            assert gain(camcol, band, 1000) == DOC_GAIN[camcol][band]
            assert dark_variance(camcol, band, 1000) == DOC_DARK[camcol][band]


def test_gain_exception_starts_after_run_1100() -> None:
    assert gain(2, "u", 1100) == 1.595
    assert gain(2, "u", 1101) == 1.825
    changed = {(c, b) for c in range(1, 7) for b in "ugriz" if gain(c, b, 9000) != DOC_GAIN[c][b]}
    assert changed == {(2, "u")}


def test_dark_variance_exceptions_start_after_run_1500() -> None:
    late = {(2, "i"): 6.25, (4, "i"): 7.5625, (4, "z"): 12.6025, (5, "z"): 2.1025}
    for (camcol, band), value in late.items():
        assert dark_variance(camcol, band, 1500) == DOC_DARK[camcol][band]
        assert dark_variance(camcol, band, 1501) == value
    changed = {
        (c, b) for c in range(1, 7) for b in "ugriz" if dark_variance(c, b, 9000) != DOC_DARK[c][b]
    }
    assert changed == set(late)


def test_lookups_are_pure_a_late_run_does_not_change_an_early_one() -> None:
    # The original code wrote the late values into the shared tables.
    assert gain(2, "u", 5000) == 1.825
    assert dark_variance(4, "z", 5000) == 12.6025
    assert gain(2, "u", 100) == 1.595
    assert dark_variance(4, "z", 100) == 9.61


def test_lookups_refuse_unknown_camcol_and_band() -> None:
    with pytest.raises(SdssFrameError, match="camcol=7"):
        gain(7, "r", 100)
    with pytest.raises(SdssFrameError, match="band='y'"):
        dark_variance(1, "y", 100)


# ---------------------------------------------------------------------------------------------
# Parsing and the error image


def test_bz2_frame_round_trip_and_error_image_by_hand() -> None:
    rng = np.random.default_rng(7)
    image = rng.normal(0.0, 0.5, (ROWS, COLS)).astype(np.float32)
    calib = np.linspace(0.004, 0.006, COLS)
    # A pixel far below the sky: dn < 0, where the formula's absolute value matters.
    image[4, 5] = np.float32(-(200.0 + 300.0) * calib[5])
    plain = make_frame_fits(image=image, calib=calib)
    frame = parse(bz2.compress(plain))
    assert frame.shape == (ROWS, COLS)
    assert frame.name == NAME
    assert (frame.run, frame.camcol, frame.field, frame.band) == (RUN, CAMCOL, FIELD, BAND)
    np.testing.assert_array_equal(frame.image, image)
    np.testing.assert_allclose(frame.calib, calib.astype(np.float32))
    assert frame.header["CTYPE1"] == "RA---TAN"
    assert frame.wcs.has_celestial
    ra, dec = frame.wcs.pixel_to_world_values((COLS - 1) / 2, (ROWS - 1) / 2)
    assert (ra, dec) == pytest.approx((RA0, DEC0))
    # The sky is linear, so the cubic spline is exact: sky = 100 + 2 x + 3 y at the clamped
    # coarse position (x, y) = (XINTERP[col], YINTERP[row]) limited to [0, 7] x [0, 5].
    for row, col in [(0, 0), (4, 5), (8, 11), (15, 23), (3, 20)]:
        x = min(max((col + 0.5) / 3 - 0.5, 0.0), 7.0)
        y = min(max((row + 0.5) * 6 / 16 - 0.5, 0.0), 5.0)
        sky_dn = 100.0 + 2.0 * x + 3.0 * y
        assert frame.error[row, col] == pytest.approx(
            expected_error(image, calib, sky_dn, row, col), rel=1e-5
        )
    assert frame.error.shape == (ROWS, COLS)
    assert frame.error.dtype == np.float32
    # Below the sky by 300 DN more than the sky's ~ 200 DN: |dn/gain + dark| is what counts.
    assert np.isfinite(frame.error).all()


def test_plain_fits_is_accepted_and_gives_the_same_frame() -> None:
    plain = make_frame_fits()
    from_plain = parse(plain)
    from_bz2 = parse(bz2.compress(plain))
    np.testing.assert_array_equal(from_plain.error, from_bz2.error)


def test_multi_stream_bz2_is_read_whole() -> None:
    plain = make_frame_fits()
    half = len(plain) // 2
    frame = parse(bz2.compress(plain[:half]) + bz2.compress(plain[half:]))
    np.testing.assert_array_equal(frame.error, parse(plain).error)


def test_without_interp_columns_the_documents_scaled_positions_are_used() -> None:
    image = np.zeros((ROWS, COLS), np.float32)
    calib = np.full(COLS, 0.005)
    frame = parse(make_frame_fits(image=image, calib=calib, interp_columns=False))
    for row, col in [(0, 0), (7, 9), (15, 23)]:
        x = min(col * SKY_COLS / COLS, SKY_COLS - 1.0)
        y = min(row * SKY_ROWS / ROWS, SKY_ROWS - 1.0)
        sky_dn = 100.0 + 2.0 * x + 3.0 * y
        assert frame.error[row, col] == pytest.approx(
            expected_error(image, calib, sky_dn, row, col), rel=1e-5
        )


def test_sky_interpolation_is_the_bicubic_spline_of_fitpack_and_regular_grid() -> None:
    sky = np.random.default_rng(11).normal(100.0, 5.0, (SKY_ROWS, SKY_COLS))
    x, y = xinterp_default(), yinterp_default()
    got = interpolate_sky(sky, (ROWS, COLS), x, y)
    xc, yc = np.clip(x, 0, SKY_COLS - 1), np.clip(y, 0, SKY_ROWS - 1)
    nodes_y, nodes_x = np.arange(SKY_ROWS, dtype=float), np.arange(SKY_COLS, dtype=float)
    fitpack = RectBivariateSpline(nodes_y, nodes_x, sky, kx=3, ky=3, s=0)(yc, xc)
    np.testing.assert_allclose(got, fitpack, rtol=0, atol=1e-9)
    grid = RegularGridInterpolator((nodes_y, nodes_x), sky, method="cubic", solver=spsolve)
    yy, xx = np.meshgrid(yc, xc, indexing="ij")
    np.testing.assert_allclose(got, grid((yy, xx)), rtol=0, atol=1e-9)
    # Rows and columns are not swapped: a sky that varies only along x varies along columns.
    ramp = np.tile(np.arange(SKY_COLS, dtype=float), (SKY_ROWS, 1))
    along = interpolate_sky(ramp, (ROWS, COLS), x, y)
    assert np.ptp(along[:, 10]) == pytest.approx(0.0, abs=1e-9)
    assert np.ptp(along[5, :]) > 5


def test_transposed_allsky_is_refused_with_interp_columns() -> None:
    with pytest.raises(SdssFrameError, match="transposed") as info:
        parse(make_frame_fits(allsky=linear_sky().T.copy()))
    assert info.value.problem == "bad_sky"
    assert NAME in str(info.value)


def test_transposed_allsky_is_refused_without_interp_columns() -> None:
    with pytest.raises(SdssFrameError, match="transposed"):
        parse(make_frame_fits(allsky=linear_sky().T.copy(), interp_columns=False))


def _truncated_bz2() -> bytes:
    body = bz2.compress(make_frame_fits())
    return body[: len(body) // 2]


def _missing_hdu2() -> bytes:
    return make_frame_fits(hdus=2)


def _calib_wrong_length() -> bytes:
    return make_frame_fits(calib=np.full(COLS - 1, 0.005))


def _calib_nan() -> bytes:
    calib = np.full(COLS, 0.005)
    calib[3] = np.nan
    return make_frame_fits(calib=calib)


def _calib_zero() -> bytes:
    calib = np.full(COLS, 0.005)
    calib[7] = 0.0
    return make_frame_fits(calib=calib)


def _no_wcs() -> bytes:
    return make_frame_fits(header=fits.Header())


def _singular_wcs() -> bytes:
    header = wcs_header()
    header["CD1_1"] = 0.0
    header["CD2_2"] = 0.0
    return make_frame_fits(header=header)


def _no_allsky() -> bytes:
    return make_frame_fits(sky_columns=("XINTERP", "YINTERP"))


def _xinterp_wrong_length() -> bytes:
    return make_frame_fits(xinterp=np.linspace(0, 7, COLS + 2))


def _truncated_fits() -> bytes:
    plain = make_frame_fits()
    return plain[: len(plain) - 4000]


@pytest.mark.parametrize(
    ("make", "problem", "words"),
    [
        (lambda: b"\x00\x01garbage" * 50, "not_fits", "neither bzip2 nor FITS"),
        (lambda: b"<html>Not here</html>", "not_fits", "neither bzip2 nor FITS"),
        (lambda: b"", "empty", "empty body"),
        (lambda: b"BZh91AY&SY" + b"\x00" * 64, "corrupt_bz2", "do not decompress"),
        (_truncated_bz2, "truncated", "bzip2 stream truncated"),
        (lambda: bz2.compress(b"not a fits file at all"), "not_fits", "not FITS"),
        (_truncated_fits, "truncated", "truncated"),
        (_missing_hdu2, "missing_hdu", "2 HDU"),
        (_calib_wrong_length, "wrong_shape", f"CALIB has shape \\({COLS - 1},\\)"),
        (_calib_nan, "bad_calib", "column 3"),
        (_calib_zero, "bad_calib", "column 7"),
        (_no_wcs, "bad_wcs", "CTYPE"),
        (_singular_wcs, "bad_wcs", "WCS"),
        (_no_allsky, "bad_sky", "no ALLSKY column"),
        (_xinterp_wrong_length, "wrong_shape", f"XINTERP has {COLS + 2} values"),
    ],
)
def test_malformed_frames_give_a_clear_error(make, problem: str, words: str) -> None:
    with pytest.raises(SdssFrameError, match=words) as info:
        parse(make())
    assert info.value.problem == problem
    assert str(info.value).startswith(f"SDSS frame {NAME}: ")


def test_bz2_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdss, "MAX_DECOMPRESSED_BYTES", 100_000)
    bomb = bz2.compress(b"\0" * 1_000_000)
    assert len(bomb) < 1000
    with pytest.raises(SdssFrameError, match="more than 100000") as info:
        parse(bomb)
    assert info.value.problem == "too_large"


def test_invalid_identifiers_are_refused_before_parsing() -> None:
    with pytest.raises(SdssFrameError, match="camcol=9"):
        parse(make_frame_fits(), camcol=9)


# ---------------------------------------------------------------------------------------------
# Registration, shared-WCS check, stamps


def frame_with_source(crpix: tuple[float, float], row: int, col: int) -> SdssFrame:
    image = np.zeros((ROWS, COLS), np.float32)
    image[row, col] = 100.0
    return parse(make_frame_fits(image=image, header=wcs_header(crpix)))


def test_frames_offset_by_a_known_shift_register_onto_the_same_pixel() -> None:
    a = frame_with_source(((COLS + 1) / 2, (ROWS + 1) / 2), row=7, col=10)
    # B's reference pixel is 3 columns and 2 rows further: the same sky is at (x + 3, y + 2).
    b = frame_with_source(((COLS + 1) / 2 + 3, (ROWS + 1) / 2 + 2), row=9, col=13)
    reg = register_frames([a, b], a)
    assert reg.images.shape == reg.errors.shape == (2, ROWS, COLS)
    assert reg.bands == ("r", "r")
    for plane in reg.images:
        assert np.unravel_index(np.nanargmax(plane), plane.shape) == (7, 10)
        assert plane[7, 10] == pytest.approx(100.0, rel=1e-4)
    # Errors move with the images: B's error at its source is now at A's source pixel.
    assert reg.errors[1, 7, 10] == pytest.approx(b.error[9, 13], rel=1e-4)
    assert reg.errors[1, 3, 4] == pytest.approx(b.error[5, 7], rel=1e-4)
    # A's columns 21 … 23 and rows 14 … 15 map beyond B's edge: no data there.
    assert np.isnan(reg.images[1, :, 21:]).all()
    assert np.isnan(reg.errors[1, 14:, :]).all()
    assert np.isfinite(reg.images[1, :14, :21]).all()
    assert np.isfinite(reg.images[0]).all()


def test_registering_onto_a_stamp_grid_gives_the_stamp_of_the_full_registration() -> None:
    a = frame_with_source(((COLS + 1) / 2, (ROWS + 1) / 2), row=7, col=10)
    b = frame_with_source(((COLS + 1) / 2 + 3, (ROWS + 1) / 2 + 2), row=9, col=13)
    full = register_frames([a, b], a)
    for x, y in [(10.2, 7.3), (1.2, 0.3), (22.2, 15.3)]:  # centre, lower-left, upper-right
        ra, dec = _sky(a.wcs, x, y)
        cube, err = stamp(full.images, full.errors, full.wcs, ra, dec, size=8)
        grid = stamp_grid(a.wcs, a.shape, ra, dec, size=8)
        direct = register_frames([a, b], grid, (8, 8))
        # Where the stamp lies on A's grid the two agree; beyond A's edge the full
        # registration has nothing while the stamp grid still gets B's pixels where B reaches.
        np.testing.assert_allclose(direct.images[0], cube[0], rtol=1e-6, equal_nan=True)
        on_a = np.isfinite(cube[1])
        np.testing.assert_allclose(direct.images[1][on_a], cube[1][on_a], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(direct.errors[1][on_a], err[1][on_a], rtol=1e-6)
    with pytest.raises(StampError, match="outside"):
        stamp_grid(a.wcs, a.shape, *_sky(a.wcs, 30.0, 7.0), size=8)


def test_registration_onto_a_bare_wcs_needs_a_shape() -> None:
    a = frame_with_source(((COLS + 1) / 2, (ROWS + 1) / 2), row=7, col=10)
    reg = register_frames([a], a.wcs, (8, 12))
    assert reg.images.shape == (1, 8, 12)
    with pytest.raises(WcsMismatchError, match="shape"):
        register_frames([a], a.wcs)
    with pytest.raises(WcsMismatchError, match="no frames"):
        register_frames([], a)


def test_check_shared_wcs_passes_identical_and_refuses_a_one_pixel_shift() -> None:
    same = WCS(wcs_header(), naxis=2)
    check_shared_wcs([same, WCS(wcs_header(), naxis=2)], (40, 40))
    nudged = WCS(wcs_header(((COLS + 1) / 2 + 1e-5, (ROWS + 1) / 2)), naxis=2)
    check_shared_wcs({"g": same, "r": nudged}, (40, 40))
    shifted = WCS(wcs_header(((COLS + 1) / 2 + 1.0, (ROWS + 1) / 2)), naxis=2)
    with pytest.raises(WcsMismatchError, match=r"band 'z'.*band 'g'.*off by 1(\.0+)? px") as info:
        check_shared_wcs({"g": same, "r": same, "z": shifted}, (40, 40))
    assert "register" in str(info.value)
    with pytest.raises(WcsMismatchError, match="image 1"):
        check_shared_wcs([same, shifted], (40, 40), tolerance_px=0.5)


def test_check_shared_wcs_catches_a_rotation_at_the_corners() -> None:
    header = wcs_header()
    angle = np.deg2rad(0.01)  # 0.01 degree: ~0.003 px at the corner of a 40-px stamp
    header["CD1_1"] = -PIXSCALE_DEG * np.cos(angle)
    header["CD1_2"] = PIXSCALE_DEG * np.sin(angle)
    header["CD2_1"] = PIXSCALE_DEG * np.sin(angle)
    header["CD2_2"] = PIXSCALE_DEG * np.cos(angle)
    rotated = WCS(header, naxis=2)
    same = WCS(wcs_header(), naxis=2)
    with pytest.raises(WcsMismatchError, match="corner"):
        check_shared_wcs([same, rotated], (40, 40))


@pytest.fixture
def cube() -> tuple[np.ndarray, np.ndarray, WCS]:
    images = np.arange(3 * ROWS * COLS, dtype=float).reshape(3, ROWS, COLS)
    return images, images / 10 + 1, WCS(wcs_header(), naxis=2)


def _sky(wcs: WCS, x: float, y: float) -> tuple[float, float]:
    ra, dec = wcs.pixel_to_world_values(x, y)
    return float(ra), float(dec)


def test_stamp_is_centred_on_the_position(cube) -> None:
    images, errors, wcs = cube
    ra, dec = _sky(wcs, 10.2, 7.3)
    got, err = stamp(images, errors, wcs, ra, dec, size=6)
    assert got.shape == err.shape == (3, 6, 6)
    # size 6: centre at 2.5; x = 10.2 lands at 2.2, y = 7.3 at 2.3 (within half a pixel).
    np.testing.assert_array_equal(got, images[:, 5:11, 8:14])
    np.testing.assert_array_equal(err, errors[:, 5:11, 8:14])
    full, _ = stamp(images, errors, wcs, ra, dec)  # size 40: galaxy at 19.2, centre 19.5
    np.testing.assert_array_equal(full[:, 19, 19], images[:, 7, 10])


def test_stamp_pads_with_nan_where_it_leaves_the_frame(cube) -> None:
    images, errors, wcs = cube
    got, err = stamp(images, errors, wcs, *_sky(wcs, 1.2, 0.3), size=6)
    # x0 = floor(1.2 - 2) = -1, y0 = -2: one column and two rows off the frame.
    assert np.isnan(got[:, :2, :]).all()
    assert np.isnan(got[:, :, :1]).all()
    assert np.isnan(err[:, :2, :]).all()
    np.testing.assert_array_equal(got[:, 2:, 1:], images[:, 0:4, 0:5])
    full, _ = stamp(images, errors, wcs, *_sky(wcs, 10.2, 7.3), size=40)
    assert np.isfinite(full).sum() == 3 * ROWS * COLS  # every frame pixel once, NaN elsewhere


def test_stamp_refuses_a_position_outside_the_frame(cube) -> None:
    images, errors, wcs = cube
    with pytest.raises(StampError, match=r"outside the 16 x 24 frame"):
        stamp(images, errors, wcs, *_sky(wcs, -5.0, 7.0), size=6)
    with pytest.raises(StampError, match="size=0"):
        stamp(images, errors, wcs, *_sky(wcs, 5.0, 7.0), size=0)
    with pytest.raises(StampError, match="same shape"):
        stamp(images, errors[:2], wcs, *_sky(wcs, 5.0, 7.0))


# ---------------------------------------------------------------------------------------------
# Client against a local HTTP server


@dataclass
class FrameServer:
    base: str
    paths: list[str] = field(default_factory=list)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    paths: list[str]
    frame: bytes


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        scenario = self.path.split("/")[1]
        if scenario == "ok":
            self._send(200, self.server.frame, {"Content-Type": "application/x-bzip2"})
        elif scenario == "missing":
            self._send(404, b"<h1>Not Found</h1>", {"Content-Type": "text/html"})
        elif scenario == "down":
            self._send(503, b"<h1>Service Unavailable</h1>", {"Retry-After": "30"})
        elif scenario == "fault":
            self._send(500, b"<h1>Internal Server Error</h1>")
        elif scenario == "page":
            self._send(200, b"<html>Down for maintenance</html>", {"Content-Type": "text/html"})
        elif scenario == "badcalib":
            self._send(200, bz2.compress(_calib_zero()))
        else:
            self._send(400, b"unknown scenario")

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server() -> Iterator[FrameServer]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.paths = []
    httpd.frame = bz2.compress(make_frame_fits())
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    port = httpd.server_address[1]
    try:
        yield FrameServer(f"http://127.0.0.1:{port}", httpd.paths)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def client_for(server: FrameServer, scenario: str, **kwargs: object) -> SdssFrameClient:
    return SdssFrameClient(
        f"{server.base}/{scenario}",
        session_factory=lambda: make_session(trust_env=False),
        **kwargs,  # type: ignore[arg-type]
    )


def test_200_is_a_parsed_frame_from_the_frame_path(server: FrameServer) -> None:
    sessions: list[requests.Session] = []

    def factory() -> requests.Session:
        sessions.append(make_session(trust_env=False))
        return sessions[-1]

    seen: list[tuple[str, int]] = []
    with SdssFrameClient(
        f"{server.base}/ok", session_factory=factory, observer=lambda c, _t, n: seen.append((c, n))
    ) as client:
        result = client.fetch(RUN, CAMCOL, FIELD, BAND)
        client.fetch(RUN, CAMCOL, FIELD, BAND)
    assert isinstance(result, FrameSuccess)
    assert result.frame.name == NAME
    assert result.frame.error.shape == (ROWS, COLS)
    assert result.raw_bytes.startswith(b"BZh")
    assert len(sessions) == 1  # one session per thread, reused
    assert server.paths[-1] == (
        "/ok/dr10/boss/photoObj/frames/301/3704/3/frame-r-003704-3-0091.fits.bz2"
    )
    assert seen[0] == ("2xx", len(result.raw_bytes))


def test_404_is_no_coverage_naming_the_frame(server: FrameServer) -> None:
    result = client_for(server, "missing").fetch(RUN, CAMCOL, FIELD, BAND)
    assert isinstance(result, NoCoverage)
    assert NAME in result.reason
    assert "404" in result.reason


def test_503_is_retryable_with_retry_after(server: FrameServer) -> None:
    result = client_for(server, "down").fetch(RUN, CAMCOL, FIELD, BAND)
    assert isinstance(result, Retryable)
    assert (result.kind, result.retry_after_s) == ("server_error", 30.0)
    assert NAME in result.reason
    assert "503" in result.reason


def test_500_is_a_server_fault_not_missing_sky(server: FrameServer) -> None:
    result = client_for(server, "fault").fetch(RUN, CAMCOL, FIELD, BAND)
    assert isinstance(result, Retryable)
    assert result.kind == "server_error"
    assert isinstance(result.when_exhausted(), Permanent)


def test_maintenance_page_is_retryable_and_a_bad_frame_permanent(server: FrameServer) -> None:
    page = client_for(server, "page").fetch(RUN, CAMCOL, FIELD, BAND)
    assert isinstance(page, Retryable)
    assert page.kind == "not_fits"
    bad = client_for(server, "badcalib").fetch(RUN, CAMCOL, FIELD, BAND)
    assert isinstance(bad, Permanent)
    assert "CALIB" in bad.reason
    assert NAME in bad.reason


def test_body_over_the_limit_is_permanent_too_large(server: FrameServer) -> None:
    result = client_for(server, "ok", max_body_bytes=1000).fetch(RUN, CAMCOL, FIELD, BAND)
    assert isinstance(result, Permanent)
    assert result.kind == "too_large"


def test_invalid_identifiers_send_nothing() -> None:
    def no_session() -> requests.Session:
        raise AssertionError("a request was attempted")

    result = SdssFrameClient(session_factory=no_session).fetch(RUN, 0, FIELD, BAND)
    assert isinstance(result, Permanent)
    assert "nothing sent" in result.reason


def test_stamp_grid_keeps_sip_distortion_aligned() -> None:
    header = wcs_header()
    header["CTYPE1"] = "RA---TAN-SIP"
    header["CTYPE2"] = "DEC--TAN-SIP"
    header["A_ORDER"] = 2
    header["B_ORDER"] = 2
    header["A_0_2"] = 2e-4
    header["B_2_0"] = -3e-4
    wcs = WCS(header, naxis=2)
    assert wcs.sip is not None
    for x, y in [(10.2, 7.3), (1.2, 0.3)]:
        grid = stamp_grid(wcs, (ROWS, COLS), *_sky(wcs, x, y), size=8)
        x0, y0 = int(x) - 3, int(y) - 3  # size 8: centre 3.5, so x lands at 3.2 (y at 3.3)
        for px, py in [(0.0, 0.0), (7.0, 7.0), (3.0, 5.0)]:
            assert _sky(grid, px, py) == pytest.approx(_sky(wcs, px + x0, py + y0), abs=1e-10)
