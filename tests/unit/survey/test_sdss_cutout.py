"""An SDSS cutout file: the cube as a Legacy Survey cutout reads it, its error planes beside it,
and the stamp refused where it leaves a frame."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from galpipe.survey.cutout import parse_cutout
from galpipe.survey.error_planes import ErrorPlaneError, error_hdu, read_error_planes
from galpipe.survey.sdss import SdssFrame
from galpipe.survey.sdss_cutout import (
    SdssStamp,
    StampOffFrameError,
    sdss_cutout_bytes,
    sdss_stamp,
    stamp_header,
)

pytest.importorskip("reproject", reason="registration needs reproject (the sdss extra)")

RA, DEC = 150.0, 2.0
SIZE, PIXSCALE = 40, 0.262
FRAME_ROWS, FRAME_COLS = 120, 160


def a_stamp(seed: int = 1) -> SdssStamp:
    rng = np.random.default_rng(seed)
    images = rng.normal(0.0, 1.0, (4, SIZE, SIZE)).astype(np.float32)
    errors = rng.uniform(0.05, 0.2, (4, SIZE, SIZE)).astype(np.float32)
    return SdssStamp(images, errors, stamp_header(RA, DEC, SIZE, PIXSCALE), "griz")


def test_the_file_is_a_cutout_centred_on_the_galaxy_with_its_errors_beside() -> None:
    stamp = a_stamp()
    body = sdss_cutout_bytes(stamp, run=3704, rerun="301", camcol=3, field=91)
    assert body == sdss_cutout_bytes(stamp, run=3704, rerun="301", camcol=3, field=91)
    cutout = parse_cutout(body, bands="griz", size=SIZE, center=(RA, DEC), pixscale=PIXSCALE)
    np.testing.assert_array_equal(cutout.data, stamp.images)
    assert cutout.header["SURVEY"] == "SDSS"
    assert (cutout.header["RUN"], cutout.header["CAMCOL"], cutout.header["FIELD"]) == (3704, 3, 91)
    x, y = cutout.wcs.world_to_pixel_values(RA, DEC)
    assert (float(x), float(y)) == pytest.approx(((SIZE - 1) / 2, (SIZE - 1) / 2), abs=1e-9)
    planes = read_error_planes(body, "griz", SIZE)
    assert planes is not None
    np.testing.assert_array_equal(planes.errors, stamp.errors)
    assert planes.source == "sdss_sky_hdu"


def test_a_cutout_without_an_extension_has_no_error_planes() -> None:
    primary = fits.PrimaryHDU(data=np.zeros((4, SIZE, SIZE), np.float32))
    out = io.BytesIO()
    primary.writeto(out)
    assert read_error_planes(out.getvalue(), "griz", SIZE) is None


def _with_extension(hdu: fits.ImageHDU) -> bytes:
    out = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(data=np.zeros((4, SIZE, SIZE), np.float32)), hdu]).writeto(out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("hdu", "words"),
    [
        (error_hdu(np.ones((4, 20, 20)), "griz", "sdss_sky_hdu"), "shape (4, 20, 20)"),
        (error_hdu(np.ones((4, SIZE, SIZE)), "ugri", "sdss_sky_hdu"), "BANDS = 'ugri'"),
        (fits.ImageHDU(data=np.ones((4, SIZE, SIZE), np.float32), name="MASK"), "'MASK'"),
    ],
)
def test_an_unusable_extension_is_refused_naming_the_problem(
    hdu: fits.ImageHDU, words: str
) -> None:
    with pytest.raises(ErrorPlaneError) as caught:
        read_error_planes(_with_extension(hdu), "griz", SIZE)
    assert words in str(caught.value)


def test_an_unknown_error_source_is_refused_when_writing() -> None:
    with pytest.raises(ValueError, match="error source 'guess'"):
        error_hdu(np.ones((4, SIZE, SIZE)), "griz", "guess")


def a_frame(band: str, shift_px: tuple[float, float] = (0.0, 0.0)) -> SdssFrame:
    """A frame centred on (RA, DEC) at 0.396 arcsec with a flux ramp, and a constant error."""
    header = fits.Header()
    for key, value in (
        ("CTYPE1", "RA---TAN"),
        ("CTYPE2", "DEC--TAN"),
        ("CRVAL1", RA),
        ("CRVAL2", DEC),
        ("CRPIX1", (FRAME_COLS + 1) / 2 + shift_px[0]),
        ("CRPIX2", (FRAME_ROWS + 1) / 2 + shift_px[1]),
        ("CD1_1", -0.396 / 3600),
        ("CD1_2", 0.0),
        ("CD2_1", 0.0),
        ("CD2_2", 0.396 / 3600),
    ):
        header[key] = value
    rows, cols = np.mgrid[0:FRAME_ROWS, 0:FRAME_COLS]
    return SdssFrame(
        run=3704,
        camcol=3,
        field=91,
        band=band,
        image=(0.01 * cols + 0.02 * rows).astype(np.float32),
        error=np.full((FRAME_ROWS, FRAME_COLS), 0.25, np.float32),
        calib=np.full(FRAME_COLS, 0.005),
        wcs=WCS(header, naxis=2),
        header=header,
    )


def test_registration_puts_each_band_on_the_cutout_grid() -> None:
    frames = [a_frame("g"), a_frame("r", (0.4, -0.3))]
    stamp = sdss_stamp(frames, RA, DEC, SIZE, PIXSCALE)
    assert stamp.bands == "gr"
    assert stamp.images.shape == stamp.errors.shape == (2, SIZE, SIZE)
    np.testing.assert_allclose(stamp.errors, 0.25, rtol=1e-6)
    # The ramp is linear, so bilinear resampling is exact: each band's value at the stamp
    # centre is the ramp at the galaxy's pixel of that band's frame.
    for frame, plane in zip(frames, stamp.images, strict=True):
        x, y = (float(v) for v in frame.wcs.world_to_pixel_values(RA, DEC))
        centre = plane[19:21, 19:21].mean()
        assert centre == pytest.approx(0.01 * x + 0.02 * y, abs=1e-4)


def test_a_stamp_beyond_the_frames_edge_or_a_galaxy_off_the_frame_is_refused() -> None:
    frame = a_frame("g")
    half_height_deg = FRAME_ROWS / 2 * 0.396 / 3600
    with pytest.raises(StampOffFrameError, match=r"3704-3-91-g.*leaves the frame's edge"):
        sdss_stamp([frame], RA, DEC + 0.9 * half_height_deg, SIZE, PIXSCALE)
    with pytest.raises(StampOffFrameError, match=r"3704-3-91-g.*outside the 120 x 160 frame"):
        sdss_stamp([frame], RA, DEC + 3 * half_height_deg, SIZE, PIXSCALE)
