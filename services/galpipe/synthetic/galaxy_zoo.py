"""A synthetic Galaxy Zoo: galaxies of known morphology, their GZ2 answers, volunteer votes, stamps.

The chain, each step a pure function of its inputs and a ``numpy.random.Generator``:

1. :func:`draw_morphologies` -- ``N`` galaxies (:class:`Morphologies`) from the distributions
   of a :class:`MorphologyConfig`: kind, bulge-to-total ratio, axis ratios, bar, arms, an "odd"
   probability, size, seeing, sky noise, fluxes and S/N.
2. :func:`render_noiseless` -- the noiseless ``(N, 4, S, S)`` griz stamps with GalSim, and
   what each shows of its features (:class:`StampFeatures`).
3. :func:`answer_shares` -- the per-question conditional probabilities ``(N, 37)`` that a
   volunteer gives each answer, a smooth documented mapping of the parameters and of what the
   stamp shows (below); :func:`galpipe.science.gz2.fractions_from_shares` turns them into the
   true fractions.
4. :func:`draw_votes` -- ``n_volunteers`` volunteers walk the tree; the observed fractions.
5. :func:`vote_noise_floor` -- the RMSE that predicting the true fractions scores against the
   observed votes: the best any model can do on such labels.
6. :func:`add_stamp_noise` -- the stamps the volunteers and the network see, with the source's
   Poisson noise and the sky's (:func:`render_morphologies` is steps 2 and 6).

Distributions (drawn like the radon validation population)
----------------------------------------------------------
The validation population (:mod:`galpipe.validation.population`) sits in a layer above this
one, so its draws are not called; the same distributions are drawn here, vectorised from one
generator, from the same :class:`~galpipe.synthetic.truth.SkyConfig` defaults: half-light radius
uniform on ``sky.half_light_radius_arcsec``, PSF FWHM uniform on ``sky.psf_fwhm_arcsec`` (the
sky's PSF model, same in all bands), sky noise per band uniform on ``sky.sky_sigma_nmgy``,
colours g-r, r-i, i-z uniform on the sky's ranges, position angle uniform on [0, 180) degrees
east of north, and the S/N log-uniform on ``snr_range`` (default (5, 200), the population's).
The r-band flux follows from the S/N by the definition every table of galpipe uses
(:func:`galpipe.synthetic.truth.half_light_snr`)::

    F_r = 2 S/N sigma_r sqrt(pi R_e^2 / p^2)

with ``R_e`` the drawn half-light radius (of the disk for disks, of the spheroid for smooth
galaxies; for a star, half the PSF FWHM, the half-light radius of a Gaussian of that FWHM) and
``p`` = :data:`~galpipe.survey.layout.PIXSCALE_ARCSEC`. Fluxes are nanomaggies.

Morphology parameters (per kind):

- ``kind``: 0 smooth (elliptical), 1 disk, 2 star or artifact (:data:`KINDS`), with
  probabilities ``kind_fractions``.
- ``bulge_to_total``: uniform on ``smooth_bulge_to_total`` (smooth: a spheroid, with at most a
  faint disk) or ``disk_bulge_to_total`` (disks); 0 for stars.
- ``axis_ratio``: the projected axis ratio of the main component. Disks: a thin oblate disk of
  intrinsic thickness ``q0 = disk_thickness`` at an isotropic inclination (``cos i`` uniform on
  [0, 1]), ``q = sqrt(q0^2 + (1 - q0^2) cos^2 i)``; edge-on when ``q`` is small. Smooth:
  uniform on ``smooth_axis_ratio``. Stars: 1.
- ``bulge_axis_ratio``: of the bulge, uniform on ``bulge_axis_ratio`` (smooth: equal to
  ``axis_ratio``, the spheroid is one body).
- ``bar_strength``: disks are barred with probability ``bar_fraction``, strength uniform on
  ``bar_strength``; 0 = no bar (and for every non-disk). ``bar_angle_deg`` is the bar's angle
  in the disk plane from the disk's major axis, uniform on [0, 180).
- ``arm_strength``, ``n_arms``, ``arm_tightness``: disks have arms with probability
  ``spiral_fraction``: strength uniform on ``arm_strength``, number 1..5 with probabilities
  ``arm_number_probabilities`` (5 stands for "more than four"), tightness uniform on [0, 1]
  (1 = tightest). Without arms: 0, 0 and 0.
- ``odd_probability``: the base rate of "odd" answers, uniform on ``odd_probability``, every
  kind; by default a constant 5 %: the odd features it stands for are not rendered, so a rate
  that varied from galaxy to galaxy would be in no image.

Answer shares (:func:`answer_shares`)
-------------------------------------
``s(x) = 1 / (1 + exp(-x))``; every share is a smooth function of the parameters; each
question's shares sum to 1 by construction.

Volunteers answer what the stamp shows, not what the galaxy is: GZ2's volunteers saw fewer
features in smaller, fainter galaxies (the classification bias its catalogues correct for), and
a model can only learn what an image tells. So each feature's shares are those of the galaxy
where the feature is visible and a *blind* answer where it is not::

    share_seen = v share(parameters) + (1 - v) share_blind

How visible a feature is follows from what its stamp shows (:func:`render_noiseless`,
:class:`StampFeatures`): the ideal observer's signal-to-noise ratio of the difference the
feature makes to the noiseless griz stamp, ``sqrt(sum (delta mu)^2 / var)`` over bands and
pixels, ``var`` the noise variance per pixel (sky and the source's Poisson noise):

- the shape (smooth or disk, the bulge): a change of :data:`SHAPE_STEP` = 0.1 in B/T;
- the bar: the stamp against the same galaxy with the bar's light in its disk;
- the arms: the stamp against the same disk without them;
- the elongation: the stamp against the same galaxy face-on, its bulge round.

Each visibility is logistic in ``ln S/N`` (:func:`feature_visibility`), half visible at the
Rose criterion, S/N 5 (:data:`ROSE_SNR`; Rose 1948: the S/N a human observer needs to see a
feature), and for the arms' number and winding at twice that (:data:`ARM_DETAIL_SNR`). So the
seeing, the size, the S/N, the feature's strength and the PSF's smoothing of tight windings all
enter through the one quantity that says whether the pixels carry the feature, and no answer
depends on what the stamp does not show. The blind answers: an unresolved galaxy looks smooth
(0.9), unbarred, armless, with an obvious bulge, and its arms' winding and number cannot be
told. The axis ratio a volunteer sees is ``q = 1 - v_elongation (1 - q_stamp)``, with
``q_stamp`` the stamp's (:attr:`StampFeatures.axis_ratio`, from the adaptive moments of the
noiseless r-band image): a small thin disk looks round under the seeing, and a galaxy too faint
to show its elongation looks round whatever its shape. Bars and arms enter other answers as
``v x strength``.

- Q1 (smooth, features, star/artifact): the star share is 0.94 for stars and 0.01 for
  galaxies; the rest splits by ``P(smooth) = s(8 (B/T - 0.55) - 2.5 arms - 1.5 bar)``
  (``v_shape``, blind 0.9): increasing in B/T, decreasing with arms and bar.
- Q2 (edge-on yes, no): ``P(edge-on) = s((0.3 - q) / 0.06)``, ``q`` the apparent axis ratio;
  decreasing in ``q``.
- Q3 (bar yes, no): ``P(bar) = s(-3 + 7 bar_strength)`` (``v_bar``, blind 0.05).
- Q4 (spiral yes, no): ``P(spiral) = s(-2.5 + 6 arm_strength)`` (``v_arms``, blind 0.08).
- Q5 (bulge none, just noticeable, obvious, dominant): ordered logistic in B/T,
  ``P(answer <= k) = s(8 (c_k - B/T))``, ``c = (0.05, 0.2, 0.45)`` (``v_shape``, blind
  (0.05, 0.2, 0.45, 0.3)); P(none) decreasing and P(dominant) increasing in B/T.
- Q6 (odd yes, no): ``P(odd) = odd_probability + 0.25 bar + 0.15 P(edge-on)``: a small base
  rate of odd answers (5 %) and the rendered features that make galaxies odd, rings
  with bars and dust lanes in edge-on disks. No odd feature is drawn that the stamp does not
  show.
- Q7 (round, in between, cigar): ordered logistic in the apparent ``q``:
  ``P(cigar) = s((0.4 - q) / 0.07)``, ``P(in between or cigar) = s((0.75 - q) / 0.07)``.
- Q8 (ring, lens, disturbed, irregular, other, merger, dust lane): weights
  ``(0.2 + 0.3 bar, 0.05, 0.15, 0.2, 0.2, 0.1, 0.1 + 0.6 P(edge-on))`` normalised: rings come
  with bars, dust lanes with edge-on disks.
- Q9 (rounded, boxy, no bulge): ``P(no bulge) = s((0.08 - B/T) / 0.04)`` (``v_shape``, blind
  0.2); the rest splits rounded : boxy as ``(0.85 - 0.5 bar) : (0.15 + 0.5 bar)`` (boxy
  bulges are bars seen edge-on).
- Q10 (tight, medium, loose): ordered logistic in tightness ``t``:
  ``P(loose) = s((0.3 - t) / 0.1)``, ``P(medium or loose) = s((0.7 - t) / 0.1)``
  (``v_arm_detail``, blind (0.3, 0.4, 0.3)).
- Q11 (1, 2, 3, 4, more than four, can't tell): ``P(can't tell) = 0.1 + 0.4 (1 -
  arm_strength)``; the rest by weights ``exp(-(k - n_arms)^2 / (2 * 0.5^2))``, ``k = 1..5``
  (uniform when a galaxy has no arms) (``v_arm_detail``, blind mostly "can't tell", 0.7).

What the stamps show (:func:`render_morphologies`)
---------------------------------------------------
A de Vaucouleurs bulge, an exponential disk and, when ``bar_strength > 0``, a bar (Sérsic
n = 0.5, axis ratio 0.25, half-light radius 0.6 disk radii, a fraction ``0.25 bar_strength`` of
the disk's light, turned in the disk plane and inclined with it); a star is the PSF.

Spiral arms (when ``arm_strength > 0``) modulate the face-on exponential disk ``I_d(r)`` with a
logarithmic spiral of ``m`` arms::

    I(r, phi) = I_d(r) [1 + A w(r) cos(m (phi - phi0 - chi ln(r / R_e) / tan(p)))]

in the disk plane (``phi`` from the disk's major axis, ``R_e`` the disk half-light radius,
``h`` its scale radius), with

- ``m = n_arms`` for 1..4 and ``m = 6`` for 5 ("more than four");
- pitch ``p = 40 deg - 30 deg arm_tightness``: 40 deg loose (tightness 0) to 10 deg tight (1);
  the phase of mode ``m`` winds by ``m / tan(p)`` radians per e-fold in radius;
- amplitude ``A = arm_strength`` (at most 1, so ``I >= 0``; 1: dark inter-arm gaps);
- ``w(r) = (1 - exp(-(r / 0.5 R_e)^2)) exp(-(r / 4 h)^6)``: the arms fade into the bulge
  region and out beyond four scale radii;
- ``phi0 = bar_angle_deg`` (the arms leave the ends of a bar; a random orientation for an
  unbarred disk) and the winding sense ``chi = +1`` for ``bar_angle_deg < 90``, else -1: no
  new draws, so a seed gives the same population as before arms were rendered.

``cos`` averages to 0 on every circle, so the arms move the disk's light and keep its flux.
The modulation term ``I_d A w cos(...)`` is sampled on a grid in the disk plane (step half a
pixel, out to 5 h; windings finer than that grid are smoothed by a Gaussian of one grid step,
far below any PSF, rather than aliased), made a zero-flux GalSim ``InterpolatedImage``, added
to the analytic exponential disk and inclined, turned and PSF-convolved with it. A disk without
arms is rendered exactly as before. Edge-on, the arms are foreshortened with the disk and the
grid's resolution along the major axis coarsens by ``1 / sqrt(q)``, harmlessly at the seeing.

Of the odd features of Q6/Q8, rings and dust lanes are not drawn as such; the odd answers
follow the bar and the edge-on disk that are. The bulge is redder than the disk (with its arms
and bar): :data:`BULGE_COLOUR_OFFSET_MAG` sets the bulge's share of each band's light
(:func:`bulge_light_fraction`), while the galaxy's total fluxes keep the drawn colours, so a
bulge-dominated galaxy is red at its centre and a disk bluer outside, as in GZ2's images.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field, replace

import galsim
import numpy as np
import numpy.typing as npt

from galpipe.errors import ConfigurationError, InputError
from galpipe.science import gz2
from galpipe.survey.layout import BANDS, CUTOUT_SIZE_PX, PIXSCALE_ARCSEC
from galpipe.synthetic.render import GSPARAMS, image_beta_deg, psf_profile
from galpipe.synthetic.rows import check_rows, concatenate_rows, run_in_chunks, take_rows
from galpipe.synthetic.truth import SkyConfig, half_light_snr

__all__ = [
    "ARM_DETAIL_SNR",
    "BULGE_COLOUR_OFFSET_MAG",
    "DEFAULT_VOLUNTEERS",
    "DISK",
    "KINDS",
    "ROSE_SNR",
    "SAMPLE_CHUNK",
    "SHAPE_STEP",
    "SMOOTH",
    "STAR",
    "VISIBILITY_WIDTH",
    "GalaxyZooInputError",
    "GalaxyZooSample",
    "Morphologies",
    "MorphologyConfig",
    "MorphologyConfigError",
    "StampFeatures",
    "Visibility",
    "add_stamp_noise",
    "answer_shares",
    "bulge_light_fraction",
    "draw_morphologies",
    "draw_votes",
    "feature_visibility",
    "noise_variance",
    "render_morphologies",
    "render_noiseless",
    "sample_galaxy_zoo",
    "vote_noise_floor",
]

#: Galaxy kinds, in the order of the codes of :attr:`Morphologies.kind`.
KINDS: tuple[str, ...] = ("smooth", "disk", "star")
#: The codes of :data:`KINDS`.
SMOOTH, DISK, STAR = 0, 1, 2

#: Volunteers per galaxy: GZ2 collected about 40 classifications of each galaxy.
DEFAULT_VOLUNTEERS = 40

_BAR_SERSIC_N = 0.5
_BAR_AXIS_RATIO = 0.25
_BAR_SIZE = 0.6  # bar half-light radius / disk half-light radius
_BAR_LIGHT = 0.25  # fraction of the disk's light in the bar at bar_strength 1
# Spiral arms (module docstring): the azimuthal mode of each n_arms code (5, "more than four",
# drawn as six arms), the pitch angles of the loosest and tightest arms, the radii that fade
# the arms in (into the bulge) and out, and the disk-plane grid the pattern is sampled on.
_ARM_MODES = (0, 1, 2, 3, 4, 6)
_ARM_PITCH_LOOSE_DEG = 40.0  # arm_tightness 0
_ARM_PITCH_TIGHT_DEG = 10.0  # arm_tightness 1
_ARM_INNER = 0.5  # fade-in radius / disk half-light radius
_ARM_OUTER = 4.0  # fade-out radius / disk scale radius
_ARM_EXTENT = 5.0  # grid half-width / disk scale radius
_ARM_STEP_ARCSEC = 0.5 * PIXSCALE_ARCSEC  # grid step: twice oversampled
_ARM_BLUR_ARCSEC = _ARM_STEP_ARCSEC  # Gaussian smoothing of windings finer than the grid
#: How much redder a bulge is than its disk: its magnitude offsets relative to r in each band
#: (a bulge's g-r about 0.75 against a disk's 0.45, r-i 0.40 against 0.30, i-z 0.25 against
#: 0.15: old and young stellar populations). The galaxy's total colours are the drawn ones.
BULGE_COLOUR_OFFSET_MAG: dict[str, float] = {"g": 0.3, "r": 0.0, "i": -0.1, "z": -0.2}
#: The Rose criterion: a human observer sees a feature in a noisy image once its signal-to-noise
#: ratio (a matched filter's, the ideal observer's) reaches about 5 (Rose 1948). The shape, the
#: bar and the arms are half visible at this S/N (:func:`feature_visibility`).
ROSE_SNR = 5.0
#: The arms' number and winding need more than their presence: half visible at twice the S/N.
ARM_DETAIL_SNR = 2.0 * ROSE_SNR
#: Width of the visibility's logistic in ``ln S/N``: from 0.27 to 0.73 between S/N 3.5 and 7.1
#: for the Rose criterion's 5.
VISIBILITY_WIDTH = 0.35
#: The change of the bulge-to-total ratio whose S/N measures how well a stamp shows the shape.
SHAPE_STEP = 0.1
# What volunteers answer when they cannot see a feature: an unresolved galaxy looks smooth,
# unbarred, armless and bulge-like; its arms' winding and number cannot be told.
_BLIND_SMOOTH = 0.9
_BLIND_BAR = 0.05
_BLIND_SPIRAL = 0.08
_BLIND_BULGE = (0.05, 0.2, 0.45, 0.3)  # none, just noticeable, obvious, dominant
_BLIND_NO_BULGE = 0.2
_BLIND_WINDING = (0.3, 0.4, 0.3)  # tight, medium, loose
_BLIND_ARM_COUNT = (0.05, 0.1, 0.05, 0.05, 0.05, 0.7)  # 1, 2, 3, 4, more, can't tell
# "Odd" answers from rendered features: rings come with bars, dust lanes with edge-on disks.
_ODD_RING = 0.25
_ODD_DUST = 0.15
_STAR_SHARE = 0.94  # Q1 share "star or artifact" of a star
_ARTIFACT_SHARE = 0.01  # the same for a galaxy
_ANSWERS = {name: gz2.answer_index(name) for name in gz2.ANSWER_COLUMNS}


class MorphologyConfigError(ConfigurationError, ValueError):
    """A :class:`MorphologyConfig` field is out of range; the message names field and value."""


class GalaxyZooInputError(InputError, ValueError):
    """An argument of the synthetic Galaxy Zoo is unusable; the message names it."""


def _range(value: tuple[float, float], name: str, low: float, high: float) -> None:
    a, b = value
    if not (low <= a <= b <= high):
        raise MorphologyConfigError(
            f"MorphologyConfig.{name} = {value!r}: expected ({low:g} <=) low <= high (<= {high:g})"
        )


def _probabilities(value: tuple[float, ...], name: str, size: int) -> None:
    p = np.asarray(value, dtype=np.float64)
    if p.shape != (size,) or not np.all(np.isfinite(p)) or np.any(p < 0.0):
        raise MorphologyConfigError(
            f"MorphologyConfig.{name} = {value!r}: expected {size} non-negative probabilities"
        )
    if abs(float(p.sum()) - 1.0) > 1e-9:
        raise MorphologyConfigError(
            f"MorphologyConfig.{name} = {value!r}: must sum to 1, they sum to {float(p.sum()):.9g}"
        )


@dataclass(frozen=True)
class MorphologyConfig:
    """The distributions :func:`draw_morphologies` draws from (module docstring).

    Every range is ``(low, high)``, uniform unless said otherwise; ratios dimensionless.

    Attributes
    ----------
    kind_fractions : tuple of float
        Probabilities of smooth, disk, star (:data:`KINDS`); sum to 1.
    smooth_bulge_to_total, disk_bulge_to_total : tuple of float
        B/T of smooth galaxies and of disks, within [0, 1].
    smooth_axis_ratio : tuple of float
        Projected axis ratio of smooth galaxies, within (0, 1].
    bulge_axis_ratio : tuple of float
        Projected axis ratio of the bulges of disks, within (0, 1].
    disk_thickness : float
        Intrinsic axis ratio ``q0`` of a disk seen edge-on, in (0, 1).
    bulge_size_ratio : float
        Bulge half-light radius over disk half-light radius for disks, > 0.
    bar_fraction : float
        Probability that a disk is barred, in [0, 1].
    bar_strength : tuple of float
        Strength of a bar, within (0, 1].
    spiral_fraction : float
        Probability that a disk has arms, in [0, 1].
    arm_strength : tuple of float
        Strength of the arms, within (0, 1].
    arm_number_probabilities : tuple of float
        Probabilities of 1, 2, 3, 4 and more than four arms; sum to 1.
    odd_probability : tuple of float
        The base rate of "odd" answers, within [0, 1] (rendered features add to it).
    snr_range : tuple of float
        r-band half-light S/N, drawn log-uniform; ``0 < low <= high``.
    sky : SkyConfig
        Sizes, seeing and PSF, colours, sky noise and gain (its ``r_mag``, Sérsic index, axis
        ratio and neighbours are not used).
    """

    kind_fractions: tuple[float, float, float] = (0.4, 0.55, 0.05)
    smooth_bulge_to_total: tuple[float, float] = (0.7, 1.0)
    disk_bulge_to_total: tuple[float, float] = (0.0, 0.6)
    smooth_axis_ratio: tuple[float, float] = (0.3, 1.0)
    bulge_axis_ratio: tuple[float, float] = (0.6, 1.0)
    disk_thickness: float = 0.12
    bulge_size_ratio: float = 0.35
    bar_fraction: float = 0.3
    bar_strength: tuple[float, float] = (0.2, 1.0)
    spiral_fraction: float = 0.7
    arm_strength: tuple[float, float] = (0.2, 1.0)
    arm_number_probabilities: tuple[float, float, float, float, float] = (
        0.05,
        0.5,
        0.2,
        0.1,
        0.15,
    )
    odd_probability: tuple[float, float] = (0.05, 0.05)
    snr_range: tuple[float, float] = (5.0, 200.0)
    sky: SkyConfig = field(default_factory=SkyConfig)

    def __post_init__(self) -> None:
        _probabilities(self.kind_fractions, "kind_fractions", len(KINDS))
        _probabilities(self.arm_number_probabilities, "arm_number_probabilities", 5)
        for name in ("smooth_bulge_to_total", "disk_bulge_to_total", "odd_probability"):
            _range(getattr(self, name), name, 0.0, 1.0)
        for name in ("smooth_axis_ratio", "bulge_axis_ratio", "bar_strength", "arm_strength"):
            _range(getattr(self, name), name, 1e-6, 1.0)
        for name in ("bar_fraction", "spiral_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise MorphologyConfigError(
                    f"MorphologyConfig.{name} = {value!r}: must be a probability in [0, 1]"
                )
        if not 0.0 < self.disk_thickness < 1.0:
            raise MorphologyConfigError(
                f"MorphologyConfig.disk_thickness = {self.disk_thickness!r}: must be in (0, 1)"
            )
        if not self.bulge_size_ratio > 0.0:
            raise MorphologyConfigError(
                f"MorphologyConfig.bulge_size_ratio = {self.bulge_size_ratio!r}: must be > 0"
            )
        _range(self.snr_range, "snr_range", 1e-12, math.inf)
        if not isinstance(self.sky, SkyConfig):
            raise MorphologyConfigError(
                f"MorphologyConfig.sky = {self.sky!r}: must be a galpipe SkyConfig"
            )


@dataclass(frozen=True)
class Morphologies:
    """``N`` synthetic galaxies; every attribute an array with ``N`` rows (module docstring).

    Attributes
    ----------
    kind : numpy.ndarray
        int64 code into :data:`KINDS` (0 smooth, 1 disk, 2 star).
    bulge_to_total, axis_ratio, bulge_axis_ratio : numpy.ndarray
        B/T (light fraction of the bulge) and projected axis ratios ``b/a``, dimensionless.
    position_angle_deg : numpy.ndarray
        Major axis east of north, degrees in [0, 180).
    bar_strength : numpy.ndarray
        0 = no bar, up to 1.
    bar_angle_deg : numpy.ndarray
        The bar's angle in the disk plane from the disk's major axis, degrees.
    arm_strength, arm_tightness : numpy.ndarray
        0 = no arms; tightness 1 = tightest. Rendered (module docstring).
    n_arms : numpy.ndarray
        int64, 0 without arms, 1..5 (5: more than four, rendered as six arms).
    odd_probability : numpy.ndarray
        Probability of the answer "odd: yes".
    half_light_radius_arcsec : numpy.ndarray
        Of the disk (disks) or the spheroid (smooth), arcsec; 0 for stars.
    bulge_half_light_radius_arcsec : numpy.ndarray
        Of the bulge, arcsec: ``bulge_size_ratio`` disk radii for disks, the spheroid's for
        smooth galaxies, 0 for stars.
    psf_fwhm_arcsec : numpy.ndarray
        Seeing, arcsec.
    moffat_beta : numpy.ndarray
        Moffat index of the PSF; NaN for a Gaussian PSF.
    snr : numpy.ndarray
        r-band half-light S/N.
    flux : numpy.ndarray
        ``(N, 4)`` griz flux, nanomaggies.
    sky_sigma : numpy.ndarray
        ``(N, 4)`` griz Gaussian sky noise, nanomaggies per pixel.
    gain_e_per_nmgy : numpy.ndarray
        Electrons per nanomaggy (Poisson noise of the source).
    """

    kind: npt.NDArray[np.int64]
    bulge_to_total: npt.NDArray[np.float64]
    axis_ratio: npt.NDArray[np.float64]
    bulge_axis_ratio: npt.NDArray[np.float64]
    position_angle_deg: npt.NDArray[np.float64]
    bar_strength: npt.NDArray[np.float64]
    bar_angle_deg: npt.NDArray[np.float64]
    arm_strength: npt.NDArray[np.float64]
    n_arms: npt.NDArray[np.int64]
    arm_tightness: npt.NDArray[np.float64]
    odd_probability: npt.NDArray[np.float64]
    half_light_radius_arcsec: npt.NDArray[np.float64]
    bulge_half_light_radius_arcsec: npt.NDArray[np.float64]
    psf_fwhm_arcsec: npt.NDArray[np.float64]
    moffat_beta: npt.NDArray[np.float64]
    snr: npt.NDArray[np.float64]
    flux: npt.NDArray[np.float64]
    sky_sigma: npt.NDArray[np.float64]
    gain_e_per_nmgy: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        check_rows(self, "kind", GalaxyZooInputError)
        if np.any((self.kind < 0) | (self.kind >= len(KINDS))):
            raise GalaxyZooInputError(f"Morphologies.kind: codes must be 0..{len(KINDS) - 1}")

    def __len__(self) -> int:
        return len(self.kind)

    def take(self, index: npt.NDArray[np.integer] | npt.NDArray[np.bool_]) -> Morphologies:
        """The galaxies at ``index`` (integer indices or a boolean mask), in that order."""
        return take_rows(self, index)


def _uniform(
    rng: np.random.Generator, bounds: tuple[float, float], n: int
) -> npt.NDArray[np.float64]:
    return rng.uniform(bounds[0], bounds[1], size=n)


def draw_morphologies(n: int, config: MorphologyConfig, rng: np.random.Generator) -> Morphologies:
    """Draw ``n`` galaxies from ``config`` (distributions in the module docstring).

    Every parameter is drawn for every galaxy, then masked by kind, so the number of draws does
    not depend on earlier outcomes: one seed gives one population.

    Parameters
    ----------
    n : int
        Number of galaxies, >= 0.
    config : MorphologyConfig
        The distributions.
    rng : numpy.random.Generator
        The only source of randomness.

    Returns
    -------
    Morphologies

    Raises
    ------
    GalaxyZooInputError
        If ``n`` is negative or not an integer.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise GalaxyZooInputError(f"n = {n!r}: the number of galaxies must be an integer >= 0")
    n = int(n)
    sky = config.sky
    kind = rng.choice(len(KINDS), size=n, p=np.asarray(config.kind_fractions)).astype(np.int64)
    smooth, disk, star = kind == SMOOTH, kind == DISK, kind == STAR

    bt = np.where(
        smooth,
        _uniform(rng, config.smooth_bulge_to_total, n),
        _uniform(rng, config.disk_bulge_to_total, n),
    )
    q0 = config.disk_thickness
    cos_i = rng.uniform(0.0, 1.0, size=n)
    disk_q = np.sqrt(q0**2 + (1.0 - q0**2) * cos_i**2)
    smooth_q = _uniform(rng, config.smooth_axis_ratio, n)
    axis_ratio = np.where(disk, disk_q, np.where(smooth, smooth_q, 1.0))
    bulge_q = np.where(disk, _uniform(rng, config.bulge_axis_ratio, n), axis_ratio)
    pa = rng.uniform(0.0, 180.0, size=n)

    barred = disk & (rng.uniform(size=n) < config.bar_fraction)
    bar_strength = np.where(barred, _uniform(rng, config.bar_strength, n), 0.0)
    bar_angle = rng.uniform(0.0, 180.0, size=n)
    spiral = disk & (rng.uniform(size=n) < config.spiral_fraction)
    arm_strength = np.where(spiral, _uniform(rng, config.arm_strength, n), 0.0)
    arms = 1 + rng.choice(5, size=n, p=np.asarray(config.arm_number_probabilities))
    n_arms = np.where(spiral, arms, 0).astype(np.int64)
    tightness = np.where(spiral, rng.uniform(0.0, 1.0, size=n), 0.0)
    odd = _uniform(rng, config.odd_probability, n)

    hlr = np.where(star, 0.0, _uniform(rng, sky.half_light_radius_arcsec, n))
    fwhm = _uniform(rng, sky.psf_fwhm_arcsec, n)
    sky_sigma = np.stack([_uniform(rng, sky.sky_sigma_nmgy[b], n) for b in BANDS], axis=1)
    low, high = config.snr_range
    snr = np.exp(rng.uniform(math.log(low), math.log(high), size=n))
    # S/N -> r flux by galpipe's half-light definition, which is linear in the flux.
    radius = np.where(star, 0.5 * fwhm, hlr)
    r_flux = snr / half_light_snr(1.0, sky_sigma[:, BANDS.index("r")], radius, PIXSCALE_ARCSEC)
    g_r = _uniform(rng, sky.g_minus_r, n)
    r_i = _uniform(rng, sky.r_minus_i, n)
    i_z = _uniform(rng, sky.i_minus_z, n)
    # Magnitudes relative to r; flux = 10^(-0.4 dm) times the r flux.
    dmag = {"g": g_r, "r": np.zeros(n), "i": -r_i, "z": -r_i - i_z}
    flux = np.stack([r_flux * 10.0 ** (-0.4 * dmag[b]) for b in BANDS], axis=1)
    beta = sky.moffat_beta if sky.psf_model == "moffat" else math.nan

    return Morphologies(
        kind=kind,
        bulge_to_total=np.where(star, 0.0, bt),
        axis_ratio=axis_ratio,
        bulge_axis_ratio=np.where(star, 1.0, bulge_q),
        position_angle_deg=pa,
        bar_strength=bar_strength,
        bar_angle_deg=bar_angle,
        arm_strength=arm_strength,
        n_arms=n_arms,
        arm_tightness=tightness,
        odd_probability=odd,
        half_light_radius_arcsec=hlr,
        bulge_half_light_radius_arcsec=np.where(disk, config.bulge_size_ratio * hlr, hlr),
        psf_fwhm_arcsec=fwhm,
        moffat_beta=np.full(n, beta),
        snr=snr,
        flux=flux,
        sky_sigma=sky_sigma,
        gain_e_per_nmgy=np.full(n, float(sky.gain_e_per_nmgy)),
    )


def _sigmoid(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # 1/(1+exp(-x)) without overflow


def _ordered(cumulative: list[npt.NDArray[np.float64]]) -> npt.NDArray[np.float64]:
    """Shares of ordered answers from ``P(answer <= k)`` for k = 0..K-2 (non-decreasing)."""
    edges = [np.zeros_like(cumulative[0]), *cumulative, np.ones_like(cumulative[0])]
    return np.stack([np.clip(b - a, 0.0, 1.0) for a, b in itertools.pairwise(edges)], axis=1)


def _normalised(weights: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return weights / weights.sum(axis=1, keepdims=True)


def _put(shares: npt.NDArray[np.float64], question: int, block: npt.NDArray[np.float64]) -> None:
    first = _ANSWERS[gz2.QUESTIONS[question - 1].answers[0]]
    shares[:, first : first + block.shape[1]] = _normalised(block)


def _seen(
    visibility: npt.NDArray[np.float64],
    shares: npt.NDArray[np.float64],
    blind: float | npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """What volunteers answer: the feature's shares where visible, the blind answer where not."""
    return visibility * shares + (1.0 - visibility) * blind


@dataclass(frozen=True)
class StampFeatures:
    """What the noiseless stamp of each galaxy shows of its features (module docstring).

    Each ``*_snr`` is an ideal observer's signal-to-noise ratio: the matched filter's S/N of
    the difference the feature makes to the griz stamp, ``sqrt(sum (delta mu)^2 / var)`` over
    bands and pixels, with ``var`` the stamp's noise variance per pixel (sky plus the source's
    Poisson noise). 0 where the galaxy has no such feature (and for stars).

    Attributes
    ----------
    shape_snr : numpy.ndarray
        S/N of a change of :data:`SHAPE_STEP` in the bulge-to-total ratio: how well the stamp
        tells a bulge from a disk.
    bar_snr : numpy.ndarray
        S/N of the bar: the stamp against the same galaxy with the bar's light in its disk.
    arm_snr : numpy.ndarray
        S/N of the spiral arms: the stamp against the same disk without them.
    elongation_snr : numpy.ndarray
        S/N of the galaxy's elongation: the stamp against the same galaxy face-on with a round
        bulge (0 for a round galaxy).
    axis_ratio : numpy.ndarray
        The apparent axis ratio ``b/a`` of the PSF-convolved r-band image, from its adaptive
        second moments (GalSim's HSM; unweighted moments where they fail), in (0, 1].
    """

    shape_snr: npt.NDArray[np.float64]
    bar_snr: npt.NDArray[np.float64]
    arm_snr: npt.NDArray[np.float64]
    elongation_snr: npt.NDArray[np.float64]
    axis_ratio: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        check_rows(self, "shape_snr", GalaxyZooInputError)

    def __len__(self) -> int:
        return len(self.shape_snr)


@dataclass(frozen=True)
class Visibility:
    """How visible each feature is to volunteers, in [0, 1] (:func:`feature_visibility`).

    Attributes
    ----------
    shape, bar, arms, arm_detail, elongation : numpy.ndarray
        ``(N,)``: the light profile (smooth or disk, the bulge), the bar, the arms' presence,
        their number and winding, and the galaxy's elongation.
    """

    shape: npt.NDArray[np.float64]
    bar: npt.NDArray[np.float64]
    arms: npt.NDArray[np.float64]
    arm_detail: npt.NDArray[np.float64]
    elongation: npt.NDArray[np.float64]


def feature_visibility(features: StampFeatures) -> Visibility:
    """How visible each feature is: logistic in the log of its ideal-observer S/N.

    ``v = s((ln S/N - ln S/N_half) / VISIBILITY_WIDTH)``, half visible at the Rose criterion
    (:data:`ROSE_SNR`) for the shape, the bar, the arms and the elongation, and at twice it for
    the arms' number and winding (:data:`ARM_DETAIL_SNR`); 0 where the S/N is 0.

    Parameters
    ----------
    features : StampFeatures
        What each stamp shows (:func:`render_noiseless`).

    Returns
    -------
    Visibility
    """

    def visible(snr: npt.NDArray[np.float64], half: float) -> npt.NDArray[np.float64]:
        with np.errstate(divide="ignore"):
            log_ratio = np.log(np.asarray(snr, dtype=np.float64) / half)
        return _sigmoid(log_ratio / VISIBILITY_WIDTH)

    return Visibility(
        shape=visible(features.shape_snr, ROSE_SNR),
        bar=visible(features.bar_snr, ROSE_SNR),
        arms=visible(features.arm_snr, ROSE_SNR),
        arm_detail=visible(features.arm_snr, ARM_DETAIL_SNR),
        elongation=visible(features.elongation_snr, ROSE_SNR),
    )


def answer_shares(morphologies: Morphologies, features: StampFeatures) -> npt.NDArray[np.float64]:
    """Per-question conditional answer probabilities of each galaxy (module docstring).

    Parameters
    ----------
    morphologies : Morphologies
        The galaxies.
    features : StampFeatures
        What their stamps show (:func:`render_noiseless`), one row per galaxy.

    Returns
    -------
    numpy.ndarray
        ``(N, 37)`` float64 shares in the order of :data:`galpipe.science.gz2.ANSWER_COLUMNS`,
        dimensionless; each question's shares sum to 1 (to rounding). The true fractions are
        ``gz2.fractions_from_shares(answer_shares(m, features))``.

    Raises
    ------
    GalaxyZooInputError
        If ``features`` does not have a row per galaxy.
    """
    m = morphologies
    n = len(m)
    if len(features) != n:
        raise GalaxyZooInputError(
            f"features: {len(features)} rows for {n} galaxies; one row per galaxy is needed"
        )
    bt, bar, arms = m.bulge_to_total, m.bar_strength, m.arm_strength
    v = feature_visibility(features)
    # The axis ratio volunteers see: the stamp's where its elongation shows, round where not.
    q = 1.0 - v.elongation * (1.0 - features.axis_ratio)
    # What the stamp shows of bars and arms: their strength scaled by how visible they are.
    seen_bar, seen_arms = v.bar * bar, v.arms * arms
    shares = np.empty((n, gz2.N_ANSWERS))

    star = np.where(m.kind == STAR, _STAR_SHARE, _ARTIFACT_SHARE)
    p_smooth = _seen(
        v.shape, _sigmoid(8.0 * (bt - 0.55) - 2.5 * seen_arms - 1.5 * seen_bar), _BLIND_SMOOTH
    )
    _put(shares, 1, np.stack([(1 - star) * p_smooth, (1 - star) * (1 - p_smooth), star], axis=1))
    p_edge = _sigmoid((0.3 - q) / 0.06)
    _put(shares, 2, np.stack([p_edge, 1 - p_edge], axis=1))
    p_bar = _seen(v.bar, _sigmoid(-3.0 + 7.0 * bar), _BLIND_BAR)
    _put(shares, 3, np.stack([p_bar, 1 - p_bar], axis=1))
    p_spiral = _seen(v.arms, _sigmoid(-2.5 + 6.0 * arms), _BLIND_SPIRAL)
    _put(shares, 4, np.stack([p_spiral, 1 - p_spiral], axis=1))
    bulge = _ordered([_sigmoid(8.0 * (c - bt)) for c in (0.05, 0.2, 0.45)])
    _put(shares, 5, _seen(v.shape[:, None], bulge, np.asarray(_BLIND_BULGE)))
    p_odd = np.clip(m.odd_probability + _ODD_RING * seen_bar + _ODD_DUST * p_edge, 0.0, 1.0)
    _put(shares, 6, np.stack([p_odd, 1 - p_odd], axis=1))
    # Ordered from round (large q) to cigar (small q): P(round) = 1 - P(in between or cigar).
    p_not_round = _sigmoid((0.75 - q) / 0.07)
    p_cigar = _sigmoid((0.4 - q) / 0.07)
    _put(shares, 7, np.stack([1 - p_not_round, p_not_round - p_cigar, p_cigar], axis=1))
    one = np.ones(n)
    odd_weights = [0.2 + 0.3 * seen_bar, 0.05 * one, 0.15 * one, 0.2 * one, 0.2 * one, 0.1 * one]
    _put(shares, 8, np.stack([*odd_weights, 0.1 + 0.6 * p_edge], axis=1))
    p_no_bulge = _seen(v.shape, _sigmoid((0.08 - bt) / 0.04), _BLIND_NO_BULGE)
    boxy = 0.15 + 0.5 * seen_bar
    _put(
        shares,
        9,
        np.stack([(1 - p_no_bulge) * (1 - boxy), (1 - p_no_bulge) * boxy, p_no_bulge], axis=1),
    )
    # Ordered from tight (t near 1) to loose: P(tight) = 1 - P(medium or loose).
    t = m.arm_tightness
    p_not_tight = _sigmoid((0.7 - t) / 0.1)
    p_loose = _sigmoid((0.3 - t) / 0.1)
    winding = np.stack([1 - p_not_tight, p_not_tight - p_loose, p_loose], axis=1)
    _put(shares, 10, _seen(v.arm_detail[:, None], winding, np.asarray(_BLIND_WINDING)))
    cant_tell = 0.1 + 0.4 * (1.0 - arms)
    k = np.arange(1, 6)
    # No arms (n_arms 0): every number is equally likely.
    weights = np.where(
        m.n_arms[:, None] > 0,
        np.exp(-0.5 * ((k[None, :] - m.n_arms[:, None]) / 0.5) ** 2),
        1.0,
    )
    counted = (1.0 - cant_tell)[:, None] * _normalised(weights)
    arm_count = np.concatenate([counted, cant_tell[:, None]], axis=1)
    _put(shares, 11, _seen(v.arm_detail[:, None], arm_count, np.asarray(_BLIND_ARM_COUNT)))
    return shares


def _volunteers(n_volunteers: int) -> int:
    if isinstance(n_volunteers, bool) or not isinstance(n_volunteers, int | np.integer):
        raise GalaxyZooInputError(f"n_volunteers = {n_volunteers!r}: must be an integer >= 1")
    if n_volunteers < 1:
        raise GalaxyZooInputError(f"n_volunteers = {n_volunteers}: must be at least 1")
    return int(n_volunteers)


def draw_votes(
    true_fractions: npt.ArrayLike,
    n_volunteers: int = DEFAULT_VOLUNTEERS,
    rng: np.random.Generator | None = None,
) -> npt.NDArray[np.float64]:
    """Observed vote fractions: ``n_volunteers`` volunteers walk the tree for each galaxy.

    Question by question in the tree's order, the volunteers who reached its parent answer
    (all ``n_volunteers`` for Q1 and Q6) are split multinomially among its answers with the
    shares ``true fraction / parent fraction``. That is the same as every volunteer walking the
    tree independently, so each answer's count is ``Binomial(n_volunteers, f_true)``.

    Parameters
    ----------
    true_fractions : array_like
        ``(N, 37)`` tree-normalised fractions (validated with ``gz2.check_fractions``,
        tolerance 1e-6).
    n_volunteers : int
        Volunteers per galaxy, >= 1; GZ2 had about 40.
    rng : numpy.random.Generator
        The only source of randomness (required).

    Returns
    -------
    numpy.ndarray
        ``(N, 37)`` float64 ``count / n_volunteers``; obeys the tree exactly (children's counts
        sum to the parent's count).

    Raises
    ------
    GalaxyZooInputError
        If ``n_volunteers`` is not a positive integer or ``rng`` is missing.
    galpipe.science.gz2.FractionsError
        If the fractions are malformed or break the tree.
    """
    n = _volunteers(n_volunteers)
    if rng is None:
        raise GalaxyZooInputError("rng: draw_votes needs a numpy.random.Generator")
    fractions = gz2.check_fractions(true_fractions, atol=1e-6)
    shares = gz2.shares_from_fractions(fractions)
    counts = np.zeros(fractions.shape, dtype=np.int64)
    for question in gz2.QUESTIONS:
        a = _ANSWERS[question.answers[0]]
        b = a + len(question.answers)
        reached = (
            np.full(len(fractions), n, dtype=np.int64)
            if question.parent is None
            else counts[:, _ANSWERS[question.parent]]
        )
        # Renormalised in float64 so that multinomial never sees sums above 1 by rounding.
        counts[:, a:b] = rng.multinomial(reached, _normalised(shares[:, a:b]))
    return counts / float(n)


def vote_noise_floor(
    true_fractions: npt.ArrayLike, n_volunteers: int = DEFAULT_VOLUNTEERS
) -> float:
    """The RMSE of a perfect model against votes: predicting the true fractions exactly.

    Each volunteer walks the tree independently and reaches answer ``a`` with probability
    ``f_a``, its true fraction (the product of the shares along the path). So the count
    ``c_a`` of the ``n`` volunteers who reach it is ``Binomial(n, f_a)``, and the observed
    fraction ``c_a / n`` has mean ``f_a`` and variance ``f_a (1 - f_a) / n``. The squared error
    of the perfect prediction ``f_a`` is therefore, in expectation, ``E[(c_a/n - f_a)^2] =
    f_a (1 - f_a) / n``; the Kaggle metric averages it over galaxies and answers before the
    root, so the expected mean square is ``mean_{i,a} f_ia (1 - f_ia) / n`` and the floor is

        ``floor = sqrt(mean_{i,a} f_ia (1 - f_ia) / n)``.

    (That is the root of the expected mean square; with thousands of galaxies the realised
    RMSE scatters about it by well under one per cent.) No model trained on such votes can
    score below it on average, however good.

    Parameters
    ----------
    true_fractions : array_like
        ``(N, 37)`` tree-normalised fractions, N >= 1.
    n_volunteers : int
        Volunteers per galaxy, >= 1.

    Returns
    -------
    float
        The floor, dimensionless (a fraction of volunteers).

    Raises
    ------
    GalaxyZooInputError
        If ``n_volunteers`` is not a positive integer or there are no galaxies.
    galpipe.science.gz2.FractionsError
        If the fractions are malformed or break the tree.
    """
    n = _volunteers(n_volunteers)
    f = gz2.check_fractions(true_fractions, atol=1e-6)
    if f.shape[0] == 0:
        raise GalaxyZooInputError("true_fractions: no galaxies, the floor is undefined")
    return float(np.sqrt(np.mean(f * (1.0 - f)) / n))


def _arm_pattern(
    m: Morphologies, i: int, disk: galsim.Exponential
) -> galsim.InterpolatedImage | None:
    """The spiral modulation of the face-on ``disk`` of galaxy ``i``; None without arms.

    The zero-flux term ``I_disk(r) A w(r) cos(psi)`` of the module docstring, sampled on a
    twice oversampled grid in the disk plane (major axis along +x), in flux per grid pixel.
    Added to ``disk`` it gives the armed disk; its flux vanishes (``cos`` averages to 0 on
    every circle), so the disk keeps its flux.
    """
    strength = float(m.arm_strength[i])
    n_arms = int(m.n_arms[i])
    if strength <= 0.0 or n_arms <= 0:
        return None
    modes = _ARM_MODES[min(n_arms, len(_ARM_MODES) - 1)]
    tightness = float(np.clip(m.arm_tightness[i], 0.0, 1.0))
    pitch = math.radians(
        _ARM_PITCH_LOOSE_DEG + (_ARM_PITCH_TIGHT_DEG - _ARM_PITCH_LOOSE_DEG) * tightness
    )
    bar_angle = float(m.bar_angle_deg[i]) % 180.0
    # No new draws (populations stay as they were): the bar angle sets the arms' phase, so
    # they leave the ends of a bar, and their sense of winding.
    handedness = 1.0 if bar_angle < 90.0 else -1.0
    h, hlr = float(disk.scale_radius), float(disk.half_light_radius)
    step = _ARM_STEP_ARCSEC
    half = math.ceil(_ARM_EXTENT * h / step)
    axis = np.arange(-half, half + 1) * step
    x, y = np.meshgrid(axis, axis)  # array[row, col] = (y, x), GalSim's order
    r = np.hypot(x, y)
    # The log diverges at the centre, where the inner fade zeroes the pattern anyway.
    r_safe = np.maximum(r, 0.5 * step)
    psi = modes * (
        np.arctan2(y, x)
        - math.radians(bar_angle)
        - handedness * np.log(r_safe / hlr) / math.tan(pitch)
    )
    # |grad psi| = m / (r sin(pitch)): windings finer than the grid resolves are smoothed
    # (a Gaussian of sigma = one grid step, far below any PSF) instead of aliased.
    frequency = modes / (r_safe * math.sin(pitch))
    envelope = (
        strength
        * -np.expm1(-((r / (_ARM_INNER * hlr)) ** 2))
        * np.exp(-((r / (_ARM_OUTER * h)) ** 6))
        * np.exp(-0.5 * (frequency * _ARM_BLUR_ARCSEC) ** 2)
    )
    surface = float(disk.flux) / (2.0 * math.pi * h**2) * np.exp(-r / h)
    pixels = surface * envelope * np.cos(psi) * step**2
    # Zero flux: GalSim's step/max k estimates need a flux, so they come from the grid instead.
    return galsim.InterpolatedImage(
        galsim.ImageD(pixels, scale=step),
        calculate_stepk=False,
        calculate_maxk=False,
        pad_factor=2.0,  # half the default's FFT; stamps change by ~1e-5 of their peak
        gsparams=GSPARAMS,
    )


def _components(
    m: Morphologies, i: int, *, with_bar: bool = True, with_arms: bool = True
) -> tuple[galsim.GSObject | None, galsim.GSObject | None]:
    """Unit-flux bulge and disk (with its arms and bar) of galaxy ``i``, either absent (None),
    major axis at its position angle. ``with_bar=False`` leaves the bar's light in the disk;
    ``with_arms=False`` leaves the disk smooth (the references of :class:`StampFeatures`)."""
    hlr = float(m.half_light_radius_arcsec[i])
    bt = float(m.bulge_to_total[i])
    q = float(m.axis_ratio[i])
    turn = image_beta_deg(float(m.position_angle_deg[i])) * galsim.degrees
    # Built with the major axis along +x, then turned to the position angle.
    bulge = None
    if bt > 0.0:
        bulge = galsim.DeVaucouleurs(
            half_light_radius=float(m.bulge_half_light_radius_arcsec[i]), gsparams=GSPARAMS
        )
        bulge = bulge.shear(q=float(m.bulge_axis_ratio[i]), beta=0.0 * galsim.degrees).rotate(turn)
    if bt >= 1.0:
        return bulge, None
    parts = []
    bar_light = _BAR_LIGHT * float(m.bar_strength[i]) if with_bar else 0.0  # of the disk's light
    if bar_light < 1.0:
        disk = galsim.Exponential(half_light_radius=hlr, flux=1.0 - bar_light, gsparams=GSPARAMS)
        parts.append(disk.shear(q=q, beta=0.0 * galsim.degrees))
        arms = _arm_pattern(m, i, disk) if with_arms else None
        if arms is not None:
            # The arms lie in the disk: inclined (and below, turned) exactly as it is.
            parts.append(arms.shear(q=q, beta=0.0 * galsim.degrees))
    if bar_light > 0.0:
        bar = galsim.Sersic(
            n=_BAR_SERSIC_N, half_light_radius=_BAR_SIZE * hlr, flux=bar_light, gsparams=GSPARAMS
        )
        # Elongated in the disk plane at its angle, then foreshortened with the disk.
        bar = bar.shear(q=_BAR_AXIS_RATIO, beta=float(m.bar_angle_deg[i]) * galsim.degrees)
        parts.append(bar.shear(q=q, beta=0.0 * galsim.degrees))
    disk_profile = parts[0] if len(parts) == 1 else galsim.Add(parts)
    return bulge, disk_profile.rotate(turn)


def bulge_light_fraction(bulge_to_total: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The bulge's share of each band's light, ``(N, 4)`` griz, from its r-band share.

    A bulge is redder than its disk by :data:`BULGE_COLOUR_OFFSET_MAG` (magnitudes relative to
    r), so with ``k_b = 10^(-0.4 dm_b)`` the bulge's share in band ``b`` is
    ``B k_b / (B k_b + 1 - B)``, with ``B`` the bulge-to-total ratio in r.
    """
    bt = np.asarray(bulge_to_total, dtype=float)[:, None]
    k = 10.0 ** (-0.4 * np.array([BULGE_COLOUR_OFFSET_MAG[b] for b in BANDS]))
    return np.asarray(bt * k / (bt * k + 1.0 - bt))


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise GalaxyZooInputError(f"size = {size!r}: the stamp side must be an integer >= 1")


def _drawn(
    profile: galsim.GSObject | None, psf: galsim.GSObject, image: galsim.ImageD
) -> npt.NDArray[np.float64]:
    """``profile`` convolved with ``psf`` and drawn on ``image``'s grid (a copy); 0 if None."""
    if profile is None:
        return np.zeros(image.array.shape)
    galsim.Convolve(profile, psf).drawImage(image=image)
    return image.array.copy()


def noise_variance(
    expected: npt.NDArray[np.float64],
    sky_sigma: npt.NDArray[np.float64],
    gain_e_per_nmgy: float | npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """The noise variance per pixel of one galaxy's griz stamp, nanomaggies squared.

    The noise :func:`add_stamp_noise` adds: the sky's ``sky_sigma^2`` per band plus the
    source's Poisson variance ``mu / gain``.

    Parameters
    ----------
    expected : numpy.ndarray
        ``(4, S, S)`` the noiseless stamp, nanomaggies per pixel.
    sky_sigma : numpy.ndarray
        ``(4,)`` the sky noise per band, nanomaggies per pixel.
    gain_e_per_nmgy : float
        Electrons per nanomaggy.
    """
    return np.asarray(sky_sigma)[:, None, None] ** 2 + np.clip(expected, 0.0, None) / float(
        gain_e_per_nmgy
    )


def _apparent_axis_ratio(plane: npt.NDArray[np.float64]) -> float:
    """``b/a`` of an image from its adaptive second moments (unweighted where HSM fails)."""
    try:
        moments = galsim.hsm.FindAdaptiveMom(galsim.ImageD(plane), strict=True)
        return float(moments.observed_shape.q)
    except galsim.GalSimHSMError:
        weights = np.clip(plane, 0.0, None)
        rows, cols = np.indices(plane.shape)
        total = weights.sum()
        if total <= 0.0:
            return 1.0
        dy = rows - (weights * rows).sum() / total
        dx = cols - (weights * cols).sum() / total
        cov = np.cov(np.stack([dx.ravel(), dy.ravel()]), aweights=weights.ravel(), bias=True)
        low, high = np.linalg.eigvalsh(cov)
        return float(math.sqrt(max(low, 0.0) / high)) if high > 0.0 else 1.0


def _snr(delta: npt.NDArray[np.float64], variance: npt.NDArray[np.float64]) -> float:
    return math.sqrt(float(np.sum(delta**2 / variance)))


def render_noiseless(
    morphologies: Morphologies, size: int = CUTOUT_SIZE_PX
) -> tuple[npt.NDArray[np.float64], StampFeatures]:
    """The galaxies' noiseless griz stamps and what each shows of its features.

    Conventions are the synthetic sky's (:mod:`galpipe.synthetic.render`): ``[b, row, col]``
    with row 0 south and column 0 east (north up, east left), position angles east of north,
    nanomaggies per pixel at :data:`~galpipe.survey.layout.PIXSCALE_ARCSEC`; the galaxy at the
    stamp centre. Spiral arms are rendered as a logarithmic-spiral modulation of the disk; odd
    features are not (module docstring).

    Parameters
    ----------
    morphologies : Morphologies
        The galaxies.
    size : int
        Stamp side, pixels, >= 1.

    Returns
    -------
    stamps : numpy.ndarray
        float64 ``(N, 4, size, size)``, bands g, r, i, z: the expected stamps, PSF-convolved.
    features : StampFeatures
        The ideal observer's S/N of the shape, the bar, the arms and the elongation in the noisy
        stamps these become (:func:`add_stamp_noise`), and the apparent axis ratio.

    Raises
    ------
    GalaxyZooInputError
        If ``size`` is not a positive integer.
    """
    _check_size(size)
    m = morphologies
    n = len(m)
    stamps = np.zeros((n, len(BANDS), size, size))
    snrs = np.zeros((4, n))
    # The same galaxies face-on with round bulges: the reference of their elongation.
    face_on = replace(m, axis_ratio=np.ones(n), bulge_axis_ratio=np.ones(n))
    axis_ratio = np.ones(n)
    image = galsim.ImageD(size, size, scale=PIXSCALE_ARCSEC)
    bulge_share = bulge_light_fraction(m.bulge_to_total)
    # d(bulge share)/d(B/T) per band over SHAPE_STEP, by a central difference kept in [0, 1].
    low = np.clip(m.bulge_to_total - 0.5 * SHAPE_STEP, 0.0, 1.0)
    high = np.clip(m.bulge_to_total + 0.5 * SHAPE_STEP, 0.0, 1.0)
    share_step = (bulge_light_fraction(high) - bulge_light_fraction(low)) * (
        SHAPE_STEP / np.maximum(high - low, 1e-12)
    )[:, None]
    r_band = BANDS.index("r")
    for i in range(n):
        psf = psf_profile(float(m.psf_fwhm_arcsec[i]), float(m.moffat_beta[i]))
        flux = m.flux[i][:, None, None]
        if m.kind[i] == STAR:
            psf.drawImage(image=image)
            stamps[i] = flux * image.array
            axis_ratio[i] = _apparent_axis_ratio(stamps[i, r_band])
            continue
        # Unit-flux templates of the bulge and of the disk, mixed per band by the bulge's
        # share of that band's light (a red bulge in a bluer disk).
        bulge, disk = _components(m, i)
        templates = np.stack([_drawn(bulge, psf, image), _drawn(disk, psf, image)])
        share = bulge_share[i][:, None, None]
        stamps[i] = flux * (share * templates[0] + (1.0 - share) * templates[1])
        variance = noise_variance(stamps[i], m.sky_sigma[i], m.gain_e_per_nmgy[i])
        step = share_step[i][:, None, None]
        snrs[0, i] = _snr(flux * step * (templates[0] - templates[1]), variance)
        disk_flux = flux * (1.0 - share)
        if m.bar_strength[i] > 0.0:
            plain = _drawn(_components(m, i, with_bar=False)[1], psf, image)
            snrs[1, i] = _snr(disk_flux * (templates[1] - plain), variance)
        if m.arm_strength[i] > 0.0 and m.n_arms[i] > 0:
            smooth = _drawn(_components(m, i, with_arms=False)[1], psf, image)
            snrs[2, i] = _snr(disk_flux * (templates[1] - smooth), variance)
        round_bulge, round_disk = _components(face_on, i)
        round_stamp = flux * (
            share * _drawn(round_bulge, psf, image) + (1.0 - share) * _drawn(round_disk, psf, image)
        )
        snrs[3, i] = _snr(stamps[i] - round_stamp, variance)
        axis_ratio[i] = _apparent_axis_ratio(stamps[i, r_band])
    features = StampFeatures(
        shape_snr=snrs[0],
        bar_snr=snrs[1],
        arm_snr=snrs[2],
        elongation_snr=snrs[3],
        axis_ratio=axis_ratio,
    )
    return stamps, features


def add_stamp_noise(
    stamps: npt.NDArray[np.float64], morphologies: Morphologies, rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """Noisy stamps: Poisson noise of the source plus Gaussian sky noise.

    As :func:`~galpipe.synthetic.render.render_cutout` adds it: the source's counts at
    ``gain_e_per_nmgy`` electrons per nanomaggy, then the sky's ``sky_sigma`` per band.

    Parameters
    ----------
    stamps : numpy.ndarray
        ``(N, 4, S, S)`` expected griz stamps, nanomaggies per pixel (:func:`render_noiseless`).
    morphologies : Morphologies
        The galaxies (their gain and sky noise), one per stamp.
    rng : numpy.random.Generator
        Draws the noise: the same seed gives the same stamps.

    Returns
    -------
    numpy.ndarray
        float32 ``(N, 4, S, S)``.
    """
    m = morphologies
    noisy = np.empty(stamps.shape, dtype=np.float32)
    for i in range(len(m)):
        gain = m.gain_e_per_nmgy[i]
        for b in range(len(BANDS)):
            plane = np.clip(stamps[i, b], 0.0, None)
            noisy[i, b] = rng.poisson(plane * gain) / gain + rng.normal(
                0.0, m.sky_sigma[i, b], plane.shape
            )
    return noisy


def render_morphologies(
    morphologies: Morphologies,
    size: int = CUTOUT_SIZE_PX,
    rng: np.random.Generator | None = None,
) -> npt.NDArray[np.float32]:
    """griz stamps of the galaxies, PSF-convolved, with source and sky noise.

    :func:`render_noiseless`, then :func:`add_stamp_noise`.

    Parameters
    ----------
    morphologies : Morphologies
        The galaxies.
    size : int
        Stamp side, pixels, >= 1.
    rng : numpy.random.Generator
        Draws the noise (required): the same seed gives the same stamps.

    Returns
    -------
    numpy.ndarray
        float32 ``(N, 4, size, size)``, bands g, r, i, z.

    Raises
    ------
    GalaxyZooInputError
        If ``size`` is not a positive integer or ``rng`` is missing.
    """
    _check_size(size)
    if rng is None:
        raise GalaxyZooInputError("rng: render_morphologies needs a numpy.random.Generator")
    return add_stamp_noise(render_noiseless(morphologies, size)[0], morphologies, rng)


#: Galaxies drawn, voted on and rendered from one child seed: the unit of parallel work, so
#: that a sample does not depend on how many processes made it.
SAMPLE_CHUNK = 512


@dataclass(frozen=True)
class GalaxyZooSample:
    """A synthetic Galaxy Zoo: galaxies, their true and voted fractions, and their stamps.

    Attributes
    ----------
    ids : numpy.ndarray
        ``(N,)`` int64 galaxy ids, 1..N.
    morphologies : Morphologies
        The drawn parameters (S/N in ``morphologies.snr``).
    features : StampFeatures
        What each noiseless stamp shows (the visibilities the volunteers' answers follow).
    true_fractions : numpy.ndarray
        ``(N, 37)`` float64 fractions of the answer shares (what infinitely many volunteers
        would give).
    vote_fractions : numpy.ndarray
        ``(N, 37)`` float64 fractions counted from ``n_volunteers`` volunteers: the labels.
    stamps : numpy.ndarray
        ``(N, 4, S, S)`` float32 griz stamps, nanomaggies per pixel.
    n_volunteers : int
        Volunteers per galaxy.
    """

    ids: npt.NDArray[np.int64]
    morphologies: Morphologies
    features: StampFeatures
    true_fractions: npt.NDArray[np.float64]
    vote_fractions: npt.NDArray[np.float64]
    stamps: npt.NDArray[np.float32]
    n_volunteers: int

    def __len__(self) -> int:
        return len(self.ids)


def _sample_chunk(
    config: MorphologyConfig,
    n_volunteers: int,
    size: int,
    _first: int,
    n: int,
    seed: np.random.SeedSequence,
) -> tuple[
    Morphologies,
    StampFeatures,
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float32],
]:
    rng = np.random.default_rng(seed)
    morphologies = draw_morphologies(n, config, rng)
    expected, features = render_noiseless(morphologies, size)
    true = gz2.fractions_from_shares(answer_shares(morphologies, features))
    votes = draw_votes(true, n_volunteers, rng)
    return morphologies, features, true, votes, add_stamp_noise(expected, morphologies, rng)


def sample_galaxy_zoo(
    n: int,
    config: MorphologyConfig | None = None,
    *,
    seed: int = 0,
    n_volunteers: int = DEFAULT_VOLUNTEERS,
    size: int = CUTOUT_SIZE_PX,
    processes: int = 1,
) -> GalaxyZooSample:
    """Draw, vote on and render ``n`` galaxies: a labelled training or test set.

    Work is split in chunks of :data:`SAMPLE_CHUNK` galaxies, each from its own child of
    ``seed`` (``numpy.random.SeedSequence.spawn``), so the sample is the same whatever
    ``processes`` is.

    Parameters
    ----------
    n : int
        Galaxies, >= 1.
    config : MorphologyConfig, optional
        The distributions; the default follows the radon validation population.
    seed : int
        Root seed.
    n_volunteers : int
        Volunteers per galaxy.
    size : int
        Stamp side, pixels.
    processes : int
        Worker processes rendering chunks in parallel (1: in this process).

    Raises
    ------
    GalaxyZooInputError
        If ``n`` or ``processes`` is not a positive integer.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise GalaxyZooInputError(f"n = {n!r}: the sample needs an integer >= 1 galaxies")
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise GalaxyZooInputError(f"processes = {processes!r}: must be an integer >= 1")
    config = config or MorphologyConfig()
    work = functools.partial(_sample_chunk, config, n_volunteers, size)
    chunks = run_in_chunks(work, n, SAMPLE_CHUNK, seed, processes)
    return GalaxyZooSample(
        ids=np.arange(1, n + 1, dtype=np.int64),
        morphologies=concatenate_rows([c[0] for c in chunks]),
        features=concatenate_rows([c[1] for c in chunks]),
        true_fractions=np.concatenate([c[2] for c in chunks]),
        vote_fractions=np.concatenate([c[3] for c in chunks]),
        stamps=np.concatenate([c[4] for c in chunks]),
        n_volunteers=n_volunteers,
    )
