"""Steps 4-5 and section 6 of the paper: from sinograms to angles, errors and anisotropy.

Everything here works on whole batches at once: sinograms ``(..., S, A)`` (axis -2 the
projection position, axis -1 the angle, see :mod:`galpipe.science.radon`) and pooled curves
``(..., A)``. No loops over galaxies, angles or pixels; the sinusoid fits are one matrix product
with a precomputed pseudo-inverse.

Conventions (``docs/science.md``, "Conventions"):

- ``theta`` is the projection angle of the sinogram, degrees: the stamp was turned by
  ``scipy.ndimage.rotate(img, theta)`` before its columns were summed.
- ``phi`` is the image angle, degrees in [0, 180): the major axis measured counter-clockwise
  from the +x (column) axis towards the +y (row) axis.
- ``scipy.ndimage.rotate(img, +theta)`` moves a direction at image angle ``psi`` to
  ``psi - theta`` (row 0 at the bottom, as FITS shows it: the rotation is clockwise there).
  ``tests/unit/science/test_features.py::test_ndimage_rotate_turns_image_angle_by_minus_theta``
  proves it on an elongated Gaussian.

From that sign:

- The column sums are most concentrated -- the max-pooled curve peaks -- when the rotated major
  axis runs along the columns, i.e. along +y (``psi = 90``): ``phi - theta0 = 90``, so
  ``phi = (theta0 + 90) mod 180`` (:func:`peak_angle_to_image_angle`).
- Column ``s`` of the stamp turned by ``theta`` is the projection of the original stamp onto
  the direction at image angle ``theta``; so the variance of the projection profile is
  ``u^T M u`` with ``u = (cos theta, sin theta)`` in (x, y): ``(Mxx+Myy)/2 + (Mxx-Myy)/2 cos
  2theta + Mxy sin 2theta``, largest along the major axis: the second-moment angle is the
  fitted ``theta0`` of the variance curve itself (:func:`projection_variance`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from galpipe.science.radon import FoldedSinogram

__all__ = [
    "DEFAULT_WINDOWS_DEG",
    "CombinedAngle",
    "SinusoidFit",
    "WindowError",
    "axial_difference",
    "birge_ratio",
    "combine_axial",
    "fit_sinusoid",
    "max_pool",
    "max_pool_folded",
    "peak_angle_to_image_angle",
    "pool",
    "projection_variance",
    "projection_variance_folded",
    "sinusoid_anisotropy",
    "top_fraction_pool",
    "window_drop_error",
]

#: Half-widths (degrees) of the windows of the window-drop error (ours; see window_drop_error).
DEFAULT_WINDOWS_DEG: tuple[float, ...] = (2.0, 5.0, 10.0, 20.0)
#: Largest error reported for an axial angle, degrees: "no information".
MAX_ANGLE_ERR_DEG = 90.0
#: Largest lag-1 residual autocorrelation used in the error inflation (factor <= 99).
MAX_RHO = 0.98

Pooling = Literal["max", "top"]


# -- step 4: pooling -----------------------------------------------------------------------


def max_pool(sinogram: np.ndarray) -> np.ndarray:
    """Max pooling (step 4): the brightest value of each sinogram column (one angle).

    Parameters
    ----------
    sinogram : numpy.ndarray
        ``(..., S, A)`` sinograms.

    Returns
    -------
    numpy.ndarray
        ``(..., A)`` curves, same units as the sinogram (flux summed along a column).
    """
    return np.asarray(sinogram).max(axis=-2)


def max_pool_folded(folded: FoldedSinogram) -> np.ndarray:
    """:func:`max_pool` of folded sinograms, without unfolding them.

    ``max(even + odd, even - odd) = even + |odd|`` over the computed positions.

    Returns
    -------
    numpy.ndarray
        ``(..., A)`` curves in the folded arrays' dtype.
    """
    return (folded.even + np.abs(folded.odd)).max(axis=-1)


def top_fraction_pool(sinogram: np.ndarray, fraction: float = 0.10) -> np.ndarray:
    """Top-x% average pooling (step 4): the mean of the brightest ``fraction`` of each column.

    Parameters
    ----------
    sinogram : numpy.ndarray
        ``(..., S, A)`` sinograms.
    fraction : float
        The x of "top x%", in (0, 1]; ``k = max(1, round(fraction * S))`` values are averaged
        (S=40, 10 %: the 4 brightest).

    Returns
    -------
    numpy.ndarray
        ``(..., A)`` curves.
    """
    sino = np.asarray(sinogram)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction: expected a value in (0, 1], got {fraction}")
    size = sino.shape[-2]
    k = max(1, round(fraction * size))
    top = np.partition(sino, size - k, axis=-2)[..., size - k :, :]
    return top.mean(axis=-2, dtype=np.float64).astype(sino.dtype, copy=False)


def pool(sinogram: np.ndarray, method: Pooling, top_fraction: float = 0.10) -> np.ndarray:
    """Pool sinograms to curves with ``method`` "max" or "top" (see the two functions)."""
    if method == "max":
        return max_pool(sinogram)
    if method == "top":
        return top_fraction_pool(sinogram, top_fraction)
    raise ValueError(f"method: expected 'max' or 'top', got {method!r}")


# -- step 5: the sinusoid --------------------------------------------------------------------


@dataclass(frozen=True)
class SinusoidFit:
    """``a + b cos(2(theta - theta0))`` fitted to curves; every field has the curves' lead shape.

    Attributes
    ----------
    offset : numpy.ndarray
        ``a``, the curve's mean level (curve units).
    amplitude : numpy.ndarray
        ``b >= 0`` (curve units).
    theta0_deg : numpy.ndarray
        Where the sinusoid peaks, degrees in [0, 180) (0 when ``b == 0``).
    theta0_err_deg : numpy.ndarray
        Standard error of ``theta0`` from the residual variance and the design covariance,
        inflated for the correlation of neighbouring angles (AR(1): ``(1 + rho)/(1 - rho)``),
        degrees, in [0, 90] (90 when ``b == 0``). The residuals include the curve's departure
        from a pure sinusoid, so this is also a measure of how well the model fits: it is an
        upper-side error for bright, very elongated galaxies whose peak is sharper than a
        sinusoid (a symmetric curve gives an unbiased ``theta0`` whatever its shape).
    amplitude_err : numpy.ndarray
        Standard error of ``b`` (curve units), with the same inflation.
    residual_rms : numpy.ndarray
        RMS of the residuals (curve units).
    """

    offset: np.ndarray
    amplitude: np.ndarray
    theta0_deg: np.ndarray
    theta0_err_deg: np.ndarray
    amplitude_err: np.ndarray
    residual_rms: np.ndarray


def _unique_period_indices(angles_deg: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each angle modulo 180 (0 and 180 are one sample)."""
    folded = np.round(np.mod(np.asarray(angles_deg, dtype=np.float64), 180.0), 9) % 180.0
    _, first = np.unique(folded, return_index=True)
    return np.sort(first)


def fit_sinusoid(curves: np.ndarray, angles_deg: np.ndarray) -> SinusoidFit:
    """Fit ``a + b cos(2(theta - theta0))`` to every curve at once (step 5).

    The model is linear in ``(a, b cos 2theta0, b sin 2theta0)``, so the fit is one product with
    the pseudo-inverse of the ``(A', 3)`` design ``[1, cos 2theta, sin 2theta]``. Angles that
    repeat modulo 180 (0 and 180) are used once, so that a uniform angle grid samples one period
    uniformly and the fit equals the curve's second Fourier coefficient: any curve symmetric
    about ``theta0`` (a symmetric galaxy) then gives ``theta0`` exactly.

    Parameters
    ----------
    curves : numpy.ndarray
        ``(..., A)`` curves sampled at ``angles_deg``.
    angles_deg : numpy.ndarray
        ``(A,)`` angles, degrees.

    Returns
    -------
    SinusoidFit
        float64 fields of shape ``curves.shape[:-1]``, all finite for finite curves.
    """
    y_all = np.asarray(curves, dtype=np.float64)
    keep = _unique_period_indices(angles_deg)
    if keep.size < 4:
        raise ValueError(f"angles_deg: need at least 4 distinct angles mod 180, got {keep.size}")
    theta = np.deg2rad(np.asarray(angles_deg, dtype=np.float64)[keep])
    design = np.stack([np.ones_like(theta), np.cos(2 * theta), np.sin(2 * theta)], axis=1)
    pinv = np.linalg.pinv(design)  # (3, A')
    normal_inv = np.linalg.inv(design.T @ design)  # (3, 3) design covariance per unit variance
    y = y_all[..., keep]
    coef = y @ pinv.T  # (..., 3)
    residual = y - coef @ design.T
    dof = keep.size - 3
    sum_sq = np.einsum("...a,...a->...", residual, residual)
    res_var = sum_sq / dof
    # Neighbouring projections share pixels, so residuals at adjacent angles are correlated and
    # the iid covariance would be too small. Inflate it by the AR(1) factor (1 + rho)/(1 - rho),
    # rho = lag-1 autocorrelation of the (periodic) residuals, clipped to [0, MAX_RHO].
    lag_one = np.einsum("...a,...a->...", residual, np.roll(residual, 1, axis=-1))
    rho = np.clip(lag_one / np.where(sum_sq > 0, sum_sq, 1.0), 0.0, MAX_RHO)
    cov_scale = res_var * (1.0 + rho) / (1.0 - rho)
    c0, c1, c2 = coef[..., 0], coef[..., 1], coef[..., 2]
    amplitude = np.hypot(c1, c2)
    theta0 = np.mod(np.rad2deg(0.5 * np.arctan2(c2, c1)), 180.0)
    v11, v12, v22 = (cov_scale * normal_inv[i, j] for i, j in ((1, 1), (1, 2), (2, 2)))
    b2 = amplitude**2
    positive = b2 > 0
    safe_b2 = np.where(positive, b2, 1.0)
    # Delta method on theta0 = atan2(c2, c1) / 2 and b = hypot(c1, c2).
    var_theta = 0.25 * (c2**2 * v11 - 2 * c1 * c2 * v12 + c1**2 * v22) / safe_b2**2
    theta_err = np.where(
        positive,
        np.minimum(np.rad2deg(np.sqrt(np.maximum(var_theta, 0.0))), MAX_ANGLE_ERR_DEG),
        MAX_ANGLE_ERR_DEG,
    )
    var_b = np.where(positive, (c1**2 * v11 + 2 * c1 * c2 * v12 + c2**2 * v22) / safe_b2, v11)
    return SinusoidFit(
        offset=c0,
        amplitude=amplitude,
        theta0_deg=np.where(positive, theta0, 0.0),
        theta0_err_deg=theta_err,
        amplitude_err=np.sqrt(np.maximum(var_b, 0.0)),
        residual_rms=np.sqrt(res_var * dof / keep.size),
    )


def sinusoid_anisotropy(fit: SinusoidFit) -> np.ndarray:
    """Anisotropy ``b / a`` of a fitted sinusoid (section 6), in [0, 1] for non-negative curves.

    A round galaxy gives a flat curve (0); the more elongated, the deeper the modulation. 0 where
    ``a <= 0`` (an empty curve).
    """
    offset = np.asarray(fit.offset)
    ratio = np.asarray(fit.amplitude) / np.where(offset > 0, offset, 1.0)
    return np.where(offset > 0, ratio, 0.0)


def peak_angle_to_image_angle(theta0_deg: np.ndarray) -> np.ndarray:
    """Image angle of the major axis from the peak ``theta0`` of a pooled curve (step 5).

    ``phi = (theta0 + 90) mod 180``, degrees: the pooled curve peaks when the rotated major axis
    lies along the columns (+y); ``ndimage.rotate(+theta)`` turns image angles by ``-theta``
    (module docstring).
    """
    return np.mod(np.asarray(theta0_deg) + 90.0, 180.0)


# -- step 5: the paper's window-drop error -----------------------------------------------------


@dataclass(frozen=True)
class WindowError:
    """The window-drop error and its normal fit; fields have the curves' lead shape.

    Attributes
    ----------
    mean_deg : numpy.ndarray
        Mean of the per-window estimates (the normal fit's centre), degrees in [0, 90].
    std_deg : numpy.ndarray
        Their standard deviation (the normal fit's width, maximum likelihood: ``ddof=0``).
    per_window_deg : numpy.ndarray
        ``(..., W)`` the estimate from each window.
    peak_deg : numpy.ndarray
        The curve's discrete argmax, degrees (the fallback / check of the fitted peak).
    noise : numpy.ndarray
        The curve noise ``sigma`` used (curve units).
    """

    mean_deg: np.ndarray
    std_deg: np.ndarray
    per_window_deg: np.ndarray
    peak_deg: np.ndarray
    noise: np.ndarray


def window_drop_error(
    curves: np.ndarray,
    angles_deg: np.ndarray,
    windows_deg: tuple[float, ...] = DEFAULT_WINDOWS_DEG,
) -> WindowError:
    """The paper's error from how sharply the curve falls around its maximum (step 5).

    The paper: "errors are estimated in proportion to the difference of the maximum value and
    its nearby values at various windows; the larger the difference, the smaller the error; a
    normal distribution is fitted to the estimates". Our reading, made quantitative (ours):

    1. ``k*`` = the curve's argmax over one period; for each half-width ``w`` the drop is
       ``d_w = y(k*) - (y(k* - w) + y(k* + w)) / 2`` (the curve is periodic in 180 degrees).
    2. The curve's noise ``sigma`` is estimated from its second differences,
       ``1.4826 MAD(y[k+1] - 2y[k] + y[k-1]) / sqrt(6)`` (the variance of a second difference of
       white noise is ``6 sigma^2``), floored at ``1e-7 |y(k*)|`` (float32 resolution).
    3. Near the peak ``y ~ y(k*) - c delta^2`` with ``c = d_w / w^2`` from window ``w``. The angle
       error is the half-width within which the curve stays within ``sigma`` of its peak:
       ``e_w = w sqrt(sigma / d_w)`` degrees, capped at 90 (and 90 where ``d_w <= 0``). A larger
       drop gives a smaller error, as the paper says; for a pure sinusoid every window gives the
       same ``e_w = sqrt(sigma / 2b)`` rad, so the spread between windows measures how far the
       peak departs from the sinusoid.
    4. The normal fit of the ``W`` estimates: their mean and standard deviation.

    Where the true drop over a window is below the noise (a narrow window on a noisy, broad
    peak), that window's drop is mostly noise and its estimate tends to ``w`` itself: the
    estimate cannot resolve errors below the window, and the normal fit's width shows the
    disagreement between windows. The fit standard error (:func:`fit_sinusoid`) does not have
    this limit; the galaxy's combined error uses that one.

    Parameters
    ----------
    curves : numpy.ndarray
        ``(..., A)`` pooled curves on a uniform angle grid (duplicates mod 180 are dropped).
    angles_deg : numpy.ndarray
        ``(A,)`` angles, degrees.
    windows_deg : tuple of float
        Window half-widths, degrees (rounded to whole grid steps, at least one step).

    Returns
    -------
    WindowError
    """
    keep = _unique_period_indices(angles_deg)
    angles = np.asarray(angles_deg, dtype=np.float64)[keep]
    n = keep.size
    step = 180.0 / n
    if not np.allclose(np.mod(angles - angles[0], 180.0), np.arange(n) * step, atol=1e-6):
        raise ValueError("angles_deg: the window-drop error needs a uniform grid over 180 degrees")
    y = np.asarray(curves, dtype=np.float64)[..., keep]
    peak = np.argmax(y, axis=-1)
    y_peak = np.take_along_axis(y, peak[..., None], axis=-1)[..., 0]
    second = np.roll(y, -1, axis=-1) - 2 * y + np.roll(y, 1, axis=-1)
    mad = np.median(np.abs(second - np.median(second, axis=-1, keepdims=True)), axis=-1)
    noise = np.maximum(1.4826 * mad / np.sqrt(6.0), 1e-7 * np.abs(y_peak))
    steps = np.maximum(1, np.round(np.asarray(windows_deg, dtype=np.float64) / step)).astype(int)
    idx_plus = np.mod(peak[..., None] + steps, n)
    idx_minus = np.mod(peak[..., None] - steps, n)
    drop = y_peak[..., None] - 0.5 * (
        np.take_along_axis(y, idx_plus, axis=-1) + np.take_along_axis(y, idx_minus, axis=-1)
    )
    width = steps * step
    positive = drop > 0
    ratio = noise[..., None] / np.where(positive, drop, 1.0)
    per_window = np.where(
        positive, np.minimum(width * np.sqrt(ratio), MAX_ANGLE_ERR_DEG), MAX_ANGLE_ERR_DEG
    )
    return WindowError(
        mean_deg=per_window.mean(axis=-1),
        std_deg=per_window.std(axis=-1),
        per_window_deg=per_window,
        peak_deg=np.mod(angles[peak], 180.0),
        noise=noise,
    )


# -- the second-moment estimator (ours) -------------------------------------------------------


def _variance_from_sums(total: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    filled = total > 0
    safe = np.where(filled, total, 1.0)
    mean = first / safe
    return np.where(filled, np.maximum(second / safe - mean**2, 0.0), 0.0)


def projection_variance(sinogram: np.ndarray) -> np.ndarray:
    """Variance of each projection profile about its centroid, per angle (pixels^2).

    The profile is a sinogram column used as weights (linear in the image, so the moment
    identities below hold exactly; bicubic ringing can make a few weights slightly negative);
    positions are ``s - (S-1)/2`` pixels. Fitted with :func:`fit_sinusoid` it gives
    ``(Mxx+Myy)/2 + (Mxx-Myy)/2 cos 2theta + Mxy sin 2theta``: ``theta0`` of that fit is the
    second-moment image angle and ``b/a = (l1 - l2)/(l1 + l2)`` (the eigenvalues of M) its
    ellipticity. A profile with no positive total has variance 0; variances are clipped at 0.

    Parameters
    ----------
    sinogram : numpy.ndarray
        ``(..., S, A)`` sinograms.

    Returns
    -------
    numpy.ndarray
        float64 ``(..., A)``.
    """
    sino = np.asarray(sinogram)
    size = sino.shape[-2]
    pos = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    total = np.einsum("...sa->...a", sino, dtype=np.float64)
    first = np.einsum("s,...sa->...a", pos, sino, dtype=np.float64)
    second = np.einsum("s,...sa->...a", pos**2, sino, dtype=np.float64)
    return _variance_from_sums(total, first, second)


def projection_variance_folded(folded: FoldedSinogram) -> np.ndarray:
    """:func:`projection_variance` of folded sinograms, without unfolding them.

    With positions ``x_s = s - (S-1)/2`` (``x`` odd under ``s -> S-1-s``) and multiplicity
    ``m_s`` = 2 (1 for the middle of an odd ``S``): ``sum w = sum m even``,
    ``sum x w = sum m x odd``, ``sum x^2 w = sum m x^2 even``.
    """
    size = folded.size
    n_pos = folded.even.shape[-1]
    pos = np.arange(n_pos, dtype=np.float64) - (size - 1) / 2.0
    mult = np.full(n_pos, 2.0)
    if size % 2 == 1:
        mult[-1] = 1.0
    even = np.asarray(folded.even, dtype=np.float64)
    odd = np.asarray(folded.odd, dtype=np.float64)
    total = even @ mult
    first = odd @ (mult * pos)
    second = even @ (mult * pos**2)
    return _variance_from_sums(total, first, second)


# -- combining the bands ----------------------------------------------------------------------


def axial_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``|((a - b + 90) mod 180) - 90|``: the difference of two axial angles, degrees in [0, 90]."""
    return np.abs(np.mod(np.asarray(a) - np.asarray(b) + 90.0, 180.0) - 90.0)


@dataclass(frozen=True)
class CombinedAngle:
    """Per-galaxy combination of per-band axial angles; fields have shape ``(N,)``.

    Attributes
    ----------
    angle_deg : numpy.ndarray
        Weighted circular mean of the axial angles, degrees in [0, 180); NaN where no band was
        valid.
    err_deg : numpy.ndarray
        ``sqrt(1 / sum w)`` with ``w = 1 / sigma^2`` (the inverse-variance error), times the
        Birge ratio ``sqrt(chi^2 / (n - 1))`` where that exceeds 1, degrees; NaN where no band
        was valid.
    spread_deg : numpy.ndarray
        Weighted circular standard deviation of the axial angles, ``sqrt(-2 ln R) / 2`` with
        ``R`` the mean resultant length of ``2 phi``, degrees (0 for one band); NaN where no
        band was valid.
    n_bands : numpy.ndarray
        int: how many bands were combined.
    """

    angle_deg: np.ndarray
    err_deg: np.ndarray
    spread_deg: np.ndarray
    n_bands: np.ndarray


def combine_axial(
    angles_deg: np.ndarray,
    errors_deg: np.ndarray,
    valid: np.ndarray,
    min_error_deg: float = 0.05,
) -> CombinedAngle:
    """Combine per-band axial angles by an inverse-variance weighted circular mean of ``2 phi``.

    Parameters
    ----------
    angles_deg : numpy.ndarray
        ``(N, B)`` per-band angles, degrees (axial, period 180).
    errors_deg : numpy.ndarray
        ``(N, B)`` their standard errors, degrees; floored at ``min_error_deg`` so that one
        noiseless band cannot take all the weight.
    valid : numpy.ndarray
        ``(N, B)`` bool: bands to use (blank and failed bands excluded by the caller).
    min_error_deg : float
        Error floor, degrees.

    Returns
    -------
    CombinedAngle
    """
    use = np.asarray(valid, dtype=bool)
    sigma = np.maximum(np.nan_to_num(np.asarray(errors_deg, np.float64), nan=90.0), min_error_deg)
    weight = np.where(use, 1.0 / sigma**2, 0.0)
    doubled = np.deg2rad(2.0 * np.nan_to_num(np.asarray(angles_deg, np.float64)))
    total = weight.sum(axis=-1)
    has = total > 0
    safe_total = np.where(has, total, 1.0)
    cos_mean = (weight * np.cos(doubled)).sum(axis=-1) / safe_total
    sin_mean = (weight * np.sin(doubled)).sum(axis=-1) / safe_total
    angle = np.mod(np.rad2deg(0.5 * np.arctan2(sin_mean, cos_mean)), 180.0)
    resultant = np.clip(np.hypot(cos_mean, sin_mean), 1e-300, 1.0)
    spread = np.rad2deg(0.5 * np.sqrt(np.maximum(-2.0 * np.log(resultant), 0.0)))
    birge = birge_ratio(angles_deg, errors_deg, use, angle, min_error_deg)
    nan = np.float64(np.nan)
    return CombinedAngle(
        angle_deg=np.where(has, angle, nan),
        err_deg=np.where(has, birge * np.sqrt(1.0 / safe_total), nan),
        spread_deg=np.where(has, spread, nan),
        n_bands=use.sum(axis=-1),
    )


def birge_ratio(
    angles_deg: np.ndarray,
    errors_deg: np.ndarray,
    valid: np.ndarray,
    centre_deg: np.ndarray,
    min_error_deg: float = 0.05,
) -> np.ndarray:
    """How far the bands disagree beyond their errors: ``sqrt(max(1, chi^2 / (n - 1)))``.

    When the per-band angles scatter about the combined angle by more than their errors allow
    (chi^2 per degree of freedom > 1), an error derived from those errors is too small by this
    factor; it is never below 1, so it never shrinks an error.

    Parameters
    ----------
    angles_deg, errors_deg : numpy.ndarray
        ``(N, B)`` per-band axial angles and their standard errors, degrees (errors floored at
        ``min_error_deg``; NaN errors count as 90).
    valid : numpy.ndarray
        ``(N, B)`` bool: the bands that were combined.
    centre_deg : numpy.ndarray
        ``(N,)`` the combined angle, degrees.
    min_error_deg : float
        Error floor, degrees.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` float64, >= 1 (1 for fewer than two bands).
    """
    use = np.asarray(valid, dtype=bool)
    sigma = np.maximum(np.nan_to_num(np.asarray(errors_deg, np.float64), nan=90.0), min_error_deg)
    weight = np.where(use, 1.0 / sigma**2, 0.0)
    doubled = np.deg2rad(2.0 * np.nan_to_num(np.asarray(angles_deg, np.float64)))
    centre = np.deg2rad(2.0 * np.nan_to_num(np.asarray(centre_deg, np.float64)))
    residual = 0.5 * np.rad2deg(np.angle(np.exp(1j * (doubled - centre[..., None]))))
    chi2 = (weight * residual**2).sum(axis=-1)
    dof = use.sum(axis=-1) - 1
    return np.sqrt(np.maximum(1.0, chi2 / np.maximum(dof, 1)))
