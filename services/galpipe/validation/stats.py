"""Statistics of axial angle errors: summaries, bins, and the calibration of uncertainties.

An axial error is ``|((measured - reference + 90) mod 180) - 90|``, degrees in [0, 90]
(:func:`galpipe.science.features.axial_difference`): a major axis has no head or tail. A
missing measurement (NaN) is not an error of 0 or 90: it is counted in ``n`` but not in
``n_measured``, and the statistics are over the measured ones -- the tables show both counts.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Self

import numpy as np

__all__ = [
    "AXIS_RATIO_EDGES",
    "ELLIPTICITY_EDGES",
    "SNR_EDGES",
    "BinnedCalibration",
    "Calibration",
    "ErrorStats",
    "bin_labels",
    "binned_calibration",
    "binned_stats",
    "calibration",
    "error_stats",
    "json_ready",
    "nan_if_none",
    "stats_list",
]

#: Axis-ratio bins ``[low, high)``, the last closed: q from 0.2 to 1.0.
AXIS_RATIO_EDGES: tuple[float, ...] = (0.2, 0.35, 0.5, 0.7, 0.85, 1.0)
#: S/N bins ``[low, high)``, the last closed: 5 to 200.
SNR_EDGES: tuple[float, ...] = (5.0, 10.0, 20.0, 50.0, 100.0, 200.0)
#: Ellipticity (``1 - b/a``) bins of the Gaia comparison, the last closed.
ELLIPTICITY_EDGES: tuple[float, ...] = (0.0, 0.1, 0.2, 0.4, 0.6, 1.0)


@dataclass(frozen=True)
class ErrorStats:
    """Summary of axial errors, degrees; NaN statistics when nothing was measured.

    Attributes
    ----------
    n : int
        Galaxies (or images) in the selection.
    n_measured : int
        Of them, with a finite error.
    median_deg, mean_deg, p68_deg, p95_deg : float
        Median, mean, 68th and 95th percentiles of the finite errors.
    """

    n: int
    n_measured: int
    median_deg: float
    mean_deg: float
    p68_deg: float
    p95_deg: float

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-ready values (NaN becomes None)."""
        return json_ready(asdict(self))

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Self:
        """The inverse of :meth:`to_json` (None becomes NaN)."""
        return cls(
            n=values["n"],
            n_measured=values["n_measured"],
            median_deg=nan_if_none(values["median_deg"]),
            mean_deg=nan_if_none(values["mean_deg"]),
            p68_deg=nan_if_none(values["p68_deg"]),
            p95_deg=nan_if_none(values["p95_deg"]),
        )


def stats_list(values: Sequence[Mapping[str, Any]]) -> tuple[ErrorStats, ...]:
    """:meth:`ErrorStats.from_json` of each JSON object of a list (one per bin)."""
    return tuple(ErrorStats.from_json(v) for v in values)


def nan_if_none(value: float | None) -> float:
    """JSON's null for a statistic of nothing back to NaN."""
    return float("nan") if value is None else float(value)


def json_ready(value: Any) -> Any:
    """``value`` with NaN floats as None, numpy scalars as Python, tuples as lists, recursively.

    JSON has neither NaN nor numpy types; a statistic of nothing is null.
    """
    if isinstance(value, Mapping):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def error_stats(errors_deg: np.ndarray) -> ErrorStats:
    """Median, mean, 68th and 95th percentiles of the finite values of ``errors_deg``."""
    values = np.asarray(errors_deg, dtype=np.float64).ravel()
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        nan = float("nan")
        return ErrorStats(int(values.size), 0, nan, nan, nan, nan)
    p68, p95 = np.percentile(finite, [68.0, 95.0])
    return ErrorStats(
        n=int(values.size),
        n_measured=int(finite.size),
        median_deg=float(np.median(finite)),
        mean_deg=float(finite.mean()),
        p68_deg=float(p68),
        p95_deg=float(p95),
    )


def _bin_index(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Bin of each value for ``[low, high)`` bins with the last one closed; -1 outside."""
    edge = np.asarray(edges, dtype=np.float64)
    index = np.searchsorted(edge, values, side="right") - 1
    index = np.where(values == edge[-1], edge.size - 2, index)
    return np.where((index >= 0) & (index < edge.size - 1), index, -1)


def bin_labels(edges: Sequence[float]) -> list[str]:
    """``"[a, b)"`` labels of the bins of ``edges``, the last one closed."""
    pairs = list(itertools.pairwise(edges))
    return [
        f"[{lo:g}, {hi:g}{']' if i == len(pairs) - 1 else ')'}" for i, (lo, hi) in enumerate(pairs)
    ]


def binned_stats(
    errors_deg: np.ndarray, values: np.ndarray, edges: Sequence[float]
) -> list[ErrorStats]:
    """:func:`error_stats` of ``errors_deg`` in each bin of ``values`` (bins of ``edges``)."""
    index = _bin_index(np.asarray(values, dtype=np.float64), edges)
    errors = np.asarray(errors_deg, dtype=np.float64)
    return [error_stats(errors[index == b]) for b in range(len(edges) - 1)]


@dataclass(frozen=True)
class Calibration:
    """How often the true error lies within k reported sigma (Gaussian: 68.3 % and 95.4 %).

    Attributes
    ----------
    n : int
        Galaxies with both a finite error and a finite reported uncertainty.
    within_1sigma, within_2sigma : float
        Fractions with ``|error| <= sigma`` and ``<= 2 sigma``.
    median_ratio : float
        Median of ``|error| / sigma`` (0.674 for calibrated Gaussian errors).
    """

    n: int
    within_1sigma: float
    within_2sigma: float
    median_ratio: float

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-ready values (NaN becomes None)."""
        return json_ready(asdict(self))

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Self:
        """The inverse of :meth:`to_json` (None becomes NaN)."""
        return cls(
            n=values["n"],
            within_1sigma=nan_if_none(values["within_1sigma"]),
            within_2sigma=nan_if_none(values["within_2sigma"]),
            median_ratio=nan_if_none(values["median_ratio"]),
        )


def calibration(errors_deg: np.ndarray, sigma_deg: np.ndarray) -> Calibration:
    """Coverage of the reported uncertainties ``sigma_deg`` by the true errors ``errors_deg``."""
    errors = np.asarray(errors_deg, dtype=np.float64).ravel()
    sigma = np.asarray(sigma_deg, dtype=np.float64).ravel()
    use = np.isfinite(errors) & np.isfinite(sigma) & (sigma > 0)
    if not use.any():
        nan = float("nan")
        return Calibration(0, nan, nan, nan)
    ratio = errors[use] / sigma[use]
    return Calibration(
        n=int(use.sum()),
        within_1sigma=float(np.mean(ratio <= 1.0)),
        within_2sigma=float(np.mean(ratio <= 2.0)),
        median_ratio=float(np.median(ratio)),
    )


def binned_calibration(
    errors_deg: np.ndarray, sigma_deg: np.ndarray, values: np.ndarray, edges: Sequence[float]
) -> list[Calibration]:
    """:func:`calibration` of the galaxies in each bin of ``values`` (bins of ``edges``)."""
    index = _bin_index(np.asarray(values, dtype=np.float64), edges)
    errors = np.asarray(errors_deg, dtype=np.float64)
    sigma = np.asarray(sigma_deg, dtype=np.float64)
    return [calibration(errors[index == b], sigma[index == b]) for b in range(len(edges) - 1)]


@dataclass(frozen=True)
class BinnedCalibration:
    """Coverage of one uncertainty estimator overall and per axis-ratio and S/N bin.

    The overall coverage hides where the reported sigma is too small and where too large;
    the bins (:data:`AXIS_RATIO_EDGES`, :data:`SNR_EDGES`) show it.

    Attributes
    ----------
    overall : Calibration
        Every galaxy of the selection.
    by_axis_ratio, by_snr : tuple of Calibration
        One per bin of :data:`AXIS_RATIO_EDGES` and :data:`SNR_EDGES`.
    """

    overall: Calibration
    by_axis_ratio: tuple[Calibration, ...]
    by_snr: tuple[Calibration, ...]

    @classmethod
    def of(
        cls, errors_deg: np.ndarray, sigma_deg: np.ndarray, q: np.ndarray, snr: np.ndarray
    ) -> Self:
        """The coverage of ``sigma_deg`` by ``errors_deg`` for galaxies of axis ratio ``q``
        and signal-to-noise ``snr`` (all ``(n,)``)."""
        return cls(
            overall=calibration(errors_deg, sigma_deg),
            by_axis_ratio=tuple(binned_calibration(errors_deg, sigma_deg, q, AXIS_RATIO_EDGES)),
            by_snr=tuple(binned_calibration(errors_deg, sigma_deg, snr, SNR_EDGES)),
        )

    def to_json(self) -> dict[str, Any]:
        """``overall``, ``by_axis_ratio`` and ``by_snr`` (NaN becomes None)."""
        return {
            "overall": self.overall.to_json(),
            "by_axis_ratio": [c.to_json() for c in self.by_axis_ratio],
            "by_snr": [c.to_json() for c in self.by_snr],
        }

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Self:
        """The inverse of :meth:`to_json`."""
        return cls(
            overall=Calibration.from_json(values["overall"]),
            by_axis_ratio=tuple(Calibration.from_json(c) for c in values["by_axis_ratio"]),
            by_snr=tuple(Calibration.from_json(c) for c in values["by_snr"]),
        )
