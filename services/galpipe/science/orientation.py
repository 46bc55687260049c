"""Image angle <-> position angle east of north, from a cutout's FITS WCS (step 6).

The Radon measurement (paper section 3, steps 3-5) gives an *image angle* ``phi``: the
orientation of the major axis counter-clockwise from the +x (column) axis towards the +y (row)
axis of the array as stored, in degrees, axial (period 180 deg). Row 0 is FITS pixel y = 1, so
``(x, y) = (column, row)`` are FITS pixel coordinates minus one. What the catalogue stores is
the *position angle* PA on the sky: east of north, in [0, 180) deg (``docs/science.md``,
"Conventions"). The link between the two is the cutout's WCS, never assumed.

The math
--------
Near a pixel ``p`` the WCS is linear. Let ``J`` be its Jacobian from a pixel step
``(dx, dy)`` to the offset on the sky in the tangent plane at ``p``,
``(d_east, d_north)``, in degrees::

    [d_east ]   [J00 J01] [dx]
    [d_north] = [J10 J11] [dy]

``d_east`` grows towards increasing right ascension (east) and ``d_north`` towards increasing
declination. For a standard TAN header at its reference pixel ``J`` *is* the CD matrix (or
``diag(CDELT) @ PC``): the intermediate world coordinate of CD row 1 increases with RA, i.e.
towards the east, and row 2 with Dec. A direction at image angle ``phi`` is
``(dx, dy) = (cos phi, sin phi)`` and its position angle, measured from north through east, is::

    PA = atan2(d_east, d_north)  (mod 180)

The inverse solves ``J (dx, dy) = (sin PA, cos PA)`` and takes ``phi = atan2(dy, dx)``
(mod 180). Both hold for any non-singular ``J``: rotated, sheared, or flipped (east-right,
``det J > 0``) as well as the usual sky orientation (east-left, ``det J < 0``).

Worked example, the Legacy Survey cutout service (north up, east left):
``CD = diag(-s, +s)`` with ``s = 0.262 / 3600`` deg/pixel. ``phi = 90`` (along +y) maps to
``(0, +s)``: due north, PA = 0. ``phi = 0`` (along +x) maps to ``(-s, 0)``: due west, i.e.
the axis east-west, PA = 90. ``phi = 45`` maps to north-west, PA = 135. So there
``PA = (phi - 90) mod 180``.

:func:`sky_jacobian` reads ``J`` from a header or an :class:`astropy.wcs.WCS` by central
differences of the full pixel-to-sky transform (distortions included), re-projected onto the
tangent plane at the pixel, so it is right for any projection, axis order and pixel, not only
for a TAN header at its reference pixel. :func:`image_angle_to_position_angle` and
:func:`position_angle_to_image_angle` are the pure, vectorised core over arrays of angles and
batches of Jacobians ``(N, 2, 2)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "OrientationError",
    "image_angle_to_position_angle",
    "position_angle_to_image_angle",
    "sky_jacobian",
    "sky_jacobians",
]

#: Half the central-difference step of :func:`sky_jacobian`, in pixels. The WCS is smooth on
#: this scale; the truncation error is O(step^2) of the distortion's curvature.
_HALF_STEP_PX = 0.5

#: |det J| below this (deg^2 per pixel^2) is a singular Jacobian: no direction can be mapped.
_MIN_ABS_DET = 1e-30


class OrientationError(ValueError):
    """A WCS or Jacobian cannot map image angles to position angles; the message says why."""


def _fold_axial(angle_deg: NDArray[np.float64]) -> NDArray[np.float64]:
    """Fold axial angles (degrees) into [0, 180).

    ``np.mod`` of a tiny negative number rounds to exactly 180.0, which is mapped to 0.
    """
    folded = np.mod(angle_deg, 180.0)
    return np.where(folded >= 180.0, 0.0, folded) + 0.0  # + 0.0 turns -0.0 into 0.0


def _checked_jacobian(jacobian: ArrayLike) -> NDArray[np.float64]:
    """Return ``jacobian`` as float64 ``(..., 2, 2)``; raise if any is non-finite or singular."""
    jac = np.asarray(jacobian, dtype=np.float64)
    if jac.ndim < 2 or jac.shape[-2:] != (2, 2):
        raise OrientationError(
            f"jacobian has shape {jac.shape}: expected (2, 2) or (N, 2, 2) pixel->sky matrices"
        )
    det = jac[..., 0, 0] * jac[..., 1, 1] - jac[..., 0, 1] * jac[..., 1, 0]
    bad = ~(np.isfinite(det) & (np.abs(det) > _MIN_ABS_DET))
    if np.any(bad):
        where = np.argwhere(bad)[:5].tolist() if bad.ndim else "the matrix"
        raise OrientationError(
            f"jacobian is singular or not finite at index {where} "
            f"(determinant {det[bad].ravel()[:5].tolist()} deg^2/pixel^2): "
            "it cannot map pixel directions to the sky"
        )
    return jac


def image_angle_to_position_angle(
    image_angle_deg: ArrayLike, jacobian: ArrayLike
) -> NDArray[np.float64]:
    """Convert image angles to position angles east of north.

    Parameters
    ----------
    image_angle_deg : array_like
        Image angle ``phi`` in degrees: counter-clockwise from +x (column) towards +y (row),
        axial. Any shape that broadcasts with ``jacobian.shape[:-2]``.
    jacobian : array_like, shape (2, 2) or (N, 2, 2)
        Pixel -> (east, north) Jacobian(s) in degrees per pixel, from :func:`sky_jacobian` /
        :func:`sky_jacobians` (the CD matrix for a TAN header at its reference pixel). For
        per-band angles ``(N, B)`` with one WCS per galaxy pass ``jacobians[:, None]``.

    Returns
    -------
    numpy.ndarray of float64
        Position angle east of north in degrees, in [0, 180), broadcast shape.

    Raises
    ------
    OrientationError
        If a Jacobian is not 2x2, not finite or singular.
    """
    jac = _checked_jacobian(jacobian)
    phi = np.deg2rad(np.asarray(image_angle_deg, dtype=np.float64))
    dx, dy = np.cos(phi), np.sin(phi)
    east = jac[..., 0, 0] * dx + jac[..., 0, 1] * dy
    north = jac[..., 1, 0] * dx + jac[..., 1, 1] * dy
    return _fold_axial(np.rad2deg(np.arctan2(east, north)))


def position_angle_to_image_angle(
    position_angle_deg: ArrayLike, jacobian: ArrayLike
) -> NDArray[np.float64]:
    """Convert position angles east of north to image angles (inverse of the above).

    Parameters
    ----------
    position_angle_deg : array_like
        Position angle in degrees, east of north, axial. Broadcasts with
        ``jacobian.shape[:-2]``.
    jacobian : array_like, shape (2, 2) or (N, 2, 2)
        Pixel -> (east, north) Jacobian(s) in degrees per pixel (see
        :func:`image_angle_to_position_angle`).

    Returns
    -------
    numpy.ndarray of float64
        Image angle in degrees, counter-clockwise from +x (column) towards +y (row), in
        [0, 180).

    Raises
    ------
    OrientationError
        If a Jacobian is not 2x2, not finite or singular.
    """
    jac = _checked_jacobian(jacobian)
    pa = np.deg2rad(np.asarray(position_angle_deg, dtype=np.float64))
    east, north = np.sin(pa), np.cos(pa)
    # (dx, dy) = J^-1 (east, north); the 1/det factor is dropped: a positive scale does not
    # change the direction and a negative one only flips it by 180 deg, which is axial.
    dx = jac[..., 1, 1] * east - jac[..., 0, 1] * north
    dy = -jac[..., 1, 0] * east + jac[..., 0, 0] * north
    return _fold_axial(np.rad2deg(np.arctan2(dy, dx)))


def _celestial_wcs(header_or_wcs: fits.Header | Mapping[str, Any] | WCS) -> WCS:
    """Return the 2-D celestial WCS of a cutout header (2-D image or 3-D band cube) or WCS."""
    if isinstance(header_or_wcs, WCS):
        wcs = header_or_wcs
        if wcs.naxis != 2:
            wcs = wcs.celestial if wcs.has_celestial else wcs.sub(2)
    else:
        header = (
            header_or_wcs
            if isinstance(header_or_wcs, fits.Header)
            else fits.Header(dict(header_or_wcs))
        )
        # Cutout cubes (NAXIS = 3, one plane per band) have no WCS on the band axis.
        wcs = WCS(header, naxis=2)
    ctypes = tuple(wcs.wcs.ctype)
    if not wcs.has_celestial or wcs.naxis != 2:
        raise OrientationError(
            f"header has no celestial WCS on its first two axes (CTYPE = {ctypes!r}): "
            "expected a longitude/latitude pair such as 'RA---TAN', 'DEC--TAN'"
        )
    if (wcs.wcs.lngtyp, wcs.wcs.lattyp) != ("RA", "DEC"):
        raise OrientationError(
            f"header's celestial axes are {ctypes!r}: position angles east of north need an "
            "equatorial (RA/DEC) frame"
        )
    return wcs


def _tangent_plane_offsets(
    lon_deg: NDArray[np.float64],
    lat_deg: NDArray[np.float64],
    lon0_deg: float,
    lat0_deg: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Gnomonic (east, north) offsets in degrees of sky points about ``(lon0, lat0)``."""
    lon, lat = np.deg2rad(lon_deg), np.deg2rad(lat_deg)
    lon0, lat0 = np.deg2rad(lon0_deg), np.deg2rad(lat0_deg)
    dlon = lon - lon0
    cos_c = np.sin(lat0) * np.sin(lat) + np.cos(lat0) * np.cos(lat) * np.cos(dlon)
    east = np.cos(lat) * np.sin(dlon) / cos_c
    north = (np.cos(lat0) * np.sin(lat) - np.sin(lat0) * np.cos(lat) * np.cos(dlon)) / cos_c
    return np.rad2deg(east), np.rad2deg(north)


def sky_jacobian(
    header_or_wcs: fits.Header | Mapping[str, Any] | WCS,
    pixel_xy: tuple[float, float] | None = None,
) -> NDArray[np.float64]:
    """The local pixel -> (east, north) Jacobian of a cutout's WCS, in degrees per pixel.

    Parameters
    ----------
    header_or_wcs : astropy.io.fits.Header, mapping or astropy.wcs.WCS
        The cutout's header (2-D image or 3-D band cube; only the first two axes are read,
        with ``WCS(header, naxis=2)``) or its WCS. CD, CDELT + PC and CDELT + CROTA2 forms
        are all accepted (astropy normalises them); SIP distortions are included.
    pixel_xy : tuple of float, optional
        Zero-based pixel ``(x, y) = (column, row)`` where the Jacobian is taken. Default: the
        reference pixel ``CRPIX - 1`` (the stamp centre for the Legacy Survey cutouts).

    Returns
    -------
    numpy.ndarray, shape (2, 2), float64
        ``[[d_east/dx, d_east/dy], [d_north/dx, d_north/dy]]``; for a TAN header at its
        reference pixel this equals the CD matrix (RA row first, whatever the axis order).

    Raises
    ------
    OrientationError
        If the header has no celestial (RA/DEC) WCS on its first two axes, or the Jacobian is
        singular or not finite there.
    """
    wcs = _celestial_wcs(header_or_wcs)
    x0, y0 = (
        (float(wcs.wcs.crpix[0]) - 1.0, float(wcs.wcs.crpix[1]) - 1.0)
        if pixel_xy is None
        else (float(pixel_xy[0]), float(pixel_xy[1]))
    )
    h = _HALF_STEP_PX
    # The centre, then -x, +x, -y, +y: one call to the full transform.
    xs = np.array([x0, x0 - h, x0 + h, x0, x0])
    ys = np.array([y0, y0, y0, y0 - h, y0 + h])
    world = wcs.all_pix2world(np.column_stack([xs, ys]), 0)
    lon, lat = world[:, wcs.wcs.lng], world[:, wcs.wcs.lat]
    if not np.all(np.isfinite(world)):
        raise OrientationError(
            f"WCS gives no finite sky position near pixel (x, y) = ({x0}, {y0}): "
            "outside the projection's domain"
        )
    east, north = _tangent_plane_offsets(lon, lat, float(lon[0]), float(lat[0]))
    jac = np.array(
        [
            [(east[2] - east[1]) / (2 * h), (east[4] - east[3]) / (2 * h)],
            [(north[2] - north[1]) / (2 * h), (north[4] - north[3]) / (2 * h)],
        ]
    )
    return _checked_jacobian(jac)


def sky_jacobians(
    headers: Iterable[fits.Header | Mapping[str, Any] | WCS],
    pixel_xy: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """:func:`sky_jacobian` of a batch of cutouts, stacked for the vectorised core.

    Parameters
    ----------
    headers : iterable of header, mapping or WCS
        One per galaxy, in batch order.
    pixel_xy : array_like, shape (2,) or (N, 2), optional
        Zero-based ``(x, y)`` per galaxy or shared; default each header's reference pixel.

    Returns
    -------
    numpy.ndarray, shape (N, 2, 2), float64
        Pixel -> (east, north) Jacobians in degrees per pixel.

    Raises
    ------
    OrientationError
        As :func:`sky_jacobian`, with the index of the offending header in the message.
    """
    header_list = list(headers)
    pixels: list[tuple[float, float] | None]
    if pixel_xy is None:
        pixels = [None] * len(header_list)
    else:
        xy = np.broadcast_to(np.asarray(pixel_xy, dtype=np.float64), (len(header_list), 2))
        pixels = [(float(x), float(y)) for x, y in xy]
    jacobians = np.empty((len(header_list), 2, 2))
    for index, (header, pixel) in enumerate(zip(header_list, pixels, strict=True)):
        try:
            jacobians[index] = sky_jacobian(header, pixel)
        except OrientationError as error:
            raise OrientationError(f"header {index}: {error}") from error
    return jacobians
