"""(photo-z) How good photometric redshifts are: bias, σ_NMAD and the outlier fraction.

The astronomers' figures of a set of photometric redshifts ``z_phot`` against spectroscopic
ones ``z_spec`` (``docs/photoz.md``), with ``dz = z_phot - z_spec``:

- **bias** = ``median(dz / (1 + z_spec))``;
- **σ_NMAD** = ``1.48 · median(|dz - median(dz)| / (1 + z_spec))``, the normalised median
  absolute deviation: a σ that outliers do not inflate (1.48 makes it the standard deviation of
  a normal distribution);
- **outlier fraction** = ``mean(|dz| / (1 + z_spec) > 0.15)``.

All three are dimensionless. :func:`redshift_metrics` computes them for one set,
:func:`binned_redshift_metrics` per bin of any quantity (a magnitude, z_spec, z_phot).

Missing values are excluded and counted, not errors: a galaxy without pixels has no ``z_phot``
(NaN) and is still a row of the catalogue being scored, so the figures are those of the galaxies
that have both redshifts and :attr:`PhotozMetrics.n_excluded` says how many did not. What cannot
be a redshift -- ``z <= -1``, where ``1 + z`` is not positive -- and arrays that do not pair up
raise :class:`PhotozMetricsError`. With nothing left to score the figures are NaN and ``n`` 0
(an empty bin).

This module imports nothing of galpipe; its errors are plain ``ValueError`` subclasses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "NMAD_SCALE",
    "OUTLIER_THRESHOLD",
    "BinnedPhotozMetrics",
    "PhotozMetrics",
    "PhotozMetricsError",
    "binned_redshift_metrics",
    "redshift_metrics",
]

#: ``|dz| / (1 + z_spec)`` above which a photometric redshift is an outlier.
OUTLIER_THRESHOLD = 0.15
#: The factor of σ_NMAD (the conventional 1.48 ≈ 1 / Φ⁻¹(3/4) = 1.4826).
NMAD_SCALE = 1.48


class PhotozMetricsError(ValueError):
    """Redshifts that cannot be scored; the message names the input and the problem."""


@dataclass(frozen=True)
class PhotozMetrics:
    """The figures of one set of photometric redshifts (all dimensionless).

    Attributes
    ----------
    bias : float
        ``median(dz / (1 + z_spec))``; NaN when ``n`` is 0.
    sigma_nmad : float
        ``1.48 · median(|dz - median(dz)| / (1 + z_spec))``; NaN when ``n`` is 0.
    outlier_fraction : float
        Share of galaxies with ``|dz| / (1 + z_spec) > 0.15``, in [0, 1]; NaN when ``n`` is 0.
    n : int
        Galaxies scored (both redshifts finite).
    n_excluded : int
        Galaxies left out because a redshift was missing (not finite).
    """

    bias: float
    sigma_nmad: float
    outlier_fraction: float
    n: int
    n_excluded: int = 0

    def as_dict(self) -> dict[str, float | int]:
        """The figures as JSON-ready values."""
        return {
            "bias": self.bias,
            "sigma_nmad": self.sigma_nmad,
            "outlier_fraction": self.outlier_fraction,
            "n": self.n,
            "n_excluded": self.n_excluded,
        }


@dataclass(frozen=True)
class BinnedPhotozMetrics:
    """The figures per bin of a quantity (what :func:`binned_redshift_metrics` returns).

    Attributes
    ----------
    edges : numpy.ndarray
        float64 ``(M + 1,)`` the bin edges, increasing, in the quantity's unit; bin ``i`` is
        ``[edges[i], edges[i + 1])``, the last one closed.
    bias, sigma_nmad, outlier_fraction : numpy.ndarray
        float64 ``(M,)`` the figures of each bin; NaN for an empty bin.
    n : numpy.ndarray
        int64 ``(M,)`` galaxies scored in each bin.
    n_excluded : int
        Galaxies left out: a redshift or the binned quantity not finite.
    """

    edges: npt.NDArray[np.float64]
    bias: npt.NDArray[np.float64]
    sigma_nmad: npt.NDArray[np.float64]
    outlier_fraction: npt.NDArray[np.float64]
    n: npt.NDArray[np.int64]
    n_excluded: int

    @property
    def centres(self) -> npt.NDArray[np.float64]:
        """``(M,)`` the middle of every bin."""
        return np.asarray(0.5 * (self.edges[:-1] + self.edges[1:]))


def _pair(
    z_phot: npt.ArrayLike, z_spec: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The two arrays as float64 ``(N,)``, checked to pair up and to be redshifts."""
    phot = np.asarray(z_phot, dtype=np.float64)
    spec = np.asarray(z_spec, dtype=np.float64)
    if phot.ndim != 1 or spec.shape != phot.shape:
        raise PhotozMetricsError(
            f"z_phot and z_spec: expected two 1-D arrays of the same length, got shapes "
            f"{phot.shape} and {spec.shape}"
        )
    for name, values in (("z_phot", phot), ("z_spec", spec)):
        bad = np.flatnonzero(np.isfinite(values) & (values <= -1))
        if bad.size:
            raise PhotozMetricsError(
                f"{name}: {bad.size} values <= -1, where 1 + z is not positive (first: index "
                f"{int(bad[0])}, {values[bad[0]]})"
            )
    return phot, spec


def _figures(
    phot: npt.NDArray[np.float64], spec: npt.NDArray[np.float64]
) -> tuple[float, float, float]:
    """bias, σ_NMAD, outlier fraction of finite pairs; NaN when there are none."""
    if phot.size == 0:
        return float("nan"), float("nan"), float("nan")
    dz = phot - spec
    scale = 1.0 + spec
    bias = float(np.median(dz / scale))
    sigma_nmad = float(NMAD_SCALE * np.median(np.abs(dz - np.median(dz)) / scale))
    outliers = float(np.mean(np.abs(dz) / scale > OUTLIER_THRESHOLD))
    return bias, sigma_nmad, outliers


def redshift_metrics(z_phot: npt.ArrayLike, z_spec: npt.ArrayLike) -> PhotozMetrics:
    """Bias, σ_NMAD and outlier fraction of photometric against spectroscopic redshifts.

    Parameters
    ----------
    z_phot, z_spec : array_like
        ``(N,)`` redshifts of the same galaxies; a non-finite value in either excludes the
        galaxy (counted in :attr:`PhotozMetrics.n_excluded`).

    Returns
    -------
    PhotozMetrics
        The figures of the module docstring, over the galaxies with both redshifts.

    Raises
    ------
    PhotozMetricsError
        If the arrays are not 1-D of one length, or a redshift is <= -1.
    """
    phot, spec = _pair(z_phot, z_spec)
    keep = np.isfinite(phot) & np.isfinite(spec)
    bias, sigma_nmad, outliers = _figures(phot[keep], spec[keep])
    return PhotozMetrics(bias, sigma_nmad, outliers, int(keep.sum()), int((~keep).sum()))


def binned_redshift_metrics(
    z_phot: npt.ArrayLike,
    z_spec: npt.ArrayLike,
    by: npt.ArrayLike,
    edges: npt.ArrayLike,
) -> BinnedPhotozMetrics:
    """The figures of :func:`redshift_metrics` in bins of another quantity.

    Parameters
    ----------
    z_phot, z_spec : array_like
        ``(N,)`` redshifts of the same galaxies.
    by : array_like
        ``(N,)`` the quantity binned: a magnitude (mag), ``z_spec``, ``z_phot`` ...
    edges : array_like
        ``(M + 1,)`` strictly increasing finite bin edges in the unit of ``by``; galaxies
        outside ``[edges[0], edges[-1]]`` are in no bin (and not counted as excluded).

    Returns
    -------
    BinnedPhotozMetrics
        Per-bin figures; NaN where a bin is empty.

    Raises
    ------
    PhotozMetricsError
        If the arrays do not pair up, a redshift is <= -1, or the edges are not at least two
        strictly increasing finite values.
    """
    phot, spec = _pair(z_phot, z_spec)
    quantity = np.asarray(by, dtype=np.float64)
    if quantity.shape != phot.shape:
        raise PhotozMetricsError(
            f"by: expected shape {phot.shape} like the redshifts, got {quantity.shape}"
        )
    bounds = np.asarray(edges, dtype=np.float64)
    if (
        bounds.ndim != 1
        or bounds.size < 2
        or not np.isfinite(bounds).all()
        or not np.all(np.diff(bounds) > 0)
    ):
        raise PhotozMetricsError(
            f"edges: expected at least two strictly increasing finite values, got {bounds.tolist()}"
        )
    keep = np.isfinite(phot) & np.isfinite(spec) & np.isfinite(quantity)
    n_bins = bounds.size - 1
    # searchsorted side="right" puts edges[i] in bin i; the last edge closes the last bin.
    index = np.searchsorted(bounds, quantity, side="right") - 1
    index[quantity == bounds[-1]] = n_bins - 1
    bias = np.full(n_bins, np.nan)
    sigma_nmad = np.full(n_bins, np.nan)
    outliers = np.full(n_bins, np.nan)
    counts = np.zeros(n_bins, dtype=np.int64)
    for i in range(n_bins):
        member = keep & (index == i)
        counts[i] = int(member.sum())
        bias[i], sigma_nmad[i], outliers[i] = _figures(phot[member], spec[member])
    return BinnedPhotozMetrics(
        edges=bounds,
        bias=bias,
        sigma_nmad=sigma_nmad,
        outlier_fraction=outliers,
        n=counts,
        n_excluded=int((~keep).sum()),
    )
