"""Image angle <-> position angle east of north from a FITS WCS."""

from __future__ import annotations

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
from hypothesis import given, settings
from hypothesis import strategies as st

from galpipe.science.orientation import (
    OrientationError,
    image_angle_to_position_angle,
    position_angle_to_image_angle,
    sky_jacobian,
    sky_jacobians,
)

PIXSCALE_DEG = 0.262 / 3600.0
TOLERANCE_DEG = 1e-6


def axial_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| for axial angles in degrees, in [0, 90]."""
    return np.abs(np.mod(np.asarray(a) - np.asarray(b) + 90.0, 180.0) - 90.0)


def cutout_header(cd: np.ndarray, *, crval: tuple[float, float] = (150.0, 2.0)) -> fits.Header:
    """A header shaped like the Legacy Survey cutout service's: a 40x40x4 cube, TAN, CD."""
    return fits.Header(
        {
            "NAXIS": 3,
            "NAXIS1": 40,
            "NAXIS2": 40,
            "NAXIS3": 4,
            "BANDS": "griz",
            "CTYPE1": "RA---TAN",
            "CTYPE2": "DEC--TAN",
            "CRVAL1": crval[0],
            "CRVAL2": crval[1],
            "CRPIX1": 20.5,
            "CRPIX2": 20.5,
            "CD1_1": float(cd[0, 0]),
            "CD1_2": float(cd[0, 1]),
            "CD2_1": float(cd[1, 0]),
            "CD2_2": float(cd[1, 1]),
        }
    )


def crota_cd(rho_deg: float, cdelt1: float = -PIXSCALE_DEG, cdelt2: float = PIXSCALE_DEG):
    """The CD matrix of CDELT1/2 + CROTA2 = rho (Calabretta & Greisen 2002, eq. 189)."""
    rho = np.deg2rad(rho_deg)
    return np.array(
        [
            [cdelt1 * np.cos(rho), -cdelt2 * np.sin(rho)],
            [cdelt1 * np.sin(rho), cdelt2 * np.cos(rho)],
        ]
    )


def skycoord_position_angle(wcs: WCS, pixel_xy: np.ndarray, phi_deg: np.ndarray) -> np.ndarray:
    """Independent PA: astropy's position angle from the sky position of ``pixel_xy`` to a
    point 0.1 pixel away along image angle ``phi``, folded to [0, 180)."""
    step = 0.1
    phi = np.deg2rad(phi_deg)
    start = wcs.pixel_to_world(np.full_like(phi, pixel_xy[0]), np.full_like(phi, pixel_xy[1]))
    end = wcs.pixel_to_world(pixel_xy[0] + step * np.cos(phi), pixel_xy[1] + step * np.sin(phi))
    return np.mod(start.position_angle(end).to_value(u.deg), 180.0)


# --- the worked cases ------------------------------------------------------------------------


def test_legacy_survey_north_up_east_left() -> None:
    header = cutout_header(np.diag([-PIXSCALE_DEG, PIXSCALE_DEG]))
    jacobian = sky_jacobian(header)
    np.testing.assert_allclose(jacobian, np.diag([-PIXSCALE_DEG, PIXSCALE_DEG]), rtol=1e-7)
    phi = np.array([90.0, 0.0, 45.0, 135.0, 179.0])
    # +y is north (PA 0); +x is west, i.e. the east-west axis (PA 90); +x+y is north-west.
    expected = np.array([0.0, 90.0, 135.0, 45.0, 89.0])
    np.testing.assert_allclose(
        axial_difference(image_angle_to_position_angle(phi, jacobian), expected),
        0.0,
        atol=TOLERANCE_DEG,
    )


def test_rotated_cd_matrix_30_degrees() -> None:
    # CROTA2-style rotation by rho: north lies along image angle 90 + rho, so PA = phi - 90 - rho.
    rho = 30.0
    jacobian = sky_jacobian(cutout_header(crota_cd(rho)))
    phi = np.linspace(0.0, 179.0, 37)
    pa = image_angle_to_position_angle(phi, jacobian)
    np.testing.assert_allclose(axial_difference(pa, phi - 90.0 - rho), 0.0, atol=TOLERANCE_DEG)
    assert axial_difference(image_angle_to_position_angle(120.0, jacobian), 0.0) < TOLERANCE_DEG


def test_flipped_east_right() -> None:
    # CD = diag(+s, +s): +x is east (PA 90), +y north (PA 0), +x+y north-east (PA 45).
    jacobian = sky_jacobian(cutout_header(np.diag([PIXSCALE_DEG, PIXSCALE_DEG])))
    phi = np.array([0.0, 90.0, 45.0, 135.0, 10.0])
    np.testing.assert_allclose(
        axial_difference(image_angle_to_position_angle(phi, jacobian), 90.0 - phi),
        0.0,
        atol=TOLERANCE_DEG,
    )


def test_cdelt_pc_and_crota2_forms_agree_with_cd() -> None:
    rho = 30.0
    cd_header = cutout_header(crota_cd(rho))
    pc = crota_cd(rho) / np.array([[-PIXSCALE_DEG], [PIXSCALE_DEG]])  # CD = diag(CDELT) @ PC
    pc_header = cutout_header(np.eye(2))
    for key in ("CD1_1", "CD1_2", "CD2_1", "CD2_2"):
        del pc_header[key]
    pc_header.update(
        {
            "CDELT1": -PIXSCALE_DEG,
            "CDELT2": PIXSCALE_DEG,
            "PC1_1": pc[0, 0],
            "PC1_2": pc[0, 1],
            "PC2_1": pc[1, 0],
            "PC2_2": pc[1, 1],
        }
    )
    crota_header = pc_header.copy()
    for key in ("PC1_1", "PC1_2", "PC2_1", "PC2_2"):
        del crota_header[key]
    crota_header["CROTA2"] = rho
    phi = np.linspace(0.0, 179.5, 360)
    expected = image_angle_to_position_angle(phi, sky_jacobian(cd_header))
    for header in (pc_header, crota_header):
        np.testing.assert_allclose(sky_jacobian(header), crota_cd(rho), rtol=1e-7, atol=1e-13)
        pa = image_angle_to_position_angle(phi, sky_jacobian(header))
        np.testing.assert_allclose(axial_difference(pa, expected), 0.0, atol=TOLERANCE_DEG)


def test_two_dimensional_header_and_wcs_object_are_accepted() -> None:
    header = cutout_header(crota_cd(12.0))
    header["NAXIS"] = 2
    del header["NAXIS3"]
    expected = crota_cd(12.0)
    np.testing.assert_allclose(sky_jacobian(header), expected, rtol=1e-7)
    np.testing.assert_allclose(sky_jacobian(WCS(header)), expected, rtol=1e-7)
    np.testing.assert_allclose(sky_jacobian(dict(header)), expected, rtol=1e-7)


def test_swapped_axes_header_reads_east_from_the_ra_axis() -> None:
    # DEC on axis 1, RA on axis 2: row 1 of the CD matrix is north, so J is CD with rows swapped.
    cd = np.array([[0.0, PIXSCALE_DEG], [-PIXSCALE_DEG, 0.0]])
    header = cutout_header(cd)
    header.update({"CTYPE1": "DEC--TAN", "CTYPE2": "RA---TAN", "CRVAL1": 2.0, "CRVAL2": 150.0})
    np.testing.assert_allclose(sky_jacobian(header), cd[::-1], rtol=1e-7, atol=1e-13)
    phi = np.linspace(0.0, 179.0, 50)
    pa = image_angle_to_position_angle(phi, sky_jacobian(header))
    independent = skycoord_position_angle(WCS(header, naxis=2), np.array([19.5, 19.5]), phi)
    np.testing.assert_allclose(axial_difference(pa, independent), 0.0, atol=1e-5)


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (fits.Header({"NAXIS": 2, "NAXIS1": 40, "NAXIS2": 40}), "no celestial WCS"),
        (
            fits.Header({"NAXIS": 2, "CTYPE1": "LINEAR", "CTYPE2": "LINEAR", "CDELT1": 1.0}),
            "no celestial WCS",
        ),
        (
            fits.Header({"NAXIS": 2, "CTYPE1": "GLON-TAN", "CTYPE2": "GLAT-TAN"}),
            "equatorial",
        ),
    ],
)
def test_header_without_equatorial_wcs_is_a_clear_error(header: fits.Header, problem: str) -> None:
    with pytest.raises(OrientationError, match=problem):
        sky_jacobian(header)


def test_singular_jacobian_is_a_clear_error() -> None:
    singular = np.array([[1.0, 2.0], [2.0, 4.0]]) * PIXSCALE_DEG
    with pytest.raises(OrientationError, match="singular"):
        image_angle_to_position_angle(10.0, singular)
    with pytest.raises(OrientationError, match=r"shape \(3,\)"):
        position_angle_to_image_angle(10.0, np.ones(3))


def test_batch_error_names_the_header() -> None:
    good = cutout_header(np.diag([-PIXSCALE_DEG, PIXSCALE_DEG]))
    with pytest.raises(OrientationError, match="header 1"):
        sky_jacobians([good, fits.Header({"NAXIS": 2})])


# --- vectorisation ---------------------------------------------------------------------------


def test_batch_of_jacobians_matches_one_by_one() -> None:
    rng = np.random.default_rng(7)
    rhos = rng.uniform(0.0, 360.0, 8)
    headers = [cutout_header(crota_cd(rho)) for rho in rhos]
    jacobians = sky_jacobians(headers)
    assert jacobians.shape == (8, 2, 2)
    phi = rng.uniform(0.0, 180.0, (8, 4))  # per galaxy and band
    batched = image_angle_to_position_angle(phi, jacobians[:, None])
    assert batched.shape == (8, 4)
    for index, header in enumerate(headers):
        one = image_angle_to_position_angle(phi[index], sky_jacobian(header))
        np.testing.assert_array_equal(batched[index], one)
        expected = phi[index] - 90.0 - rhos[index]
        np.testing.assert_allclose(axial_difference(one, expected), 0.0, atol=TOLERANCE_DEG)
    assert np.all((batched >= 0.0) & (batched < 180.0))


def test_results_lie_in_zero_to_180() -> None:
    jacobian = np.diag([-PIXSCALE_DEG, PIXSCALE_DEG])
    phi = np.array([-1e-15, 0.0, 90.0, 180.0, 270.0, 1e6, -360.0])
    for result in (
        image_angle_to_position_angle(phi, jacobian),
        position_angle_to_image_angle(phi, jacobian),
    ):
        assert np.all((result >= 0.0) & (result < 180.0))
        assert not np.any(np.signbit(result))


# --- properties ------------------------------------------------------------------------------

jacobian_entries = st.floats(-1.0, 1.0, allow_nan=False, allow_infinity=False)


@st.composite
def random_cd(draw: st.DrawFn) -> np.ndarray:
    """A random well-conditioned CD matrix: any rotation, flip, anisotropic scale and shear."""
    rotation = np.deg2rad(draw(st.floats(0.0, 360.0)))
    flip = draw(st.sampled_from([-1.0, 1.0]))
    scale_x = draw(st.floats(0.05, 10.0)) / 3600.0
    scale_y = scale_x * draw(st.floats(0.5, 2.0))
    shear = draw(st.floats(-0.3, 0.3))
    rot = np.array([[np.cos(rotation), -np.sin(rotation)], [np.sin(rotation), np.cos(rotation)]])
    return rot @ np.array([[flip * scale_x, shear * scale_x], [0.0, scale_y]])


@settings(max_examples=60, deadline=None)
@given(
    cd=random_cd(),
    ra=st.floats(0.0, 360.0, exclude_max=True),
    dec=st.floats(-80.0, 80.0),
    offset=st.tuples(st.floats(-20.0, 20.0), st.floats(-20.0, 20.0)),
    seed=st.integers(0, 2**32 - 1),
)
def test_agrees_with_skycoord_position_angle(
    cd: np.ndarray,
    ra: float,
    dec: float,
    offset: tuple[float, float],
    seed: int,
) -> None:
    header = cutout_header(cd, crval=(ra, dec))
    wcs = WCS(header, naxis=2)
    phi = np.random.default_rng(seed).uniform(0.0, 180.0, 16)
    for pixel in (np.array([19.5, 19.5]), np.array([19.5 + offset[0], 19.5 + offset[1]])):
        pa = image_angle_to_position_angle(phi, sky_jacobian(header, tuple(pixel)))
        independent = skycoord_position_angle(wcs, pixel, phi)
        assert np.all(axial_difference(pa, independent) < 1e-4)


@settings(max_examples=200, deadline=None)
@given(
    entries=st.lists(jacobian_entries, min_size=4, max_size=4),
    pa=st.floats(0.0, 180.0, exclude_max=True),
)
def test_round_trip_pa_to_image_angle_to_pa(entries: list[float], pa: float) -> None:
    jacobian = np.array(entries).reshape(2, 2)
    det = np.linalg.det(jacobian)
    if abs(det) < 1e-3 or np.linalg.cond(jacobian) > 1e6:
        return  # ill-conditioned maps lose the direction, not what this property is about
    phi = position_angle_to_image_angle(pa, jacobian)
    assert axial_difference(image_angle_to_position_angle(phi, jacobian), pa) < 1e-7
    back = position_angle_to_image_angle(image_angle_to_position_angle(phi, jacobian), jacobian)
    assert axial_difference(back, phi) < 1e-7


def test_skycoord_reference_is_itself_oriented_correctly() -> None:
    # Guard the independent check: one pixel up on a north-up image is due north (PA 0),
    # one pixel left on an east-left image is due east (PA 90).
    wcs = WCS(cutout_header(np.diag([-PIXSCALE_DEG, PIXSCALE_DEG])), naxis=2)
    centre = wcs.pixel_to_world(19.5, 19.5)
    assert centre.position_angle(wcs.pixel_to_world(19.5, 20.5)).to_value(u.deg) == (
        pytest.approx(0.0, abs=1e-6)
    )
    assert centre.position_angle(wcs.pixel_to_world(18.5, 19.5)).to_value(u.deg) == (
        pytest.approx(90.0, abs=1e-6)
    )
    assert isinstance(centre, SkyCoord)
