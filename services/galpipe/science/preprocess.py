"""Step 2 of the paper: preprocessing of a batch of cutouts before the Radon transform.

Per band, in this order (paper section 3, step 2; ``docs/science.md``, "Step 2"):

1. NaN / +-inf pixels are counted, then ignored while the band minimum is found.
2. The band is shifted so its minimum (over finite pixels) is 0 -- the survey subtracted a
   constant sky, so negative noise remains.
3. Non-finite pixels are replaced by 0 *after* the shift, i.e. by the band minimum (ours).
4. The circular mask: pixels whose centre lies outside the inscribed circle of radius ``S/2``
   about the stamp centre ``((S-1)/2, (S-1)/2)`` are set to 0 (removes the diagonal bias of a
   square stamp).

Neighbour masking (ours) runs between steps 3 and 4 in :func:`galpipe.science.core.measure_batch`,
so :func:`sanitise_and_shift` and :func:`apply_circular_mask` are separate functions.

Blank bands -- every pixel non-finite, or every finite pixel equal (all-zero bands included:
the DR10 service returns zeros for a band it does not have) -- are detected and reported; they
come out as all-zero bands.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

__all__ = [
    "PreprocessedBatch",
    "apply_circular_mask",
    "circular_mask",
    "preprocess",
    "sanitise_and_shift",
]


@dataclass(frozen=True)
class PreprocessedBatch:
    """A batch after step 2, with what was found on the way.

    Attributes
    ----------
    images : numpy.ndarray
        float32 ``(N, B, S, S)``, every pixel finite and >= 0 (same units as the input,
        nanomaggies for DR10 cutouts).
    nonfinite_count : numpy.ndarray
        int32 ``(N, B)``: how many NaN / +-inf pixels each band had in the input.
    blank : numpy.ndarray
        bool ``(N, B)``: the band carries no image (all non-finite, or constant -- all zeros
        included); such a band is all zeros in ``images``.
    no_data : numpy.ndarray
        bool ``(N, B, S, S)``: pixels without data in the input -- non-finite, or exactly 0
        (the cutout service's fill off the survey footprint, and what a rotation brings into
        the corners). The shift moves them to ``-min``, where nothing else can tell them from
        sky, so steps that estimate the sky (neighbour masking) take them from here.
    """

    images: np.ndarray
    nonfinite_count: np.ndarray
    blank: np.ndarray
    no_data: np.ndarray


def _check_batch(images: np.ndarray) -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[-1] != arr.shape[-2]:
        raise ValueError(f"images: expected shape (N, B, S, S) with square stamps, got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"images: expected a real numeric dtype, got {arr.dtype}")
    return arr


def circular_mask(size: int) -> np.ndarray:
    """The inscribed-circle mask of a ``size x size`` stamp (paper step 2).

    Parameters
    ----------
    size : int
        Stamp side ``S`` in pixels.

    Returns
    -------
    numpy.ndarray
        bool ``(S, S)``: True where the pixel centre lies inside (or on) the circle of radius
        ``S/2`` pixels about the centre ``((S-1)/2, (S-1)/2)`` in (row, col) index coordinates.
    """
    if size < 1:
        raise ValueError(f"size: expected a positive stamp side in pixels, got {size}")
    offset = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    radius_sq = offset[:, None] ** 2 + offset[None, :] ** 2
    return np.asarray(radius_sq <= (size / 2.0) ** 2)


def sanitise_and_shift(images: np.ndarray) -> PreprocessedBatch:
    """Sanitise non-finite pixels and shift every band to a minimum of 0 (step 2.1-2.3).

    Parameters
    ----------
    images : numpy.ndarray
        ``(N, B, S, S)`` cutouts (any real dtype; nanomaggies for DR10).

    Returns
    -------
    PreprocessedBatch
        float32 images with every band's minimum at 0 and former non-finite pixels at 0
        (the band minimum), the per-band non-finite counts and the blank-band mask. The circular
        mask is NOT applied yet (see :func:`apply_circular_mask`).
    """
    arr = _check_batch(images).astype(np.float32, copy=False)
    finite = np.isfinite(arr)
    nonfinite_count = (~finite).sum(axis=(-2, -1)).astype(np.int32)
    # Non-finite pixels must not set the minimum or maximum: stand them in with +inf / -inf.
    band_min = np.where(finite, arr, np.float32(np.inf)).min(axis=(-2, -1), keepdims=True)
    band_max = np.where(finite, arr, np.float32(-np.inf)).max(axis=(-2, -1), keepdims=True)
    # All non-finite gives min=+inf > max=-inf; constant gives min == max.
    blank = ~(band_max > band_min)[..., 0, 0]
    shift = np.where(blank[..., None, None], np.float32(0.0), band_min)
    with np.errstate(invalid="ignore", over="ignore"):
        shifted = arr - shift
    shifted = np.where(finite & ~blank[..., None, None], shifted, np.float32(0.0))
    return PreprocessedBatch(
        images=shifted.astype(np.float32, copy=False),
        nonfinite_count=nonfinite_count,
        blank=np.asarray(blank, dtype=bool),
        no_data=~finite | (arr == 0),
    )


def apply_circular_mask(images: np.ndarray) -> np.ndarray:
    """Zero the pixels outside the inscribed circle (step 2.4).

    Parameters
    ----------
    images : numpy.ndarray
        ``(..., S, S)`` stamps.

    Returns
    -------
    numpy.ndarray
        A new array of the same shape and dtype with the outside pixels set to 0.
    """
    arr = np.asarray(images)
    mask = circular_mask(arr.shape[-1])
    return np.where(mask, arr, np.zeros((), dtype=arr.dtype))


def preprocess(images: np.ndarray) -> PreprocessedBatch:
    """The paper's step 2 without neighbour masking: sanitise, min-shift, circular mask.

    Parameters
    ----------
    images : numpy.ndarray
        ``(N, B, S, S)`` cutouts.

    Returns
    -------
    PreprocessedBatch
        As :func:`sanitise_and_shift`, with the circular mask applied.
    """
    shifted = sanitise_and_shift(images)
    return dataclasses.replace(shifted, images=apply_circular_mask(shifted.images))
