"""The synthetic Galaxy Zoo: morphologies, answer shares, volunteer votes, noise floor, stamps."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from galpipe.errors import ConfigurationError, InputError
from galpipe.science import gz2
from galpipe.survey.layout import BANDS, PIXSCALE_ARCSEC

galsim = pytest.importorskip("galsim")

from galpipe.synthetic import galaxy_zoo  # noqa: E402
from galpipe.synthetic.galaxy_zoo import (  # noqa: E402 -- after the galsim skip
    ARM_DETAIL_SNR,
    DEFAULT_VOLUNTEERS,
    DISK,
    ROSE_SNR,
    SMOOTH,
    STAR,
    GalaxyZooInputError,
    Morphologies,
    MorphologyConfig,
    MorphologyConfigError,
    StampFeatures,
    add_stamp_noise,
    answer_shares,
    draw_morphologies,
    draw_votes,
    feature_visibility,
    render_morphologies,
    render_noiseless,
    vote_noise_floor,
)
from galpipe.synthetic.rows import concatenate_rows  # noqa: E402
from galpipe.synthetic.truth import half_light_snr  # noqa: E402

COL = gz2.answer_index


def _population(n: int, seed: int = 0, config: MorphologyConfig | None = None) -> Morphologies:
    return draw_morphologies(n, config or MorphologyConfig(), np.random.default_rng(seed))


def _question_sums(table: np.ndarray) -> np.ndarray:
    return np.stack(
        [table[:, [COL(c) for c in q.answers]].sum(axis=1) for q in gz2.QUESTIONS], axis=1
    )


def _grid(base: Morphologies, **values: np.ndarray) -> Morphologies:
    """``len(values)`` copies of the first galaxy of ``base``, one parameter varied."""
    (name, grid), *rest = values.items()
    assert not rest
    one = base.take(np.zeros(len(grid), dtype=np.int64))
    return replace(one, **{name: np.asarray(grid)})


def _first(morphologies: Morphologies, kind: int) -> Morphologies:
    return morphologies.take(np.flatnonzero(morphologies.kind == kind)[:1])


def _visible(morphologies: Morphologies) -> StampFeatures:
    """Stamps that show every feature plainly, and each galaxy's own axis ratio."""
    n = len(morphologies)
    plain = np.full(n, 1e4)
    return StampFeatures(
        shape_snr=plain,
        bar_snr=plain,
        arm_snr=plain,
        elongation_snr=plain,
        axis_ratio=morphologies.axis_ratio,
    )


def _drawn_features(morphologies: Morphologies, seed: int = 0) -> StampFeatures:
    """Feature S/N log-uniform on 0.1-100 (every visibility from none to full), without the
    rendering a large population's stamps would take; S/N 0 where a feature is absent."""
    rng = np.random.default_rng(seed)
    n = len(morphologies)
    snr = np.exp(rng.uniform(math.log(0.1), math.log(100.0), size=(4, n)))
    galaxy = morphologies.kind != STAR
    return StampFeatures(
        shape_snr=np.where(galaxy, snr[0], 0.0),
        bar_snr=np.where(morphologies.bar_strength > 0, snr[1], 0.0),
        arm_snr=np.where(morphologies.arm_strength > 0, snr[2], 0.0),
        elongation_snr=np.where(galaxy, snr[3], 0.0),
        axis_ratio=morphologies.axis_ratio,
    )


def _shares(morphologies: Morphologies, seed: int = 0) -> np.ndarray:
    return answer_shares(morphologies, _drawn_features(morphologies, seed))


def _resolved(morphologies: Morphologies) -> Morphologies:
    """The galaxies made large against the seeing and bright: every feature visible."""
    n = len(morphologies)
    return replace(
        morphologies,
        half_light_radius_arcsec=np.full(n, 3.0),
        psf_fwhm_arcsec=np.full(n, 1.0),
        snr=np.full(n, 500.0),
    )


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind_fractions": (0.5, 0.5, 0.5)}, "kind_fractions"),
        ({"kind_fractions": (1.2, -0.2, 0.0)}, "kind_fractions"),
        ({"arm_number_probabilities": (0.5, 0.5)}, "arm_number_probabilities"),
        ({"disk_bulge_to_total": (0.6, 0.2)}, "disk_bulge_to_total"),
        ({"smooth_bulge_to_total": (0.5, 1.5)}, "smooth_bulge_to_total"),
        ({"smooth_axis_ratio": (0.0, 1.0)}, "smooth_axis_ratio"),
        ({"bar_fraction": 1.5}, "bar_fraction"),
        ({"spiral_fraction": -0.1}, "spiral_fraction"),
        ({"disk_thickness": 1.0}, "disk_thickness"),
        ({"bulge_size_ratio": 0.0}, "bulge_size_ratio"),
        ({"snr_range": (0.0, 10.0)}, "snr_range"),
        ({"odd_probability": (0.2, 0.1)}, "odd_probability"),
    ],
)
def test_config_rejects_out_of_range_fields_naming_them(change: dict, field: str) -> None:
    with pytest.raises(MorphologyConfigError, match=rf"MorphologyConfig\.{field} = ") as info:
        MorphologyConfig(**change)
    assert isinstance(info.value, ConfigurationError)
    assert isinstance(info.value, ValueError)


def test_config_is_frozen() -> None:
    config = MorphologyConfig()
    with pytest.raises(AttributeError):
        config.bar_fraction = 0.5  # type: ignore[misc]


@pytest.mark.parametrize("n", [-1, 2.5, True])
def test_draw_rejects_a_bad_count(n: object) -> None:
    with pytest.raises(GalaxyZooInputError, match="number of galaxies"):
        draw_morphologies(n, MorphologyConfig(), np.random.default_rng(0))  # type: ignore[arg-type]


# --- morphologies ----------------------------------------------------------------------------


def test_draw_is_reproducible_and_obeys_each_kind() -> None:
    config = MorphologyConfig()
    m = _population(3000, seed=4, config=config)
    again = _population(3000, seed=4, config=config)
    assert np.array_equal(m.flux, again.flux)
    assert np.array_equal(m.kind, again.kind)
    assert len(m) == 3000
    assert m.flux.shape == (3000, 4)
    assert m.sky_sigma.shape == (3000, 4)
    smooth, disk, star = (m.kind == k for k in (SMOOTH, DISK, STAR))
    frequencies = np.array([smooth.mean(), disk.mean(), star.mean()])
    assert np.allclose(frequencies, config.kind_fractions, atol=0.03)
    # Only disks have bars and arms; a barred fraction near bar_fraction.
    assert np.all(m.bar_strength[~disk] == 0)
    assert np.all(m.arm_strength[~disk] == 0)
    assert abs((m.bar_strength[disk] > 0).mean() - config.bar_fraction) < 0.05
    assert set(np.unique(m.n_arms[m.arm_strength > 0])) <= {1, 2, 3, 4, 5}
    # Disks never look thinner than their intrinsic thickness; inclinations reach edge-on.
    assert m.axis_ratio[disk].min() >= config.disk_thickness - 1e-12
    assert (m.axis_ratio[disk] < 0.3).mean() > 0.1
    assert np.all(m.bulge_to_total[smooth] >= config.smooth_bulge_to_total[0])
    assert np.all(m.bulge_to_total[disk] <= config.disk_bulge_to_total[1])
    low, high = config.snr_range
    assert low <= m.snr.min()
    assert m.snr.max() <= high
    # The fluxes carry the drawn S/N by galpipe's own definition (truth.half_light_snr).
    r = BANDS.index("r")
    for i in np.flatnonzero(~star)[:20]:
        snr = half_light_snr(
            m.flux[i, r], m.sky_sigma[i, r], m.half_light_radius_arcsec[i], PIXSCALE_ARCSEC
        )
        assert snr == pytest.approx(m.snr[i], rel=1e-9)
    # Redder bands are brighter: g-r > 0, r-i > 0 in the sky's colour ranges.
    assert np.all(m.flux[:, 0] < m.flux[:, 1])
    assert np.all(m.flux[:, 1] < m.flux[:, 2])


# --- answer shares ---------------------------------------------------------------------------


def test_shares_sum_to_one_and_fractions_obey_the_tree() -> None:
    m = _population(2000, seed=1)
    shares = _shares(m)
    assert shares.shape == (2000, gz2.N_ANSWERS)
    assert np.all(shares >= 0)
    assert np.all(shares <= 1)
    assert np.allclose(_question_sums(shares), 1.0, atol=1e-12)
    fractions = gz2.fractions_from_shares(shares)
    gz2.check_fractions(fractions, atol=1e-12)
    # Stars are mostly called stars; galaxies are not.
    star = m.kind == STAR
    assert fractions[star, COL("Class1.3")].min() > 0.9
    assert fractions[~star, COL("Class1.3")].max() < 0.05


def _shares_visible(morphologies: Morphologies) -> np.ndarray:
    return answer_shares(morphologies, _visible(morphologies))


def _diff(values: np.ndarray) -> np.ndarray:
    return np.diff(values)


def test_mappings_are_monotone_in_the_parameters_they_promise() -> None:
    m = _population(500, seed=2)
    disk = _resolved(_first(m, DISK))
    smooth = _resolved(_first(m, SMOOTH))
    grid = np.linspace(0.0, 1.0, 41)

    bt = _shares_visible(_grid(disk, bulge_to_total=grid))
    assert np.all(_diff(bt[:, COL("Class1.1")]) > 0)  # more bulge -> smoother
    assert np.all(_diff(bt[:, COL("Class5.4")]) > 0)  # -> more dominant bulge
    assert np.all(_diff(bt[:, COL("Class5.1")]) < 0)  # -> less often "no bulge"
    prominence = bt[:, COL("Class5.1") : COL("Class5.4") + 1] @ np.arange(4)
    assert np.all(_diff(prominence) > 0)
    assert np.all(_diff(bt[:, COL("Class9.3")]) < 0)  # edge-on "no bulge" falls with B/T
    assert bt[0, COL("Class5.1")] > 0.5
    assert bt[-1, COL("Class5.4")] > 0.9

    q = np.linspace(0.12, 1.0, 41)
    edge = _shares_visible(_grid(disk, axis_ratio=q))
    assert np.all(_diff(edge[:, COL("Class2.1")]) < 0)  # thinner -> edge-on
    assert edge[0, COL("Class2.1")] > 0.9
    assert edge[-1, COL("Class2.1")] < 0.01
    round_ = _shares_visible(_grid(smooth, axis_ratio=q))
    assert np.all(_diff(round_[:, COL("Class7.1")]) > 0)  # rounder -> "completely round"
    assert np.all(_diff(round_[:, COL("Class7.3")]) < 0)  # -> less cigar-shaped

    bar = _shares_visible(_grid(disk, bar_strength=grid))
    assert np.all(_diff(bar[:, COL("Class3.1")]) > 0)
    assert bar[0, COL("Class3.1")] < 0.1
    assert bar[-1, COL("Class3.1")] > 0.9
    arms = _shares_visible(_grid(disk, arm_strength=grid))
    assert np.all(_diff(arms[:, COL("Class4.1")]) > 0)
    assert np.all(_diff(arms[:, COL("Class11.6")]) < 0)  # clearer arms -> countable
    tight = _shares_visible(_grid(disk, arm_tightness=grid))
    assert np.all(_diff(tight[:, COL("Class10.1")]) > 0)
    assert np.all(_diff(tight[:, COL("Class10.3")]) < 0)
    odd_grid = np.linspace(0.0, 0.9, 41)  # below 1 after the dust lane's share
    odd = _shares_visible(_grid(replace(disk, bar_strength=np.zeros(1)), odd_probability=odd_grid))
    assert np.allclose(_diff(odd[:, COL("Class6.1")]), _diff(odd_grid))

    # The number of arms: the most likely count is the drawn one.
    counts = _shares_visible(_grid(disk, n_arms=np.arange(1, 6)))
    counts = counts[:, COL("Class11.1") : COL("Class11.5") + 1]
    assert np.array_equal(np.argmax(counts, axis=1), np.arange(5))


def test_volunteers_see_less_of_small_and_faint_galaxies() -> None:
    m = _population(500, seed=2)
    drawn = _first(m, DISK)
    brighter = 300.0 / drawn.snr[0]
    disk = replace(
        drawn,
        psf_fwhm_arcsec=np.array([1.2]),
        snr=drawn.snr * brighter,
        flux=drawn.flux * brighter,
        bulge_to_total=np.array([0.1]),
        bar_strength=np.array([0.9]),
        arm_strength=np.array([0.9]),
        arm_tightness=np.array([0.2]),
        axis_ratio=np.array([0.9]),
    )
    # The same galaxy ever smaller (its flux kept; beyond 1.2 arcsec its bar and arms would
    # fade again, spread over more noisy pixels), and ever fainter (its size kept).
    radii = np.geomspace(0.1, 1.2, 12)
    shrinking = replace(
        _grid(disk, half_light_radius_arcsec=radii), bulge_half_light_radius_arcsec=0.35 * radii
    )
    dimming = np.geomspace(0.01, 1.0, 12)
    fading = replace(_grid(disk, snr=disk.snr[0] * dimming), flux=disk.flux * dimming[:, None])
    for grid in (shrinking, fading):
        _, features = render_noiseless(grid, 40)
        shares = answer_shares(grid, features)
        # Larger or brighter: the arms, the bar and the disk show; smaller or fainter: a blob
        # that looks smooth, with arms whose number cannot be told.
        for name in ("shape_snr", "bar_snr", "arm_snr", "elongation_snr"):
            assert np.all(_diff(getattr(features, name)) > 0), name
        assert np.all(_diff(shares[:, COL("Class1.2")]) > 0)
        assert np.all(_diff(shares[:, COL("Class4.1")]) > 0)
        assert np.all(_diff(shares[:, COL("Class3.1")]) > 0)
        assert np.all(_diff(shares[:, COL("Class11.6")]) < 0)
        assert shares[0, COL("Class1.1")] > 0.8
        assert shares[-1, COL("Class1.1")] < 0.1
        assert shares[-1, COL("Class4.1")] > 0.9


def test_visibility_follows_the_rose_criterion() -> None:
    snr = np.array([0.0, 1.0, ROSE_SNR, ARM_DETAIL_SNR, 100.0])
    v = feature_visibility(StampFeatures(snr, snr, snr, snr, np.ones(5)))
    for name in ("shape", "bar", "arms", "arm_detail", "elongation"):
        values = getattr(v, name)
        assert values[0] == 0.0  # no signal, nothing seen
        assert np.all(_diff(values) > 0)
        assert values[-1] > 0.99
    assert v.shape[2] == pytest.approx(0.5)  # half visible at S/N 5
    assert v.arm_detail[3] == pytest.approx(0.5)  # the arms' number and winding at 10
    assert np.all(v.arm_detail[1:] < v.arms[1:])


def test_shares_need_a_feature_row_per_galaxy() -> None:
    m = _population(4, seed=3)
    with pytest.raises(GalaxyZooInputError, match="features: 3 rows for 4 galaxies"):
        answer_shares(m, _drawn_features(m.take(np.arange(3))))


def test_the_seeing_rounds_what_volunteers_see() -> None:
    smooth = _first(_population(500, seed=2), SMOOTH)
    q = np.array([0.3, 0.6, 0.9])
    sharp = replace(
        _grid(smooth, axis_ratio=q),
        bulge_to_total=np.zeros(3),  # one exponential profile
        half_light_radius_arcsec=np.full(3, 2.0),
        bulge_half_light_radius_arcsec=np.full(3, 2.0),
        psf_fwhm_arcsec=np.full(3, 0.3),
    )
    # One elliptical profile, well resolved: its stamp's adaptive moments give its axis ratio.
    np.testing.assert_allclose(render_noiseless(sharp, 64)[1].axis_ratio, q, atol=0.03)
    # A thin disk a fifth of the seeing across looks nearly round, and is seldom called edge-on.
    disk = _first(_population(500, seed=2), DISK)
    thin = replace(
        disk,
        half_light_radius_arcsec=np.array([0.25]),
        psf_fwhm_arcsec=np.array([1.3]),
        axis_ratio=np.array([0.12]),
    )
    _, features = render_noiseless(thin, 40)
    assert 0.6 < features.axis_ratio[0] < 1.0
    assert answer_shares(thin, features)[0, COL("Class2.1")] < 0.01
    # A thin disk too faint to show its elongation looks round too, whatever its stamp's
    # noiseless moments say.
    resolved = replace(thin, half_light_radius_arcsec=np.array([2.0]))
    faint = replace(resolved, flux=resolved.flux * 1e-3)
    _, seen = render_noiseless(concatenate_rows([resolved, faint]), 40)
    assert seen.axis_ratio[1] == pytest.approx(seen.axis_ratio[0])  # the same noiseless shape
    assert seen.elongation_snr[1] < 0.01 * seen.elongation_snr[0]
    shares = answer_shares(concatenate_rows([resolved, faint]), seen)
    assert shares[0, COL("Class7.1")] < 0.1  # not round
    assert shares[1, COL("Class7.1")] > 0.9  # completely round
    large = replace(
        thin,
        half_light_radius_arcsec=np.array([2.5]),
        psf_fwhm_arcsec=np.array([1.0]),
        bulge_to_total=np.zeros(1),
    )
    _, features = render_noiseless(large, 40)
    assert features.axis_ratio[0] < 0.3
    assert _shares_visible(replace(large, axis_ratio=features.axis_ratio))[0, COL("Class2.1")] > 0.5


# --- votes -----------------------------------------------------------------------------------


def test_votes_obey_the_tree_exactly_and_count_whole_volunteers() -> None:
    fractions = gz2.fractions_from_shares(_shares(_population(500, seed=3)))
    votes = draw_votes(fractions, 40, np.random.default_rng(0))
    gz2.check_fractions(votes, atol=1e-12)
    counts = votes * 40
    assert np.allclose(counts, np.round(counts), atol=1e-9)
    assert np.allclose(votes[:, COL("Class1.1") : COL("Class1.3") + 1].sum(axis=1), 1.0)
    assert np.array_equal(votes, draw_votes(fractions, 40, np.random.default_rng(0)))
    assert not np.array_equal(votes, draw_votes(fractions, 40, np.random.default_rng(1)))


def test_vote_means_converge_to_the_true_fractions() -> None:
    fractions = gz2.fractions_from_shares(_shares(_population(6, seed=5)))
    repeats, n = 5000, DEFAULT_VOLUNTEERS
    votes = draw_votes(np.repeat(fractions, repeats, axis=0), n, np.random.default_rng(2))
    mean = votes.reshape(6, repeats, gz2.N_ANSWERS).mean(axis=1)
    # Each vote fraction is Binomial(n, f) / n: standard error sqrt(f(1 - f) / (n repeats)).
    error = np.sqrt(fractions * (1 - fractions) / (n * repeats))
    assert np.all(np.abs(mean - fractions) <= 5 * error + 1e-12)


@pytest.mark.parametrize("n_volunteers", [DEFAULT_VOLUNTEERS, 10])
def test_noise_floor_matches_monte_carlo(n_volunteers: int) -> None:
    fractions = gz2.fractions_from_shares(_shares(_population(2000, seed=6)))
    floor = vote_noise_floor(fractions, n_volunteers)
    votes = draw_votes(fractions, n_volunteers, np.random.default_rng(7))
    assert gz2.rmse(fractions, votes) == pytest.approx(floor, rel=0.02)


def test_noise_floor_scales_as_one_over_root_n_and_vanishes_for_certain_answers() -> None:
    fractions = gz2.fractions_from_shares(_shares(_population(100, seed=8)))
    assert vote_noise_floor(fractions, 10) == pytest.approx(
        2 * vote_noise_floor(fractions, 40), rel=1e-12
    )
    certain = np.zeros((3, gz2.N_ANSWERS))
    certain[:, [COL("Class1.3"), COL("Class6.2")]] = 1.0
    assert vote_noise_floor(certain, 40) == 0.0


@pytest.mark.parametrize("n_volunteers", [0, -3, 2.0, True])
def test_votes_and_floor_reject_a_bad_volunteer_count(n_volunteers: object) -> None:
    fractions = gz2.fractions_from_shares(_shares(_population(3)))
    with pytest.raises(GalaxyZooInputError, match="n_volunteers") as info:
        draw_votes(fractions, n_volunteers, np.random.default_rng(0))  # type: ignore[arg-type]
    assert isinstance(info.value, InputError)
    with pytest.raises(GalaxyZooInputError, match="n_volunteers"):
        vote_noise_floor(fractions, n_volunteers)  # type: ignore[arg-type]


def test_votes_reject_fractions_that_break_the_tree() -> None:
    fractions = gz2.fractions_from_shares(_shares(_population(3)))
    fractions[1, COL("Class2.1")] += 0.1
    with pytest.raises(gz2.FractionsError, match="Q2"):
        draw_votes(fractions, 40, np.random.default_rng(0))


# --- rendering -------------------------------------------------------------------------------


def _moments(image: np.ndarray) -> tuple[float, float, float]:
    """Size ``Ixx + Iyy`` (pixels^2), ellipticity and image angle (degrees) of a stamp."""
    weights = np.clip(image, 0.0, None)
    rows, cols = np.indices(image.shape)
    total = weights.sum()
    x0, y0 = (weights * cols).sum() / total, (weights * rows).sum() / total
    ixx = (weights * (cols - x0) ** 2).sum() / total
    iyy = (weights * (rows - y0) ** 2).sum() / total
    ixy = (weights * (cols - x0) * (rows - y0)).sum() / total
    size = ixx + iyy
    ellipticity = math.hypot(ixx - iyy, 2 * ixy) / size
    angle = math.degrees(0.5 * math.atan2(2 * ixy, ixx - iyy)) % 180.0
    return size, ellipticity, angle


def _bright(m: Morphologies) -> Morphologies:
    """The galaxies with no sky noise and negligible source noise: unbiased moments."""
    return replace(m, sky_sigma=np.zeros_like(m.sky_sigma), gain_e_per_nmgy=np.full(len(m), 1e12))


def test_render_shape_dtype_and_reproducibility() -> None:
    m = _population(12, seed=9)
    stamps = render_morphologies(m, 32, np.random.default_rng(3))
    assert stamps.shape == (12, 4, 32, 32)
    assert stamps.dtype == np.float32
    assert np.all(np.isfinite(stamps))
    assert np.array_equal(stamps, render_morphologies(m, 32, np.random.default_rng(3)))
    assert not np.array_equal(stamps, render_morphologies(m, 32, np.random.default_rng(4)))
    # Flux lands in the stamp in the drawn units (the wings beyond the stamp aside).
    r = BANDS.index("r")
    total = stamps[:, r].sum(axis=(1, 2))
    noise = m.sky_sigma[:, r] * 32
    assert np.all(total < m.flux[:, r] + 5 * noise)
    assert np.all(total > 0.6 * m.flux[:, r] - 5 * noise)


@pytest.mark.parametrize("size", [0, -1, 3.5])
def test_render_rejects_a_bad_size(size: object) -> None:
    with pytest.raises(GalaxyZooInputError, match="size"):
        render_morphologies(_population(1), size, np.random.default_rng(0))  # type: ignore[arg-type]


def test_edge_on_disk_is_elongated_along_its_position_angle() -> None:
    disk = _bright(_first(_population(200, seed=10), DISK))
    pure = replace(disk, bulge_to_total=np.zeros(1), bar_strength=np.zeros(1))
    grid = _grid(pure, axis_ratio=np.array([1.0, 0.15]))
    # PA 0 (north) runs along +y, the rows: image angle 90 degrees (docs/science.md).
    grid = replace(grid, position_angle_deg=np.zeros(2), half_light_radius_arcsec=np.full(2, 1.5))
    face_on, edge_on = render_morphologies(grid, 40, np.random.default_rng(5))[:, 1]
    _, e_face, _ = _moments(face_on)
    _, e_edge, angle = _moments(edge_on)
    assert e_face < 0.05
    assert e_edge > 0.4
    assert abs(angle - 90.0) < 3.0


def test_bar_elongates_a_face_on_disk() -> None:
    disk = _bright(_first(_population(200, seed=11), DISK))
    base = replace(
        disk,
        axis_ratio=np.ones(1),
        bulge_to_total=np.zeros(1),
        bar_angle_deg=np.zeros(1),
        position_angle_deg=np.zeros(1),
        half_light_radius_arcsec=np.full(1, 1.5),
    )
    grid = _grid(base, bar_strength=np.array([0.0, 1.0]))
    plain, barred = render_morphologies(grid, 40, np.random.default_rng(6))[:, 1]
    assert _moments(barred)[1] > _moments(plain)[1] + 0.03


def test_star_is_the_psf() -> None:
    star = _bright(_first(_population(400, seed=12), STAR))
    stamp = render_morphologies(star, 40, np.random.default_rng(7))[0, 1]
    psf = galsim.Moffat(beta=float(star.moffat_beta[0]), fwhm=float(star.psf_fwhm_arcsec[0]))
    expected = psf.drawImage(nx=40, ny=40, scale=PIXSCALE_ARCSEC).array
    size, ellipticity, _ = _moments(stamp)
    assert ellipticity < 0.02
    assert size == pytest.approx(_moments(expected)[0], rel=0.03)
    galaxy = replace(
        _bright(_first(_population(400, seed=12), SMOOTH)), psf_fwhm_arcsec=star.psf_fwhm_arcsec
    )
    assert _moments(render_morphologies(galaxy, 40, np.random.default_rng(7))[0, 1])[0] > size


# --- spiral arms -----------------------------------------------------------------------------


def _face_on_disk(count: int, **values: object) -> Morphologies:
    """``count`` noiseless large face-on pure disks with arms, PSF 1 arcsec; ``values`` set."""
    disk = _bright(_first(_population(200, seed=13), DISK))
    base = replace(
        disk.take(np.zeros(count, dtype=np.int64)),
        axis_ratio=np.ones(count),
        bulge_to_total=np.zeros(count),
        bar_strength=np.zeros(count),
        bar_angle_deg=np.full(count, 30.0),
        position_angle_deg=np.zeros(count),
        half_light_radius_arcsec=np.full(count, 2.5),
        psf_fwhm_arcsec=np.full(count, 1.0),
        arm_strength=np.full(count, 0.8),
        n_arms=np.full(count, 2, dtype=np.int64),
        arm_tightness=np.zeros(count),
    )
    return replace(base, **{k: np.asarray(v) for k, v in values.items()})


def _azimuthal_modes(
    stamp: np.ndarray, inner_px: float, outer_px: float, modes: np.ndarray
) -> np.ndarray:
    """Complex azimuthal Fourier coefficients ``sum I exp(-i k phi) / sum I`` in an annulus."""
    rows, cols = np.indices(stamp.shape)
    centre = (stamp.shape[0] - 1) / 2.0  # GalSim centres the profile on the true centre
    x, y = cols - centre, rows - centre
    ring = (np.hypot(x, y) >= inner_px) & (np.hypot(x, y) < outer_px)
    phi = np.arctan2(y[ring], x[ring])
    light = stamp[ring].astype(np.float64)
    return np.exp(-1j * np.outer(modes, phi)) @ light / light.sum()


_RE_PX = 2.5 / PIXSCALE_ARCSEC  # the half-light radius of _face_on_disk, pixels


@pytest.mark.parametrize(("n_arms", "mode"), [(1, 1), (2, 2), (3, 3), (4, 4), (5, 6)])
def test_arms_are_an_m_fold_azimuthal_pattern(n_arms: int, mode: int) -> None:
    grid = _face_on_disk(2, n_arms=[n_arms, n_arms], arm_strength=[0.8, 0.0])
    armed, plain = render_morphologies(grid, 64, np.random.default_rng(8))[:, 1]
    modes = np.arange(1, 9)
    power = np.abs(_azimuthal_modes(armed, 0.8 * _RE_PX, 1.6 * _RE_PX, modes)) ** 2
    plain_power = np.abs(_azimuthal_modes(plain, 0.8 * _RE_PX, 1.6 * _RE_PX, modes)) ** 2
    k = mode - 1
    # The square pixel grid mixes modes 4 apart (6 -> 2, 8) a little: a margin of 10.
    assert power[k] > 10 * np.delete(power, k).max()
    assert power[k] > 100 * plain_power[k]


def _winding(stamp: np.ndarray, mode: int) -> float:
    """d(phase of mode ``mode``)/d(ln r) over one-pixel annuli from 0.6 to 1.8 R_e, rad."""
    radii = np.arange(0.6 * _RE_PX, 1.8 * _RE_PX, 1.0)
    phases = np.unwrap(
        [np.angle(_azimuthal_modes(stamp, r, r + 1.0, np.array([mode]))[0]) for r in radii]
    )
    return float(np.polyfit(np.log(radii + 0.5), phases, 1)[0])


def test_tighter_arms_wind_faster_with_radius() -> None:
    tightness = np.array([0.0, 0.6])
    grid = _face_on_disk(2, arm_tightness=tightness)
    loose, tight = render_morphologies(grid, 64, np.random.default_rng(9))[:, 1]
    w_loose, w_tight = abs(_winding(loose, 2)), abs(_winding(tight, 2))
    assert w_tight > 1.5 * w_loose
    # A logarithmic spiral: m / tan(pitch), pitch 40 deg loose to 10 deg tight.
    pitch = np.radians(40.0 - 30.0 * tightness)
    assert w_loose == pytest.approx(2 / np.tan(pitch[0]), rel=0.2)
    assert w_tight == pytest.approx(2 / np.tan(pitch[1]), rel=0.2)


def test_arms_keep_the_disk_flux() -> None:
    grid = _face_on_disk(3, arm_strength=[0.0, 1.0, 1.0], n_arms=[2, 2, 5])
    stamps = render_morphologies(grid, 128, np.random.default_rng(10))[:, 1].astype(np.float64)
    totals = stamps.sum(axis=(1, 2))
    assert totals[0] == pytest.approx(grid.flux[0, 1], rel=0.01)
    assert np.allclose(totals[1:], totals[0], rtol=0.01)
    # ... while moving it: the arms change the stamp by far more than the (tiny) noise.
    assert np.abs(stamps[1:] - stamps[0]).max(axis=(1, 2)).min() > 0.05 * stamps[0].max()


def test_zero_arm_strength_renders_the_plain_exponential_disk() -> None:
    disk = _bright(_first(_population(200, seed=14), DISK))
    plain = replace(disk, bulge_to_total=np.zeros(1), bar_strength=np.zeros(1))
    stamps = [
        render_morphologies(
            replace(
                plain,
                arm_strength=np.zeros(1),
                n_arms=np.array([n]),
                arm_tightness=np.array([t]),
            ),
            40,
            np.random.default_rng(11),
        )[0, 1]
        for n, t in [(0, 0.0), (2, 0.9), (5, 0.1)]
    ]
    assert np.array_equal(stamps[0], stamps[1])
    assert np.array_equal(stamps[0], stamps[2])
    # The pre-arms model, built here from GalSim directly: exponential disk, inclined, turned.
    beta = (90.0 + float(plain.position_angle_deg[0])) % 180.0  # north up, east left
    profile = (
        galsim.Exponential(half_light_radius=float(plain.half_light_radius_arcsec[0]))
        .shear(q=float(plain.axis_ratio[0]), beta=0.0 * galsim.degrees)
        .rotate(beta * galsim.degrees)
    )
    psf = galsim.Moffat(beta=float(plain.moffat_beta[0]), fwhm=float(plain.psf_fwhm_arcsec[0]))
    expected = galsim.Convolve(profile, psf).drawImage(nx=40, ny=40, scale=PIXSCALE_ARCSEC)
    expected_r = expected.array * plain.flux[0, 1]
    assert np.allclose(stamps[0], expected_r, rtol=0.0, atol=1e-4 * expected_r.max())


def test_sample_is_the_same_whatever_the_process_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(galaxy_zoo, "SAMPLE_CHUNK", 8)
    one = galaxy_zoo.sample_galaxy_zoo(20, seed=5, size=16)
    two = galaxy_zoo.sample_galaxy_zoo(20, seed=5, size=16, processes=2)
    other = galaxy_zoo.sample_galaxy_zoo(20, seed=6, size=16)
    assert one.stamps.shape == (20, 4, 16, 16)
    assert one.ids.tolist() == list(range(1, 21))
    for name in ("stamps", "true_fractions", "vote_fractions"):
        np.testing.assert_array_equal(getattr(one, name), getattr(two, name))
    np.testing.assert_array_equal(one.morphologies.snr, two.morphologies.snr)
    assert not np.array_equal(one.stamps, other.stamps)
    # Chunks draw from different child seeds: no chunk repeats another's galaxies.
    assert len(np.unique(one.morphologies.snr)) == 20
    gz2.check_fractions(one.vote_fractions, atol=1e-12)
    # Labels are whole-volunteer counts of the true fractions.
    counts = one.vote_fractions * one.n_volunteers
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-9)


@pytest.mark.parametrize(("n", "processes"), [(0, 1), (3, 0), (2.5, 1)])
def test_sample_rejects_bad_counts(n: object, processes: object) -> None:
    with pytest.raises(galaxy_zoo.GalaxyZooInputError, match=r"integer"):
        galaxy_zoo.sample_galaxy_zoo(n, processes=processes)  # type: ignore[arg-type]


def test_bulge_share_is_redder_and_r_keeps_the_drawn_ratio() -> None:
    bt = np.array([0.0, 0.3, 0.8, 1.0])
    share = galaxy_zoo.bulge_light_fraction(bt)
    g, r, i, z = (BANDS.index(b) for b in "griz")
    np.testing.assert_allclose(share[:, r], bt)
    # Pure disks and pure bulges are one component in every band; between, the bulge holds
    # less of the blue light and more of the red.
    np.testing.assert_allclose(share[[0, 3]], [[0.0] * 4, [1.0] * 4])
    assert np.all(share[1:3, g] < share[1:3, r])
    assert np.all(share[1:3, r] < share[1:3, i])
    assert np.all(share[1:3, i] < share[1:3, z])


def test_a_bulge_makes_the_centre_redder_and_keeps_each_bands_flux() -> None:
    disk = _bright(_first(_population(200, seed=21), DISK))
    galaxy = replace(
        disk,
        bulge_to_total=np.array([0.4]),
        bulge_half_light_radius_arcsec=np.array([0.4]),
        half_light_radius_arcsec=np.array([2.0]),
        axis_ratio=np.ones(1),
        bar_strength=np.zeros(1),
        arm_strength=np.zeros(1),
        n_arms=np.zeros(1, dtype=np.int64),
        psf_fwhm_arcsec=np.array([0.8]),
    )
    stamp = render_morphologies(galaxy, 96, np.random.default_rng(2))[0].astype(np.float64)
    np.testing.assert_allclose(stamp.sum(axis=(1, 2)), galaxy.flux[0], rtol=0.01)
    g, z = BANDS.index("g"), BANDS.index("z")
    yy, xx = np.mgrid[:96, :96] - 47.5
    radius = np.hypot(yy, xx)
    centre, outskirts = radius < 2.0, (radius > 12.0) & (radius < 20.0)
    colour_centre = stamp[g][centre].sum() / stamp[z][centre].sum()
    colour_outskirts = stamp[g][outskirts].sum() / stamp[z][outskirts].sum()
    # g/z lower (redder) at the centre, where the bulge's light is, than in the disk.
    assert colour_centre < 0.9 * colour_outskirts


# --- what the stamps show --------------------------------------------------------------------


def test_render_is_the_noiseless_stamp_plus_noise() -> None:
    m = _population(6, seed=15)
    expected, _ = render_noiseless(m, 32)
    noisy = add_stamp_noise(expected, m, np.random.default_rng(3))
    np.testing.assert_array_equal(noisy, render_morphologies(m, 32, np.random.default_rng(3)))
    assert noisy.dtype == np.float32


def test_feature_snr_is_zero_where_a_feature_is_absent() -> None:
    m = _population(300, seed=16)
    _, features = render_noiseless(m.take(np.arange(40)), 32)
    some = m.take(np.arange(40))
    star = some.kind == STAR
    assert np.all(features.shape_snr[star] == 0.0)
    np.testing.assert_array_equal(features.bar_snr > 0, some.bar_strength > 0)
    np.testing.assert_array_equal(features.arm_snr > 0, some.arm_strength > 0)
    assert np.all(features.shape_snr[~star] > 0.0)
    assert np.all((features.axis_ratio > 0.0) & (features.axis_ratio <= 1.0))


def test_feature_snr_is_what_a_matched_filter_measures_in_noisy_stamps() -> None:
    """The ideal observer's S/N against a Monte Carlo of the noise that the stamps get."""
    drawn = _first(_population(300, seed=17), DISK)
    disk = replace(
        drawn,
        flux=drawn.flux * (400.0 / drawn.snr[0]),  # bright: S/N about 400
        half_light_radius_arcsec=np.array([1.5]),
        psf_fwhm_arcsec=np.array([1.1]),
        axis_ratio=np.array([0.8]),
        bar_strength=np.zeros(1),
        arm_strength=np.array([0.4]),
        n_arms=np.array([2]),
    )
    plain = replace(disk, arm_strength=np.zeros(1))
    (armed_mu, plain_mu), features = render_noiseless(concatenate_rows([disk, plain]), 40)
    snr = features.arm_snr[0]
    assert 3.0 < snr < 60.0  # a test of the noise, not of a vanishing or huge signal
    delta = armed_mu - plain_mu
    variance = disk.sky_sigma[0][:, None, None] ** 2 + armed_mu / disk.gain_e_per_nmgy[0]
    repeats = 600
    many = disk.take(np.zeros(repeats, dtype=np.int64))
    rng = np.random.default_rng(18)
    statistic = [
        np.einsum(
            "nbyx,byx->n",
            add_stamp_noise(np.repeat(mu[None], repeats, 0), many, rng) - plain_mu,
            delta / variance,
        )
        for mu in (armed_mu, plain_mu)
    ]
    measured = (statistic[0].mean() - statistic[1].mean()) / statistic[1].std()
    assert measured == pytest.approx(snr, rel=0.1)


def test_the_seeing_hides_tight_windings_and_weak_arms() -> None:
    grid = replace(
        _face_on_disk(3, arm_tightness=[0.0, 0.5, 1.0]),
        sky_sigma=np.full((3, 4), 0.01),
        gain_e_per_nmgy=np.full(3, 300.0),
        psf_fwhm_arcsec=np.full(3, 1.3),
        half_light_radius_arcsec=np.full(3, 1.5),
    )
    tight = render_noiseless(grid, 40)[1].arm_snr
    assert np.all(_diff(tight) < 0)
    assert tight[0] > 3 * tight[-1]
    weak = render_noiseless(
        replace(grid, arm_strength=np.array([0.2, 0.5, 1.0]), arm_tightness=np.zeros(3)), 40
    )[1].arm_snr
    np.testing.assert_allclose(weak / weak[-1], [0.2, 0.5, 1.0], rtol=0.05)


def test_sample_carries_the_features_its_labels_follow() -> None:
    sample = galaxy_zoo.sample_galaxy_zoo(12, seed=19, size=24)
    assert len(sample.features) == 12
    expected = gz2.fractions_from_shares(answer_shares(sample.morphologies, sample.features))
    np.testing.assert_array_equal(sample.true_fractions, expected)


def test_apparent_axis_ratio_falls_back_to_unweighted_moments() -> None:
    # Adaptive moments fail on a cross of light three pixels wide; the unweighted moments of
    # its pixels still give its shape: variances 2/3.6 along its long arm, 0.6/3.6 across.
    cross = np.zeros((3, 3))
    cross[1, :] = 1.0
    cross[0, 1] = cross[2, 1] = 0.3
    with pytest.raises(galsim.GalSimHSMError):
        galsim.hsm.FindAdaptiveMom(galsim.ImageD(cross), strict=True)
    expected = math.sqrt((0.6 / 3.6) / (2.0 / 3.6))
    assert galaxy_zoo._apparent_axis_ratio(cross) == pytest.approx(expected)
    # No light at all: round, not an error.
    assert galaxy_zoo._apparent_axis_ratio(np.zeros((8, 8))) == 1.0
