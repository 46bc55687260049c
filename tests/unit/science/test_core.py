"""The whole measurement of a batch: accuracy, rotation, anisotropy, degenerate inputs, flags."""

from __future__ import annotations

import dataclasses
import math

import galsim
import numpy as np
import pytest
from scipy import ndimage

from galpipe.science.core import BatchMeasurement, Flag, RadonConfig, measure_batch
from galpipe.science.features import axial_difference
from galpipe.science.radon import RadonOperator
from galpipe.science.uncertainty import AngleErrCalibration
from tests.unit.science import SIZE, gaussian, operator_for

NO_MASK = RadonConfig(mask_neighbours=False)
BAND_FLOAT_FIELDS = [
    f.name
    for f in dataclasses.fields(BatchMeasurement)
    if f.name.startswith("band_") and f.name != "band_flags" and f.name != "band_spread_deg"
]
GALAXY_FLOAT_FIELDS = ["angle_image_deg", "angle_err_deg", "band_spread_deg", "anisotropy"]


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory) -> RadonOperator:
    return operator_for(tmp_path_factory)


def _bands(image: np.ndarray, n_bands: int = 4) -> np.ndarray:
    return np.repeat(np.asarray(image, dtype=np.float32)[None], n_bands, axis=0)


def sersic(beta_deg: float, q: float, n: float = 1.0, hlr_pix: float = 4.0) -> np.ndarray:
    """A noiseless GalSim Sersic stamp, major axis at image angle ``beta_deg``, flux 1000."""
    profile = galsim.Sersic(n=n, half_light_radius=hlr_pix, flux=1000.0)
    if q < 1.0:
        profile = profile.shear(q=q, beta=beta_deg * galsim.degrees)
    image = profile.drawImage(nx=SIZE, ny=SIZE, scale=1.0)
    return np.asarray(image.array, dtype=np.float32)


def assert_nan_only_where_flagged(m: BatchMeasurement) -> None:
    """The documented NaN rule of core.py, for every float field."""
    band_blank = (m.band_flags & Flag.BAND_BLANK) != 0
    for name in BAND_FLOAT_FIELDS:
        values = getattr(m, name)
        if values.dtype.kind == "f":
            np.testing.assert_array_equal(np.isnan(values), band_blank, err_msg=name)
    no_band = (m.flags & Flag.NO_VALID_BAND) != 0
    for name in GALAXY_FLOAT_FIELDS:
        np.testing.assert_array_equal(np.isnan(getattr(m, name)), no_band, err_msg=name)
    assert np.isfinite(m.masked_fraction).all()


# -- accuracy --------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ["peak", "moments"])
@pytest.mark.parametrize("pooling", ["max", "top"])
def test_elongated_gaussian_recovered_within_half_a_degree(
    operator: RadonOperator, estimator: str, pooling: str
) -> None:
    betas = np.arange(0.0, 180.0, 2.5)
    images = np.stack([_bands(gaussian(b, q=0.5)) for b in betas])
    config = dataclasses.replace(NO_MASK, estimator=estimator, pooling=pooling)
    m = measure_batch(images, config, operator)
    assert axial_difference(m.angle_image_deg, betas).max() <= 0.5
    assert axial_difference(m.band_angle_image_deg, betas[:, None]).max() <= 0.5
    assert axial_difference(m.band_moments_angle_deg, betas[:, None]).max() <= 0.5
    assert axial_difference(m.band_angle_argmax_deg, betas[:, None]).max() <= 1.0
    assert (m.flags == 0).all()
    assert (m.n_bands == 4).all()
    assert_nan_only_where_flagged(m)


@pytest.mark.parametrize("beta", [0.0, 33.0, 90.0, 151.0])
def test_galsim_sersic_recovered_in_the_image_convention(
    operator: RadonOperator, beta: float
) -> None:
    images = np.stack([_bands(sersic(beta, q=0.6, n=1.0)), _bands(sersic(beta, q=0.6, n=4.0))])
    m = measure_batch(images, NO_MASK, operator)
    assert axial_difference(m.angle_image_deg[0], beta) <= 0.5
    # n = 4: the cusp is a few pixels wide, so max pooling feels the pixel grid (measured 0.64).
    assert axial_difference(m.angle_image_deg[1], beta) <= 1.0


@pytest.mark.parametrize("alpha", [7.0, 45.0, 90.0, 133.0, 250.0])
def test_rotating_by_alpha_changes_the_answer_by_alpha(
    operator: RadonOperator, alpha: float
) -> None:
    """R' = (R + alpha) mod 180: the augmentation by alpha is ndimage.rotate(img, -alpha)
    (ndimage.rotate(+theta) turns image angles by -theta, see test_features)."""
    base = np.stack([sersic(b, q=0.55) for b in (12.0, 64.0, 118.0)])[:, None]
    turned = ndimage.rotate(base, -alpha, axes=(3, 2), reshape=False, order=3)
    m = measure_batch(np.concatenate([base, turned]), NO_MASK, operator)
    before, after = m.angle_image_deg[:3], m.angle_image_deg[3:]
    assert axial_difference(after, np.mod(before + alpha, 180.0)).max() <= 0.5
    if alpha % 180 not in (0.0, 90.0):
        assert axial_difference(after, np.mod(before - alpha, 180.0)).min() > 5.0


# -- anisotropy ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0.5, 1.0, 2.5])
def test_anisotropy_increases_monotonically_with_ellipticity(
    operator: RadonOperator, n: float
) -> None:
    axis_ratios = np.array([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    images = np.stack([_bands(sersic(37.0, q=q, n=n), 1) for q in axis_ratios])
    m = measure_batch(images, NO_MASK, operator)
    assert np.all(np.diff(m.anisotropy) > 0)
    assert np.all(np.diff(m.band_moments_ellipticity[:, 0]) > 0)
    assert m.anisotropy[0] < 1e-3
    assert m.flags[0] & Flag.ROUND
    assert not (m.flags[1:] & Flag.ROUND).any()


# -- degenerate inputs ----------------------------------------------------------------------------


def _degenerate_batch() -> tuple[np.ndarray, list[str]]:
    names, stamps = [], []

    def add(name: str, image: np.ndarray) -> None:
        names.append(name)
        stamps.append(image.astype(np.float32))

    add("all_zero", np.zeros((4, SIZE, SIZE)))
    add("all_nan", np.full((4, SIZE, SIZE), np.nan))
    add("constant", np.full((4, SIZE, SIZE), 5.0))
    hot = np.zeros((4, SIZE, SIZE))
    hot[:, 15, 22] = 1e4
    add("hot_pixel", hot)
    add("round", _bands(sersic(0.0, q=1.0)))
    missing_i = _bands(gaussian(40.0))
    missing_i[2] = 0.0
    add("missing_i_band", missing_i)
    some_nan = _bands(gaussian(70.0))
    some_nan[1, 3:6, 20] = np.nan
    some_nan[3, 0, 0] = np.inf
    add("some_nan", some_nan)
    galaxy_hot = _bands(gaussian(100.0))
    galaxy_hot[0, 10, 10] = 1e6
    add("galaxy_with_hot_pixel_in_g", galaxy_hot)
    rng = np.random.default_rng(1)
    add("pure_noise", rng.normal(0.0, 1.0, size=(4, SIZE, SIZE)))
    return np.stack(stamps), names


def test_degenerate_inputs_give_flags_not_exceptions(operator: RadonOperator) -> None:
    images, names = _degenerate_batch()
    m = measure_batch(images, NO_MASK, operator)
    flags = dict(zip(names, m.flags.tolist(), strict=True))
    row = {name: i for i, name in enumerate(names)}

    for name in ("all_zero", "all_nan", "constant"):
        assert flags[name] & Flag.NO_VALID_BAND, name
        assert flags[name] & Flag.BAND_BLANK, name
        assert (m.band_flags[row[name]] & Flag.BAND_BLANK).all()
    assert flags["all_nan"] & Flag.NONFINITE_PIXELS
    assert (m.nonfinite_count[row["all_nan"]] == SIZE * SIZE).all()

    assert flags["hot_pixel"] & Flag.NO_VALID_BAND
    assert flags["hot_pixel"] & Flag.POINT_LIKE
    assert flags["round"] & Flag.ROUND
    assert not flags["round"] & Flag.NO_VALID_BAND

    assert flags["missing_i_band"] & Flag.BAND_BLANK
    assert m.band_flags[row["missing_i_band"]].tolist() == [0, 0, int(Flag.BAND_BLANK), 0]
    assert m.n_bands[row["missing_i_band"]] == 3
    assert axial_difference(m.angle_image_deg[row["missing_i_band"]], 40.0) <= 0.5

    assert m.nonfinite_count[row["some_nan"]].tolist() == [0, 3, 0, 1]
    assert flags["some_nan"] & Flag.NONFINITE_PIXELS
    assert axial_difference(m.angle_image_deg[row["some_nan"]], 70.0) <= 1.0

    assert m.band_flags[row["galaxy_with_hot_pixel_in_g"], 0] & Flag.POINT_LIKE
    assert m.n_bands[row["galaxy_with_hot_pixel_in_g"]] == 3
    assert axial_difference(m.angle_image_deg[row["galaxy_with_hot_pixel_in_g"]], 100.0) <= 0.5

    assert flags["pure_noise"] & (Flag.LOW_SIGNAL | Flag.ROUND)
    assert_nan_only_where_flagged(m)
    errors = np.concatenate([m.band_angle_err_fit_deg.ravel(), m.band_angle_err_window_deg.ravel()])
    errors = errors[np.isfinite(errors)]
    assert ((errors >= 0) & (errors <= 90)).all()


def test_empty_batch(operator: RadonOperator) -> None:
    m = measure_batch(np.zeros((0, 4, SIZE, SIZE), dtype=np.float32), NO_MASK, operator)
    assert m.angle_image_deg.shape == (0,)
    assert m.band_flags.shape == (0, 4)


# -- the UNRELIABLE flag ---------------------------------------------------------------------------


def _reliability_batch() -> tuple[np.ndarray, list[str]]:
    """Noisy four-band galaxies: round, elongated and bright, bands that disagree (g and r at
    10 degrees, i and z at 70), and a blank one."""
    rng = np.random.default_rng(0)

    def noisy(bands: list[np.ndarray]) -> np.ndarray:
        stack = np.stack(bands)
        return (stack + 0.02 * rng.standard_normal(stack.shape)).astype(np.float32)

    names = ["round", "elongated", "bands_disagree", "blank"]
    images = np.stack(
        [
            noisy([gaussian(0.0, q=1.0)] * 4),
            noisy([gaussian(30.0, q=0.5)] * 4),
            noisy([gaussian(10.0, q=0.3)] * 2 + [gaussian(70.0, q=0.3)] * 2),
            np.zeros((4, SIZE, SIZE), dtype=np.float32),
        ]
    )
    return images, names


def test_round_or_disagreeing_galaxies_are_unreliable_and_an_elongated_one_is_not(
    operator: RadonOperator,
) -> None:
    images, names = _reliability_batch()
    m = measure_batch(images, RadonConfig(), operator)
    unreliable = dict(zip(names, ((m.flags & Flag.UNRELIABLE) != 0).tolist(), strict=True))
    assert unreliable == {
        "round": True,
        "elongated": False,
        "bands_disagree": True,
        # No angle at all: NO_VALID_BAND says so, UNRELIABLE would add nothing.
        "blank": False,
    }
    assert m.flags[names.index("blank")] & Flag.NO_VALID_BAND
    assert not (m.band_flags & Flag.UNRELIABLE).any()  # per galaxy only
    assert_nan_only_where_flagged(m)


def test_each_unreliable_threshold_flags_on_its_own(operator: RadonOperator) -> None:
    """The round galaxy is caught by its anisotropy, the disagreeing bands by their spread."""
    images, names = _reliability_batch()
    anisotropy_only = dataclasses.replace(RadonConfig(), unreliable_max_band_spread_deg=math.inf)
    spread_only = dataclasses.replace(RadonConfig(), unreliable_min_anisotropy=0.0)
    neither = dataclasses.replace(anisotropy_only, unreliable_min_anisotropy=0.0)
    row = {name: i for i, name in enumerate(names)}

    by_anisotropy = measure_batch(images, anisotropy_only, operator).flags & Flag.UNRELIABLE
    assert by_anisotropy[row["round"]]
    assert not by_anisotropy[row["bands_disagree"]]
    by_spread = measure_batch(images, spread_only, operator).flags & Flag.UNRELIABLE
    assert by_spread[row["bands_disagree"]]
    assert not by_spread[row["elongated"]]
    assert not (measure_batch(images, neither, operator).flags & Flag.UNRELIABLE).any()


# -- neighbour masking hook -----------------------------------------------------------------------


def test_neighbour_masking_is_called_before_the_circular_mask_and_recorded(
    operator: RadonOperator,
) -> None:
    galaxy = _bands(gaussian(20.0, q=0.5))
    star = _bands(gaussian(0.0, q=1.0, sigma_major=1.0, centre=(-12.0, 10.0))) * 20.0
    offset = np.arange(SIZE) - (SIZE - 1) / 2.0
    near_star = (offset[:, None] - 10.0) ** 2 + (offset[None, :] + 12.0) ** 2 <= 5.0**2
    images = np.stack([galaxy + star, galaxy])
    seen: list[np.ndarray] = []

    def fake_masker(
        batch: np.ndarray, no_data: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        seen.append(batch.copy())
        assert no_data.shape == batch.shape
        assert not no_data.any()
        out = batch.copy()
        out[0, :, near_star] = 0.0  # the "star", to 5 sigma
        return out, np.array([0.04, 0.0], dtype=np.float32), np.array([True, False])

    masked = measure_batch(images, RadonConfig(), operator, mask_neighbours=fake_masker)
    assert len(seen) == 1
    # It saw sanitised, min-shifted stamps before the circular mask (corners not yet zeroed).
    assert seen[0].dtype == np.float32
    assert seen[0].min() == 0.0
    assert seen[0][0, 0, 0, 0] > 0  # min-shifted only: the corner still carries the Gaussian tail
    assert masked.contaminated.tolist() == [True, False]
    assert masked.masked_fraction.tolist() == pytest.approx([0.04, 0.0])
    assert masked.flags[0] & Flag.CONTAMINATED
    assert not masked.flags[1] & Flag.CONTAMINATED
    assert axial_difference(masked.angle_image_deg[0], 20.0) <= 0.5

    def must_not_run(
        batch: np.ndarray, no_data: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise AssertionError("masking is off")

    unmasked = measure_batch(images, NO_MASK, operator, mask_neighbours=must_not_run)
    assert axial_difference(unmasked.angle_image_deg[0], 20.0) > 1.0  # the star drags it
    assert not unmasked.contaminated.any()
    assert (unmasked.masked_fraction == 0).all()


def test_default_masking_is_the_neighbours_module(operator: RadonOperator) -> None:
    """The contract with galpipe.science.neighbours: called by default."""
    rng = np.random.default_rng(0)
    galaxy = _bands(gaussian(20.0, q=0.5)) * 10.0
    star = _bands(gaussian(0.0, q=1.0, sigma_major=1.2, centre=(-11.0, 9.0))) * 40.0
    noise = rng.normal(0.0, 0.05, size=(2, 4, SIZE, SIZE)).astype(np.float32)
    images = np.stack([galaxy, galaxy + star]) + noise
    masked = measure_batch(images, RadonConfig(), operator)
    assert masked.contaminated.tolist() == [False, True]
    assert masked.flags[1] & Flag.CONTAMINATED
    assert masked.masked_fraction[1] > 0
    assert axial_difference(masked.angle_image_deg[1], masked.angle_image_deg[0]) <= 1.0
    unmasked = measure_batch(images, NO_MASK, operator)
    assert axial_difference(unmasked.angle_image_deg[1], unmasked.angle_image_deg[0]) > 5.0


# -- configuration ---------------------------------------------------------------------------------


def test_algo_version_names_every_parameter() -> None:
    base = RadonConfig()
    assert base.algo_version.startswith("radon-v5+S=40+A=181+o=3+pool=top+top=0.10+est=peak+nbr=on")
    assert "+nbr=off+" in dataclasses.replace(base, mask_neighbours=False).algo_version
    changes = {
        "size": 41,
        "angles_deg": tuple(float(a) for a in range(180)),
        "order": 1,
        "pooling": "max",
        "top_fraction": 0.2,
        "estimator": "moments",
        "mask_neighbours": False,
        "windows_deg": (3.0, 6.0),
        "min_anisotropy": 0.01,
        "min_significance": 5.0,
        "point_like_fraction": 0.6,
        "unreliable_min_anisotropy": 0.02,
        "unreliable_max_band_spread_deg": 30.0,
        "neighbour_tag": "nb9-custom",
        "angle_err_calibration": AngleErrCalibration.identity(),
    }
    assert set(changes) == {f.name for f in dataclasses.fields(RadonConfig)}
    versions = {base.algo_version}
    for name, value in changes.items():
        versions.add(dataclasses.replace(base, **{name: value}).algo_version)
    assert len(versions) == len(changes) + 1


def test_algo_version_names_the_unreliable_thresholds_between_pt_and_cal() -> None:
    config = RadonConfig(unreliable_min_anisotropy=0.02, unreliable_max_band_spread_deg=30.0)
    assert "+pt=0.5+rel=0.02,30+cal=" in config.algo_version
    never = RadonConfig(unreliable_min_anisotropy=0.0, unreliable_max_band_spread_deg=math.inf)
    assert "+rel=0,inf+" in never.algo_version


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pooling", "mean"),
        ("estimator", "median"),
        ("top_fraction", 0.0),
        ("size", 2),
        ("unreliable_min_anisotropy", -0.01),
        ("unreliable_min_anisotropy", math.nan),
        ("unreliable_max_band_spread_deg", 0.0),
        ("unreliable_max_band_spread_deg", -5.0),
        ("unreliable_max_band_spread_deg", math.nan),
    ],
)
def test_invalid_config_is_rejected(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        RadonConfig(**{field: value})  # type: ignore[arg-type]


def test_operator_must_match_the_config(operator: RadonOperator) -> None:
    images = np.zeros((1, 4, SIZE, SIZE), dtype=np.float32)
    with pytest.raises(ValueError, match="operator"):
        measure_batch(images, dataclasses.replace(NO_MASK, order=1), operator)
    with pytest.raises(ValueError, match="images"):
        measure_batch(np.zeros((1, 4, 30, 30), dtype=np.float32), NO_MASK, operator)


def test_chunking_does_not_change_the_result(operator: RadonOperator) -> None:
    images, _ = _degenerate_batch()
    whole = measure_batch(images, NO_MASK, operator)
    chunked = measure_batch(images, NO_MASK, operator, chunk_size=2)
    for f in dataclasses.fields(BatchMeasurement):
        a, b = getattr(whole, f.name), getattr(chunked, f.name)
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b, err_msg=f.name)


# --- step 6: the band stack ------------------------------------------------------------------


def _noisy_bands(rng: np.random.Generator, sigmas: list[float], beta_deg: float) -> np.ndarray:
    """Four bands of one Sersic galaxy with the given sky noise per band, (1, B, S, S)."""
    galaxy = sersic(beta_deg, 0.4)
    return np.stack([galaxy + s * rng.standard_normal(galaxy.shape) for s in sigmas]).astype(
        np.float32
    )[None]


def test_combined_angle_is_the_measurement_of_the_weighted_band_stack(
    operator: RadonOperator,
) -> None:
    # Independent reference: build the stack sum_b I_b / sigma_b (true sky noise; the code
    # estimates it from the corners) and measure it as a one-band image.
    rng = np.random.default_rng(7)
    sigmas = [0.02, 0.05, 0.1, 0.4]
    images = np.concatenate([_noisy_bands(rng, sigmas, beta) for beta in (10.0, 75.0, 140.0)])
    # One pixel per band at the band's minimum (outside the circle): the per-band min-shift
    # and the stack's own min-shift then move nothing relative to each other.
    images[..., 0, 0] = images.min(axis=(-2, -1)) - 1.0
    shifted = images - images[..., :1, :1]
    weights = 1.0 / np.asarray(sigmas)
    stack = np.einsum("b,nbij->nij", weights / weights.sum(), shifted)[:, None]

    combined = measure_batch(images, NO_MASK, operator)
    reference = measure_batch(stack.astype(np.float32), NO_MASK, operator)

    # The corner estimate of each sigma is good to a few per cent, so the weights differ
    # slightly from the true ones: agreement to 0.02 deg, not to 1e-6. (The inverse-variance
    # mean of the four band angles, the previous combination, misses by 0.04-0.19 deg here.)
    difference = axial_difference(combined.angle_image_deg, reference.band_angle_image_deg[:, 0])
    assert np.all(difference < 0.02)


def test_a_noisy_band_has_little_weight_in_the_stack(operator: RadonOperator) -> None:
    # The z band holds a galaxy at right angles to the others, under 50x their sky noise.
    rng = np.random.default_rng(11)
    clean = _noisy_bands(rng, [0.02, 0.02, 0.02, 0.02], 30.0)
    mixed = clean.copy()
    mixed[0, 3] = sersic(120.0, 0.4) + 1.0 * rng.standard_normal((SIZE, SIZE))

    reference = measure_batch(clean, NO_MASK, operator)
    measured = measure_batch(mixed, NO_MASK, operator)
    unweighted = measure_batch(mixed.mean(axis=1, keepdims=True), NO_MASK, operator)

    assert axial_difference(measured.angle_image_deg[0], reference.angle_image_deg[0]) < 0.5
    assert measured.anisotropy[0] == pytest.approx(reference.anisotropy[0], rel=0.05)
    # With equal weights the crossed galaxy would wash out the elongation.
    assert unweighted.anisotropy[0] < 0.8 * reference.anisotropy[0]
