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


def barred_spiral(bar_strength: float = 0.6) -> Morphologies:
    """A two-armed barred disk at S/N 100, 1.5 arcsec across, B/T 0.3, seen at b/a 0.7."""
    m = draw_morphologies(400, MorphologyConfig(), np.random.default_rng(1))
    disk = m.take(np.flatnonzero(m.kind == DISK)[:1])
    return replace(
        disk,
        flux=disk.flux * (100.0 / disk.snr[0]),
        snr=np.array([100.0]),
        half_light_radius_arcsec=np.array([1.5]),
        bulge_half_light_radius_arcsec=np.array([0.5]),
        bulge_to_total=np.array([0.3]),
        axis_ratio=np.array([0.7]),
        bar_strength=np.array([bar_strength]),
        arm_strength=np.array([0.6]),
        n_arms=np.array([2]),
        arm_tightness=np.array([0.4]),
    )


def smooth_galaxy() -> Morphologies:
    """A smooth galaxy (B/T 0.95) at S/N 100, 1.5 arcsec across, b/a 0.6."""
    m = draw_morphologies(400, MorphologyConfig(), np.random.default_rng(1))
    smooth = m.take(np.flatnonzero(m.kind == SMOOTH)[:1])
    return replace(
        smooth,
        flux=smooth.flux * (100.0 / smooth.snr[0]),
        snr=np.array([100.0]),
        half_light_radius_arcsec=np.array([1.5]),
        bulge_half_light_radius_arcsec=np.array([1.5]),
        bulge_to_total=np.array([0.95]),
        axis_ratio=np.array([0.6]),
        bulge_axis_ratio=np.array([0.6]),
    )
