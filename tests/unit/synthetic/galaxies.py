"""Galaxies of the synthetic Galaxy Zoo that the reference tests share."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from galpipe.synthetic.galaxy_zoo import (
    DISK,
    SMOOTH,
    Morphologies,
    MorphologyConfig,
    draw_morphologies,
)


def _first_of_kind(kind: int, **values: float) -> Morphologies:
    """The first galaxy of ``kind`` drawn from the default population (seed 1), brought to
    S/N 100 and a half-light radius of 1.5 arcsec, with ``values`` for its other parameters."""
    m = draw_morphologies(400, MorphologyConfig(), np.random.default_rng(1))
    galaxy = m.take(np.flatnonzero(m.kind == kind)[:1])
    return replace(
        galaxy,
        flux=galaxy.flux * (100.0 / galaxy.snr[0]),
        snr=np.array([100.0]),
        half_light_radius_arcsec=np.array([1.5]),
        **{name: np.array([value]) for name, value in values.items()},
    )


def barred_spiral(bar_strength: float = 0.6) -> Morphologies:
    """A two-armed barred disk at S/N 100, 1.5 arcsec across, B/T 0.3, seen at b/a 0.7."""
    return _first_of_kind(
        DISK,
        bulge_half_light_radius_arcsec=0.5,
        bulge_to_total=0.3,
        axis_ratio=0.7,
        bar_strength=bar_strength,
        arm_strength=0.6,
        n_arms=2,
        arm_tightness=0.4,
    )


def smooth_galaxy() -> Morphologies:
    """A smooth galaxy (B/T 0.95) at S/N 100, 1.5 arcsec across, b/a 0.6."""
    return _first_of_kind(
        SMOOTH,
        bulge_half_light_radius_arcsec=1.5,
        bulge_to_total=0.95,
        axis_ratio=0.6,
        bulge_axis_ratio=0.6,
    )
