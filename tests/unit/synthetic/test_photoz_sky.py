"""The photo-z synthetic sky: chromatic bulge+disk galaxies at known redshift, stamps, catalogue."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from galpipe.errors import ConfigurationError, InputError
from galpipe.survey.layout import BANDS, CUTOUT_SIZE_PX, PIXSCALE_ARCSEC
from galpipe.synthetic.truth import half_light_snr

galsim = pytest.importorskip("galsim")

from galpipe.synthetic import photoz_sky  # noqa: E402 -- after the galsim skip
from galpipe.synthetic.photoz_sky import (  # noqa: E402
    DISK_SEDS,
    PhotozConfig,
    PhotozConfigError,
    PhotozGalaxies,
    PhotozInputError,
    bandpass,
    component_fluxes,
    draw_photoz_galaxies,
    photoz_model_images,
    photoz_truth_for,
    render_photoz_galaxies,
    render_photoz_galaxy,
    sample_photoz_sky,
    sed,
    spectroscopic_catalog,
)

G, R = BANDS.index("g"), BANDS.index("r")
COMPOSITE = PhotozConfig(pure_disk_fraction=0.0, pure_bulge_fraction=0.0)


def _galaxies(n: int, seed: int = 0, config: PhotozConfig | None = None) -> PhotozGalaxies:
    return draw_photoz_galaxies(n, config or PhotozConfig(), np.random.default_rng(seed))


def _colour(flux_ratio: np.ndarray) -> np.ndarray:
    return -2.5 * np.log10(flux_ratio)


def _with(galaxy: PhotozGalaxies, *, redshift: float, bulge_to_total: float) -> PhotozGalaxies:
    """``galaxy`` (one row) moved to ``redshift`` with B/T ``bulge_to_total``, r flux kept."""
    r_flux = float(galaxy.flux[0, R])
    z = np.array([redshift])
    disk = DISK_SEDS[int(galaxy.disk_sed[0])]
    return replace(
        galaxy,
        redshift=z,
        bulge_to_total=np.array([bulge_to_total]),
        bulge_flux=bulge_to_total * r_flux * component_fluxes("E", z),
        disk_flux=(1.0 - bulge_to_total) * r_flux * component_fluxes(disk, z),
    )


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("redshift_range", (0.5, 0.5)),
        ("redshift_range", (-0.1, 1.0)),
        ("redshift_scale", 0.0),
        ("redshift_shape", math.nan),
        ("disk_sed_probabilities", (0.5, 0.5, 0.5)),
        ("disk_sed_probabilities", (1.0, 0.0)),
        ("pure_disk_fraction", 1.5),
        ("pure_bulge_fraction", 0.9),  # with the default pure_disk_fraction, above 1
        ("disk_thickness", 1.0),
        ("bulge_axis_ratio", (0.0, 1.0)),
        ("bulge_size_ratio", 0.0),
        ("snr_range", (10.0, 5.0)),
        ("redshift_error", -1e-4),
        ("sky_patch", (181.0, 180.0, 45.0, 46.0)),
        ("sky_patch", (180.0, 181.0, 45.0, 95.0)),
        ("sky", "default"),
    ],
)
def test_config_rejects_out_of_range_fields_by_name(field: str, value: object) -> None:
    with pytest.raises(PhotozConfigError, match=rf"PhotozConfig\.{field} ") as caught:
        PhotozConfig(**{field: value})  # type: ignore[arg-type]
    assert isinstance(caught.value, ConfigurationError)


def test_unknown_template_and_band_are_input_errors() -> None:
    with pytest.raises(PhotozInputError, match="template = 'Sa'"):
        sed("Sa")
    with pytest.raises(PhotozInputError, match="band = 'u'"):
        bandpass("u")
    with pytest.raises(PhotozInputError, match="redshift"):
        component_fluxes("E", [-0.1])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"n": 0}, "n"), ({"n": 2, "processes": 0}, "processes"), ({"n": 2, "size": 0}, "size")],
)
def test_sample_rejects_bad_arguments(kwargs: dict[str, int], name: str) -> None:
    with pytest.raises(PhotozInputError, match=rf"^{name} = ") as caught:
        sample_photoz_sky(**kwargs)  # type: ignore[arg-type]
    assert isinstance(caught.value, InputError)


# --- the population --------------------------------------------------------------------------


def test_redshifts_follow_the_documented_law() -> None:
    config = PhotozConfig()
    z = np.sort(_galaxies(3000, seed=1, config=config).redshift)
    low, high = config.redshift_range
    assert low <= z[0]
    assert z[-1] <= high
    # The CDF of z^2 exp(-(z/z0)^1.5) on the truncation, integrated numerically here.
    grid = np.linspace(low, high, 20001)
    density = grid**2 * np.exp(-((grid / config.redshift_scale) ** config.redshift_shape))
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(grid))])
    cdf /= cdf[-1]
    empirical = np.arange(1, len(z) + 1) / len(z)
    # Kolmogorov-Smirnov at n = 3000: the 0.1 % critical distance is about 0.036.
    assert np.max(np.abs(np.interp(z, grid, cdf) - empirical)) < 0.036


def test_bulge_to_total_fluxes_and_snr_are_consistent() -> None:
    config = PhotozConfig()
    g = _galaxies(2000, seed=2, config=config)
    assert np.mean(g.bulge_to_total == 0.0) == pytest.approx(config.pure_disk_fraction, abs=0.03)
    assert np.mean(g.bulge_to_total == 1.0) == pytest.approx(config.pure_bulge_fraction, abs=0.03)
    assert np.all((g.bulge_to_total >= 0.0) & (g.bulge_to_total <= 1.0))
    # B/T is the bulge's share of the r light.
    np.testing.assert_allclose(g.bulge_flux[:, R] / g.flux[:, R], g.bulge_to_total, atol=1e-12)
    # The r flux has the drawn S/N by galpipe's definition.
    snr = half_light_snr(
        g.flux[:, R], g.sky_sigma[:, R], g.half_light_radius_arcsec, PIXSCALE_ARCSEC
    )
    np.testing.assert_allclose(snr, g.snr, rtol=1e-12)
    assert g.snr.min() >= config.snr_range[0]
    assert g.snr.max() <= config.snr_range[1]
    assert set(np.unique(g.disk_sed)) == set(range(len(DISK_SEDS)))
    # A small bulge sits inside its disk; a pure spheroid has the drawn radius.
    assert np.all(g.bulge_half_light_radius_arcsec <= g.half_light_radius_arcsec + 1e-12)


def test_an_elliptical_reddens_as_the_4000_angstrom_break_crosses_g_into_r() -> None:
    g_minus_r = _colour(component_fluxes("E", [0.1, 0.4])[:, G])
    # At z = 0.4 the break (4000 A -> 5600 A) has left g for r: far redder, by most of a mag.
    assert g_minus_r[1] - g_minus_r[0] > 0.5
    # A drawn pure spheroid carries those colours.
    spheroid = PhotozConfig(pure_disk_fraction=0.0, pure_bulge_fraction=1.0)
    g = _galaxies(1, config=spheroid)
    low, high = (_with(g, redshift=z, bulge_to_total=1.0) for z in (0.1, 0.4))
    red_low, red_high = (_colour(x.flux[0, G] / x.flux[0, R]) for x in (low, high))
    assert red_low == pytest.approx(g_minus_r[0], abs=1e-9)
    assert red_high - red_low > 0.5


@pytest.mark.parametrize("disk", DISK_SEDS)
def test_the_bulge_is_redder_than_every_disk(disk: str) -> None:
    z = np.linspace(0.02, 1.2, 7)
    bulge, other = component_fluxes("E", z), component_fluxes(disk, z)
    # Redder in g - r (where the break is at these redshifts) and overall in g - z.
    assert np.all(_colour(bulge[:, G]) > _colour(other[:, G]))
    assert np.all(bulge[:, 3] / bulge[:, G] > other[:, 3] / other[:, G])


# --- rendering -------------------------------------------------------------------------------


def test_fast_render_equals_galsims_chromatic_drawing_through_each_bandpass() -> None:
    g = _galaxies(1, seed=3, config=COMPOSITE)
    assert 0.0 < g.bulge_to_total[0] < 1.0
    model = photoz_model_images(g)[0]
    z = float(g.redshift[0])
    r_band = bandpass("r")

    def component(template: str, r_flux: float) -> Any:
        return sed(template).atRedshift(z).withMagnitude(22.5 - 2.5 * math.log10(r_flux), r_band)

    beta = (90.0 + float(g.position_angle_deg[0])) * galsim.degrees
    bulge = galsim.DeVaucouleurs(half_light_radius=float(g.bulge_half_light_radius_arcsec[0]))
    disk = galsim.Exponential(half_light_radius=float(g.half_light_radius_arcsec[0]))
    galaxy = bulge.shear(q=float(g.bulge_axis_ratio[0]), beta=beta) * component(
        "E", float(g.bulge_flux[0, R])
    ) + disk.shear(q=float(g.disk_axis_ratio[0]), beta=beta) * component(
        DISK_SEDS[int(g.disk_sed[0])], float(g.disk_flux[0, R])
    )
    psf = galsim.Moffat(beta=float(g.moffat_beta[0]), fwhm=float(g.psf_fwhm_arcsec[0]))
    chromatic = galsim.Convolve(galaxy, psf)
    for b, band in enumerate(BANDS):
        through = bandpass(band)
        photons = chromatic.drawImage(
            through, nx=CUTOUT_SIZE_PX, ny=CUTOUT_SIZE_PX, scale=PIXSCALE_ARCSEC
        ).array
        # Photon counts -> nanomaggies: m_AB = zeropoint - 2.5 log10(counts).
        expected = photons * 10.0 ** (-0.4 * (through.zeropoint - 22.5))
        assert model[b].sum() == pytest.approx(expected.sum(), rel=1e-4), band
        np.testing.assert_allclose(model[b], expected, rtol=0, atol=1e-4 * expected.max())


def test_a_composite_galaxy_is_redder_at_its_centre_than_in_its_outskirts() -> None:
    g = _with(_galaxies(1, seed=4, config=COMPOSITE), redshift=0.3, bulge_to_total=0.5)
    g = replace(g, position_angle_deg=np.array([0.0]), disk_axis_ratio=np.array([0.8]))
    model = photoz_model_images(g)[0]
    y, x = np.indices(model.shape[1:]) - (CUTOUT_SIZE_PX - 1) / 2.0
    radius = np.hypot(x, y) * PIXSCALE_ARCSEC
    hlr = float(g.half_light_radius_arcsec[0])
    centre, outskirts = radius < 0.4, (radius > 1.5 * hlr) & (radius < 2.5 * hlr)
    g_r = [_colour(model[G][m].sum() / model[R][m].sum()) for m in (centre, outskirts)]
    assert g_r[0] > g_r[1] + 0.05
    # Between the bulge's colour and the disk's, as a mixture must be.
    bulge, disk = (_colour(f[0, G] / f[0, R]) for f in (g.bulge_flux, g.disk_flux))
    assert bulge > g_r[0] > g_r[1] > disk


def test_noise_matches_the_returned_sigma_and_fluxes_are_noiseless_totals() -> None:
    g = _galaxies(6, seed=5)
    stamps = render_photoz_galaxies(g, np.random.default_rng(6))
    shape = (6, len(BANDS), CUTOUT_SIZE_PX, CUTOUT_SIZE_PX)
    assert stamps.images.shape == shape
    assert stamps.images.dtype == np.float32
    assert stamps.sigma.shape == shape
    assert stamps.sigma.dtype == np.float32
    model = photoz_model_images(g)
    pulls = (stamps.images - model) / stamps.sigma
    assert abs(float(pulls.mean())) < 0.03
    assert float(pulls.std()) == pytest.approx(1.0, abs=0.03)
    # The sigma adds the source's Poisson variance (model / gain) to the sky's.
    sky = g.sky_sigma[:, :, None, None]
    poisson = stamps.sigma.astype(np.float64) ** 2 - sky**2
    gain = g.gain_e_per_nmgy[:, None, None, None]
    np.testing.assert_allclose(poisson, model / gain, rtol=0, atol=1e-6 * float(sky.max()) ** 2)
    np.testing.assert_allclose(stamps.flux, g.bulge_flux + g.disk_flux)
    # The stamp (half-width 5.2 arcsec, over two of the largest half-light radii) holds more
    # than half, and not all, of the light.
    assert np.all(model.sum(axis=(2, 3)) < stamps.flux)
    assert np.all(model.sum(axis=(2, 3)) > 0.5 * stamps.flux)


# --- catalogue, samples, by-id ---------------------------------------------------------------


def test_catalogue_has_the_casjobs_columns() -> None:
    config = PhotozConfig(sky_patch=(10.0, 12.0, -5.0, -3.0), redshift_error=2e-4)
    sample = sample_photoz_sky(5, config, seed=7, start_id=1000, size=16)
    table = sample.catalog()
    assert table.colnames == ["id", "ra", "dec", "redshift", "redshiftError", "class"]
    assert list(table["id"]) == [1000, 1001, 1002, 1003, 1004]
    assert table["id"].dtype == np.int64
    assert str(table["ra"].unit) == "deg"
    assert str(table["dec"].unit) == "deg"
    assert np.all((table["ra"] >= 10.0) & (table["ra"] <= 12.0))
    assert np.all((table["dec"] >= -5.0) & (table["dec"] <= -3.0))
    np.testing.assert_array_equal(table["redshift"], sample.galaxies.redshift)
    np.testing.assert_allclose(table["redshiftError"], 2e-4 * (1.0 + table["redshift"]))
    assert set(table["class"]) == {"GALAXY"}
    assert len(spectroscopic_catalog(sample.galaxies)) == len(sample.stamps) == 5


def test_sample_is_the_same_whatever_the_number_of_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(photoz_sky, "PHOTOZ_CHUNK", 4)
    one = sample_photoz_sky(10, seed=8, size=16, processes=1)
    two = sample_photoz_sky(10, seed=8, size=16, processes=2)
    np.testing.assert_array_equal(one.stamps.images, two.stamps.images)
    np.testing.assert_array_equal(one.stamps.sigma, two.stamps.sigma)
    np.testing.assert_array_equal(one.galaxies.redshift, two.galaxies.redshift)
    np.testing.assert_array_equal(one.galaxies.source_id, np.arange(1, 11))
    other = sample_photoz_sky(10, seed=9, size=16)
    assert not np.array_equal(one.galaxies.redshift, other.galaxies.redshift)


def test_a_galaxy_by_id_is_deterministic() -> None:
    truth = photoz_truth_for(42)
    again = photoz_truth_for(42)
    assert truth.source_id.tolist() == [42]
    np.testing.assert_array_equal(truth.redshift, again.redshift)
    np.testing.assert_array_equal(truth.flux, again.flux)
    assert photoz_truth_for(43).redshift[0] != truth.redshift[0]
    stamp = render_photoz_galaxy(truth, size=16)
    np.testing.assert_array_equal(stamp.images, render_photoz_galaxy(again, size=16).images)
    assert stamp.images.shape == (1, len(BANDS), 16, 16)
    with pytest.raises(PhotozInputError, match="truth: expected one galaxy, got 2"):
        render_photoz_galaxy(_galaxies(2))
    with pytest.raises(PhotozInputError, match="source_id = -1"):
        photoz_truth_for(-1)
