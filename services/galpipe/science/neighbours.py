"""Neighbour masking (ours, beyond the paper): remove stars and companions from a stamp.

The paper (section 3) assumes the galaxy is alone and centred. A 40-pixel DR10 stamp (10.5″)
often also holds a star or a companion galaxy, and its light pulls the Radon peak towards it.
This module segments each stamp, keeps the source at the stamp centre and replaces every
other source's pixels by the galaxy's own point reflection (or the band's sky level) before the
Radon transform (``docs/science.md``, "Neighbour masking (ours)").

Where it runs in step 2: after the sanitising and the per-band min-shift, *before* the
circular mask -- the corners outside the inscribed circle are where the sky is estimated,
and the circular mask zeroes them afterwards anyway.

Method, per batch ``images`` float32 ``(N, B, S, S)`` (axes ``[..., row, col]``):

1. **Sky level and noise per band** from the stamp's corners
   (:func:`galpipe.science.sky.sky_level_and_noise`; no-data pixels are never sky).
2. **Detection image**, one per galaxy: the mean signal-to-noise image of the bands that carry
   signal, ``D = Σ_b (I_b − level_b) / σ_b / sqrt(n_bands)``; its noise is 1 when the bands'
   noise is independent, so the detection threshold is directly in σ. Weighting each band by
   its own 1/σ is the optimal (matched) combination for a source of flat spectrum in
   signal-to-noise and needs no colour assumption. ``D`` is then divided by the noise it
   keeps through sep's matched filter (measured in the corners, floored at its white-noise
   value): correlated noise -- a resampled coadd, a rotation, a blur -- would otherwise
   cross the threshold as "sources". No-data pixels (``PreprocessedBatch.no_data``) are
   never sky. σ_b is floored at
   ``noise_floor_rel`` × the band's peak above the sky, so that noiseless (simulated) stamps
   segment at a fixed isophote rather than dividing by zero; on DR10 data the floor only bites
   for a peak above 1/``noise_floor_rel`` = 1,000 σ. Bands without signal (blank: all zeros
   or constant) are left out.
3. **Segmentation with deblending**: ``sep.extract`` (SExtractor's algorithm: matched 3×3
   filter, ``detect_sigma``, ``minarea``, multi-threshold deblending with ``deblend_nthresh``
   and ``deblend_cont``, cleaning) on ``D`` with a unit error.
4. **The central source** is the segment that covers the stamp centre ``((S-1)/2, (S-1)/2)``
   (for even ``S`` the centre is a pixel corner: of the 2×2 central pixels, the brightest one
   in a segment decides). If no segment covers it, the segment with a pixel nearest the centre
   within ``centre_radius_px`` is central. If none is, there is no central source.
5. **Symmetry test** (``nb5``; ``nb6`` counts shot noise): a segment other than the central
   one is a neighbour only if it is brighter than its point reflection through the stamp
   centre, significantly and by a fraction of its own light: in the detection image,
   ``F − F_r ≥ symmetry_sigma · sqrt(V + V_r)`` and ``F − F_r ≥ symmetry_excess · F``, with
   ``F`` the segment's flux, ``F_r`` the flux of the pixels point-reflected onto it and ``V``,
   ``V_r`` the summed noise variance of those pixels. ``V`` is the pixel count (unit sky
   noise) plus, in a photon-counting band -- one whose pixels are whole multiples of one
   photon's value, as the validation's Poisson resampling makes; never a DR10 coadd -- the
   shot noise of the light above the sky: with a few thousand photons in the stamp the sky is
   nearly empty, its σ tiny, and a clump of the galaxy's own photons otherwise stands out by
   hundreds of sky σ (``docs/decisions.md``, "Shot noise in the symmetry test"). A galaxy's own
   light is point-symmetric, so a piece of it that deblending split off -- which noise does, and
   differently in every noisy copy of the same galaxy -- has a reflection as bright as itself;
   a star or a companion does not. The test runs twice: the second time, reflected pixels that
   lie in a segment the first pass confirmed count as 0, so that of two neighbours on opposite
   sides the fainter is not hidden by the brighter's light. Segments that fail are dropped
   from the map: neither masked nor counted by the flag. A segment that does not touch the
   central one and has an S/N (``F / sqrt(V)``) of at least ``symmetry_exempt_snr`` is a
   neighbour without the test: no piece of the galaxy's light is that bright on its own, and
   two such sources opposite each other would otherwise hide each other
   (``docs/decisions.md``, "The symmetry test").
6. **Masking**: every other segment, dilated by a disk of ``dilate_px`` pixels to catch its
   wings but never into the central segment, is replaced in every band by the pixel's
   *point reflection* through the stamp centre -- pixel ``[r, c]`` takes the value of
   ``[S-1-r, S-1-c]`` -- where that pixel is data and is not masked itself; otherwise by the
   band's sky level from step 1. A galaxy's light is point-symmetric about its centre (every
   Sérsic ellipse is), so the reflection puts back the central galaxy's own wings, with noise
   of the right level, where the neighbour lay. The sky level alone left a hole in those
   wings: a structure of its own that the Radon transform sees, at a place that moves with
   the neighbour's segmentation. What the reflection gained, and the fills tried before it:
   ``docs/decisions.md``, "Point-reflection fill".
7. **Flags**: ``masked_fraction`` = masked pixels / S². ``contaminated`` is True when

   - a masked segment's flux (in the detection image) is at least ``contaminant_flux_ratio``
     of the central source's flux: a neighbour bright enough to drag the angle was present
     (it has been masked, but its wings under the central segment remain);
   - or the central segment's brightest (filtered) pixel lies farther than
     ``centre_radius_px`` from the centre: a neighbour blended with the galaxy without a
     saddle between them, which no segmentation can separate (nothing is masked for it);
   - or sources were found but none is central: all of them are masked, and what is measured
     is not a clean measurement of a centred galaxy.

   Faint masked sources (below the ratio) leave ``masked_fraction > 0`` without the flag.

Degenerate stamps never raise and never produce NaN: a galaxy whose bands are all blank
(all-zero, constant) or in which nothing is detected comes back unchanged with
``masked_fraction = 0`` and ``contaminated = False``; a single hot pixel is an ordinary
source (kept if central, masked and flagged if it is the only source and off-centre).

``sep`` works on one 2-D image, so the detection runs in a loop over galaxies; everything
else (sky, detection images, dilation, replacement) is vectorised over the batch. ``sep``'s
pixel stack is sized to the stamp during the loop (its default of 300,000 pixels costs more
to allocate than extracting a 40×40 stamp) and restored afterwards; this changes a
process-wide ``sep`` setting, so do not call this concurrently with other ``sep`` users in
threads of the same process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np
import sep
from scipy import ndimage

from galpipe.science.sky import inverse_noise_weights, photon_quantum, sky_level_and_noise

__all__ = [
    "DetectionImages",
    "NeighbourConfig",
    "NeighbourMasking",
    "asymmetric_segments",
    "central_label",
    "detection_images",
    "extract_segments",
    "mask_neighbours",
    "sep_pixstack",
]


class SegmentationSettings(Protocol):
    """SExtractor's detection settings, as every segmentation of galpipe names them."""

    @property
    def detect_sigma(self) -> float: ...
    @property
    def minarea(self) -> int: ...
    @property
    def deblend_nthresh(self) -> int: ...
    @property
    def deblend_cont(self) -> float: ...


def extract_segments(detection: np.ndarray, settings: SegmentationSettings) -> tuple[Any, Any]:
    """sep's sources and segmentation map of one unit-noise detection image.

    SExtractor's algorithm (matched 3×3 filter, threshold ``detect_sigma`` σ with σ = 1,
    ``minarea``, multi-threshold deblending, cleaning); segment ``k`` of the map is source
    ``k - 1``. Raises what ``sep.extract`` raises.
    """
    return sep.extract(
        detection,
        settings.detect_sigma,
        err=1.0,
        minarea=settings.minarea,
        deblend_nthresh=settings.deblend_nthresh,
        deblend_cont=settings.deblend_cont,
        segmentation_map=True,
    )


@contextmanager
def sep_pixstack(size: int) -> Iterator[None]:
    """sep's pixel stack sized to ``S × S`` stamps for the block, restored afterwards.

    A stamp has S² pixels, so at most S² can be on the stack at once; 2·S² leaves margin, and
    sep's default stack of 300,000 costs more to allocate than extracting from a stamp. The
    stack is process-wide: do not segment in other threads meanwhile.
    """
    previous = sep.get_extract_pixstack()
    sep.set_extract_pixstack(max(2 * size * size, 1024))
    try:
        yield
    finally:
        sep.set_extract_pixstack(previous)


# sep's default detection filter (SExtractor's 3×3 pyramid) scaled to unit norm: white noise of
# unit σ stays unit σ through it.
_MATCHED_KERNEL = (sep.default_kernel / np.sqrt(np.square(sep.default_kernel).sum())).astype(
    np.float32
)
# Pixels that touch a segment: its 8-connected neighbours.
_TOUCHING = np.ones((3, 3), dtype=bool)
# The noise of perfectly correlated pixels through that kernel, relative to white noise's:
# the largest factor any noise can have (see _filtered_noise).
_MAX_FILTERED_NOISE = np.float32(_MATCHED_KERNEL.sum())


@dataclass(frozen=True)
class NeighbourConfig:
    """Parameters of the neighbour masking; every field is part of :attr:`tag`.

    Attributes
    ----------
    detect_sigma : float
        Detection threshold in σ of the detection image's noise (SExtractor's DETECT_THRESH);
        why 1.5: ``docs/decisions.md``, "Detection threshold 1.5σ".
    minarea : int
        Minimum number of pixels above threshold for a source (DETECT_MINAREA).
    deblend_nthresh : int
        Number of deblending sub-thresholds (DEBLEND_NTHRESH).
    deblend_cont : float
        Minimum flux fraction of a branch to be deblended as a separate source
        (DEBLEND_MINCONT); 1.0 disables deblending. 0.001 rather than SExtractor's 0.005 splits
        more companions that have their own peak (``docs/decisions.md``, "Deblending contrast
        0.001").
    dilate_px : int
        Radius in pixels of the disk by which the masks of neighbours are dilated (their wings
        below the detection isophote); 0 disables the dilation.
    centre_radius_px : float
        If no segment covers the stamp centre, the segment with a pixel nearest the centre
        within this distance in pixels is taken as the central source.
    contaminant_flux_ratio : float
        A masked source at least this fraction of the central source's flux (detection image)
        sets the ``contaminated`` flag.
    noise_floor_rel : float
        Floor of each band's σ as a fraction of the band's peak above the sky (for noiseless
        or nearly noiseless stamps).
    symmetry_sigma : float
        A neighbour's excess over its point reflection must reach this many σ of the
        difference's noise (step 5); 0 disables this half of the test.
    symmetry_excess : float
        ... and this fraction of the segment's own flux (step 5), in [0, 1); 0 disables this
        half of the test.
    symmetry_exempt_snr : float
        A segment that does not touch the central one and whose S/N (flux / sqrt(pixels) in
        the detection image) reaches this is a neighbour without the test (step 5).
    """

    detect_sigma: float = 1.5
    minarea: int = 5
    deblend_nthresh: int = 32
    deblend_cont: float = 0.001
    dilate_px: int = 2
    centre_radius_px: float = 3.0
    contaminant_flux_ratio: float = 0.05
    noise_floor_rel: float = 1e-3
    symmetry_sigma: float = 3.0
    symmetry_excess: float = 0.3
    symmetry_exempt_snr: float = 10.0

    def __post_init__(self) -> None:
        if not self.detect_sigma > 0:
            raise ValueError(f"detect_sigma: expected > 0 (σ), got {self.detect_sigma}")
        if self.minarea < 1:
            raise ValueError(f"minarea: expected >= 1 pixel, got {self.minarea}")
        if self.deblend_nthresh < 1:
            raise ValueError(f"deblend_nthresh: expected >= 1, got {self.deblend_nthresh}")
        if not 0 <= self.deblend_cont <= 1:
            raise ValueError(f"deblend_cont: expected within [0, 1], got {self.deblend_cont}")
        if self.dilate_px < 0:
            raise ValueError(f"dilate_px: expected >= 0 pixels, got {self.dilate_px}")
        if not self.centre_radius_px >= 0:
            raise ValueError(f"centre_radius_px: expected >= 0 pixels, got {self.centre_radius_px}")
        if not self.contaminant_flux_ratio >= 0:
            raise ValueError(
                f"contaminant_flux_ratio: expected >= 0, got {self.contaminant_flux_ratio}"
            )
        if not 0 < self.noise_floor_rel < 1:
            raise ValueError(f"noise_floor_rel: expected within (0, 1), got {self.noise_floor_rel}")
        if not self.symmetry_sigma >= 0:
            raise ValueError(f"symmetry_sigma: expected >= 0 (σ), got {self.symmetry_sigma}")
        if not self.symmetry_exempt_snr > 0:
            raise ValueError(
                f"symmetry_exempt_snr: expected > 0 (S/N), got {self.symmetry_exempt_snr}"
            )
        if not 0 <= self.symmetry_excess < 1:
            raise ValueError(
                f"symmetry_excess: expected a fraction within [0, 1), got {self.symmetry_excess}"
            )

    @property
    def tag(self) -> str:
        """A short string naming this configuration, for ``algo_version``.

        Returns
        -------
        str
            e.g. ``"nb6-t1.5-a5-n32-c0.001-d2-r3-f0.05-e0.001-s3-x0.3-i10"`` (``nb6`` =
            version 6 of this method, then threshold, minarea, nthresh, cont, dilation, centre
            radius, flux ratio, noise floor, symmetry σ, excess and exempt S/N). Version 2:
            exact zeros (no data) are no longer counted as sky. Version 3: no data as found
            before the min-shift; the threshold is in σ of the filtered noise (correlated
            noise). Version 4: masked pixels take their point reflection through the centre
            (the galaxy's own light), not the sky level; the filtered-noise factor is capped at
            that of perfectly correlated noise. Version 5: the symmetry test (a segment as
            bright as its point reflection is the galaxy's own light, not a neighbour).
            Version 6: the symmetry test and the exempt S/N count the shot noise of
            photon-counting images.
        """
        return (
            f"nb6-t{self.detect_sigma:g}-a{self.minarea}-n{self.deblend_nthresh}"
            f"-c{self.deblend_cont:g}-d{self.dilate_px}-r{self.centre_radius_px:g}"
            f"-f{self.contaminant_flux_ratio:g}-e{self.noise_floor_rel:g}"
            f"-s{self.symmetry_sigma:g}-x{self.symmetry_excess:g}-i{self.symmetry_exempt_snr:g}"
        )


class NeighbourMasking(NamedTuple):
    """What :func:`mask_neighbours` returns (a tuple: ``masked, fraction, flag = ...``).

    Attributes
    ----------
    masked : numpy.ndarray
        float32 ``(N, B, S, S)``: the images with neighbours replaced (step 5 of the module
        docstring).
    masked_fraction : numpy.ndarray
        float32 ``(N,)``: masked pixels / S², in [0, 1].
    contaminated : numpy.ndarray
        bool ``(N,)``: a significant neighbour was found (see the module docstring).
    """

    masked: np.ndarray
    masked_fraction: np.ndarray
    contaminated: np.ndarray


class DetectionImages(NamedTuple):
    """What :func:`detection_images` returns (a tuple: ``detection, has_signal, ... = ...``).

    Attributes
    ----------
    detection : numpy.ndarray
        float32 ``(N, S, S)``, C-contiguous, unit sky noise through sep's matched filter.
    has_signal : numpy.ndarray
        bool ``(N,)``: at least one band carries signal (otherwise ``detection`` is 0).
    sky_level : numpy.ndarray
        float32 ``(N, B)``: the clipped sky level of every band.
    variance : numpy.ndarray
        float32 ``(N, S, S)``: every pixel's noise variance in ``detection``'s units², the
        sky's 1 plus the shot noise of photon-counting bands above their sky
        (:func:`~galpipe.science.sky.photon_quantum`); exactly 1 where no band counts photons.
    """

    detection: np.ndarray
    has_signal: np.ndarray
    sky_level: np.ndarray
    variance: np.ndarray


def detection_images(
    images: np.ndarray,
    no_data: np.ndarray,
    config: NeighbourConfig,
    sky: tuple[np.ndarray, np.ndarray] | None = None,
) -> DetectionImages:
    """One mean signal-to-noise image per galaxy (step 2 of the module docstring).

    Shared with the validation's moments peer, so both methods detect on the same image.

    Parameters
    ----------
    images : numpy.ndarray
        float32 ``(N, B, S, S)`` cutouts, sanitised and min-shifted (step 2.1-2.2).
    no_data : numpy.ndarray
        bool ``(N, B, S, S)``: pixels without data (never sky).
    config : NeighbourConfig
        Only ``noise_floor_rel`` is read.
    sky : tuple of numpy.ndarray, optional
        ``(level, sigma)``, float32 ``(N, B)``: :func:`~galpipe.science.sky.sky_level_and_noise`
        of these ``images`` and ``no_data``, when the caller has it already; else computed.

    Returns
    -------
    DetectionImages
        The detection images, which galaxies have signal, the sky levels and the pixel
        variances.
    """
    level, sigma = sky if sky is not None else sky_level_and_noise(images, no_data)
    peak_above_sky = images.max(axis=(-2, -1)) - level
    usable = peak_above_sky > 0
    weight = inverse_noise_weights(sigma, peak_above_sky, usable, config.noise_floor_rel)
    n_usable = usable.sum(axis=1)
    weight /= np.sqrt(np.maximum(n_usable, 1)).astype(np.float32)[:, None]
    # Σ_b w_b (I_b − level_b) as one batched matrix product, without an (N, B, S, S) temporary.
    n_galaxies, n_bands, size, _ = images.shape
    weighted = np.matmul(weight[:, None, :], images.reshape(n_galaxies, n_bands, size * size))
    offset = (weight * level).sum(axis=1)
    detection = weighted.reshape(n_galaxies, size, size) - offset[:, None, None]
    # A pixel of D lacks data when any band it combines does (blank bands have weight 0).
    missing = (no_data & usable[..., None, None]).any(axis=1)
    factor = _filtered_noise(detection, missing)
    detection /= factor[:, None, None]
    # Shot noise of photon-counting bands: Σ_b w_b² quantum_b (I_b − level_b), in D's units².
    shot_weight = np.square(weight / factor[:, None]) * photon_quantum(images, no_data)
    variance = np.ones_like(detection)
    for band in np.flatnonzero(shot_weight.any(axis=0)):
        above = np.maximum(images[:, band] - level[:, band, None, None], 0)
        variance += shot_weight[:, band, None, None] * above
    return DetectionImages(
        np.ascontiguousarray(detection, dtype=np.float32), n_usable > 0, level, variance
    )


def _filtered_noise(detection: np.ndarray, no_data: np.ndarray) -> np.ndarray:
    """Noise of the detection images after sep's matched filter, relative to white noise.

    Parameters
    ----------
    detection : numpy.ndarray
        float32 ``(N, S, S)`` with unit pixel noise.
    no_data : numpy.ndarray
        bool ``(N, S, S)``: pixels without data.

    Returns
    -------
    numpy.ndarray
        float32 ``(N,)``, at least 1: the clipped σ of the corner pixels of ``detection``
        correlated with sep's default kernel normalised to unit norm (1 for white noise).

    Notes
    -----
    sep compares the *filtered* image with ``detect_sigma`` times the pixel noise it is given,
    which is right only for uncorrelated pixels. Correlated noise (the interpolation of a
    resampled coadd or a rotation, a blur) passes a smoothing filter almost unweakened: after
    a Gaussian blur of σ = 1.5 px the filtered noise is ~2.3 times the white-noise value, so a
    1.5σ threshold sits at 0.65 of the noise and noise blobs become "neighbours". Dividing
    ``D`` by this factor puts the threshold in σ of the filtered noise whatever its
    correlation. Floored at 1 so that white noise (and noiseless stamps, whose corners hold
    no noise to measure) keep the threshold as stated. Capped at the kernel's sum (16/6 =
    2.67), the factor of perfectly correlated noise, which no noise can exceed: a larger
    spread in the corners is light, not noise -- a neighbour filling the few windows left
    where most corner pixels lack data (``docs/decisions.md``, "The filtered-noise factor
    capped at 16/6").
    """
    filtered = ndimage.correlate(detection, _MATCHED_KERNEL[None], mode="constant")
    # Samples of filtered noise only: windows inside the stamp that touch no no-data pixel.
    edge = np.ones(detection.shape[-2:], dtype=bool)
    edge[1:-1, 1:-1] = False
    invalid = ndimage.binary_dilation(no_data, structure=np.ones((1, 3, 3), dtype=bool)) | edge
    _, sigma = sky_level_and_noise(filtered[:, None], invalid[:, None])
    return np.clip(sigma[:, 0], np.float32(1.0), _MAX_FILTERED_NOISE)


def _central_block(size: int) -> slice:
    """Rows (and columns) of the pixels that touch the stamp centre ``(S-1)/2``."""
    return slice((size - 1) // 2, size // 2 + 1)


def central_label(
    segmap: np.ndarray, detection: np.ndarray, distance: np.ndarray, radius: float
) -> int:
    """Segment label of the central source (step 4 of the module docstring).

    Parameters
    ----------
    segmap : numpy.ndarray
        int ``(S, S)`` sep segmentation map (0 = no source, k = source ``k - 1``).
    detection : numpy.ndarray
        float32 ``(S, S)`` the image that was segmented.
    distance : numpy.ndarray
        float ``(S, S)`` distance of every pixel from the stamp centre, pixels.
    radius : float
        Largest distance, pixels, of a nearest segment taken as central.

    Returns
    -------
    int
        The 1-based label, or 0 when no segment is central.
    """
    block = _central_block(segmap.shape[-1])
    labels = segmap[block, block].ravel()
    if labels.any():
        brightness = np.where(labels > 0, detection[block, block].ravel(), -np.inf)
        return int(labels[int(np.argmax(brightness))])
    in_source = segmap > 0
    nearest = np.full(int(segmap.max()) + 1, np.inf)
    np.minimum.at(nearest, segmap[in_source], distance[in_source])
    label = int(np.argmin(nearest))
    return label if nearest[label] <= radius else 0


def asymmetric_segments(
    segmap: np.ndarray,
    detection: np.ndarray,
    central: int,
    config: NeighbourConfig,
    variance: np.ndarray | None = None,
) -> np.ndarray:
    """Which segments pass the symmetry test (step 5 of the module docstring).

    Parameters
    ----------
    segmap : numpy.ndarray
        int ``(S, S)`` segmentation map (0 = no source, k = source ``k - 1``).
    detection : numpy.ndarray
        float32 ``(S, S)`` the detection image it was made from (unit noise).
    central : int
        Label of the central segment, 0 if none.
    config : NeighbourConfig
        ``symmetry_sigma``, ``symmetry_excess`` and ``symmetry_exempt_snr`` are read.
    variance : numpy.ndarray, optional
        float32 ``(S, S)`` every pixel's noise variance in the detection image
        (:attr:`DetectionImages.variance`); 1 everywhere (sky noise only) if omitted.

    Returns
    -------
    numpy.ndarray
        bool ``(segmap.max() + 1,)`` indexed by label: True for the segments that are
        neighbours (brighter than their point reflection); False for label 0 and ``central``.
    """
    n_labels = int(segmap.max()) + 1
    labels = segmap.ravel()
    flux = np.bincount(labels, weights=detection.ravel(), minlength=n_labels)
    n_pixels = np.maximum(np.bincount(labels, minlength=n_labels), 1).astype(np.float64)
    if variance is None:
        own_var, reflected_var = n_pixels, n_pixels
    else:
        # The segment's own noise and that of its reflection: the sky's, plus the shot noise
        # of its photons in a photon-counting image, where a few photons stand out of an
        # empty sky.
        summed = np.bincount(labels, weights=variance.ravel(), minlength=n_labels)
        own_var = np.maximum(summed, 1)
        reflected_var = np.bincount(
            labels, weights=variance[::-1, ::-1].ravel(), minlength=n_labels
        ).astype(np.float64)
    noise = config.symmetry_sigma * np.sqrt(own_var + np.maximum(reflected_var, 1))
    reflected = detection[::-1, ::-1]
    reflected_label = segmap[::-1, ::-1]

    def passes(reflection: np.ndarray) -> np.ndarray:
        excess = flux - np.bincount(labels, weights=reflection.ravel(), minlength=n_labels)
        bright = (excess >= noise) & (excess >= config.symmetry_excess * np.abs(flux))
        bright[0] = False
        if central:
            bright[central] = False
        return np.asarray(bright)

    # A bright source apart from the central segment is no piece of the galaxy's own light;
    # two of them opposite each other would otherwise hide each other.
    touching = np.zeros(n_labels, dtype=bool)
    if central:
        near = ndimage.binary_dilation(segmap == central, structure=_TOUCHING)
        touching[np.unique(segmap[near])] = True
    exempt = ~touching & (flux / np.sqrt(own_var) >= config.symmetry_exempt_snr)
    exempt[0] = False
    confirmed = passes(reflected) | exempt
    # A confirmed neighbour's light reflected onto another segment is not the galaxy's.
    return passes(np.where(confirmed[reflected_label], np.float32(0), reflected)) | exempt


def _drop_segments(
    sources: np.ndarray, segmap: np.ndarray, keep: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``sources`` and ``segmap`` with only the labels where ``keep`` is True, relabelled
    1..n in order (sep's convention: label k is ``sources[k - 1]``), and the map from old
    labels to new ones (0 for the dropped)."""
    keep = keep.copy()
    keep[0] = False
    new_label = np.zeros(keep.size, dtype=segmap.dtype)
    new_label[keep] = np.arange(1, int(keep.sum()) + 1, dtype=segmap.dtype)
    return sources[keep[1:]], new_label[segmap], new_label


def _is_contaminated(
    sources: np.ndarray, central: int, centre: float, config: NeighbourConfig
) -> bool:
    """The flag rule of a galaxy with a central source (index ``central`` in ``sources``)."""
    flux = sources["flux"]
    others = np.delete(flux, central)
    if others.size and others.max() >= config.contaminant_flux_ratio * max(flux[central], 0.0):
        return True
    # A neighbour blended beyond deblending (no saddle between the two) leaves the central
    # segment's brightest (filtered) pixel on the neighbour, away from the centre.
    peak_offset = np.hypot(sources["xcpeak"][central] - centre, sources["ycpeak"][central] - centre)
    return bool(peak_offset > config.centre_radius_px)


def _reflection_fill(
    images: np.ndarray, mask: np.ndarray, no_data: np.ndarray, sky_level: np.ndarray
) -> np.ndarray:
    """What masked pixels take: their point reflection, else the sky (step 5).

    Parameters
    ----------
    images : numpy.ndarray
        float32 ``(n, B, S, S)`` min-shifted stamps.
    mask : numpy.ndarray
        bool ``(n, S, S)``: the pixels to replace (dilated neighbours).
    no_data : numpy.ndarray
        bool ``(n, B, S, S)``: pixels without data.
    sky_level : numpy.ndarray
        float32 ``(n, B)``: every band's sky level, same units as ``images``.

    Returns
    -------
    numpy.ndarray
        float32 ``(n, B, S, S)``: for every pixel, the value of the pixel point-reflected
        through the stamp centre ``((S-1)/2, (S-1)/2)`` where that one is data and not in
        ``mask``, else the band's sky level. Only the masked pixels of it are used.
    """
    reflected = images[..., ::-1, ::-1]
    usable = ~mask[:, None, ::-1, ::-1] & ~no_data[..., ::-1, ::-1]
    return np.where(usable, reflected, sky_level[..., None, None])


def _disk(radius: int) -> np.ndarray:
    """Boolean disk structuring element of the given radius in pixels."""
    offset = np.arange(-radius, radius + 1)
    return np.asarray(offset[:, None] ** 2 + offset[None, :] ** 2 <= radius**2)


def _checked_batch(images: np.ndarray, no_data: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``images`` as float32 and the no-data pixels (default: the exact zeros), once checked."""
    batch = np.asarray(images, dtype=np.float32)
    if batch.ndim != 4 or batch.shape[-1] != batch.shape[-2]:
        raise ValueError(
            f"images: expected shape (N, B, S, S) with square stamps, got {batch.shape}"
        )
    if not np.isfinite(batch).all():
        raise ValueError(
            f"images: {int((~np.isfinite(batch)).sum())} non-finite values; sanitise and "
            "min-shift the batch (step 2) before masking neighbours"
        )
    empty = batch == 0 if no_data is None else np.asarray(no_data, dtype=bool)
    if empty.shape != batch.shape:
        raise ValueError(f"no_data: expected shape {batch.shape} like images, got {empty.shape}")
    return batch, empty


def _segment(
    detection: np.ndarray, has_signal: np.ndarray, variance: np.ndarray, config: NeighbourConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps 3-5 and the flag (step 7) of every galaxy with signal (``variance``:
    :attr:`DetectionImages.variance`).

    Returns
    -------
    segmaps : numpy.ndarray
        int32 ``(N, S, S)`` sep segmentation maps (all 0 where nothing was detected).
    central : numpy.ndarray
        int32 ``(N,)`` label of the central segment, 0 where none is central.
    contaminated : numpy.ndarray
        bool ``(N,)``, the flag.
    """
    n_galaxies, size, _ = detection.shape
    centre = (size - 1) / 2.0
    offset = np.arange(size) - centre
    distance = np.hypot(offset[:, None], offset[None, :])
    segmaps = np.zeros((n_galaxies, size, size), dtype=np.int32)
    central = np.zeros(n_galaxies, dtype=np.int32)
    contaminated = np.zeros(n_galaxies, dtype=bool)
    shot = np.asarray((variance > 1).any(axis=(-2, -1)))
    with sep_pixstack(size):
        for index in np.flatnonzero(has_signal):
            sources, segmap = extract_segments(detection[index], config)
            if len(sources) == 0:
                continue
            label = central_label(segmap, detection[index], distance, config.centre_radius_px)
            keep = asymmetric_segments(
                segmap, detection[index], label, config, variance[index] if shot[index] else None
            )
            if label:
                keep[label] = True
            sources, segmap, new_label = _drop_segments(sources, segmap, keep)
            if len(sources) == 0:
                continue
            segmaps[index] = segmap
            # The central segment is kept, so it stays central: no second search.
            label = int(new_label[label])
            central[index] = label
            if label == 0:
                contaminated[index] = True
                continue
            contaminated[index] = _is_contaminated(sources, label - 1, centre, config)
    return segmaps, central, contaminated


def _replace_neighbours(
    batch: np.ndarray,
    no_data: np.ndarray,
    sky_level: np.ndarray,
    segmaps: np.ndarray,
    central: np.ndarray,
    config: NeighbourConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Step 5 and ``masked_fraction``: every segment but the central one, dilated, replaced.

    Vectorised over the galaxies that have neighbours; returns the masked copy of ``batch``
    and float32 ``(N,)`` masked pixels / S².
    """
    n_galaxies, _, size, _ = batch.shape
    masked_fraction = np.zeros(n_galaxies, dtype=np.float32)
    # Label 0 is "no segment", so a galaxy without a central source has no central pixel.
    is_central = (segmaps == central[:, None, None]) & (central > 0)[:, None, None]
    neighbour = (segmaps > 0) & ~is_central
    todo = np.flatnonzero(neighbour.any(axis=(-2, -1)))
    masked = batch.copy()
    if todo.size == 0:
        return masked, masked_fraction

    mask = neighbour[todo]
    if config.dilate_px > 0:
        mask = ndimage.binary_dilation(mask, structure=_disk(config.dilate_px)[None])
    mask &= ~is_central[todo]
    masked[todo] = np.where(
        mask[:, None],
        _reflection_fill(batch[todo], mask, no_data[todo], sky_level[todo]),
        batch[todo],
    )
    masked_fraction[todo] = mask.sum(axis=(-2, -1)) / np.float32(size * size)
    return masked, masked_fraction


def mask_neighbours(
    images: np.ndarray,
    no_data: np.ndarray | None = None,
    config: NeighbourConfig | None = None,
    *,
    sky: tuple[np.ndarray, np.ndarray] | None = None,
) -> NeighbourMasking:
    """Replace every source but the central one by the galaxy's reflection (step 2.4, ours).

    Parameters
    ----------
    images : numpy.ndarray
        float32 ``(N, B, S, S)`` cutouts (bands g, r, i, z; axes ``[..., row, col]``; any
        flux unit, nanomaggies for DR10), already sanitised (every pixel finite) and
        min-shifted per band (``docs/science.md``, step 2), *before* the circular mask.
    no_data : numpy.ndarray, optional
        bool ``(N, B, S, S)``: the pixels that had no data before the shift
        (:attr:`~galpipe.science.preprocess.PreprocessedBatch.no_data`); they are never taken
        as sky. Default: the pixels exactly 0 in ``images`` (right for stamps not min-shifted).
    config : NeighbourConfig, optional
        Detection and masking parameters; ``NeighbourConfig()`` if omitted.
    sky : tuple of numpy.ndarray, optional
        ``(level, sigma)`` of every band, :func:`~galpipe.science.sky.sky_level_and_noise` of
        ``images`` and ``no_data``, when the caller has measured it (the core does); else
        measured here.

    Returns
    -------
    NeighbourMasking
        ``(masked, masked_fraction, contaminated)``: float32 ``(N, B, S, S)`` images (a new
        array; the input is not modified), float32 ``(N,)`` fraction of the S² pixels
        replaced, bool ``(N,)`` flag. See the module docstring for the method and the rules.

    Raises
    ------
    ValueError
        If ``images`` is not ``(N, B, S, S)`` with square stamps, or holds non-finite values.
    """
    config = NeighbourConfig() if config is None else config
    batch, empty = _checked_batch(images, no_data)
    n_galaxies, _, size, _ = batch.shape
    if n_galaxies == 0 or size == 0:
        return NeighbourMasking(
            batch.copy(), np.zeros(n_galaxies, dtype=np.float32), np.zeros(n_galaxies, dtype=bool)
        )
    detection, has_signal, sky_level, variance = detection_images(batch, empty, config, sky)
    segmaps, central, contaminated = _segment(detection, has_signal, variance, config)
    masked, masked_fraction = _replace_neighbours(batch, empty, sky_level, segmaps, central, config)
    return NeighbourMasking(masked, masked_fraction, contaminated)
