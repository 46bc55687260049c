"""The synthetic sky without HTTP: truths, GalSim rendering, orientation, FITS layout, faults."""

from __future__ import annotations

import io
import math
from dataclasses import replace
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from tests.tools import require_tool

galsim = pytest.importorskip("galsim")

from galpipe.synthetic.catalog import (  # noqa: E402 -- after the galsim skip
    SkyIndex,
    make_truths,
    read_catalog,
    write_catalog,
)
from galpipe.synthetic.faults import (  # noqa: E402
    BlankRegion,
    FaultConfig,
    FaultPlan,
    SlidingWindowLimiter,
    max_in_window,
)
from galpipe.synthetic.fitsfile import SURVEY, cutout_fits_bytes  # noqa: E402
from galpipe.synthetic.render import image_beta_deg, render_cutout  # noqa: E402
from galpipe.synthetic.truth import (  # noqa: E402
    Neighbour,
    SkyConfig,
    TruthGalaxy,
    source_id_for_position,
    truth_for,
)

RA, DEC = 150.25, 2.2


def _first_with_neighbours(kind: str | None = None) -> TruthGalaxy:
    for source_id in range(10_000):
        truth = truth_for(source_id, RA, DEC)
        if truth.neighbours and (kind is None or truth.neighbours[0].kind == kind):
            return truth
    raise AssertionError("no galaxy with neighbours in 10,000 ids")


def _pixel_moment_angle(plane: np.ndarray) -> tuple[float, float, float]:
    """Centroid (x=col, y=row) and major-axis angle CCW from +x (degrees) of a positive image."""
    weights = np.clip(plane, 0.0, None)
    rows, cols = np.indices(plane.shape)
    total = weights.sum()
    xc, yc = (weights * cols).sum() / total, (weights * rows).sum() / total
    mxx = (weights * (cols - xc) ** 2).sum() / total
    myy = (weights * (rows - yc) ** 2).sum() / total
    mxy = (weights * (cols - xc) * (rows - yc)).sum() / total
    return xc, yc, math.degrees(0.5 * math.atan2(2.0 * mxy, mxx - myy))


def _pa_difference(a: float, b: float) -> float:
    """Smallest difference of two axis angles (degrees, modulo 180)."""
    return abs((a - b + 90.0) % 180.0 - 90.0)


# -- truth ---------------------------------------------------------------------------------


def test_same_id_same_truth_and_same_pixels() -> None:
    first, second = truth_for(123456789, RA, DEC), truth_for(123456789, RA, DEC)
    assert first == second
    np.testing.assert_array_equal(render_cutout(first), render_cutout(second))
    assert cutout_fits_bytes(first) == cutout_fits_bytes(second)
    assert truth_for(123456790, RA, DEC) != first


def test_truths_lie_in_the_configured_ranges() -> None:
    config = SkyConfig()
    truths = [truth_for(sid, RA, DEC, config) for sid in range(0, 4000, 7)]
    for t in truths:
        assert config.sersic_n[0] <= t.sersic_n <= config.sersic_n[1]
        assert 0.6 <= t.half_light_radius_arcsec <= 2.5
        assert 0.2 <= t.axis_ratio <= 1.0
        assert 0.0 <= t.position_angle_deg < 180.0
        assert 1.0 <= t.psf_fwhm_arcsec <= 1.6
        assert set(t.flux) == set("griz")
        # Galaxy colours: redder bands brighter, g faintest.
        assert t.flux["g"] < t.flux["r"] < t.flux["i"] <= t.flux["z"] * 1.0000001
        assert all(0.003 <= s <= 0.02 for s in t.sky_sigma.values())
    pas = np.array([t.position_angle_deg for t in truths])
    # Position angles spread over the whole half circle.
    assert np.histogram(pas, bins=6, range=(0, 180))[0].min() > 40
    with_neighbours = sum(bool(t.neighbours) for t in truths)
    assert 0.2 < with_neighbours / len(truths) < 0.4


def test_neighbour_fraction_changes_neighbours_only() -> None:
    lonely = truth_for(42, RA, DEC, SkyConfig(neighbour_fraction=0.0))
    crowded = truth_for(42, RA, DEC, SkyConfig(neighbour_fraction=1.0))
    assert lonely.neighbours == ()
    assert crowded.neighbours
    assert replace(crowded, neighbours=()) == lonely


def test_position_seed_is_stable_and_rounded() -> None:
    assert source_id_for_position(10.0, 20.0) == source_id_for_position(10.00001, 20.00002)
    assert source_id_for_position(10.0, 20.0) != source_id_for_position(10.001, 20.0)
    assert source_id_for_position(10.0, 20.0) >= 0


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="axis_ratio"):
        SkyConfig(axis_ratio=(0.0, 1.0))
    with pytest.raises(ValueError, match="sersic_n"):
        SkyConfig(sersic_n=(0.1, 4.0))
    with pytest.raises(ValueError, match="source_id"):
        truth_for(-1, RA, DEC)


# -- orientation ---------------------------------------------------------------------------


def test_galsim_array_row_zero_is_y_one_and_col_zero_is_x_one() -> None:
    image = galsim.ImageF(5, 4, scale=1.0)
    image.setValue(1, 1, 7.0)  # (x, y) in GalSim's 1-based pixel coordinates
    image.setValue(3, 2, 5.0)
    assert image.array.shape == (4, 5)
    assert image.array[0, 0] == 7.0
    assert image.array[1, 2] == 5.0
    # A source drawn at +x / +y of the centre lands at a larger column / row.
    star = galsim.Gaussian(sigma=1.0)
    drawn = star.drawImage(nx=21, ny=21, scale=1.0, offset=(4, -3)).array
    row, col = np.unravel_index(np.argmax(drawn), drawn.shape)
    assert (row, col) == (10 - 3, 10 + 4)


@pytest.mark.parametrize(
    ("pa", "dec"), [(0.0, 2.0), (30.0, 2.0), (75.0, -40.0), (120.0, 2.0), (165.0, 60.0)]
)
def test_position_angle_east_of_north_through_the_wcs(pa: float, dec: float) -> None:
    base = truth_for(7, 200.0, dec)
    truth = replace(
        base,
        sersic_n=1.0,
        half_light_radius_arcsec=1.5,
        axis_ratio=0.15,
        position_angle_deg=pa,
        psf_fwhm_arcsec=0.3,
        neighbours=(),
    )
    size = 64
    data = fits.open(io.BytesIO(cutout_fits_bytes(truth, size=size, noise=False)))[0]
    wcs = WCS(data.header, naxis=2)
    xc, yc, phi = _pixel_moment_angle(data.data[1])
    assert abs(xc - (size - 1) / 2) < 0.05
    assert abs(yc - (size - 1) / 2) < 0.05
    assert _pa_difference(phi, image_beta_deg(pa)) < 1.0
    # Pixel direction -> sky: 0-based (x=col, y=row) pixel coordinates.
    centre = wcs.pixel_to_world(xc, yc)
    along = wcs.pixel_to_world(
        xc + 10 * math.cos(math.radians(phi)), yc + 10 * math.sin(math.radians(phi))
    )
    measured = centre.position_angle(along).deg % 180.0
    assert _pa_difference(measured, pa) < 1.0


def test_east_neighbour_lands_left_and_matches_its_sky_position() -> None:
    star = Neighbour(
        kind="star", east_arcsec=3.0, north_arcsec=1.5, flux=dict.fromkeys("griz", 80.0)
    )
    truth = replace(truth_for(11, RA, DEC), neighbours=(star,), axis_ratio=0.9)
    hdu = fits.open(io.BytesIO(cutout_fits_bytes(truth, size=40, noise=False)))[0]
    lonely = render_cutout(replace(truth, neighbours=()), noise=False)
    difference = hdu.data[1] - lonely[1]
    row, col = np.unravel_index(np.argmax(difference), difference.shape)
    assert col < 19.5
    assert row > 19.5
    found = WCS(hdu.header, naxis=2).pixel_to_world(col, row)
    expected = SkyCoord(RA, DEC, unit="deg").spherical_offsets_by(3.0 * u.arcsec, 1.5 * u.arcsec)
    assert found.separation(expected).arcsec < 0.262


# -- photometry and neighbours ----------------------------------------------------------------


def test_pixel_sum_recovers_the_flux_of_every_band() -> None:
    truth = replace(
        truth_for(3, RA, DEC), half_light_radius_arcsec=0.6, sersic_n=1.0, neighbours=()
    )
    clean = render_cutout(truth, size=128, noise=False)
    noisy = render_cutout(truth, size=128, noise=True)
    for index, band in enumerate("griz"):
        flux = truth.flux[band]
        assert clean[index].sum() == pytest.approx(flux, rel=0.01)
        sigma = math.sqrt(128**2 * truth.sky_sigma[band] ** 2 + flux / truth.gain_e_per_nmgy)
        assert abs(noisy[index].sum() - flux) < 5 * sigma
    # A 40-pixel stamp loses the wings, never gains flux.
    stamp = render_cutout(truth, size=40, noise=False)
    assert 0.9 * truth.flux["r"] < stamp[1].sum() <= truth.flux["r"] * 1.001


def test_noise_matches_the_truth_sky_level() -> None:
    truth = replace(truth_for(5, RA, DEC), flux=dict.fromkeys("griz", 1e-9), neighbours=())
    cube = render_cutout(truth, size=100)
    for index, band in enumerate("griz"):
        assert cube[index].std() == pytest.approx(truth.sky_sigma[band], rel=0.05)


def test_band_planes_do_not_depend_on_the_bands_asked_for() -> None:
    truth = truth_for(99, RA, DEC)
    griz = render_cutout(truth, bands="griz")
    zg = render_cutout(truth, bands="zg")
    np.testing.assert_array_equal(zg[0], griz[3])
    np.testing.assert_array_equal(zg[1], griz[0])


def test_neighbours_are_rendered_where_the_truth_says() -> None:
    truth = _first_with_neighbours("galaxy")
    with_nb = render_cutout(truth, size=64, noise=False)
    without = render_cutout(replace(truth, neighbours=()), size=64, noise=False)
    excess = with_nb[1] - without[1]
    scale = 0.262
    for nb in truth.neighbours:
        col = (64 - 1) / 2 - nb.east_arcsec / scale
        row = (64 - 1) / 2 + nb.north_arcsec / scale
        r, c = round(row), round(col)
        assert excess[r - 2 : r + 3, c - 2 : c + 3].sum() > 0.05 * nb.flux["r"]
    assert excess.sum() == pytest.approx(sum(nb.flux["r"] for nb in truth.neighbours), rel=0.15)


def test_off_centre_request_moves_the_galaxy() -> None:
    truth = replace(truth_for(8, RA, DEC), neighbours=(), axis_ratio=1.0)
    # Centre the stamp 2" north and 2" east of the galaxy: it appears south-west (down, right).
    centre = (RA + 2.0 / 3600 / math.cos(math.radians(DEC)), DEC + 2.0 / 3600)
    plane = render_cutout(truth, size=40, centre=centre, noise=False)[1]
    xc, yc, _ = _pixel_moment_angle(plane)
    assert xc == pytest.approx(19.5 + 2.0 / 0.262, abs=0.3)
    assert yc == pytest.approx(19.5 - 2.0 / 0.262, abs=0.3)


# -- FITS layout ------------------------------------------------------------------------------


def test_fits_file_follows_the_cutout_contract() -> None:
    truth = truth_for(77, RA, DEC)
    body = cutout_fits_bytes(truth, size=40, pixscale=0.262, bands="griz")
    assert len(body) % 2880 == 0
    with fits.open(io.BytesIO(body)) as hdul:
        assert len(hdul) == 1
        hdu = hdul[0]
        header = hdu.header
        assert hdu.data.shape == (4, 40, 40)
        assert hdu.data.dtype.kind == "f"
        assert hdu.data.dtype.itemsize == 4
        assert header["BITPIX"] == -32
        assert header["NAXIS"] == 3
        assert header["BANDS"] == "griz"
        assert [header[f"BAND{i}"] for i in range(4)] == ["g", "r", "i", "z"]
        assert header["SURVEY"] == SURVEY == "galpipe-synthetic"
        assert "IMAGETYP" in header
        assert "VERSION" in header
        assert header["CTYPE1"] == "RA---TAN"
        assert header["CTYPE2"] == "DEC--TAN"
        assert "CTYPE3" not in header
        assert (header["CRPIX1"], header["CRPIX2"]) == (20.5, 20.5)
        assert header["CD1_1"] == pytest.approx(-0.262 / 3600)
        assert header["CD2_2"] == pytest.approx(0.262 / 3600)
        assert header["CD1_2"] == 0.0
        assert header["CD2_1"] == 0.0
        assert header["SRCID"] == truth.source_id
        wcs = WCS(header, naxis=2)
        centre = wcs.pixel_to_world(19.5, 19.5)
        assert centre.ra.deg == pytest.approx(RA)
        assert centre.dec.deg == pytest.approx(DEC)
        np.testing.assert_allclose(hdu.data, render_cutout(truth), rtol=0, atol=0)


def test_fits_file_passes_astropy_verification_and_round_trips_exactly() -> None:
    from galpipe.synthetic.fitsfile import cube_fits_bytes

    cube = np.random.default_rng(2).normal(size=(3, 17, 17)).astype(np.float32)
    body = cube_fits_bytes(cube, 359.99999999999994, -89.5, 0.262, "gri", source_id=2**62)
    assert len(body) % 2880 == 0
    with fits.open(io.BytesIO(body)) as hdul:
        hdul.verify("exception")
        np.testing.assert_array_equal(hdul[0].data, cube)
        assert hdul[0].header["CRVAL1"] == 359.99999999999994
        assert hdul[0].header["SRCID"] == 2**62
        assert hdul[0].header["CRPIX1"] == 9.0
    with pytest.raises(ValueError, match="does not fit bands"):
        cube_fits_bytes(cube, 0.0, 0.0, 0.262, "griz")


def test_fits_band_order_and_subset() -> None:
    truth = truth_for(78, RA, DEC)
    with fits.open(io.BytesIO(cutout_fits_bytes(truth, size=24, bands="zr"))) as hdul:
        header = hdul[0].header
        assert hdul[0].data.shape == (2, 24, 24)
        assert (header["BANDS"], header["BAND0"], header["BAND1"]) == ("zr", "z", "r")
        assert "BAND2" not in header
        assert header["CRPIX1"] == 12.5


def test_render_rejects_bad_arguments() -> None:
    truth = truth_for(1, RA, DEC)
    with pytest.raises(ValueError, match="bands"):
        render_cutout(truth, bands="gy")
    with pytest.raises(ValueError, match="pixscale"):
        render_cutout(truth, pixscale=0)


# -- catalogue --------------------------------------------------------------------------------


def test_catalogue_round_trip_and_lookup(tmp_path: Path) -> None:
    truths = make_truths(50, seed=3, ra_range=(10, 20), dec_range=(-5, 5))
    assert len({t.source_id for t in truths}) == 50
    assert all(10 <= t.ra <= 20 and -5 <= t.dec <= 5 for t in truths)
    assert make_truths(50, seed=3, ra_range=(10, 20), dec_range=(-5, 5)) == truths
    path = write_catalog(tmp_path / "sky.ecsv", truths)
    assert read_catalog(path) == truths
    index = SkyIndex(truths)
    target = truths[17]
    assert index.nearest(target.ra + 0.5 / 3600, target.dec, radius_arcsec=1.0) == target
    assert index.nearest(target.ra, target.dec + 5 / 3600, radius_arcsec=1.0) is None


# -- fault mechanics --------------------------------------------------------------------------


def test_fault_ratios_are_exclusive_and_close_to_asked() -> None:
    plan = FaultPlan(FaultConfig(error_ratio=0.2, timeout_ratio=0.05, corrupt_ratio=0.02, seed=1))
    kinds = [plan.draw()[0] for _ in range(20_000)]
    assert kinds.count("error") / 20_000 == pytest.approx(0.2, abs=0.015)
    assert kinds.count("timeout") / 20_000 == pytest.approx(0.05, abs=0.008)
    assert kinds.count("corrupt") / 20_000 == pytest.approx(0.02, abs=0.005)
    assert kinds.count("throttle") == 0
    again = FaultPlan(FaultConfig(error_ratio=0.2, timeout_ratio=0.05, corrupt_ratio=0.02, seed=1))
    assert [again.draw()[0] for _ in range(20_000)] == kinds


def test_fault_config_validation() -> None:
    with pytest.raises(ValueError, match="sum above 1"):
        FaultConfig(error_ratio=0.7, timeout_ratio=0.5)
    with pytest.raises(ValueError, match="error"):
        FaultConfig(error_ratio=1.5)
    with pytest.raises(ValueError, match="RA0:RA1"):
        BlankRegion.parse("1:2:3")
    region = BlankRegion.parse("10:20:-5:5:zeros")
    assert region.mode == "zeros"
    assert region.contains(15, 0)
    assert not region.contains(25, 0)


def test_sliding_window_limiter_never_admits_more_than_the_rate() -> None:
    now = [0.0]
    limiter = SlidingWindowLimiter(5.0, clock=lambda: now[0])
    admitted = []
    for step in range(400):
        now[0] = step * 0.013  # 77 requests/s offered
        if limiter.admit()[0]:
            admitted.append(now[0])
    assert max_in_window(admitted, 1.0) == 5
    assert len(admitted) == pytest.approx(5 * 400 * 0.013, abs=6)
    refused, wait = SlidingWindowLimiter(1.0, clock=lambda: 0.0), 0.0
    assert refused.admit() == (True, 0.0)
    ok, wait = refused.admit()
    assert not ok
    assert wait == pytest.approx(1.0)
    unlimited = SlidingWindowLimiter(0.0, clock=lambda: 0.0)
    assert all(unlimited.admit()[0] for _ in range(1000))


def test_max_in_window() -> None:
    assert max_in_window([]) == 0
    assert max_in_window([0.0, 0.5, 0.99, 1.0, 1.5]) == 3
    assert max_in_window([0.0, 0.1, 0.2, 0.3, 0.4, 0.5], window=1.0) == 6


def test_cutout_fits_passes_fitsverify(tmp_path) -> None:
    import subprocess

    fitsverify = require_tool("fitsverify")
    (truth,) = make_truths(1, seed=5)
    path = tmp_path / "cutout.fits"
    path.write_bytes(cutout_fits_bytes(truth))
    report = subprocess.run([fitsverify, str(path)], capture_output=True, text=True, check=False)
    assert "0 warning(s) and 0 error(s)" in report.stdout, report.stdout
