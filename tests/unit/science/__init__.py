"""Tests of the science core, with shared helpers: the operator and test images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from galpipe.science.radon import RadonOperator

SIZE = 40
_OPERATORS: dict[tuple[int, str], RadonOperator] = {}


def operator_for(tmp_path_factory: pytest.TempPathFactory, size: int = SIZE) -> RadonOperator:
    """The default operator for ``size``, built once per test session into a private cache."""
    cache = Path(tmp_path_factory.getbasetemp()) / "radon-cache"
    key = (size, str(cache))
    if key not in _OPERATORS:
        _OPERATORS[key] = RadonOperator.load_or_build(size, cache_dir=cache)
    return _OPERATORS[key]


def gaussian(
    beta_deg: float,
    q: float = 0.5,
    sigma_major: float = 5.0,
    size: int = SIZE,
    centre: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """An analytic elongated 2-D Gaussian stamp ``(size, size)`` float64, peak 1.

    Its major axis is at image angle ``beta_deg`` (counter-clockwise from +x (column) towards
    +y (row)); ``centre`` is the (dx, dy) offset from the stamp centre in pixels.
    """
    offset = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    y, x = np.meshgrid(offset - centre[1], offset - centre[0], indexing="ij")
    phi = np.deg2rad(beta_deg)
    u = x * np.cos(phi) + y * np.sin(phi)
    v = -x * np.sin(phi) + y * np.cos(phi)
    return np.exp(-0.5 * ((u / sigma_major) ** 2 + (v / (q * sigma_major)) ** 2))


def image_angle_from_moments(image: np.ndarray) -> float:
    """The second-moment image angle of a stamp, degrees in [0, 180) (independent check)."""
    size = image.shape[-1]
    offset = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    y, x = np.meshgrid(offset, offset, indexing="ij")
    w = image / image.sum()
    mx, my = (w * x).sum(), (w * y).sum()
    mxx = (w * (x - mx) ** 2).sum()
    myy = (w * (y - my) ** 2).sum()
    mxy = (w * (x - mx) * (y - my)).sum()
    return float(np.rad2deg(0.5 * np.arctan2(2 * mxy, mxx - myy)) % 180.0)
