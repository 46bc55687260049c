"""The peer: SExtractor's second-moment orientation, computed by ``sep`` on the same cutouts.

SExtractor (and ``sep``, its library form) reports ``THETA_IMAGE``: the orientation of the
isophotal second moments of the pixels of a detected object, counter-clockwise from +x. This
is what most catalogues call the position angle of a galaxy, so it is the natural yardstick of
the Radon measurement.

What the peer does with an ``(N, B, S, S)`` batch -- the same array our measurement gets:

1. Step 2.1-2.2 of our own preprocessing (:func:`~galpipe.science.preprocess.sanitise_and_shift`:
   non-finite pixels replaced, min-shift), which changes no moment (a constant added to a band
   is removed again as its sky level).
2. The detection image of the bands used, in units of their noise, exactly as our neighbour
   masking builds it (sigma-clipped sky level and noise from the pixels outside the inscribed
   circle; bands weighted by ``1/sigma``): per band, that band alone; combined, all bands with
   signal.
3. ``sep.extract`` on it (SExtractor's algorithm: 3x3 matched filter, threshold
   ``detect_sigma`` sigma, ``minarea``, multi-threshold deblending with SExtractor's default
   ``deblend_cont = 0.005``, cleaning). Deblending is the peer's own way of separating
   neighbours; it never sees our neighbour masking.
4. The central object (the segment covering the stamp centre, else the nearest within
   ``centre_radius_px``), as our masking chooses it; its ``theta`` is the angle. No central
   object: NaN.

Every image ends one of three ways (:class:`PeerOutcomes`): measured; no detection (no signal,
no object, or none central: the peer's answer "nothing there"); or failed, when ``sep`` itself
raised (e.g. an object larger than its pixel stack). A failure is NaN too, but it is the
tool's limit, not the image's content, so it is counted apart, logged, and reported.

Convention: ``sep`` uses ``x`` = column, ``y`` = row and ``theta`` counter-clockwise from +x
towards +y in radians, [-pi/2, pi/2] -- our image angle (``docs/science.md``, "Conventions") after
``degrees mod 180``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Self

import numpy as np
import sep

from galpipe.science.neighbours import (
    NeighbourConfig,
    central_label,
    detection_images,
    extract_segments,
    sep_pixstack,
)
from galpipe.science.preprocess import sanitise_and_shift

__all__ = ["PeerConfig", "PeerMeasurement", "PeerOutcomes", "sep_orientation"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeerConfig:
    """SExtractor parameters of the peer (SExtractor's defaults where it has them).

    Attributes
    ----------
    detect_sigma : float
        Detection threshold, sigma of the detection image (DETECT_THRESH; 1.5 as SExtractor).
    minarea : int
        DETECT_MINAREA, pixels (5 as SExtractor).
    deblend_nthresh : int
        DEBLEND_NTHRESH (32).
    deblend_cont : float
        DEBLEND_MINCONT (0.005).
    centre_radius_px : float
        If no segment covers the stamp centre, the nearest within this many pixels is central.
    """

    detect_sigma: float = 1.5
    minarea: int = 5
    deblend_nthresh: int = 32
    deblend_cont: float = 0.005
    centre_radius_px: float = 3.0

    @property
    def tag(self) -> str:
        """Names the configuration in the report, e.g. ``sep-t1.5-a5-n32-c0.005-r3``."""
        return (
            f"sep{sep.__version__}-t{self.detect_sigma:g}-a{self.minarea}"
            f"-n{self.deblend_nthresh}-c{self.deblend_cont:g}-r{self.centre_radius_px:g}"
        )


@dataclass(frozen=True)
class PeerOutcomes:
    """How the peer's combined measurements of a set of images ended; the counts sum to them.

    Attributes
    ----------
    measured : int
        Images with an angle.
    no_detection : int
        ``sep`` ran and found no central object (or the image had no signal).
    failed : int
        ``sep`` raised: no angle, for a reason of the tool's, not of the image.
    """

    measured: int
    no_detection: int
    failed: int

    @classmethod
    def of(cls, measured: np.ndarray, failed: np.ndarray) -> Self:
        """Count the outcomes of images marked ``(M,)`` measured and ``(M,)`` failed (bool)."""
        return cls(
            measured=int(measured.sum()),
            no_detection=int((~measured & ~failed).sum()),
            failed=int(failed.sum()),
        )

    def to_json(self) -> dict[str, Any]:
        """The three counts by name."""
        return asdict(self)

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Self:
        """The inverse of :meth:`to_json`."""
        return cls(values["measured"], values["no_detection"], values["failed"])


@dataclass(frozen=True)
class PeerMeasurement:
    """The peer's angles; image angles in degrees, [0, 180), NaN where nothing central was found.

    Attributes
    ----------
    band_angle_image_deg : numpy.ndarray
        ``(N, B)`` per band.
    angle_image_deg : numpy.ndarray
        ``(N,)`` on the combined detection image of all bands.
    ellipticity : numpy.ndarray
        ``(N,)`` ``1 - b/a`` of the combined detection's central object.
    band_failed, failed : numpy.ndarray
        ``(N, B)`` and ``(N,)`` bool: ``sep`` raised on that detection image (the angle is NaN,
        but not for want of a detection).
    """

    band_angle_image_deg: np.ndarray
    angle_image_deg: np.ndarray
    ellipticity: np.ndarray
    band_failed: np.ndarray
    failed: np.ndarray

    def outcomes(self) -> PeerOutcomes:
        """How the combined measurements ended: measured, no detection, failed."""
        return PeerOutcomes.of(np.isfinite(self.angle_image_deg), self.failed)


@dataclass(frozen=True)
class _CentralObjects:
    """What :func:`_central_theta` found on each detection image."""

    angle_deg: np.ndarray  # (N,) NaN: none
    ellipticity: np.ndarray  # (N,) 1 - b/a
    failed: np.ndarray  # (N,) bool: sep raised


def _central_theta(
    detection: np.ndarray, has_signal: np.ndarray, config: PeerConfig
) -> _CentralObjects:
    """Angle (degrees) and ``1 - b/a`` of the central object of each detection image."""
    n_images, size, _ = detection.shape
    offset = np.arange(size) - (size - 1) / 2.0
    distance = np.hypot(offset[:, None], offset[None, :])
    angle = np.full(n_images, np.nan)
    ellipticity = np.full(n_images, np.nan)
    failed = np.zeros(n_images, dtype=bool)
    first_error = ""
    for index in np.flatnonzero(has_signal):
        try:
            sources, segmap = extract_segments(detection[index], config)
        except Exception as exc:  # sep raises bare Exception (e.g. object too large)
            failed[index] = True
            first_error = first_error or str(exc)
            continue
        if len(sources) == 0:
            continue
        label = central_label(segmap, detection[index], distance, config.centre_radius_px)
        if label == 0:
            continue
        source = sources[label - 1]
        angle[index] = np.mod(np.rad2deg(float(source["theta"])), 180.0)
        if source["a"] > 0:
            ellipticity[index] = 1.0 - float(source["b"]) / float(source["a"])
    if failed.any():
        log.warning(
            "peer: sep failed on %d of %d images (first: %s)", failed.sum(), n_images, first_error
        )
    return _CentralObjects(angle, ellipticity, failed)


def sep_orientation(
    images: np.ndarray, config: PeerConfig | None = None, *, per_band: bool = True
) -> PeerMeasurement:
    """The peer's orientation of every galaxy, per band and combined (module docstring).

    Parameters
    ----------
    images : numpy.ndarray
        ``(N, B, S, S)`` cutouts, axes ``[galaxy, band, row, col]``, row 0 = FITS y = 1.
    config : PeerConfig, optional
        SExtractor parameters.
    per_band : bool
        Also measure each band alone (else ``band_angle_image_deg`` is all NaN: the protocol
        needs only the combined angle, and each band costs one more extraction).

    Returns
    -------
    PeerMeasurement
    """
    cfg = config if config is not None else PeerConfig()
    batch = np.asarray(images)
    if batch.ndim != 4 or batch.shape[-1] != batch.shape[-2]:
        raise ValueError(f"images: expected (N, B, S, S) square stamps, got shape {batch.shape}")
    pre = sanitise_and_shift(batch)
    shifted, no_data = pre.images, pre.no_data
    n_galaxies, n_bands, size, _ = shifted.shape
    # The detection image of our masking, with its default noise floor (the only field of
    # NeighbourConfig it reads): both methods then detect on the same image.
    detect_rule = NeighbourConfig()
    band_angle = np.full((n_galaxies, n_bands), np.nan)
    band_failed = np.zeros((n_galaxies, n_bands), dtype=bool)
    with sep_pixstack(size):
        for band in range(n_bands if per_band else 0):
            detection, has_signal, _, _ = detection_images(
                shifted[:, band : band + 1], no_data[:, band : band + 1], detect_rule
            )
            found = _central_theta(detection, has_signal, cfg)
            band_angle[:, band], band_failed[:, band] = found.angle_deg, found.failed
        detection, has_signal, _, _ = detection_images(shifted, no_data, detect_rule)
        combined = _central_theta(detection, has_signal, cfg)
    return PeerMeasurement(
        band_angle, combined.angle_deg, combined.ellipticity, band_failed, combined.failed
    )
