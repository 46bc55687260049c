"""Decoding stored cutouts: the bands of a cube must share its sky grid."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
from astropy.io import fits

from galpipe.pipelines.stored_cutouts import (
    CutoutDecodeError,
    band_registration_problem,
    decode_cutout,
)
from galpipe.survey.layout import BANDS, PIXSCALE_ARCSEC
from galpipe.synthetic.fitsfile import cube_fits_bytes


def _cutout() -> bytes:
    cube = np.random.default_rng(0).normal(0.0, 0.01, size=(len(BANDS), 40, 40))
    return cube_fits_bytes(cube, 150.0, 2.0, PIXSCALE_ARCSEC, BANDS)


def test_a_service_cutout_is_registered_and_decodes() -> None:
    raw = _cutout()
    assert band_registration_problem(fits.Header.fromstring(raw[: 2880 * 4])) is None
    assert decode_cutout(raw, 40).data.shape == (4, 40, 40)


@pytest.mark.parametrize(
    ("card", "value", "message"),
    [
        ("PC1_3", 0.5, "PC1_3 = 0.5"),
        ("CD2_3", 1e-5, "CD2_3 = 1e-05"),
        ("CTYPE3", "DEC--TAN", "the band axis is a sky coordinate"),
    ],
)
def test_a_cube_whose_band_axis_moves_on_the_sky_is_refused(
    card: str, value: object, message: str
) -> None:
    with fits.HDUList.fromstring(_cutout()) as hdus:
        hdus[0].header[card] = value
        problem = band_registration_problem(hdus[0].header)
        assert problem is not None
        assert message in problem
        raw = fits.HDUList([fits.PrimaryHDU(hdus[0].data, hdus[0].header)])
        buffer = BytesIO()
        raw.writeto(buffer)
    with pytest.raises(CutoutDecodeError, match="bands not registered"):
        decode_cutout(buffer.getvalue(), 40)
