"""The paper's augmentation protocol (section 5) on the truth population.

Each augmented image takes one truth galaxy and applies a random non-empty subset of

- **R** rotation by ``alpha ~ U[0, 180)`` degrees (bicubic),
- **B** Gaussian blur with ``sigma ~ U[0.5, 2.0)`` pixels,
- **N** Poisson resampling to ``total counts ~ log-U[1e3, 1e5)`` photons per stamp (all bands),

the 7 subsets equally likely, in the order R, B, N (:mod:`galpipe.validation.augment`, which draws
and applies them). The deviation is the axial difference ``|(R_aug - alpha) - R_orig|`` in
[0, 90] degrees, ``alpha = 0`` when R is not applied, ``R_orig`` the same method's angle on the
un-augmented image -- the paper's figure is its mean over 500,000 images. Our measurement
(production configuration) and the peer measure every augmented image, the same array.

Every :data:`UNMASKED_EVERY`-th chunk is also measured with neighbour masking off -- the
paper's method as published -- and by the neighbour oracle, on the same augmented images (a
fifth of them, to bound the run time). The neighbour oracle
(:mod:`galpipe.validation.truth`) measures with masking off each image minus the exact light of
its neighbours, in the augmented image as R and B carried it
(:func:`~galpipe.validation.augment.expected_scene`; N's photon noise of that light stays):
what perfect neighbour handling would score, the reference for ours on galaxies with
neighbours. On an isolated galaxy it is the unmasked measurement.

The protocol rewards consistency, not accuracy: for a galaxy with neighbours, masking decides
per image what to remove, and after N (few photons) it can miss or split a neighbour it masked
in the original, while the unmasked measurement is dragged by the neighbour alike in both
images (and is far worse against the truth). The report shows all three, by group.

Augmented image ``j`` of ``M`` uses galaxy ``floor(j N / M)``: every galaxy gets ``M/N``
(+-1) images and a chunk of consecutive images needs only a few galaxies. Chunk ``c`` draws
from its own generator seeded by ``(seed, c)``, so the draws do not depend on the number of
worker processes (the angles agree to ~1e-12 degree across worker counts, see
:mod:`galpipe.validation.parallel`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from galpipe.science.core import RadonConfig, measure_batch
from galpipe.science.features import axial_difference
from galpipe.science.radon import RadonOperator
from galpipe.synthetic.rows import take_rows
from galpipe.validation import augment
from galpipe.validation.parallel import map_chunks
from galpipe.validation.peer import PeerConfig, PeerOutcomes, sep_orientation
from galpipe.validation.stats import (
    AXIS_RATIO_EDGES,
    SNR_EDGES,
    ErrorStats,
    bin_labels,
    binned_stats,
    error_stats,
    json_ready,
    stats_list,
)

__all__ = [
    "AUGMENTATION_SUBSETS",
    "CHUNK_IMAGES",
    "DeviationStats",
    "ProtocolResult",
    "ProtocolSummary",
    "describe_protocol",
    "operator_for",
    "protocol_tables",
    "run_protocol",
]

#: Augmented images per process-pool task (bounds a worker's memory to ~0.5 GB).
CHUNK_IMAGES = 2000
#: Every this many chunks (from chunk 0) are also measured with neighbour masking off.
UNMASKED_EVERY = 5
#: Mixed into every chunk's seed so the protocol's stream differs from the population's.
_PROTOCOL_SALT = 0x9A0
#: The non-empty subsets of {R, B, N}, named by the operations applied.
AUGMENTATION_SUBSETS = ("R", "B", "N", "RB", "RN", "BN", "RBN")


@dataclass(frozen=True)
class ProtocolResult:
    """One row per augmented image; arrays of shape ``(M,)``.

    Attributes
    ----------
    galaxy_index : numpy.ndarray
        Index of the truth galaxy in the population.
    apply_rotation, apply_blur, apply_resample : numpy.ndarray
        Which of R, B, N were applied.
    alpha_deg, blur_sigma_px, total_counts : numpy.ndarray
        The drawn parameters (drawn for every image, used where applied).
    deviation_ours_deg, deviation_peer_deg : numpy.ndarray
        Axial deviation from the prediction, degrees in [0, 90]; NaN where the method gave no
        angle on the original or the augmented image.
    deviation_ours_nomask_deg, deviation_neighbour_oracle_deg : numpy.ndarray
        The same for our measurement with neighbour masking off, and for the neighbour oracle
        (module docstring); NaN outside the sampled chunks (``unmasked_sampled``).
    unmasked_sampled : numpy.ndarray
        True for the images of the chunks also measured with masking off.
    peer_measured, peer_failed : numpy.ndarray
        True where the peer gave an angle on the augmented image, and where ``sep`` raised on
        it (no angle, and not for want of a detection:
        :class:`~galpipe.validation.peer.PeerOutcomes`).
    """

    galaxy_index: np.ndarray
    apply_rotation: np.ndarray
    apply_blur: np.ndarray
    apply_resample: np.ndarray
    alpha_deg: np.ndarray
    blur_sigma_px: np.ndarray
    total_counts: np.ndarray
    deviation_ours_deg: np.ndarray
    deviation_peer_deg: np.ndarray
    deviation_ours_nomask_deg: np.ndarray
    deviation_neighbour_oracle_deg: np.ndarray
    unmasked_sampled: np.ndarray
    peer_measured: np.ndarray
    peer_failed: np.ndarray

    def __len__(self) -> int:
        return int(self.galaxy_index.size)

    @property
    def subset(self) -> np.ndarray:
        """``(M,)`` names of the applied subsets, e.g. ``"RB"``."""
        names = np.array(["", "R", "B", "RB", "N", "RN", "BN", "RBN"])
        code = (
            self.apply_rotation.astype(int)
            + 2 * self.apply_blur.astype(int)
            + 4 * self.apply_resample.astype(int)
        )
        return names[code]


@dataclass(frozen=True)
class _Chunk:
    """One process-pool task: the galaxies a range of augmented images needs."""

    index: int
    seed: int
    galaxy_index: np.ndarray  # (m,) per augmented image
    images: np.ndarray  # (g, B, S, S) the distinct galaxies, in order
    neighbour_light: np.ndarray | None  # (g, B, S, S) in the sampled chunks, else None
    local_index: np.ndarray  # (m,) into images
    ours_reference_deg: np.ndarray  # (m,) image angle on the original
    peer_reference_deg: np.ndarray  # (m,)
    nomask_reference_deg: np.ndarray  # (m,)
    oracle_reference_deg: np.ndarray  # (m,)
    config: RadonConfig
    peer_config: PeerConfig


@functools.lru_cache(maxsize=2)
def operator_for(size: int, angles: tuple[float, ...], order: int) -> RadonOperator:
    """The Radon operator, loaded once per worker process (the protocol's and the floor's)."""
    return RadonOperator.load_or_build(size, np.asarray(angles), order)


def _run_chunk(chunk: _Chunk) -> dict[str, np.ndarray]:
    """Augment, measure with every method, and compare (one process-pool task)."""
    rng = np.random.default_rng(np.random.SeedSequence([chunk.seed, _PROTOCOL_SALT, chunk.index]))
    originals = chunk.images[chunk.local_index]
    params = augment.sample_augmentations(originals.shape[0], rng)
    augmented = augment.apply_augmentations(originals, params, rng)
    cfg = chunk.config
    operator = operator_for(cfg.size, cfg.angles_deg, cfg.order)
    ours = measure_batch(augmented, cfg, operator)
    peer = sep_orientation(augmented, chunk.peer_config, per_band=False)
    shift = params.angle_shift_deg
    sampled = chunk.index % UNMASKED_EVERY == 0
    nomask = np.full(originals.shape[0], np.nan)
    oracle = np.full(originals.shape[0], np.nan)
    if sampled:
        unmasked = dataclasses.replace(cfg, mask_neighbours=False)
        measured = measure_batch(augmented, unmasked, operator)
        nomask = axial_difference(measured.angle_image_deg - shift, chunk.nomask_reference_deg)
        oracle = _oracle_deviation(chunk, params, augmented, unmasked, operator, nomask)
    return {
        "galaxy_index": chunk.galaxy_index,
        "apply_rotation": params.apply_rotation,
        "apply_blur": params.apply_blur,
        "apply_resample": params.apply_resample,
        "alpha_deg": params.alpha_deg,
        "blur_sigma_px": params.blur_sigma_px,
        "total_counts": params.total_counts,
        "deviation_ours_deg": axial_difference(
            ours.angle_image_deg - shift, chunk.ours_reference_deg
        ),
        "deviation_peer_deg": axial_difference(
            peer.angle_image_deg - shift, chunk.peer_reference_deg
        ),
        "deviation_ours_nomask_deg": nomask,
        "deviation_neighbour_oracle_deg": oracle,
        "unmasked_sampled": np.full(originals.shape[0], sampled),
        "peer_measured": np.isfinite(peer.angle_image_deg),
        "peer_failed": peer.failed,
    }


def _oracle_deviation(
    chunk: _Chunk,
    params: augment.AugmentationParams,
    augmented: np.ndarray,
    unmasked: RadonConfig,
    operator: RadonOperator,
    nomask: np.ndarray,
) -> np.ndarray:
    """The neighbour oracle's deviations; the unmasked ones where no neighbour has light.

    All NaN when the run measures no oracle (no neighbour light given).
    """
    if chunk.neighbour_light is None:
        return np.full(nomask.shape, np.nan)
    lit = np.asarray(chunk.neighbour_light.any(axis=(1, 2, 3)))  # per distinct galaxy
    selected = np.flatnonzero(lit[chunk.local_index])
    oracle = nomask.copy()
    if selected.size:
        light = chunk.neighbour_light[chunk.local_index[selected]]
        scene = augment.expected_scene(light, take_rows(params, selected))
        measured = measure_batch(augmented[selected] - scene, unmasked, operator)
        oracle[selected] = axial_difference(
            measured.angle_image_deg - params.angle_shift_deg[selected],
            chunk.oracle_reference_deg[selected],
        )
    return oracle


def run_protocol(
    images: np.ndarray,
    ours_reference_deg: np.ndarray,
    peer_reference_deg: np.ndarray,
    nomask_reference_deg: np.ndarray,
    n_augment: int,
    seed: int,
    *,
    neighbour_light: np.ndarray | None = None,
    oracle_reference_deg: np.ndarray | None = None,
    config: RadonConfig | None = None,
    peer_config: PeerConfig | None = None,
    workers: int = 1,
    chunk_images: int = CHUNK_IMAGES,
) -> ProtocolResult:
    """Run the protocol on ``n_augment`` augmented images of the galaxies in ``images``.

    Parameters
    ----------
    images : numpy.ndarray
        ``(N, B, S, S)`` the truth population's cutouts.
    ours_reference_deg, peer_reference_deg, nomask_reference_deg : numpy.ndarray
        ``(N,)`` each method's combined *image* angle on the originals (NaN: none): ours, the
        peer, ours with masking off.
    n_augment : int
        Augmented images in all, ``M >= 0``.
    seed : int
        Seeds the augmentations (with the chunk index).
    neighbour_light, oracle_reference_deg : numpy.ndarray, optional
        ``(N, B, S, S)`` the exact light of each galaxy's neighbours
        (:func:`~galpipe.validation.population.render_neighbour_light`) and ``(N,)`` the
        neighbour oracle's image angle on the originals; both or neither. Without them the
        oracle is not measured (its deviations are NaN).
    config, peer_config
        The measurement and the peer; production defaults.
    workers : int
        Processes.
    chunk_images : int
        Augmented images per task.

    Returns
    -------
    ProtocolResult
    """
    n_galaxies = images.shape[0]
    if n_galaxies == 0 or n_augment < 0:
        raise ValueError(
            f"protocol: need galaxies and n_augment >= 0; got {n_galaxies} galaxies, "
            f"n_augment={n_augment}"
        )
    if (neighbour_light is None) != (oracle_reference_deg is None):
        raise ValueError(
            "protocol: neighbour_light and oracle_reference_deg go together (the neighbour "
            "oracle needs both); got one"
        )
    if neighbour_light is not None and neighbour_light.shape != images.shape:
        raise ValueError(
            f"protocol: neighbour_light has shape {neighbour_light.shape}, the images "
            f"{images.shape}: one stamp of neighbour light per image"
        )
    oracle_reference = (
        oracle_reference_deg if oracle_reference_deg is not None else np.full(n_galaxies, np.nan)
    )
    cfg = config if config is not None else RadonConfig()
    peer_cfg = peer_config if peer_config is not None else PeerConfig()
    tasks = []
    for index, start in enumerate(range(0, n_augment, chunk_images)):
        stop = min(n_augment, start + chunk_images)
        galaxy = np.arange(start, stop, dtype=np.int64) * n_galaxies // n_augment
        distinct, local = np.unique(galaxy, return_inverse=True)
        light = None
        if neighbour_light is not None and index % UNMASKED_EVERY == 0:
            light = np.ascontiguousarray(neighbour_light[distinct])
        tasks.append(
            _Chunk(
                index=index,
                seed=seed,
                galaxy_index=galaxy,
                images=np.ascontiguousarray(images[distinct]),
                neighbour_light=light,
                local_index=local,
                ours_reference_deg=ours_reference_deg[galaxy],
                peer_reference_deg=peer_reference_deg[galaxy],
                nomask_reference_deg=nomask_reference_deg[galaxy],
                oracle_reference_deg=oracle_reference[galaxy],
                config=cfg,
                peer_config=peer_cfg,
            )
        )
    parts = map_chunks(_run_chunk, tasks, workers)
    fields = ProtocolResult.__dataclass_fields__
    if not parts:
        return ProtocolResult(**{name: np.empty(0) for name in fields})
    return ProtocolResult(**{name: np.concatenate([p[name] for p in parts]) for name in fields})


def describe_protocol() -> dict[str, str]:
    """The protocol's distributions, in words, for the report."""
    lo_a, hi_a = augment.ROTATION_RANGE_DEG
    lo_b, hi_b = augment.BLUR_SIGMA_RANGE_PX
    lo_n, hi_n = augment.TOTAL_COUNTS_RANGE
    return {
        "subsets": "a non-empty subset of {R, B, N}, the 7 subsets equally likely "
        "(each operation with probability 4/7); applied in the order R, B, N",
        "R": f"rotation about the stamp centre, alpha ~ U[{lo_a:g}, {hi_a:g}) deg, bicubic; "
        "the corners brought in from outside the stamp hold no data (0, the cutout "
        "service's mark) and keep none through B and N",
        "B": f"Gaussian blur, sigma ~ U[{lo_b:g}, {hi_b:g}) pixels, zero outside the stamp, "
        "over the pixels with data only (normalised convolution)",
        "N": f"Poisson resampling, total counts ~ log-U[{lo_n:g}, {hi_n:g}) photons per stamp "
        "(all bands; negative sky pixels clipped to 0 first)",
        "deviation": "|(R_aug - alpha) - R_orig| axial, degrees in [0, 90]; alpha = 0 without R; "
        "R_orig = the same method on the un-augmented image",
        "galaxies": "augmented image j of M uses truth galaxy floor(j N / M)",
    }


@dataclass(frozen=True)
class DeviationStats:
    """One method's deviations over the protocol's images, by selection.

    Attributes
    ----------
    overall : ErrorStats
        Every image.
    by_axis_ratio, by_snr : tuple of ErrorStats
        By the truth galaxy's axis-ratio and S/N bin.
    by_subset : mapping of str to ErrorStats
        By the augmentation subset applied (:data:`AUGMENTATION_SUBSETS`).
    headline, isolated, neighbours, unflagged : ErrorStats
        Images of the truth headline's galaxies (isolated, q < 0.5, S/N > 50), of the isolated
        galaxies, of those with neighbours, and of the galaxies whose original measurement
        (ours) has no flag -- what a catalogue user keeps.
    """

    overall: ErrorStats
    by_axis_ratio: tuple[ErrorStats, ...]
    by_snr: tuple[ErrorStats, ...]
    by_subset: Mapping[str, ErrorStats]
    headline: ErrorStats
    isolated: ErrorStats
    neighbours: ErrorStats
    unflagged: ErrorStats

    def to_json(self) -> dict[str, Any]:
        """One key per attribute."""
        return {
            "overall": self.overall.to_json(),
            "by_axis_ratio": [d.to_json() for d in self.by_axis_ratio],
            "by_snr": [d.to_json() for d in self.by_snr],
            "by_subset": {name: d.to_json() for name, d in self.by_subset.items()},
            "headline": self.headline.to_json(),
            "isolated": self.isolated.to_json(),
            "neighbours": self.neighbours.to_json(),
            "unflagged": self.unflagged.to_json(),
        }

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Self:
        """The inverse of :meth:`to_json`."""
        return cls(
            overall=ErrorStats.from_json(values["overall"]),
            by_axis_ratio=stats_list(values["by_axis_ratio"]),
            by_snr=stats_list(values["by_snr"]),
            by_subset={k: ErrorStats.from_json(v) for k, v in values["by_subset"].items()},
            headline=ErrorStats.from_json(values["headline"]),
            isolated=ErrorStats.from_json(values["isolated"]),
            neighbours=ErrorStats.from_json(values["neighbours"]),
            unflagged=ErrorStats.from_json(values["unflagged"]),
        )


@dataclass(frozen=True)
class ProtocolSummary:
    """The protocol's statistics, every method side by side.

    Attributes
    ----------
    n_images, n_sampled : int
        Augmented images, and of them those also measured with masking off.
    axis_ratio_bins, snr_bins : tuple of str
        Labels of the bins of every ``by_axis_ratio`` and ``by_snr``.
    distributions : mapping of str to str
        The protocol's draws in words (:func:`describe_protocol`).
    ours, peer : DeviationStats
        Every image.
    ours_nomask, neighbour_oracle : DeviationStats
        Ours with masking off, and the neighbour oracle (module docstring), on the sampled
        images.
    ours_sampled, peer_sampled : DeviationStats
        Ours and the peer on those same images, for a like comparison.
    peer_outcomes : PeerOutcomes
        How the peer's measurements of the augmented images ended.
    """

    n_images: int
    n_sampled: int
    axis_ratio_bins: tuple[str, ...]
    snr_bins: tuple[str, ...]
    distributions: Mapping[str, str]
    ours: DeviationStats
    peer: DeviationStats
    ours_nomask: DeviationStats
    neighbour_oracle: DeviationStats
    ours_sampled: DeviationStats
    peer_sampled: DeviationStats
    peer_outcomes: PeerOutcomes

    def methods(self) -> dict[str, DeviationStats]:
        """Method name -> its statistics: ``ours``, ``peer``, ``ours_nomask``,
        ``neighbour_oracle``, the sampled."""
        return {
            "ours": self.ours,
            "peer": self.peer,
            "ours_nomask": self.ours_nomask,
            "neighbour_oracle": self.neighbour_oracle,
            "ours_sampled": self.ours_sampled,
            "peer_sampled": self.peer_sampled,
        }

    def to_json(self) -> dict[str, Any]:
        """JSON-ready, one key per attribute (the methods by name)."""
        return json_ready(
            {
                "n_images": self.n_images,
                "n_sampled": self.n_sampled,
                "axis_ratio_bins": self.axis_ratio_bins,
                "snr_bins": self.snr_bins,
                "distributions": dict(self.distributions),
                **{name: stats.to_json() for name, stats in self.methods().items()},
                "peer_outcomes": self.peer_outcomes.to_json(),
            }
        )

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Self:
        """The inverse of :meth:`to_json`."""
        return cls(
            n_images=values["n_images"],
            n_sampled=values["n_sampled"],
            axis_ratio_bins=tuple(values["axis_ratio_bins"]),
            snr_bins=tuple(values["snr_bins"]),
            distributions=dict(values["distributions"]),
            ours=DeviationStats.from_json(values["ours"]),
            peer=DeviationStats.from_json(values["peer"]),
            ours_nomask=DeviationStats.from_json(values["ours_nomask"]),
            neighbour_oracle=DeviationStats.from_json(values["neighbour_oracle"]),
            ours_sampled=DeviationStats.from_json(values["ours_sampled"]),
            peer_sampled=DeviationStats.from_json(values["peer_sampled"]),
            peer_outcomes=PeerOutcomes.from_json(values["peer_outcomes"]),
        )


def protocol_tables(
    result: ProtocolResult,
    axis_ratio: np.ndarray,
    snr: np.ndarray,
    isolated: np.ndarray,
    headline: np.ndarray,
    unflagged: np.ndarray,
) -> ProtocolSummary:
    """The protocol's statistics (:class:`ProtocolSummary`).

    Parameters
    ----------
    result : ProtocolResult
    axis_ratio, snr, isolated, headline, unflagged : numpy.ndarray
        ``(N,)`` per truth galaxy (indexed by ``result.galaxy_index``); ``headline`` selects
        the truth headline's galaxies (isolated, q < 0.5, S/N > 50); ``unflagged`` the galaxies
        whose original measurement (ours) has no flag -- what a catalogue user keeps.
    """
    sampled = result.unmasked_sampled
    galaxies = _GalaxyProperties(axis_ratio, snr, isolated, headline, unflagged)

    def stats(deviation: np.ndarray, keep: np.ndarray | slice) -> DeviationStats:
        return _deviation_stats(result, deviation, keep, galaxies)

    return ProtocolSummary(
        n_images=len(result),
        n_sampled=int(sampled.sum()),
        axis_ratio_bins=tuple(bin_labels(AXIS_RATIO_EDGES)),
        snr_bins=tuple(bin_labels(SNR_EDGES)),
        distributions=describe_protocol(),
        ours=stats(result.deviation_ours_deg, slice(None)),
        peer=stats(result.deviation_peer_deg, slice(None)),
        ours_nomask=stats(result.deviation_ours_nomask_deg, sampled),
        neighbour_oracle=stats(result.deviation_neighbour_oracle_deg, sampled),
        ours_sampled=stats(result.deviation_ours_deg, sampled),
        peer_sampled=stats(result.deviation_peer_deg, sampled),
        peer_outcomes=PeerOutcomes.of(result.peer_measured, result.peer_failed),
    )


@dataclass(frozen=True)
class _GalaxyProperties:
    """``(N,)`` per truth galaxy: what the protocol's images are grouped by."""

    axis_ratio: np.ndarray
    snr: np.ndarray
    isolated: np.ndarray
    headline: np.ndarray
    unflagged: np.ndarray


def _deviation_stats(
    result: ProtocolResult,
    deviation: np.ndarray,
    keep: np.ndarray | slice,
    galaxies: _GalaxyProperties,
) -> DeviationStats:
    """:class:`DeviationStats` of the images ``keep`` selects."""
    deviation = deviation[keep]
    galaxy = result.galaxy_index[keep]
    subsets = result.subset[keep]
    iso = galaxies.isolated[galaxy]
    return DeviationStats(
        overall=error_stats(deviation),
        by_axis_ratio=tuple(binned_stats(deviation, galaxies.axis_ratio[galaxy], AXIS_RATIO_EDGES)),
        by_snr=tuple(binned_stats(deviation, galaxies.snr[galaxy], SNR_EDGES)),
        by_subset={name: error_stats(deviation[subsets == name]) for name in AUGMENTATION_SUBSETS},
        headline=error_stats(deviation[galaxies.headline[galaxy]]),
        isolated=error_stats(deviation[iso]),
        neighbours=error_stats(deviation[~iso]),
        unflagged=error_stats(deviation[galaxies.unflagged[galaxy]]),
    )
