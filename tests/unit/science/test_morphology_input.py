"""The network input of the morphology pipeline (science.morphology_input)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.visualization import make_lupton_rgb

from galpipe.science.morphology_input import (
    DEFAULT_LUPTON_Q,
    DEFAULT_LUPTON_STRETCH,
    INPUT_MODES,
    channels_for,
    lupton_rgb,
    network_input,
)

SIZE = 40


def galaxies(n: int, seed: int = 0, noise: float = 0.01) -> np.ndarray:
    """(n, 4, S, S) griz cubes in nanomaggies: elliptical Gaussians of random size,
    orientation and brightness (peak 0.05 .. 20 nmgy) on Gaussian sky noise ``noise``."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    cubes = np.empty((n, 4, SIZE, SIZE), dtype=np.float32)
    for k in range(n):
        angle = rng.uniform(0, np.pi)
        u = x * np.cos(angle) + y * np.sin(angle)
        v = -x * np.sin(angle) + y * np.cos(angle)
        a, b = rng.uniform(2, 6), rng.uniform(1, 3)
        profile = np.exp(-0.5 * ((u / a) ** 2 + (v / b) ** 2))
        peak = 10 ** rng.uniform(np.log10(0.05), np.log10(20))
        colours = rng.uniform(0.5, 2.0, size=4)
        cubes[k] = peak * colours[:, None, None] * profile
    cubes += rng.normal(0, noise, size=cubes.shape).astype(np.float32)
    return cubes


@pytest.mark.parametrize("mode", INPUT_MODES)
def test_shape_dtype_and_finite(mode: str) -> None:
    cubes = galaxies(5)
    cubes[1, 2, 3, 4] = np.nan
    cubes[2, 0, 0, :5] = np.inf
    out = network_input(cubes, mode)
    assert out.shape == (5, channels_for(mode), SIZE, SIZE)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()
    # The caller's cubes are not modified.
    assert np.isnan(cubes[1, 2, 3, 4])


def test_channels_for_and_unknown_mode() -> None:
    assert channels_for("asinh_bands") == 4
    assert channels_for("lupton_rgb") == 3
    with pytest.raises(ValueError, match="'rgb_jpeg'") as info:
        network_input(galaxies(1), "rgb_jpeg")
    assert "asinh_bands" in str(info.value)
    with pytest.raises(ValueError, match="'sdss'"):
        channels_for("sdss")


def test_bad_shape_is_named() -> None:
    with pytest.raises(ValueError, match=r"\(N, 4, S, S\).*\(2, 3, 40, 40\)"):
        network_input(np.zeros((2, 3, SIZE, SIZE), dtype=np.float32))


@pytest.mark.parametrize("mode", INPUT_MODES)
def test_unobserved_band_stays_zero(mode: str) -> None:
    cubes = galaxies(4, seed=1)
    cubes[0, 2] = 0.0  # i not observed: the red channel of the composite
    cubes[3] = 0.0  # nothing observed
    out = network_input(cubes, mode)
    channel = 2 if mode == "asinh_bands" else 0
    assert (out[0, channel] == 0).all()
    assert (out[3] == 0).all()
    # The other bands of that galaxy still carry its light.
    assert np.abs(out[0]).max() > 0.5


def test_asinh_bands_noise_normalised_and_order_one() -> None:
    cubes = galaxies(16, seed=2, noise=0.01)
    out = network_input(cubes, "asinh_bands", softening=3.0)
    # The corners are sky: σ / softening after the division, whatever the galaxy.
    corner = out[:, :, :6, :6]
    assert corner.std() == pytest.approx(1 / 3, rel=0.1)
    # Galaxies spanning a factor 400 in brightness all end up O(1).
    peaks = out.max(axis=(1, 2, 3))
    assert (peaks > 1).all()
    assert (peaks < 10).all()


def test_asinh_bands_invariant_to_flux_scale() -> None:
    cubes = galaxies(6, seed=3)
    base = network_input(cubes, "asinh_bands")
    for factor in (1e-3, 7.0, 2e4):
        scaled = network_input(cubes * np.float32(factor), "asinh_bands")
        np.testing.assert_allclose(scaled, base, rtol=1e-4, atol=1e-4)


def test_asinh_bands_noiseless_band_is_finite() -> None:
    cubes = galaxies(2, seed=4, noise=0.0)
    out = network_input(cubes, "asinh_bands")
    assert np.isfinite(out).all()
    # The noise floor is 1e-3 of the peak: the peak sits at asinh(1000 / softening).
    np.testing.assert_allclose(out.max(axis=(2, 3)), np.arcsinh(1000 / 3.0), rtol=1e-3)


@pytest.mark.parametrize("mode", INPUT_MODES)
def test_rotation_by_90_degrees_commutes(mode: str) -> None:
    cubes = galaxies(4, seed=5)
    for k in (1, 2, 3):
        rotated_then = network_input(np.rot90(cubes, k, axes=(2, 3)), mode)
        then_rotated = np.rot90(network_input(cubes, mode), k, axes=(2, 3))
        np.testing.assert_allclose(rotated_then, then_rotated, rtol=1e-6, atol=1e-6)


def test_lupton_matches_astropy() -> None:
    cubes = galaxies(3, seed=6)
    out = network_input(cubes, "lupton_rgb")
    assert out.min() >= 0
    assert out.max() <= 1
    assert out.max() == pytest.approx(1.0)  # the bright galaxies saturate
    for k in range(3):
        g, r, i = cubes[k, 0], cubes[k, 1], cubes[k, 2]
        reference = make_lupton_rgb(i, r, g, Q=DEFAULT_LUPTON_Q, stretch=DEFAULT_LUPTON_STRETCH)
        ours = np.moveaxis(out[k], 0, -1)
        # astropy truncates x * 255 to uint8: within one step below ours.
        difference = ours * 255 - reference
        assert difference.min() > -1e-3
        assert difference.max() < 1 + 1e-3


@pytest.mark.parametrize(
    ("q", "stretch", "minimum"), [(8.0, 5.0, 0.0), (3.0, 0.2, (-0.1, 0, 0.05))]
)
def test_lupton_parameters_match_astropy(
    q: float, stretch: float, minimum: float | tuple[float, float, float]
) -> None:
    rng = np.random.default_rng(7)
    red, green, blue = rng.normal(0.3, 1.0, size=(3, 2, SIZE, SIZE)).astype(np.float32)
    ours = lupton_rgb(red, green, blue, q=q, stretch=stretch, minimum=minimum)
    for k in range(2):
        reference = make_lupton_rgb(
            red[k],
            green[k],
            blue[k],
            Q=q,
            stretch=stretch,
            minimum=list(np.broadcast_to(minimum, (3,))),
            output_dtype=np.float64,
        )
        np.testing.assert_allclose(np.moveaxis(ours[:, k], 0, -1), reference, atol=1e-5)


def test_bad_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="softening"):
        network_input(galaxies(1), "asinh_bands", softening=0.0)
    with pytest.raises(ValueError, match="stretch"):
        network_input(galaxies(1), "lupton_rgb", stretch=-1.0)
    with pytest.raises(ValueError, match="Q"):
        network_input(galaxies(1), "lupton_rgb", q=float("nan"))
