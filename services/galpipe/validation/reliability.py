"""Choosing the thresholds of :func:`galpipe.science.reliability.unreliable_angle` on truth.

The question a catalogue user asks of a flag is: of the galaxies it marks, how many really have
a large error (*purity*), and of the galaxies with a large error, how many does it mark
(*completeness*)? "Large" is an axial error above ``bad_deg`` against the true position angle.
:func:`sweep_thresholds` answers both for every pair of thresholds of a grid;
:func:`choose_thresholds` keeps the most complete pair whose purity reaches ``min_purity``.
Only galaxies with a measured angle count: one without is flagged ``NO_VALID_BAND`` already.
:func:`reliability_summary` also scores the pair the measurement ships, the thresholds of
``RadonConfig`` behind ``Flag.UNRELIABLE``, on the flags it set: the chosen pair says what
this run would pick, the shipped score what the catalogue's flag achieves on it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Self

import numpy as np

from galpipe.science.reliability import unreliable_angle
from galpipe.validation.stats import json_ready, nan_if_none

__all__ = [
    "ANISOTROPY_GRID",
    "BAD_ERROR_DEG",
    "BAND_SPREAD_GRID_DEG",
    "MIN_PURITY",
    "DetectionScore",
    "ReliabilitySummary",
    "choose_thresholds",
    "detection_score",
    "reliability_summary",
    "sweep_thresholds",
]

#: An axial error above this (degrees) is what the flag should catch.
BAD_ERROR_DEG = 10.0
#: The purity the chosen thresholds must reach: of the flagged galaxies, this fraction is bad.
MIN_PURITY = 0.7
#: Minimum anisotropies ``b/a`` tried (0: anisotropy never flags).
ANISOTROPY_GRID: tuple[float, ...] = (0.0, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.03, 0.05)
#: Maximum band spreads tried, degrees (inf: the spread never flags).
BAND_SPREAD_GRID_DEG: tuple[float, ...] = (float("inf"), 40.0, 30.0, 25.0, 20.0, 15.0, 10.0, 5.0)


@dataclass(frozen=True)
class DetectionScore:
    """How well one pair of thresholds detects errors above ``bad_deg``.

    Attributes
    ----------
    min_anisotropy : float
        Threshold on ``b/a`` (dimensionless).
    max_band_spread_deg : float
        Threshold on the band spread, degrees (inf: not used).
    n : int
        Galaxies with a measured angle and a truth.
    n_bad : int
        Of them, with an error above ``bad_deg``.
    n_flagged : int
        Of them, flagged unreliable.
    purity : float
        Fraction of the flagged ones that are bad (NaN when none is flagged).
    completeness : float
        Fraction of the bad ones that are flagged (NaN when none is bad).
    """

    min_anisotropy: float
    max_band_spread_deg: float
    n: int
    n_bad: int
    n_flagged: int
    purity: float
    completeness: float

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-ready values (NaN and an infinite threshold become None)."""
        return json_ready(asdict(self))

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Self:
        """The inverse of :meth:`to_json` (a null spread threshold is inf: not used)."""
        spread = values["max_band_spread_deg"]
        return cls(
            min_anisotropy=float(values["min_anisotropy"]),
            max_band_spread_deg=float("inf") if spread is None else float(spread),
            n=values["n"],
            n_bad=values["n_bad"],
            n_flagged=values["n_flagged"],
            purity=nan_if_none(values["purity"]),
            completeness=nan_if_none(values["completeness"]),
        )


def detection_score(
    errors_deg: np.ndarray,
    flagged: np.ndarray,
    *,
    bad_deg: float = BAD_ERROR_DEG,
    min_anisotropy: float = float("nan"),
    max_band_spread_deg: float = float("nan"),
) -> DetectionScore:
    """Purity and completeness of ``flagged`` as a detector of ``errors_deg > bad_deg``.

    Galaxies whose error is NaN (no angle) are left out. The thresholds are only recorded.
    """
    errors = np.asarray(errors_deg, dtype=np.float64).ravel()
    marked = np.asarray(flagged, dtype=bool).ravel()
    measured = np.isfinite(errors)
    bad = measured & (errors > bad_deg)
    marked = measured & marked
    n_flagged, n_bad = int(marked.sum()), int(bad.sum())
    hits = int((marked & bad).sum())
    return DetectionScore(
        min_anisotropy=min_anisotropy,
        max_band_spread_deg=max_band_spread_deg,
        n=int(measured.sum()),
        n_bad=n_bad,
        n_flagged=n_flagged,
        purity=hits / n_flagged if n_flagged else float("nan"),
        completeness=hits / n_bad if n_bad else float("nan"),
    )


def sweep_thresholds(
    errors_deg: np.ndarray,
    anisotropy: np.ndarray,
    band_spread_deg: np.ndarray,
    *,
    anisotropy_grid: Sequence[float] = ANISOTROPY_GRID,
    band_spread_grid_deg: Sequence[float] = BAND_SPREAD_GRID_DEG,
    bad_deg: float = BAD_ERROR_DEG,
) -> list[DetectionScore]:
    """:func:`detection_score` of every pair of thresholds of the two grids (anisotropy first)."""
    return [
        detection_score(
            errors_deg,
            unreliable_angle(anisotropy, band_spread_deg, min_anisotropy=a, max_band_spread_deg=s),
            bad_deg=bad_deg,
            min_anisotropy=a,
            max_band_spread_deg=s,
        )
        for a, s in itertools.product(anisotropy_grid, band_spread_grid_deg)
    ]


def choose_thresholds(
    scores: Sequence[DetectionScore], *, min_purity: float = MIN_PURITY
) -> DetectionScore | None:
    """The most complete score whose purity is at least ``min_purity``; None if none is.

    Ties go to the one that flags fewer galaxies (the catalogue keeps more).
    """
    pure = [s for s in scores if s.n_flagged and s.purity >= min_purity]
    if not pure:
        return None
    return max(pure, key=lambda s: (s.completeness, -s.n_flagged))


@dataclass(frozen=True)
class ReliabilitySummary:
    """The threshold sweep of one run and the pair it chooses.

    Attributes
    ----------
    bad_deg : float
        The error, degrees, above which a galaxy should be flagged.
    min_purity : float
        The purity the chosen pair must reach.
    chosen : DetectionScore or None
        The chosen pair (:func:`choose_thresholds`); None when no pair is pure enough.
    sweep : tuple of DetectionScore
        Every pair tried.
    shipped : DetectionScore or None
        The ``Flag.UNRELIABLE`` bits the measurement set, scored as a detector, with the
        thresholds of the ``RadonConfig`` of the run; None in a summary written before the
        flag existed.
    """

    bad_deg: float
    min_purity: float
    chosen: DetectionScore | None
    sweep: tuple[DetectionScore, ...]
    shipped: DetectionScore | None

    def to_json(self) -> dict[str, Any]:
        """``bad_deg``, ``min_purity``, ``chosen`` and ``shipped`` (or None), and ``sweep``."""
        return {
            "bad_deg": self.bad_deg,
            "min_purity": self.min_purity,
            "chosen": None if self.chosen is None else self.chosen.to_json(),
            "shipped": None if self.shipped is None else self.shipped.to_json(),
            "sweep": [s.to_json() for s in self.sweep],
        }

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Self:
        """The inverse of :meth:`to_json`; a summary without ``shipped`` (written before the
        flag existed) reads as None."""
        chosen, shipped = values["chosen"], values.get("shipped")
        return cls(
            bad_deg=float(values["bad_deg"]),
            min_purity=float(values["min_purity"]),
            chosen=None if chosen is None else DetectionScore.from_json(chosen),
            sweep=tuple(DetectionScore.from_json(s) for s in values["sweep"]),
            shipped=None if shipped is None else DetectionScore.from_json(shipped),
        )


def reliability_summary(
    errors_deg: np.ndarray,
    anisotropy: np.ndarray,
    band_spread_deg: np.ndarray,
    *,
    shipped_flagged: np.ndarray,
    shipped_min_anisotropy: float,
    shipped_max_band_spread_deg: float,
    bad_deg: float = BAD_ERROR_DEG,
    min_purity: float = MIN_PURITY,
) -> ReliabilitySummary:
    """Sweep the default grids on one population, choose, and score the shipped flag.

    Parameters
    ----------
    errors_deg : numpy.ndarray
        ``(N,)`` axial errors of the combined angle against the truth, degrees (NaN: no angle).
    anisotropy, band_spread_deg : numpy.ndarray
        ``(N,)`` the band stack's ``b/a`` and the band spread (degrees) of the measurement.
    shipped_flagged : numpy.ndarray
        ``(N,)`` bool: where the measurement set ``Flag.UNRELIABLE``.
    shipped_min_anisotropy, shipped_max_band_spread_deg : float
        The thresholds it set them with (``RadonConfig.unreliable_min_anisotropy``,
        ``RadonConfig.unreliable_max_band_spread_deg``, degrees); recorded with the score.
    bad_deg : float
        The error above which a galaxy should be flagged, degrees.
    min_purity : float
        The purity the chosen pair must reach.

    Returns
    -------
    ReliabilitySummary
    """
    sweep = sweep_thresholds(errors_deg, anisotropy, band_spread_deg, bad_deg=bad_deg)
    return ReliabilitySummary(
        bad_deg=bad_deg,
        min_purity=min_purity,
        chosen=choose_thresholds(sweep, min_purity=min_purity),
        sweep=tuple(sweep),
        shipped=detection_score(
            errors_deg,
            shipped_flagged,
            bad_deg=bad_deg,
            min_anisotropy=shipped_min_anisotropy,
            max_band_spread_deg=shipped_max_band_spread_deg,
        ),
    )
