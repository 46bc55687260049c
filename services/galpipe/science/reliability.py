"""(ours) Whether a galaxy's combined angle can be trusted, from what the measurement already has.

A round galaxy gives a nearly flat pooled curve: its fitted peak is decided by the noise, and
the fit's standard error, computed as if the sinusoid were right, says far too little about
that. Two per-galaxy quantities of :class:`galpipe.science.core.BatchMeasurement` see it
directly:

- ``anisotropy`` -- ``b/a`` of the band stack's pooled curve (section 6 of the paper): a flat
  curve, small ``b/a``, has no well-defined peak;
- ``band_spread_deg`` -- the weighted circular standard deviation of the per-band angles: the
  bands of an elongated galaxy agree, those of a round one scatter (the paper notes the same).

The thresholds are chosen on truth by the validation
(:mod:`galpipe.validation.reliability`), which reports how pure and how complete the detection
of large errors is at each of them.
"""

from __future__ import annotations

import numpy as np

__all__ = ["unreliable_angle"]


def unreliable_angle(
    anisotropy: np.ndarray,
    band_spread_deg: np.ndarray,
    *,
    min_anisotropy: float,
    max_band_spread_deg: float,
) -> np.ndarray:
    """Whether each combined angle is unreliable: too round, or the bands disagree.

    Parameters
    ----------
    anisotropy : numpy.ndarray
        ``(N,)`` ``b/a`` of the band stack's pooled curve, dimensionless; NaN where no band
        was combined.
    band_spread_deg : numpy.ndarray
        ``(N,)`` spread of the per-band angles, degrees (0 for one band); NaN where no band
        was combined.
    min_anisotropy : float
        An anisotropy below this is unreliable (dimensionless; 0 never flags on it).
    max_band_spread_deg : float
        A spread above this is unreliable, degrees (``inf`` never flags on it).

    Returns
    -------
    numpy.ndarray
        ``(N,)`` bool; True also where there is no angle (NaN inputs): nothing there to trust.
    """
    aniso = np.asarray(anisotropy, dtype=np.float64)
    spread = np.asarray(band_spread_deg, dtype=np.float64)
    # Written as "not reliable" so that a NaN (no angle) compares False and lands unreliable.
    reliable = (aniso >= min_anisotropy) & (spread <= max_band_spread_deg)
    return np.asarray(~reliable)
