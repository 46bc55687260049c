"""(scikit-learn, no torch) Pixel-level photometric redshifts: learn, combine, serialise.

Step 2 of the pixel photo-z (``docs/photoz.md``): a learner maps each pixel's vector
(:func:`galpipe.science.photoz_pixels.pixel_vectors`) to a redshift, trained on the pixels of
galaxies with spectroscopic redshifts (every pixel takes its galaxy's ``z_spec``); a galaxy's
redshift combines its pixels' estimates.

- **Learner.** ``"knn"`` (the method's): scikit-learn's ``KNeighborsRegressor`` with
  ``weights="distance"`` on standardised features (``StandardScaler`` fitted on the training
  pixels, so that no column dominates the distance by its unit). ``"gradient_boosting"``:
  ``HistGradientBoostingRegressor`` on the same columns, a stronger learner to compare with.
- **Columns** (a setting, :func:`default_columns`): by default the consecutive colours of the
  pixel's luptitudes (``g-r``, ``r-i``, ``i-z``), the luptitude of the second band (``lup_r``)
  and ``r_norm``, then the same colours and luptitude of the pixel's whole segment
  (``seg_g-r`` ..., ``seg_lup_r``: its isophotal fluxes, :func:`segment_luptitudes`). Colours
  carry the redshift (the spectrum's breaks moving through the bands); one luptitude the
  brightness; ``r_norm`` where in the galaxy a pixel lies (bulges are redder than disks). A
  pixel's own colours have a fraction of its galaxy's S/N: the segment's colours give each
  pixel its galaxy's context, and on the synthetic sky they halve the scatter and the outliers
  of the combined redshift (``docs/photoz.md``, benchmark). Left out by default: the pixel
  offsets ``dx_arcsec``, ``dy_arcsec`` -- where a
  pixel lies on the image carries no redshift information, and the kNN would learn each
  training galaxy's orientation -- and the luptitude errors: at the sky-dominated noise of most
  pixels they are a function of the luptitude itself plus the field's depth, which would make
  the neighbours depend on where a galaxy was observed rather than on what it is. Any column of
  the vectors and any colour ``"a-b"`` of two bands may be chosen; the whole vector of the
  method's document is :data:`galpipe.science.photoz_pixels.FEATURE_NAMES`. These defaults are
  reasoned, not yet measured on survey data: compare them with :attr:`validation_curve` of
  other choices on the real training set.
- **k** is chosen from a grid by validation on a split *by galaxy* (the pixels of one galaxy
  are correlated; a split by pixel would let a validation pixel's neighbours be its own
  galaxy's pixels and would choose a k that only works for galaxies already seen). A galaxy's
  side of the split is a hash of its id and ``seed``, so it does not depend on the order of
  the rows. The criterion is σ_NMAD of the *combined galaxy* redshifts of the validation
  galaxies (what is finally reported), ties to the lower outlier fraction, then the smaller k;
  the model is then refitted with that k on all galaxies.
- **Combiners** of a galaxy's pixel estimates (``COMBINERS``): ``"mean"`` -- the method
  document's direct average; ``"flux_weighted_median"`` -- the median weighted by each pixel's
  flux (summed over the bands, negatives as 0), robust to the noisy outskirts and to a stray
  pixel; ``"density_mode"`` -- the mode of a Gaussian kernel density of the estimates weighted
  by flux, in ``ln(1 + z)`` with ``mode_bandwidth`` (≈ a spread of ``δz / (1 + z)``), which
  picks the redshift most pixels agree on when they split into two groups. ``z_err`` is half
  the 16-84 % spread of the pixel estimates, weighted as the combiner weights them. A galaxy
  without pixels gets NaN and keeps its reason.
- **Integrated baseline** (:func:`fit_integrated_baseline`): the same kNN on each galaxy's
  integrated fluxes (colours and one luptitude of the totals), the conventional photo-z the
  pixels should beat.

Memory: a 40×40 stamp gives up to ~200 pixels, 10⁴ galaxies ~2·10⁶ vectors; the features stay
float32, predictions and the validation's neighbour queries run in chunks of
:data:`CHUNK_PIXELS`, and the kNN uses ``algorithm="auto"`` (a k-d tree at these few
dimensions) with ``n_jobs`` threads.

**Serialisation.** :meth:`PixelRedshiftModel.to_bytes` writes a small JSON header (format, its
version, the scikit-learn and numpy versions, the settings, k and the validation curve) and a
pickle of the fitted scaler and regressor. :meth:`~PixelRedshiftModel.from_bytes` reads the
header first and refuses another format version or another scikit-learn major.minor *before*
unpickling anything. A pickle runs code when loaded: the caller must only ever pass bytes it
has verified -- the pipeline stores the SHA-256 of the bytes it wrote and refuses any that do
not match before calling ``from_bytes``.

Imports :mod:`galpipe.science` and :mod:`galpipe.errors` only.
"""

from __future__ import annotations

import itertools
import json
import pickle
import struct
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import sklearn
from scipy.ndimage import gaussian_filter1d
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.neighbors import KNeighborsRegressor
from sklearn.preprocessing import StandardScaler

from galpipe.errors import ConfigurationError, InputError
from galpipe.science.photoz_metrics import PhotozMetrics, redshift_metrics
from galpipe.science.photoz_pixels import PixelVectorConfig, PixelVectors, luptitudes

__all__ = [
    "CHUNK_PIXELS",
    "COMBINERS",
    "DEFAULT_K_GRID",
    "FORMAT_VERSION",
    "INTEGRATED_SOFTENING_NMGY",
    "LEARNERS",
    "SEGMENT_PREFIX",
    "GalaxyRedshifts",
    "IntegratedBaseline",
    "PixelRedshiftError",
    "PixelRedshiftModel",
    "ValidationPoint",
    "combine_pixel_redshifts",
    "default_columns",
    "fit_integrated_baseline",
    "segment_luptitudes",
]

LEARNERS: tuple[str, ...] = ("knn", "gradient_boosting")
COMBINERS: tuple[str, ...] = ("mean", "flux_weighted_median", "density_mode")
#: The k tried by default: distance-weighted kNN photo-z usually do best at k ~ 10-30; the
#: pixels of one training galaxy crowd a neighbourhood, so the grid reaches further.
DEFAULT_K_GRID: tuple[int, ...] = (4, 8, 16, 32, 64)
#: Prefix of a column taken from the pixel's whole segment (its integrated luptitudes):
#: ``seg_g-r`` is the segment's g-r colour, ``seg_lup_r`` its r luptitude.
SEGMENT_PREFIX = "seg_"
#: Softening of integrated luptitudes (segment and baseline), nanomaggies (22.5 + 3.25 mag AB:
#: far below any detected galaxy's flux, so they are magnitudes there).
INTEGRATED_SOFTENING_NMGY = 0.05
#: Pixels per neighbour query or prediction call (bounds the (chunk, k) distance arrays).
CHUNK_PIXELS = 65_536
#: Version of the bytes :meth:`PixelRedshiftModel.to_bytes` writes.
FORMAT_VERSION = 1

_MAGIC = b"GALPIPE-PHOTOZ\n"
_FORMAT = "galpipe-pixel-redshift"
# Cells per kernel bandwidth of the density_mode grid, and the grid's largest size.
_CELLS_PER_BANDWIDTH = 5
_MAX_GRID = 4096
_GALAXIES_PER_CHUNK = 2048


class PixelRedshiftError(InputError, ValueError):
    """Training data, vectors or model bytes that cannot be used; the message says which."""


@dataclass(frozen=True)
class ValidationPoint:
    """The validation figures of one setting tried (one point of the validation curve).

    Attributes
    ----------
    k : int or None
        Neighbours of the kNN; None for gradient boosting.
    sigma_nmad, bias, outlier_fraction : float
        The galaxy-level figures on the validation galaxies
        (:func:`galpipe.science.photoz_metrics.redshift_metrics`), dimensionless.
    pixel_rmse : float
        Root mean square of (pixel z - its galaxy's z_spec) over the validation pixels.
    n_galaxies : int
        Validation galaxies scored.
    """

    k: int | None
    sigma_nmad: float
    bias: float
    outlier_fraction: float
    pixel_rmse: float
    n_galaxies: int


@dataclass(frozen=True)
class GalaxyRedshifts:
    """Galaxy redshifts combined from their pixels (:meth:`PixelRedshiftModel.predict_galaxies`).

    Attributes
    ----------
    z : numpy.ndarray
        float64 ``(N,)`` the galaxy redshift; NaN without pixels.
    z_err : numpy.ndarray
        float64 ``(N,)`` half the weighted 16-84 % spread of the pixel estimates; NaN without
        pixels, 0 for one pixel.
    n_pixels : numpy.ndarray
        int64 ``(N,)`` the pixels combined.
    reasons : tuple of (str or None)
        ``(N,)`` why a galaxy has no redshift; None where it has one.
    """

    z: npt.NDArray[np.float64]
    z_err: npt.NDArray[np.float64]
    n_pixels: npt.NDArray[np.int64]
    reasons: tuple[str | None, ...]


def default_columns(
    bands: Sequence[str], *, with_radius: bool = True, with_segment: bool = True
) -> tuple[str, ...]:
    """The default learner columns for these bands (module docstring, "Columns").

    Parameters
    ----------
    bands : sequence of str
        Band names, blue to red, e.g. ``"griz"``.
    with_radius : bool, optional
        Append ``r_norm`` (pixel vectors have it; integrated fluxes do not).
    with_segment : bool, optional
        Append the same colours and luptitude of the pixel's whole segment
        (:data:`SEGMENT_PREFIX`; pixel vectors only).

    Returns
    -------
    tuple of str
        e.g. ``("g-r", "r-i", "i-z", "lup_r", "r_norm", "seg_g-r", "seg_r-i", "seg_i-z",
        "seg_lup_r")`` for griz.
    """
    names = [str(band) for band in bands]
    if not names:
        raise PixelRedshiftError("bands: expected at least one band, got none")
    colours = tuple(f"{a}-{b}" for a, b in itertools.pairwise(names))
    reference = names[1] if len(names) > 1 else names[0]
    own = (*colours, f"lup_{reference}")
    return (
        *own,
        *(("r_norm",) if with_radius else ()),
        *((SEGMENT_PREFIX + c for c in own) if with_segment else ()),
    )


def _design_matrix(
    features: npt.NDArray[np.float32],
    names: Sequence[str],
    columns: Sequence[str],
    *,
    segment: tuple[npt.NDArray[np.float32], Sequence[str]] | None = None,
) -> npt.NDArray[np.float32]:
    """float32 ``(P, len(columns))``: the named columns, a colour ``"a-b"`` as
    ``lup_a - lup_b``; a column ``"seg_<column>"`` is ``<column>`` of ``segment``, the
    luptitudes of each row's whole segment and their names (``lup_<band>``)."""
    index = {name: i for i, name in enumerate(names)}
    out = np.empty((features.shape[0], len(columns)), dtype=np.float32)
    for j, column in enumerate(columns):
        if column.startswith(SEGMENT_PREFIX):
            if segment is None:
                raise PixelRedshiftError(
                    f"column {column!r}: a segment column, but no segment luptitudes here"
                )
            inner = column.removeprefix(SEGMENT_PREFIX)
            out[:, j] = _design_matrix(segment[0], segment[1], (inner,))[:, 0]
            continue
        if column in index:
            out[:, j] = features[:, index[column]]
            continue
        parts = column.split("-")
        if len(parts) == 2 and f"lup_{parts[0]}" in index and f"lup_{parts[1]}" in index:
            out[:, j] = (
                features[:, index[f"lup_{parts[0]}"]] - features[:, index[f"lup_{parts[1]}"]]
            )
            continue
        raise PixelRedshiftError(
            f"column {column!r}: neither a feature ({', '.join(names)}), a colour 'a-b' of two "
            f"bands with luptitudes, nor '{SEGMENT_PREFIX}' and one of those"
        )
    return out


def segment_luptitudes(vectors: PixelVectors) -> npt.NDArray[np.float32]:
    """float32 ``(P, B)``: the luptitudes of each pixel's whole segment (its isophotal flux,
    :attr:`~galpipe.science.photoz_pixels.PixelVectors.segment_flux`), softened by
    :data:`INTEGRATED_SOFTENING_NMGY` like the integrated baseline's, one row per pixel.

    Raises
    ------
    PixelRedshiftError
        If the vectors carry no segment flux for each of their galaxies.
    """
    expected = (vectors.n_galaxies, len(vectors.bands))
    if vectors.segment_flux.shape != expected:
        raise PixelRedshiftError(
            f"segment columns ({SEGMENT_PREFIX}...) need each galaxy's segment flux: expected "
            f"shape {expected}, the vectors carry {vectors.segment_flux.shape}"
        )
    mu, _ = luptitudes(
        vectors.segment_flux,
        np.zeros_like(vectors.segment_flux),
        np.full(len(vectors.bands), INTEGRATED_SOFTENING_NMGY),
    )
    return mu.astype(np.float32)[vectors.galaxy_index]


def _pixel_design(vectors: PixelVectors, columns: Sequence[str]) -> npt.NDArray[np.float32]:
    """The learner's design matrix of ``vectors`` (segment luptitudes only when asked for)."""
    segment = None
    if any(c.startswith(SEGMENT_PREFIX) for c in columns):
        segment = (segment_luptitudes(vectors), tuple(f"lup_{band}" for band in vectors.bands))
    return _design_matrix(vectors.features, vectors.feature_names, columns, segment=segment)


def _split_by_galaxy(
    ids: npt.NDArray[np.int64], candidates: npt.NDArray[np.bool_], fraction: float, seed: int
) -> npt.NDArray[np.bool_]:
    """bool ``(N,)``: the validation galaxies among ``candidates``, by a hash of id and seed.

    At least one candidate is validation and at least one training (the caller has >= 2).
    """
    # splitmix64: a well-mixed 64-bit hash, so neighbouring ids fall on either side.
    with np.errstate(over="ignore"):
        h = ids.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        h = h ^ (h >> np.uint64(31))
    unit = (h >> np.uint64(11)).astype(np.float64) / float(2**53)
    validation = candidates & (unit < fraction)
    order = np.flatnonzero(candidates)[np.argsort(unit[candidates], kind="stable")]
    if not validation.any():
        validation[order[0]] = True
    if validation.sum() == candidates.sum():
        validation[order[-1]] = False
    return validation


def _distance_weighted(
    distances: npt.NDArray[np.float64], targets: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """scikit-learn's ``weights="distance"`` average of ``(n, k)`` neighbour targets: weights
    ``1 / d``; a row with a neighbour at distance 0 averages those neighbours only."""
    with np.errstate(divide="ignore"):
        weights = 1.0 / distances
    exact = np.isinf(weights)
    rows = exact.any(axis=1)
    weights[rows] = exact[rows]
    return np.asarray((weights * targets).sum(axis=1) / weights.sum(axis=1))


def _weights_for(
    combiner: str, flux_weight: npt.NDArray[np.float32], galaxy: npt.NDArray[np.int64], n: int
) -> npt.NDArray[np.float64]:
    """Per-pixel weights of a combiner: 1 for the mean; flux (negatives 0) otherwise, 1 for
    every pixel of a galaxy whose flux weights are all 0."""
    if combiner == "mean":
        return np.ones(galaxy.size)
    weights = np.maximum(flux_weight.astype(np.float64), 0.0)
    total = np.bincount(galaxy, weights=weights, minlength=n)
    return np.where(total[galaxy] > 0, weights, 1.0)


def _weighted_quantiles(
    z: npt.NDArray[np.float64],
    galaxy: npt.NDArray[np.int64],
    weights: npt.NDArray[np.float64],
    n: int,
    quantiles: Sequence[float],
) -> npt.NDArray[np.float64]:
    """``(len(quantiles), n)``: per galaxy, the first estimate whose cumulative weight reaches
    ``q`` of the galaxy's total; NaN for galaxies without pixels. Vectorised over galaxies."""
    out = np.full((len(quantiles), n), np.nan)
    if z.size == 0:
        return out
    order = np.lexsort((z, galaxy))
    zs, gs, ws = z[order], galaxy[order], weights[order]
    total = np.bincount(gs, weights=ws, minlength=n)
    # Weights normalised per galaxy: the running sum over the sorted pixels is r + (share of
    # the galaxy so far), r the galaxy's rank among those with pixels; so it never decreases
    # and the galaxy's q-quantile is its first entry at or above r + q (less a rounding margin).
    key = np.cumsum(ws / total[gs])
    present = np.flatnonzero(np.bincount(gs, minlength=n) > 0)
    rank = np.arange(present.size, dtype=np.float64)
    for row, q in enumerate(quantiles):
        at = np.searchsorted(key, rank + q - 1e-9, side="left")
        out[row, present] = zs[np.minimum(at, zs.size - 1)]
    return out


def _density_mode(
    z: npt.NDArray[np.float64],
    galaxy: npt.NDArray[np.int64],
    weights: npt.NDArray[np.float64],
    n: int,
    bandwidth: float,
) -> npt.NDArray[np.float64]:
    """``(n,)`` the mode of each galaxy's weighted Gaussian kernel density of ``ln(1 + z)``,
    on a grid of ``bandwidth / 5``; NaN without pixels. Chunks of galaxies bound the grid."""
    out = np.full(n, np.nan)
    u = np.log1p(np.maximum(z, -1 + 1e-9))
    order = np.argsort(galaxy, kind="stable")
    bounds = np.searchsorted(
        galaxy[order], np.arange(0, n + _GALAXIES_PER_CHUNK, _GALAXIES_PER_CHUNK)
    )
    for chunk, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        if lo == hi:
            continue
        first = chunk * _GALAXIES_PER_CHUNK
        pick = order[lo:hi]
        local = galaxy[pick] - first
        n_local = min(_GALAXIES_PER_CHUNK, n - first)
        u_chunk = u[pick]
        # The grid's cells lie on one lattice of ln(1 + z) whatever the chunk holds, so a
        # galaxy's mode does not depend on which other galaxies share its batch.
        step = bandwidth / _CELLS_PER_BANDWIDTH
        start = np.floor((u_chunk.min() - 4 * bandwidth) / step) * step
        span = u_chunk.max() + 4 * bandwidth - start
        if span / step > _MAX_GRID - 1:  # an absurd spread of redshifts: coarsen, by powers of 2
            step *= 2.0 ** np.ceil(np.log2(span / step / (_MAX_GRID - 1)))
            start = np.floor((u_chunk.min() - 4 * bandwidth) / step) * step
            span = u_chunk.max() + 4 * bandwidth - start
        n_grid = int(np.ceil(span / step)) + 1
        cell = np.clip(np.rint((u_chunk - start) / step).astype(np.int64), 0, n_grid - 1)
        hist = np.bincount(local * n_grid + cell, weights=weights[pick], minlength=n_local * n_grid)
        density = gaussian_filter1d(
            hist.reshape(n_local, n_grid), bandwidth / step, axis=1, mode="constant"
        )
        has = np.bincount(local, minlength=n_local) > 0
        mode_u = start + step * np.argmax(density, axis=1)
        out[first : first + n_local] = np.where(has, np.expm1(mode_u), np.nan)
    return out


def combine_pixel_redshifts(
    pixel_z: npt.ArrayLike,
    galaxy_index: npt.ArrayLike,
    flux_weight: npt.ArrayLike,
    n_galaxies: int,
    combiner: str = "mean",
    *,
    mode_bandwidth: float = 0.02,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Each galaxy's redshift and its spread from its pixels' estimates.

    Parameters
    ----------
    pixel_z : array_like
        ``(P,)`` redshift of every pixel.
    galaxy_index : array_like
        int ``(P,)`` the galaxy of each pixel, 0 .. ``n_galaxies`` - 1.
    flux_weight : array_like
        ``(P,)`` flux of each pixel, nanomaggies (negatives count 0).
    n_galaxies : int
        N.
    combiner : {"mean", "flux_weighted_median", "density_mode"}
        See the module docstring.
    mode_bandwidth : float, optional
        The density_mode kernel's σ in ``ln(1 + z)``, > 0.

    Returns
    -------
    z, z_err : numpy.ndarray
        float64 ``(N,)``: the combined redshift, half the weighted 16-84 % spread; NaN for
        galaxies without pixels.

    Raises
    ------
    PixelRedshiftError
        If the combiner is unknown, the bandwidth not positive or the arrays do not pair up.
    """
    if combiner not in COMBINERS:
        raise PixelRedshiftError(f"combiner {combiner!r}: choose one of {', '.join(COMBINERS)}")
    if not (np.isfinite(mode_bandwidth) and mode_bandwidth > 0):
        raise PixelRedshiftError(f"mode_bandwidth: expected > 0 in ln(1 + z), got {mode_bandwidth}")
    z = np.asarray(pixel_z, dtype=np.float64)
    galaxy = np.asarray(galaxy_index, dtype=np.int64)
    flux = np.asarray(flux_weight, dtype=np.float32)
    if z.ndim != 1 or galaxy.shape != z.shape or flux.shape != z.shape:
        raise PixelRedshiftError(
            f"pixel_z, galaxy_index, flux_weight: expected three 1-D arrays of one length, got "
            f"{z.shape}, {galaxy.shape}, {flux.shape}"
        )
    if galaxy.size and (galaxy.min() < 0 or galaxy.max() >= n_galaxies):
        raise PixelRedshiftError(
            f"galaxy_index: expected values in 0 .. {n_galaxies - 1}, got {galaxy.min()} .. "
            f"{galaxy.max()}"
        )
    weights = _weights_for(combiner, flux, galaxy, n_galaxies)
    q16, q50, q84 = _weighted_quantiles(z, galaxy, weights, n_galaxies, (0.16, 0.5, 0.84))
    if combiner == "mean":
        count = np.bincount(galaxy, minlength=n_galaxies)
        total = np.bincount(galaxy, weights=z, minlength=n_galaxies)
        combined = np.divide(total, count, out=np.full(n_galaxies, np.nan), where=count > 0)
    elif combiner == "flux_weighted_median":
        combined = q50
    else:
        combined = _density_mode(z, galaxy, weights, n_galaxies, mode_bandwidth)
    return combined, 0.5 * (q84 - q16)


def _check_k_grid(k_grid: Sequence[int], n_train: int) -> tuple[int, ...]:
    """The grid's distinct k, increasing, capped at ``n_train`` training vectors."""
    values = tuple(k_grid)
    if not values or not all(isinstance(k, int | np.integer) and k >= 1 for k in values):
        raise PixelRedshiftError(f"k_grid: expected positive integers, got {values}")
    ks = sorted({int(k) for k in values})
    usable = tuple(k for k in ks if k <= n_train)
    if not usable:
        raise PixelRedshiftError(
            f"k_grid: every k ({', '.join(map(str, ks))}) exceeds the {n_train} training "
            "vectors of the split"
        )
    return usable


def _fit_scaled(
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.float64],
    learner: str,
    k: int,
    n_jobs: int | None,
    seed: int,
    boosting_max_iter: int,
) -> tuple[StandardScaler, Any]:
    """A scaler fitted on ``x`` and the learner fitted on the scaled ``x``."""
    scaler = StandardScaler().fit(x)
    scaled = scaler.transform(x).astype(np.float32, copy=False)
    regressor: Any
    if learner == "knn":
        regressor = KNeighborsRegressor(
            n_neighbors=k, weights="distance", algorithm="auto", n_jobs=n_jobs
        )
    else:
        regressor = HistGradientBoostingRegressor(
            max_iter=boosting_max_iter, early_stopping=False, random_state=seed
        )
    regressor.fit(scaled, y)
    return scaler, regressor


def _predict_chunked(
    scaler: StandardScaler, regressor: Any, x: npt.NDArray[np.float32]
) -> npt.NDArray[np.float64]:
    """``regressor.predict`` of the scaled rows of ``x``, :data:`CHUNK_PIXELS` at a time."""
    out = np.empty(x.shape[0], dtype=np.float64)
    for start in range(0, x.shape[0], CHUNK_PIXELS):
        chunk = scaler.transform(x[start : start + CHUNK_PIXELS]).astype(np.float32, copy=False)
        out[start : start + chunk.shape[0]] = regressor.predict(chunk)
    return out


def _validation_curve(
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.float64],
    is_validation: npt.NDArray[np.bool_],
    combine: Callable[
        [npt.NDArray[np.float64], npt.NDArray[np.bool_]],
        tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]],
    ],
    learner: str,
    k_grid: Sequence[int],
    n_jobs: int | None,
    seed: int,
    boosting_max_iter: int,
) -> list[ValidationPoint]:
    """One point per setting: fit on the training rows, score the validation rows.

    ``combine(pixel_z_of_validation_rows, validation_rows_mask)`` returns the combined z and
    the z_spec of the validation galaxies. For the kNN the neighbours are queried once at the
    largest k; each smaller k uses the nearest k of them (the same as refitting).
    """
    train = ~is_validation
    x_val, y_val = x[is_validation], y[is_validation]
    if learner == "knn":
        ks = _check_k_grid(k_grid, int(train.sum()))
        scaler, regressor = _fit_scaled(x[train], y[train], "knn", ks[-1], n_jobs, seed, 0)
        y_train = y[train]
        predictions = np.empty((len(ks), x_val.shape[0]))
        for start in range(0, x_val.shape[0], CHUNK_PIXELS):
            chunk = scaler.transform(x_val[start : start + CHUNK_PIXELS]).astype(
                np.float32, copy=False
            )
            distances, neighbours = regressor.kneighbors(chunk, n_neighbors=ks[-1])
            targets = y_train[neighbours]
            for row, k in enumerate(ks):
                predictions[row, start : start + chunk.shape[0]] = _distance_weighted(
                    distances[:, :k].astype(np.float64), targets[:, :k]
                )
        settings: list[int | None] = list(ks)
    else:
        scaler, regressor = _fit_scaled(
            x[train], y[train], learner, 0, n_jobs, seed, boosting_max_iter
        )
        predictions = _predict_chunked(scaler, regressor, x_val)[None]
        settings = [None]
    curve = []
    for setting, pixel_z in zip(settings, predictions, strict=True):
        z_gal, z_true = combine(pixel_z, is_validation)
        figures: PhotozMetrics = redshift_metrics(z_gal, z_true)
        curve.append(
            ValidationPoint(
                k=setting,
                sigma_nmad=figures.sigma_nmad,
                bias=figures.bias,
                outlier_fraction=figures.outlier_fraction,
                pixel_rmse=float(np.sqrt(np.mean(np.square(pixel_z - y_val)))),
                n_galaxies=figures.n,
            )
        )
    return curve


def _best(curve: Sequence[ValidationPoint]) -> ValidationPoint:
    """Lowest σ_NMAD, then lowest outlier fraction, then smallest k."""
    return min(curve, key=lambda p: (p.sigma_nmad, p.outlier_fraction, p.k or 0))


def _check_redshifts(z: npt.ArrayLike, n: int, name: str) -> npt.NDArray[np.float64]:
    values = np.asarray(z, dtype=np.float64)
    if values.shape != (n,):
        raise PixelRedshiftError(
            f"{name}: expected shape ({n},), one per galaxy, got {values.shape}"
        )
    bad = np.flatnonzero(~np.isfinite(values) | (values <= -1))
    if bad.size:
        raise PixelRedshiftError(
            f"{name}: {bad.size} values are not finite redshifts > -1 (first: galaxy "
            f"{int(bad[0])}, {values[bad[0]]}); train only on galaxies with a spectroscopic z"
        )
    return values


def _check_ids(galaxy_ids: npt.ArrayLike | None, n: int) -> npt.NDArray[np.int64]:
    if galaxy_ids is None:
        return np.arange(n, dtype=np.int64)
    ids = np.asarray(galaxy_ids)
    if ids.shape != (n,) or not np.issubdtype(ids.dtype, np.integer):
        raise PixelRedshiftError(
            f"galaxy_ids: expected ({n},) integers (e.g. source_id), got {ids.dtype} {ids.shape}"
        )
    return ids.astype(np.int64)


def _check_settings(
    learner: str, combiner: str, validation_fraction: float, mode_bandwidth: float
) -> None:
    if learner not in LEARNERS:
        raise PixelRedshiftError(f"learner {learner!r}: choose one of {', '.join(LEARNERS)}")
    if combiner not in COMBINERS:
        raise PixelRedshiftError(f"combiner {combiner!r}: choose one of {', '.join(COMBINERS)}")
    if not 0 < validation_fraction < 1:
        raise PixelRedshiftError(
            f"validation_fraction: expected within (0, 1), got {validation_fraction}"
        )
    if not (np.isfinite(mode_bandwidth) and mode_bandwidth > 0):
        raise PixelRedshiftError(f"mode_bandwidth: expected > 0 in ln(1 + z), got {mode_bandwidth}")


class PixelRedshiftModel:
    """Pixel redshifts learnt from galaxies with spectroscopic redshifts (module docstring).

    Parameters
    ----------
    learner : {"knn", "gradient_boosting"}, optional
        The regressor.
    columns : sequence of str, optional
        The feature columns used (names of the vectors' features or colours ``"a-b"``);
        default :func:`default_columns` of the training vectors' bands.
    combiner : {"mean", "flux_weighted_median", "density_mode"}, optional
        How :meth:`predict_galaxies` combines pixels (and what validation scores); default the
        method's direct average.
    validation_fraction : float, optional
        Share of the training galaxies held out to choose k, in (0, 1).
    seed : int, optional
        Seed of the split (and of gradient boosting).
    n_jobs : int, optional
        Threads of the neighbour queries (scikit-learn's ``n_jobs``; None = 1, -1 = all).
    mode_bandwidth : float, optional
        The density_mode kernel's σ in ``ln(1 + z)``.
    boosting_max_iter : int, optional
        Boosting iterations of ``"gradient_boosting"``.
    vector_config : PixelVectorConfig, optional
        How the pixel vectors it learns from and predicts are made (segmentation, ASSOC radius,
        softening); saved with the model so that a worker builds the same vectors.

    Attributes
    ----------
    k : int or None
        The k chosen by validation (None for gradient boosting or before :meth:`fit`).
    validation_curve : tuple of ValidationPoint
        The validation figures of every setting tried.
    columns : tuple of str
        The columns used (set by :meth:`fit` when defaulted).
    feature_names : tuple of str
        The feature layout of the training vectors; predicted vectors must have these columns.
    n_train_galaxies, n_train_pixels : int
        What the final model was fitted on.
    """

    def __init__(
        self,
        *,
        learner: str = "knn",
        columns: Sequence[str] | None = None,
        combiner: str = "mean",
        validation_fraction: float = 0.2,
        seed: int = 0,
        n_jobs: int | None = None,
        mode_bandwidth: float = 0.02,
        boosting_max_iter: int = 200,
        vector_config: PixelVectorConfig | None = None,
    ) -> None:
        _check_settings(learner, combiner, validation_fraction, mode_bandwidth)
        self.vector_config = vector_config or PixelVectorConfig()
        self.learner = learner
        self.columns: tuple[str, ...] = tuple(columns) if columns is not None else ()
        self.combiner = combiner
        self.validation_fraction = float(validation_fraction)
        self.seed = int(seed)
        self.n_jobs = n_jobs
        self.mode_bandwidth = float(mode_bandwidth)
        self.boosting_max_iter = int(boosting_max_iter)
        self.k: int | None = None
        self.validation_curve: tuple[ValidationPoint, ...] = ()
        self.feature_names: tuple[str, ...] = ()
        self.n_train_galaxies = 0
        self.n_train_pixels = 0
        self._scaler: StandardScaler | None = None
        self._regressor: Any = None

    def fit(
        self,
        vectors: PixelVectors,
        z_spec: npt.ArrayLike,
        galaxy_ids: npt.ArrayLike | None = None,
        *,
        k_grid: Sequence[int] = DEFAULT_K_GRID,
    ) -> PixelRedshiftModel:
        """Choose k by validation on a split by galaxy, then fit on every training galaxy.

        Parameters
        ----------
        vectors : PixelVectors
            The training galaxies' pixel vectors (galaxies without pixels are left out).
        z_spec : array_like
            ``(N,)`` the galaxies' spectroscopic redshifts, finite and > -1.
        galaxy_ids : array_like, optional
            ``(N,)`` integer ids (e.g. Gaia ``source_id``) deciding each galaxy's side of the
            split; default the row numbers.
        k_grid : sequence of int, optional
            The k tried (kNN only); those above the training pixels of the split are skipped.

        Returns
        -------
        PixelRedshiftModel
            ``self``, fitted.

        Raises
        ------
        PixelRedshiftError
            If the inputs do not pair up, a redshift is missing, a column is unknown, fewer
            than two galaxies have pixels or no k fits.
        """
        n = vectors.n_galaxies
        z = _check_redshifts(z_spec, n, "z_spec")
        ids = _check_ids(galaxy_ids, n)
        columns = self.columns or default_columns(vectors.bands)
        x = _pixel_design(vectors, columns)
        galaxy = vectors.galaxy_index
        has_pixels = vectors.n_pixels > 0
        if int(has_pixels.sum()) < 2:
            raise PixelRedshiftError(
                f"training vectors: {int(has_pixels.sum())} of {n} galaxies have pixels; at "
                "least two are needed to validate"
            )
        y = z[galaxy]
        validation_galaxy = _split_by_galaxy(ids, has_pixels, self.validation_fraction, self.seed)
        is_validation = validation_galaxy[galaxy]

        def combine(
            pixel_z: npt.NDArray[np.float64], rows: npt.NDArray[np.bool_]
        ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
            combined, _ = combine_pixel_redshifts(
                pixel_z,
                galaxy[rows],
                vectors.flux_weight[rows],
                n,
                self.combiner,
                mode_bandwidth=self.mode_bandwidth,
            )
            return combined[validation_galaxy], z[validation_galaxy]

        curve = _validation_curve(
            x,
            y,
            is_validation,
            combine,
            self.learner,
            k_grid,
            self.n_jobs,
            self.seed,
            self.boosting_max_iter,
        )
        best = _best(curve)
        k = best.k if best.k is not None else 0
        self._scaler, self._regressor = _fit_scaled(
            x, y, self.learner, k, self.n_jobs, self.seed, self.boosting_max_iter
        )
        self.columns = tuple(columns)
        self.k = best.k
        self.validation_curve = tuple(curve)
        self.feature_names = tuple(vectors.feature_names)
        self.n_train_galaxies = int(has_pixels.sum())
        self.n_train_pixels = int(x.shape[0])
        return self

    def _fitted(self) -> tuple[StandardScaler, Any]:
        if self._scaler is None or self._regressor is None:
            raise PixelRedshiftError("pixel redshift model: not fitted; call fit() or from_bytes()")
        return self._scaler, self._regressor

    def predict_pixels(self, vectors: PixelVectors) -> npt.NDArray[np.float64]:
        """float64 ``(P,)``: the redshift of every pixel of ``vectors``.

        Raises
        ------
        PixelRedshiftError
            If the model is not fitted or the vectors lack a column it uses.
        """
        scaler, regressor = self._fitted()
        x = _pixel_design(vectors, self.columns)
        return _predict_chunked(scaler, regressor, x)

    def predict_galaxies(
        self, vectors: PixelVectors, combiner: str | None = None
    ) -> GalaxyRedshifts:
        """Every galaxy's redshift combined from its pixels.

        Parameters
        ----------
        vectors : PixelVectors
            The galaxies' pixel vectors.
        combiner : {"mean", "flux_weighted_median", "density_mode"}, optional
            Default: the model's.

        Returns
        -------
        GalaxyRedshifts
            ``z``, ``z_err`` (NaN without pixels, with the vectors' reason), pixel counts.
        """
        pixel_z = self.predict_pixels(vectors)
        z, z_err = combine_pixel_redshifts(
            pixel_z,
            vectors.galaxy_index,
            vectors.flux_weight,
            vectors.n_galaxies,
            combiner or self.combiner,
            mode_bandwidth=self.mode_bandwidth,
        )
        return GalaxyRedshifts(z, z_err, vectors.n_pixels.copy(), tuple(vectors.reasons))

    def _header(self) -> dict[str, Any]:
        return {
            "learner": self.learner,
            "columns": list(self.columns),
            "combiner": self.combiner,
            "validation_fraction": self.validation_fraction,
            "seed": self.seed,
            "mode_bandwidth": self.mode_bandwidth,
            "boosting_max_iter": self.boosting_max_iter,
            "vector_config": asdict(self.vector_config),
            "k": self.k,
            "feature_names": list(self.feature_names),
            "n_train_galaxies": self.n_train_galaxies,
            "n_train_pixels": self.n_train_pixels,
            "validation_curve": [asdict(point) for point in self.validation_curve],
        }

    def to_bytes(self) -> bytes:
        """The fitted model as bytes (module docstring, "Serialisation").

        Raises
        ------
        PixelRedshiftError
            If the model is not fitted.
        """
        scaler, regressor = self._fitted()
        return _dump("pixel", self._header(), {"scaler": scaler, "regressor": regressor})

    @classmethod
    def from_bytes(cls, data: bytes, *, n_jobs: int | None = None) -> PixelRedshiftModel:
        """A model from :meth:`to_bytes`; pass only bytes whose SHA-256 the caller verified.

        Parameters
        ----------
        data : bytes
            What :meth:`to_bytes` wrote.
        n_jobs : int, optional
            Threads of the neighbour queries in this process.

        Raises
        ------
        PixelRedshiftError
            If the bytes are not a pixel redshift model of this format version.
        ConfigurationError
            If they were written by another scikit-learn major.minor than the installed one.
        """
        header, payload = _load(data, "pixel")
        try:
            model = cls(
                learner=header["learner"],
                columns=header["columns"],
                combiner=header["combiner"],
                validation_fraction=header["validation_fraction"],
                seed=header["seed"],
                n_jobs=n_jobs,
                mode_bandwidth=header["mode_bandwidth"],
                boosting_max_iter=header["boosting_max_iter"],
                vector_config=_vector_config(header["vector_config"]),
            )
            model.k = header["k"]
            model.feature_names = tuple(header["feature_names"])
            model.n_train_galaxies = int(header["n_train_galaxies"])
            model.n_train_pixels = int(header["n_train_pixels"])
            model.validation_curve = tuple(ValidationPoint(**p) for p in header["validation_curve"])
        except (KeyError, TypeError) as exc:
            raise PixelRedshiftError(
                f"pixel redshift model bytes: header incomplete ({exc})"
            ) from exc
        model._scaler, model._regressor = payload
        if n_jobs is not None and isinstance(model._regressor, KNeighborsRegressor):
            model._regressor.n_jobs = n_jobs
        return model


def _vector_config(saved: dict[str, Any]) -> PixelVectorConfig:
    # JSON turns a per-band softening tuple into a list; the config wants it hashable.
    softening = saved.get("softening_nmgy")
    if isinstance(softening, list):
        saved = {**saved, "softening_nmgy": tuple(softening)}
    return PixelVectorConfig(**saved)


@dataclass
class IntegratedBaseline:
    """The kNN on integrated fluxes (:func:`fit_integrated_baseline`), the comparison.

    Attributes
    ----------
    bands : tuple of str
        The band names of the fluxes' columns.
    softening_nmgy : tuple of float
        The luptitudes' softening per band, nanomaggies.
    columns : tuple of str
        Colours and the luptitude used.
    k : int
        The k chosen by validation.
    validation_curve : tuple of ValidationPoint
        The figures of every k tried (``pixel_rmse`` is the galaxies' RMS here).
    """

    bands: tuple[str, ...]
    softening_nmgy: tuple[float, ...]
    columns: tuple[str, ...]
    k: int
    validation_curve: tuple[ValidationPoint, ...]
    scaler: StandardScaler
    regressor: KNeighborsRegressor

    def predict(self, total_fluxes: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """float64 ``(N,)`` redshifts of galaxies with these ``(N, B)`` fluxes, nanomaggies."""
        x = _integrated_design(
            total_fluxes, self.bands, np.asarray(self.softening_nmgy), self.columns
        )
        return _predict_chunked(self.scaler, self.regressor, x)


def _integrated_design(
    total_fluxes: npt.ArrayLike,
    bands: Sequence[str],
    softening: npt.NDArray[np.float64],
    columns: Sequence[str],
) -> npt.NDArray[np.float32]:
    flux = np.asarray(total_fluxes, dtype=np.float64)
    if flux.ndim != 2 or flux.shape[1] != len(bands):
        raise PixelRedshiftError(
            f"total_fluxes: expected shape (N, {len(bands)}) for bands {''.join(bands)}, got "
            f"{flux.shape}"
        )
    if not np.isfinite(flux).all():
        row = int(np.flatnonzero(~np.isfinite(flux).all(axis=1))[0])
        raise PixelRedshiftError(f"total_fluxes: galaxy {row} has a flux that is not finite")
    mu, _ = luptitudes(flux, np.zeros_like(flux), softening)
    names = tuple(f"lup_{band}" for band in bands)
    return _design_matrix(mu.astype(np.float32), names, columns)


def fit_integrated_baseline(
    total_fluxes: npt.ArrayLike,
    z_spec: npt.ArrayLike,
    galaxy_ids: npt.ArrayLike | None = None,
    *,
    bands: Sequence[str] = "griz",
    softening_nmgy: float | Sequence[float] = INTEGRATED_SOFTENING_NMGY,
    k_grid: Sequence[int] = DEFAULT_K_GRID,
    validation_fraction: float = 0.2,
    seed: int = 0,
    n_jobs: int | None = None,
) -> IntegratedBaseline:
    """The distance-weighted kNN on each galaxy's integrated fluxes, k chosen by validation.

    Parameters
    ----------
    total_fluxes : array_like
        ``(N, B)`` integrated fluxes, nanomaggies (e.g.
        :attr:`~galpipe.science.photoz_pixels.PixelVectors.segment_flux`).
    z_spec : array_like
        ``(N,)`` spectroscopic redshifts.
    galaxy_ids : array_like, optional
        ``(N,)`` integer ids deciding the split; default the row numbers.
    bands : sequence of str, optional
        Band names of the columns, blue to red.
    softening_nmgy : float or sequence of float, optional
        The luptitudes' softening, nanomaggies: about the noise of an integrated flux (~0.05
        for a segment of ~100 DR10 pixels), one value or one per band.
    k_grid, validation_fraction, seed, n_jobs
        As for :class:`PixelRedshiftModel`.

    Returns
    -------
    IntegratedBaseline
        Fitted on every galaxy with the chosen k; features: :func:`default_columns` without
        ``r_norm`` (colours and the second band's luptitude).

    Raises
    ------
    PixelRedshiftError
        If the inputs do not pair up, a value is not finite or fewer than two galaxies.
    """
    _check_settings("knn", "mean", validation_fraction, 1.0)
    names = tuple(str(band) for band in bands)
    softening = np.broadcast_to(np.asarray(softening_nmgy, dtype=np.float64), (len(names),)).copy()
    if not (np.isfinite(softening).all() and (softening > 0).all()):
        raise PixelRedshiftError(f"softening_nmgy: expected > 0 nanomaggies, got {softening_nmgy}")
    columns = default_columns(names, with_radius=False, with_segment=False)
    x = _integrated_design(total_fluxes, names, softening, columns)
    n = x.shape[0]
    z = _check_redshifts(z_spec, n, "z_spec")
    ids = _check_ids(galaxy_ids, n)
    if n < 2:
        raise PixelRedshiftError(f"total_fluxes: {n} galaxies; at least two are needed to validate")
    is_validation = _split_by_galaxy(ids, np.ones(n, dtype=bool), validation_fraction, seed)

    def combine(
        pixel_z: npt.NDArray[np.float64], rows: npt.NDArray[np.bool_]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        return pixel_z, z[rows]

    curve = _validation_curve(x, z, is_validation, combine, "knn", k_grid, n_jobs, seed, 0)
    best = _best(curve)
    k = int(best.k or 1)
    scaler, regressor = _fit_scaled(x, z, "knn", k, n_jobs, seed, 0)
    return IntegratedBaseline(
        bands=names,
        softening_nmgy=tuple(float(v) for v in softening),
        columns=columns,
        k=k,
        validation_curve=tuple(curve),
        scaler=scaler,
        regressor=regressor,
    )


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def _dump(kind: str, settings: dict[str, Any], payload: dict[str, Any]) -> bytes:
    """Magic, header length, JSON header, pickle of the fitted estimators."""
    header = {
        "format": _FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "sklearn_version": sklearn.__version__,
        "numpy_version": np.__version__,
        "settings": settings,
    }
    encoded = json.dumps(header, sort_keys=True, allow_nan=True).encode()
    body = pickle.dumps(payload, protocol=5)
    return _MAGIC + struct.pack(">Q", len(encoded)) + encoded + body


def _load(data: bytes, kind: str) -> tuple[dict[str, Any], tuple[Any, Any]]:
    """The settings and ``(scaler, regressor)`` of :func:`_dump`'s bytes, the header checked
    before anything is unpickled."""
    raw = bytes(data)
    name = "pixel redshift model bytes"
    if not raw.startswith(_MAGIC) or len(raw) < len(_MAGIC) + 8:
        raise PixelRedshiftError(f"{name}: not a galpipe photo-z model (no {_MAGIC!r} header)")
    (length,) = struct.unpack(">Q", raw[len(_MAGIC) : len(_MAGIC) + 8])
    start = len(_MAGIC) + 8
    try:
        header = json.loads(raw[start : start + length])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PixelRedshiftError(f"{name}: header is not JSON ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != _FORMAT:
        raise PixelRedshiftError(f"{name}: format is not {_FORMAT!r}")
    if header.get("format_version") != FORMAT_VERSION:
        raise PixelRedshiftError(
            f"{name}: format version {header.get('format_version')!r}; this galpipe reads "
            f"version {FORMAT_VERSION}"
        )
    if header.get("kind") != kind:
        raise PixelRedshiftError(f"{name}: a {header.get('kind')!r} model, expected {kind!r}")
    written = str(header.get("sklearn_version"))
    if _major_minor(written) != _major_minor(sklearn.__version__):
        raise ConfigurationError(
            f"{name}: written by scikit-learn {written}, this installation has "
            f"{sklearn.__version__}; a fitted estimator is only loaded by the same major.minor "
            "version -- refit the model or install scikit-learn "
            f"{'.'.join(_major_minor(written))}"
        )
    try:
        payload = pickle.loads(raw[start + length :])
        scaler, regressor = payload["scaler"], payload["regressor"]
    except Exception as exc:  # a corrupt pickle raises anything from its own classes
        raise PixelRedshiftError(f"{name}: the fitted estimators do not load ({exc})") from exc
    if not isinstance(scaler, StandardScaler) or not isinstance(
        regressor, KNeighborsRegressor | HistGradientBoostingRegressor
    ):
        raise PixelRedshiftError(f"{name}: the payload is not a scaler and a regressor")
    settings = header.get("settings")
    if not isinstance(settings, dict):
        raise PixelRedshiftError(f"{name}: header has no settings")
    return settings, (scaler, regressor)
