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

Convention: ``sep`` uses ``x`` = column, ``y`` = row and ``theta`` counter-clockwise from +x
towards +y in radians, [-pi/2, pi/2] -- our image angle (SCIENCE.md "Conventions") after
``degrees mod 180``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sep

from galpipe.science.neighbours import NeighbourConfig, central_label, detection_images
from galpipe.science.preprocess import sanitise_and_shift

__all__ = ["PeerConfig", "PeerMeasurement", "sep_orientation"]


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
    """

    band_angle_image_deg: np.ndarray
    angle_image_deg: np.ndarray
    ellipticity: np.ndarray


def _central_theta(
    detection: np.ndarray, has_signal: np.ndarray, config: PeerConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Angle (degrees) and ``1 - b/a`` of the central object of each detection image."""
    n_images, size, _ = detection.shape
    offset = np.arange(size) - (size - 1) / 2.0
    distance = np.hypot(offset[:, None], offset[None, :])
    angle = np.full(n_images, np.nan)
    ellipticity = np.full(n_images, np.nan)
    for index in np.flatnonzero(has_signal):
        try:
            sources, segmap = sep.extract(
                detection[index],
                config.detect_sigma,
                err=1.0,
                minarea=config.minarea,
                deblend_nthresh=config.deblend_nthresh,
                deblend_cont=config.deblend_cont,
                segmentation_map=True,
            )
        except Exception:  # sep raises bare Exception (e.g. object too large): no measurement
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
    return angle, ellipticity


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
    previous = sep.get_extract_pixstack()
    # A stamp has S^2 pixels; sep's default stack of 300,000 costs more to allocate than the
    # extraction itself.
    sep.set_extract_pixstack(max(2 * size * size, 1024))
    try:
        for band in range(n_bands if per_band else 0):
            detection, has_signal, _ = detection_images(
                shifted[:, band : band + 1], no_data[:, band : band + 1], detect_rule
            )
            band_angle[:, band], _ = _central_theta(detection, has_signal, cfg)
        detection, has_signal, _ = detection_images(shifted, no_data, detect_rule)
        angle, ellipticity = _central_theta(detection, has_signal, cfg)
    finally:
        sep.set_extract_pixstack(previous)
    return PeerMeasurement(band_angle, angle, ellipticity)
