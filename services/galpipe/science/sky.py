"""The sky of a cutout: level and noise of every band from the stamp's corners (step 2, ours).

The pixels outside the inscribed circle of radius ``S/2`` (the ones the paper's circular mask
discards; 336 of 1,600 for ``S = 40``, the farthest from the galaxy) are sigma-clipped at 3σ
for three rounds; level = median, σ = interquartile range / 1.349 of the kept pixels,
vectorised over the batch. Why this estimator rather than ``sep.Background``, with its
measured bias and scatter: ``docs/decisions.md``, "The sky from the stamp's corners".

Used by the neighbour masking (detection image, fill value) and by the band stack of the
combined angle; both weight the bands by :func:`inverse_noise_weights`.
"""

from __future__ import annotations

import numpy as np

from galpipe.science.preprocess import circular_mask

__all__ = ["inverse_noise_weights", "photon_quantum", "sky_level_and_noise"]

# Sigma clipping of the sky pixels: 3σ, three rounds (SExtractor's background estimator clips
# at 3σ until convergence; three rounds converge on a 40×40 stamp).
_CLIP_SIGMA = 3.0
_CLIP_ROUNDS = 3
# The clip of a photon-counting sky's rms, in units of itself: wider than _CLIP_SIGMA because
# such a sky is skewed (at 0.2 photons per pixel a pixel with 2 photons lies 4.5 rms above
# the median and is noise, not light).
_DISCRETE_CLIP_RMS = 5.0
#: Largest distance of a pixel's value from a whole number of quanta, in quanta, for a band to
#: count as photon counting: float32 values of up to ~10⁴ counts keep well inside it, and a
#: continuous band has values half a quantum off on average.
_QUANTUM_TOLERANCE = 1e-3
# Interquartile range of a normal distribution in units of σ.
_IQR_PER_SIGMA = 1.3489795


def _quantile_in_range(
    sorted_values: np.ndarray, lo: np.ndarray, count: np.ndarray, q: float
) -> np.ndarray:
    """Quantile ``q`` (linear interpolation) of ``sorted_values[..., lo:lo+count]`` per row."""
    position = lo + q * (count - 1)
    below = np.floor(position).astype(np.intp)
    above = np.minimum(below + 1, lo + count - 1)
    weight = (position - below).astype(sorted_values.dtype)
    low_value = np.take_along_axis(sorted_values, below[..., None], axis=-1)[..., 0]
    high_value = np.take_along_axis(sorted_values, above[..., None], axis=-1)[..., 0]
    return low_value + weight * (high_value - low_value)


def sky_level_and_noise(images: np.ndarray, no_data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sigma-clipped sky level and noise of every band from the pixels outside the circle.

    Parameters
    ----------
    images : numpy.ndarray
        float32 ``(N, B, S, S)``.
    no_data : numpy.ndarray
        bool ``(N, B, S, S)``: pixels without data, never counted as sky.

    Returns
    -------
    level, sigma : numpy.ndarray
        float32 ``(N, B)`` each, in the units of ``images``: median and IQR/1.349 of the
        corner pixels kept by 3σ clipping; where that range is 0 (a photon-counting sky with
        most pixels at 0 counts), the clipped rms about the median instead
        (:func:`_discrete_sky_rms`). σ is 0 for noiseless or blank bands.

    Notes
    -----
    No-data pixels are left out: the cutout service's fill (survey edges, missing bands) and
    what a rotation brings into the corners. Counted as sky, they would pull the noise towards 0
    and turn the galaxy's own outskirts into "neighbours". A band with no corner pixel of data
    gets level 0 and σ 0, as a blank band always did.
    """
    size = images.shape[-1]
    outside = ~circular_mask(size)
    # Stamps too small to have corners (S < 3) fall back to every pixel.
    if outside.sum() >= 4:
        corners, empty = images[..., outside], no_data[..., outside]
    else:
        corners = images.reshape(*images.shape[:2], -1)
        empty = no_data.reshape(*no_data.shape[:2], -1)
    # NaN sorts last, so the data pixels are the run [0, n_data) of each sorted row.
    values = np.sort(np.where(empty, np.float32(np.nan), corners), axis=-1)
    n_data = (~empty).sum(axis=-1)
    n_pixels = values.shape[-1]
    lo = np.zeros(values.shape[:-1], dtype=np.intp)
    count = np.maximum(n_data, 1)
    for _ in range(_CLIP_ROUNDS):
        level = _quantile_in_range(values, lo, count, 0.5)
        iqr = _quantile_in_range(values, lo, count, 0.75) - _quantile_in_range(
            values, lo, count, 0.25
        )
        sigma = iqr / np.float32(_IQR_PER_SIGMA)
        low_cut = (level - _CLIP_SIGMA * sigma)[..., None]
        high_cut = (level + _CLIP_SIGMA * sigma)[..., None]
        # Sorted rows: the kept pixels are one contiguous run [lo, hi).
        lo = (values < low_cut).sum(axis=-1)
        hi = (values <= high_cut).sum(axis=-1)
        # The median itself is always kept, so the run is never empty; guard anyway.
        count = np.maximum(hi - lo, 1)
        lo = np.minimum(lo, n_pixels - 1)
    level = _quantile_in_range(values, lo, count, 0.5)
    iqr = _quantile_in_range(values, lo, count, 0.75) - _quantile_in_range(values, lo, count, 0.25)
    sigma = np.where(iqr > 0, iqr / np.float32(_IQR_PER_SIGMA), _discrete_sky_rms(values, level))
    blank = n_data == 0
    level = np.where(blank, 0, level)
    sigma = np.where(blank, 0, sigma)
    return level.astype(np.float32), sigma.astype(np.float32)


def _discrete_sky_rms(sorted_values: np.ndarray, level: np.ndarray) -> np.ndarray:
    """The noise of a sky whose interquartile range is 0: a photon-counting sky.

    With fewer than about one photon per pixel most corner pixels hold the same value (0
    counts), the quartiles coincide and the IQR says the sky is noiseless, while the pixels
    that caught a photon are its noise. The root mean square about the median of the data
    pixels, once clipped at :data:`_DISCRETE_CLIP_RMS` times itself (a neighbour's light in a
    corner is not sky noise), measures it. Noiseless and blank bands still get 0.

    Parameters
    ----------
    sorted_values : numpy.ndarray
        ``(..., n)`` corner pixels of every band sorted, no-data pixels as NaN (last).
    level : numpy.ndarray
        ``(...)`` their median.

    Returns
    -------
    numpy.ndarray
        ``(...)`` the clipped rms, same units as the pixels.
    """
    deviation = np.where(np.isnan(sorted_values), np.float32(0), sorted_values - level[..., None])
    n_data = np.maximum((~np.isnan(sorted_values)).sum(axis=-1), 1)
    rms = np.sqrt(np.square(deviation).sum(axis=-1) / n_data)
    kept = np.abs(deviation) <= _DISCRETE_CLIP_RMS * rms[..., None]
    kept_squares = np.where(kept, np.square(deviation), 0).sum(axis=-1)
    return np.sqrt(kept_squares / np.maximum(kept.sum(axis=-1), 1))


def inverse_noise_weights(
    sigma: np.ndarray, peak_above_sky: np.ndarray, usable: np.ndarray, floor_rel: float
) -> np.ndarray:
    """Each usable band's ``1 / sigma_b``, the S/N-optimal weight of a flat-S/N source.

    ``sigma_b`` is floored at ``floor_rel`` times the band's peak above the sky, so noiseless
    (simulated) bands get a finite weight; on DR10 data a floor of 1e-3 bites only for a peak
    above 1,000 sigma.

    Parameters
    ----------
    sigma, peak_above_sky : numpy.ndarray
        ``(N, B)`` the bands' sky noise (:func:`sky_level_and_noise`) and brightest pixel
        above the sky level, same units.
    usable : numpy.ndarray
        ``(N, B)`` bool: the bands to weight; the others get 0.
    floor_rel : float
        The noise floor as a fraction of the peak.

    Returns
    -------
    numpy.ndarray
        ``(N, B)`` weights, in the dtype of the inputs, not normalised.
    """
    noise = np.maximum(sigma, floor_rel * np.maximum(peak_above_sky, 0))
    use = usable & (noise > 0)
    # A safe divisor of 1 where unused, so no inf or NaN is formed.
    return np.where(use, 1 / np.where(use, noise, 1), 0)


def photon_quantum(images: np.ndarray, no_data: np.ndarray) -> np.ndarray:
    """The value of one photon in every photon-counting band, else 0.

    A band is photon counting when all its data pixels are whole multiples of its smallest
    positive value and one of them is at least twice that value: an image of counts times a
    calibration (the validation's Poisson resampling, N). Its pixels then carry shot noise of
    variance ``quantum × value`` above the sky, which the sky's σ alone leaves out; a band
    with continuous values, as every DR10 coadd, gets 0 and its noise stays the sky's.

    Parameters
    ----------
    images : numpy.ndarray
        float32 ``(N, B, S, S)``, not sky-subtracted (0 counts is 0).
    no_data : numpy.ndarray
        bool ``(N, B, S, S)``: pixels without data, left out.

    Returns
    -------
    numpy.ndarray
        float32 ``(N, B)``: the quantum, same units as ``images``; 0 where the band is not
        photon counting or has no positive pixel.
    """
    counted = (images > 0) & ~no_data
    quantum = np.min(images, axis=(-2, -1), where=counted, initial=np.inf)
    result = np.zeros(images.shape[:-2], dtype=np.float32)
    # A sparse sample of the pixels rejects a continuous band (every DR10 coadd) at once; the
    # few candidates left are checked pixel by pixel.
    sample = _off_quanta(images[..., ::7, ::7], no_data[..., ::7, ::7], quantum)
    candidate = np.isfinite(quantum) & (sample <= _QUANTUM_TOLERANCE)
    if not candidate.any():
        return result
    bands = images[candidate]
    gaps = no_data[candidate]
    q = quantum[candidate]
    data = np.where(gaps, np.float32(0), bands)
    # A band holding one positive value (a hot pixel on a blank stamp) is no photon count.
    several = data.max(axis=(-2, -1)) >= 2 * q
    discrete = (
        several
        & (_off_quanta(bands, gaps, q) <= _QUANTUM_TOLERANCE)
        & (data.min(axis=(-2, -1)) >= 0)
    )
    result[candidate] = np.where(discrete, q, np.float32(0))
    return result


def _off_quanta(images: np.ndarray, no_data: np.ndarray, quantum: np.ndarray) -> np.ndarray:
    """Largest distance of a data pixel's value from a whole number of ``quantum``, in quanta.

    ``images`` ``(..., H, W)``, ``quantum`` ``(...)`` (inf or 0 where there is none: the result
    is then meaningless and the caller ignores it).
    """
    safe = np.where(np.isfinite(quantum) & (quantum > 0), quantum, np.float32(1))
    # A quantum near float32's smallest (a synthetic stamp's faint wing) overflows the counts
    # to inf and their distance from a whole number to NaN, which no tolerance accepts: such a
    # band is rightly not photon counting.
    with np.errstate(over="ignore", invalid="ignore"):
        counts = images / safe[..., None, None]
        off = np.where(no_data, np.float32(0), np.abs(counts - np.rint(counts)))
    return np.asarray(off.max(axis=(-2, -1)))
