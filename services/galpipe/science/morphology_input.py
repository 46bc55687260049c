"""(ours) The input of the morphology network: griz cutouts turned into O(1) channels.

A network regressing Galaxy Zoo fractions must see the same galaxy the same way whether it is
bright or faint, and must never see NaN. :func:`network_input` turns a batch of griz cubes
(nanomaggies per pixel, bands in :data:`galpipe.survey.layout.BANDS` order g, r, i, z) into
float32 channels by one of :data:`INPUT_MODES`:

- ``"asinh_bands"`` (4 channels, g r i z): each band divided by its sky noise σ (the robust
  corner estimator of :func:`galpipe.science.sky.sky_level_and_noise`), then
  ``asinh(x / softening)``, ``softening`` in units of σ. The sky is ~N(0, 1/softening) and a
  1,000σ peak is ``asinh(1000 / 3) ≈ 6.5``: O(1) whatever the galaxy's brightness, and
  unchanged when image and noise are multiplied by the same constant.
- ``"lupton_rgb"`` (3 channels, R G B = i r g): the asinh colour composite of Lupton et al.
  (2004), as ``astropy.visualization.make_lupton_rgb`` computes it, vectorised over the batch
  (:func:`lupton_rgb`); values in [0, 1]. The colour scheme of the SDSS gri images behind
  the Kaggle Galaxy Zoo JPGs, so a network trained on those can read it.

A band that was not observed (all zeros) stays all zeros in both modes; non-finite pixels are
taken as 0 (no data) first. Pure numpy; errors are plain ``ValueError``.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from galpipe.science.sky import inverse_noise_weights, sky_level_and_noise

__all__ = [
    "DEFAULT_LUPTON_Q",
    "DEFAULT_LUPTON_STRETCH",
    "DEFAULT_SOFTENING",
    "INPUT_MODES",
    "channels_for",
    "lupton_rgb",
    "network_input",
]

#: The ways a griz cube can be turned into network channels.
INPUT_MODES: Final[tuple[str, ...]] = ("asinh_bands", "lupton_rgb")
_CHANNELS: Final[dict[str, int]] = {"asinh_bands": 4, "lupton_rgb": 3}

#: asinh softening of ``"asinh_bands"``, in units of the band's sky noise σ: pixels within
#: a few σ (the sky) stay in the linear part of asinh, the galaxy is compressed logarithmically.
DEFAULT_SOFTENING: Final[float] = 3.0
#: Lupton's asinh softening parameter Q (dimensionless), the value of Lupton et al. (2004) and
#: astropy's default.
DEFAULT_LUPTON_Q: Final[float] = 8.0
#: Lupton's linear stretch, nanomaggies per pixel. The composite is linear up to an intensity
#: ``stretch / Q`` ≈ 0.06 nmgy (about 10 DR10 sky σ in r) and saturates at ≈ 95 ``stretch``
#: ≈ 47 nmgy per pixel, above the core of all but the brightest galaxies at 0.262"/pixel.
#: (astropy's default of 5 is for unit-less images and would leave most galaxies black.)
DEFAULT_LUPTON_STRETCH: Final[float] = 0.5

# Floor of a band's noise as a fraction of its peak above the sky, so a noiseless (simulated)
# band gets a finite scale: the same 1e-3 as the band stack of the radon core, biting only for
# peaks above 1,000σ on real data.
_NOISE_FLOOR_REL: Final[float] = 1e-3
# Lupton's ``frac``: the stretched intensity reaches ``frac`` at I = frac * stretch (astropy).
_LUPTON_FRAC: Final[float] = 0.1
# Bands of the composite: R = i, G = r, B = g (indices in g, r, i, z).
_RGB_BANDS: Final[tuple[int, int, int]] = (2, 1, 0)


def channels_for(mode: str) -> int:
    """Number of network channels ``mode`` produces.

    Parameters
    ----------
    mode : str
        One of :data:`INPUT_MODES`.

    Returns
    -------
    int
        4 for ``"asinh_bands"``, 3 for ``"lupton_rgb"``.

    Raises
    ------
    ValueError
        If ``mode`` is not one of :data:`INPUT_MODES`.
    """
    try:
        return _CHANNELS[mode]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown network input mode {mode!r}: expected one of {', '.join(INPUT_MODES)}"
        ) from None


def _check_cubes(cubes: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """``cubes`` as float32 ``(N, 4, S, S)`` with non-finite pixels at 0, or a ValueError."""
    arr = np.asarray(cubes)
    if arr.ndim != 4 or arr.shape[1] != 4 or arr.shape[2] != arr.shape[3]:
        raise ValueError(
            f"cubes must have shape (N, 4, S, S) (bands g, r, i, z; square stamps), "
            f"got shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"cubes must be real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    finite = np.isfinite(arr)
    # where() makes a new array: the caller's cubes are never written to.
    return np.where(finite, arr, np.float32(0.0)) if not finite.all() else arr


def _asinh_bands(cubes: npt.NDArray[np.float32], softening: float) -> npt.NDArray[np.float32]:
    """Each band over its sky noise, then asinh(x / softening); see the module docstring."""
    # Zero pixels are no data, as for the radon core (the service's fill, an unobserved band).
    no_data = cubes == 0
    level, sigma = sky_level_and_noise(cubes, no_data)
    peak = cubes.max(axis=(-2, -1))
    usable = ~no_data.all(axis=(-2, -1))
    # 1/σ per band (0 for a band without data or signal), floored for noiseless bands.
    weight = inverse_noise_weights(sigma, peak - level, usable, _NOISE_FLOOR_REL)
    scale = (weight / np.float32(softening)).astype(np.float32)
    return np.arcsinh(cubes * scale[..., None, None]).astype(np.float32, copy=False)


def lupton_rgb(
    red: npt.ArrayLike,
    green: npt.ArrayLike,
    blue: npt.ArrayLike,
    *,
    q: float = DEFAULT_LUPTON_Q,
    stretch: float = DEFAULT_LUPTON_STRETCH,
    minimum: float | tuple[float, float, float] = 0.0,
) -> npt.NDArray[np.float32]:
    """Lupton et al. (2004) asinh colour composite of three images, any leading shape.

    The algorithm of ``astropy.visualization.make_lupton_rgb`` (its float output, before the
    conversion to uint8): subtract each channel's ``minimum``; intensity
    ``I = (R + G + B) / 3``; ``f(I) = asinh(Q I / stretch) * frac / asinh(frac Q)`` with
    ``frac = 0.1``; each channel times ``f(I) / I`` (0 where ``I <= 0``), clipped below at 0;
    where the largest channel of a pixel exceeds 1, all three divided by it (the colour is
    kept, the brightness saturates).

    Parameters
    ----------
    red, green, blue : array_like
        Images of the same shape, e.g. ``(N, S, S)``, in the same flux unit.
    q : float, optional
        Asinh softening parameter Q, dimensionless, > 0.
    stretch : float, optional
        Linear stretch, in the unit of the images, > 0.
    minimum : float or tuple of 3 floats, optional
        Value mapped to black, per channel or for all three, in the unit of the images.

    Returns
    -------
    numpy.ndarray
        float32 ``(3, *shape)``: R, G, B in [0, 1].

    Raises
    ------
    ValueError
        If the shapes differ, ``q`` or ``stretch`` is not a finite number > 0, or ``minimum``
        is not 1 or 3 numbers.
    """
    if not (np.isfinite(q) and q > 0):
        raise ValueError(f"Lupton Q must be a finite number > 0, got {q!r}")
    if not (np.isfinite(stretch) and stretch > 0):
        raise ValueError(f"Lupton stretch must be a finite number > 0, got {stretch!r}")
    channels = [np.asarray(c, dtype=np.float64) for c in (red, green, blue)]
    shapes = {c.shape for c in channels}
    if len(shapes) != 1:
        raise ValueError(
            f"red, green and blue must have one shape, got {[c.shape for c in channels]}"
        )
    minima = np.asarray(minimum, dtype=np.float64).reshape(-1)
    if minima.size not in (1, 3):
        raise ValueError(f"minimum must be 1 or 3 numbers, got {minimum!r}")
    minima = np.broadcast_to(minima, (3,))
    rgb = np.stack(channels) - minima.reshape((3,) + (1,) * channels[0].ndim)
    intensity = rgb.mean(axis=0)
    # astropy caps Q at 1e10; a Q that large is linear anyway.
    q = min(float(q), 1e10)
    stretched = np.arcsinh(intensity * (q / stretch)) * (
        _LUPTON_FRAC / np.arcsinh(_LUPTON_FRAC * q)
    )
    positive = intensity > 0
    ratio = np.where(positive, stretched / np.where(positive, intensity, 1.0), 0.0)
    rgb = np.clip(rgb * ratio, 0.0, None)
    brightest = rgb.max(axis=0)
    over = brightest > 1.0
    rgb = np.where(over, rgb / np.where(over, brightest, 1.0), rgb)
    return rgb.astype(np.float32)


def network_input(
    cubes: npt.ArrayLike,
    mode: str = "asinh_bands",
    *,
    softening: float = DEFAULT_SOFTENING,
    q: float = DEFAULT_LUPTON_Q,
    stretch: float = DEFAULT_LUPTON_STRETCH,
) -> npt.NDArray[np.float32]:
    """A batch of griz cutouts as network channels.

    Parameters
    ----------
    cubes : array_like
        ``(N, 4, S, S)`` cutouts, bands g, r, i, z, nanomaggies per pixel. An all-zero band
        is a band not observed; non-finite pixels are taken as 0.
    mode : str, optional
        One of :data:`INPUT_MODES` (module docstring).
    softening : float, optional
        ``"asinh_bands"`` only: asinh softening in units of each band's sky noise σ, > 0.
    q, stretch : float, optional
        ``"lupton_rgb"`` only: Lupton's Q (dimensionless) and linear stretch (nanomaggies
        per pixel), see :func:`lupton_rgb`.

    Returns
    -------
    numpy.ndarray
        float32 ``(N, C, S, S)``, ``C = channels_for(mode)``, finite: ``asinh_bands``
        dimensionless O(1) values (g, r, i, z); ``lupton_rgb`` R, G, B (i, r, g) in [0, 1].
        An unobserved band gives an all-zero channel.

    Raises
    ------
    ValueError
        If ``mode`` is unknown, the cubes are not ``(N, 4, S, S)`` real numbers, or a
        parameter is out of range.
    """
    channels_for(mode)  # the unknown-mode error before any work
    data = _check_cubes(cubes)
    if mode == "asinh_bands":
        if not (np.isfinite(softening) and softening > 0):
            raise ValueError(f"softening must be a finite number > 0 (in σ), got {softening!r}")
        return _asinh_bands(data, softening)
    red, green, blue = (data[:, b] for b in _RGB_BANDS)
    return np.moveaxis(lupton_rgb(red, green, blue, q=q, stretch=stretch), 0, 1).copy()
