"""The error planes of a cutout file: the cutout service's inverse variance, read as each pixel's
error, and every way such an extension can be wrong or cut short."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits

from galpipe.survey.error_planes import (
    INVVAR_ERROR_SOURCE,
    ErrorPlaneError,
    error_hdu,
    read_error_planes,
)

SIZE = 40
BANDS = "griz"


def _primary(bands: str = BANDS) -> fits.PrimaryHDU:
    header = fits.Header()
    header["BANDS"] = bands
    header["IMAGETYP"] = "IMAGE"
    data = np.random.default_rng(0).normal(0.0, 0.01, (len(bands), SIZE, SIZE))
    return fits.PrimaryHDU(data=data.astype(np.float32), header=header)


def _invvar_hdu(
    invvar: np.ndarray, *, imagetyp: str = "INVVAR", bands: str = BANDS
) -> fits.ImageHDU:
    # As the service writes it: the primary's header with IMAGETYP changed, no EXTNAME.
    header = fits.Header()
    header["BANDS"] = bands
    header["IMAGETYP"] = imagetyp
    return fits.ImageHDU(data=np.asarray(invvar, dtype=np.float32), header=header)


def _file(*extensions: fits.ImageHDU, bands: str = BANDS) -> bytes:
    out = io.BytesIO()
    fits.HDUList([_primary(bands), *extensions]).writeto(out)
    return out.getvalue()


def _sky_invvar(sigmas: tuple[float, ...] = (0.01, 0.02, 0.04, 0.05)) -> np.ndarray:
    return np.stack([np.full((SIZE, SIZE), s**-2) for s in sigmas])


def test_the_services_inverse_variance_becomes_each_pixels_error() -> None:
    invvar = _sky_invvar()
    invvar[2, :5, :] = 0.0  # rows no exposure of the i band covers
    planes = read_error_planes(_file(_invvar_hdu(invvar)), BANDS, SIZE)
    assert planes is not None
    assert planes.source == INVVAR_ERROR_SOURCE == "invvar"
    assert planes.errors.dtype == np.float32
    assert np.isinf(planes.errors[2, :5]).all()
    covered = np.isfinite(planes.errors)
    np.testing.assert_allclose(planes.errors[covered], (invvar[covered]) ** -0.5, rtol=1e-6)
    np.testing.assert_allclose(planes.errors[0], 0.01, rtol=1e-6)


def test_lower_case_imagetyp_and_a_single_band_plane_are_read() -> None:
    plane = np.full((SIZE, SIZE), 400.0)
    body = _file(_invvar_hdu(plane, imagetyp="invvar", bands="r"), bands="r")
    planes = read_error_planes(body, "r", SIZE)
    assert planes is not None
    assert planes.errors.shape == (1, SIZE, SIZE)
    np.testing.assert_allclose(planes.errors, 0.05, rtol=1e-6)


def test_a_maskbits_plane_is_allowed_after_the_inverse_variance_and_alone() -> None:
    maskbits = fits.ImageHDU(data=np.zeros((SIZE, SIZE), np.int32))
    maskbits.header["IMAGETYP"] = "MASKBITS"
    planes = read_error_planes(_file(_invvar_hdu(_sky_invvar()), maskbits), BANDS, SIZE)
    assert planes is not None
    assert planes.source == "invvar"
    assert read_error_planes(_file(maskbits), BANDS, SIZE) is None


def test_galpipes_own_error_extension_wins_over_an_inverse_variance() -> None:
    errors = np.full((4, SIZE, SIZE), 0.3, np.float32)
    body = _file(_invvar_hdu(_sky_invvar()), error_hdu(errors, BANDS, "sdss_sky_hdu"))
    planes = read_error_planes(body, BANDS, SIZE)
    assert planes is not None
    assert planes.source == "sdss_sky_hdu"
    np.testing.assert_array_equal(planes.errors, errors)


@pytest.mark.parametrize(
    ("value", "words"),
    [(-1.0, "-1.0"), (np.nan, "nan"), (np.inf, "inf")],
)
def test_an_inverse_variance_that_is_negative_or_not_finite_is_refused_where_it_is(
    value: float, words: str
) -> None:
    invvar = _sky_invvar()
    invvar[1, 7, 9] = value
    with pytest.raises(ErrorPlaneError, match=r"band 'r', row 7, column 9") as caught:
        read_error_planes(_file(_invvar_hdu(invvar)), BANDS, SIZE)
    assert words in str(caught.value)
    assert not caught.value.truncated


@pytest.mark.parametrize(
    ("hdu", "words"),
    [
        (_invvar_hdu(np.ones((4, 20, 20))), r"shape \(4, 20, 20\): expected \(4, 40, 40\)"),
        (_invvar_hdu(np.ones((4, SIZE, SIZE)), bands="ugri"), "BANDS = 'ugri'"),
        (fits.ImageHDU(data=np.ones((4, SIZE, SIZE)), name="WEIGHT"), "WEIGHT"),
    ],
)
def test_a_wrong_extension_is_refused_with_the_card_or_shape_named(
    hdu: fits.ImageHDU, words: str
) -> None:
    with pytest.raises(ErrorPlaneError, match=words) as caught:
        read_error_planes(_file(hdu), BANDS, SIZE)
    assert not caught.value.truncated


@pytest.mark.parametrize("cut_from_end", [2880, 2880 * 4 + 100, 400])
def test_a_file_that_ends_inside_the_extension_is_truncated_not_wrong(cut_from_end: int) -> None:
    body = _file(_invvar_hdu(_sky_invvar()))
    with pytest.raises(ErrorPlaneError, match="ends at byte") as caught:
        read_error_planes(body[:-cut_from_end], BANDS, SIZE)
    assert caught.value.truncated


def test_a_file_that_ends_inside_the_extensions_header_is_truncated() -> None:
    body = _file(_invvar_hdu(_sky_invvar()))
    primary_bytes = len(_file())
    with pytest.raises(ErrorPlaneError, match="inside a header") as caught:
        read_error_planes(body[: primary_bytes + 1000], BANDS, SIZE)
    assert caught.value.truncated


def test_a_file_missing_only_its_final_padding_is_whole() -> None:
    body = _file(_invvar_hdu(_sky_invvar()))
    planes = read_error_planes(body[:-10], BANDS, SIZE)  # 320 bytes of padding end the data
    assert planes is not None
    assert planes.source == "invvar"


def test_the_truncated_flag_survives_pickling() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(ErrorPlaneError("cut", truncated=True)))
    assert isinstance(error, ErrorPlaneError)
    assert (str(error), error.truncated) == ("cut", True)
