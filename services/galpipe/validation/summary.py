"""The whole validation run as data: :class:`ValidationSummary`, the content of ``summary.json``.

Each stage returns its own frozen dataclass (:class:`~galpipe.validation.truth.TruthSummary`,
:class:`~galpipe.validation.protocol.ProtocolSummary`,
:class:`~galpipe.validation.oracle.FloorSummary`, :class:`~galpipe.validation.gaia.GaiaSummary`,
:class:`~galpipe.validation.lensing.LensingSummary`); this module adds the run's headline,
configuration and timings and puts them together. Every class has ``to_json()``
(``summary.json``'s object for it: NaN as null) and ``from_json()`` (its inverse), so the report
renders from the file exactly what it renders from the run.

In memory a statistic of nothing is NaN; in ``summary.json`` it is null.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from galpipe.validation.gaia import GaiaSummary
from galpipe.validation.lensing import LensingSummary
from galpipe.validation.oracle import FloorSummary
from galpipe.validation.protocol import ProtocolSummary
from galpipe.validation.stats import json_ready, nan_if_none
from galpipe.validation.truth import TruthSummary

__all__ = ["Headline", "RunConfig", "Timing", "ValidationSummary"]


@dataclass(frozen=True)
class Headline:
    """The headline numbers of a run (degrees unless said; NaN where nothing was measured).

    Attributes
    ----------
    truth_median_deg, peer_truth_median_deg : float
        Median combined axial error vs truth, isolated galaxies with q < 0.5 and S/N > 50,
        ours and the peer.
    aug_mean_deg, aug_median_deg : float
        Mean and median deviation of our angle over the augmentation protocol.
    peer_aug_mean_deg, peer_aug_median_deg : float
        The same for the peer.
    floor_aug_mean_deg, floor_ours_aug_mean_deg : float
        The protocol's mean deviation of the oracle (:mod:`galpipe.validation.oracle`) and of
        ours, on the same augmented images of the oracle's isolated galaxies.
    coverage_1sigma, coverage_2sigma : float
        Fraction of all galaxies whose combined error is within 1 and 2 reported sigma.
    n_truth, n_augment : int
        Sizes of the run.
    """

    truth_median_deg: float
    peer_truth_median_deg: float
    aug_mean_deg: float
    aug_median_deg: float
    peer_aug_mean_deg: float
    peer_aug_median_deg: float
    floor_aug_mean_deg: float
    floor_ours_aug_mean_deg: float
    coverage_1sigma: float
    coverage_2sigma: float
    n_truth: int
    n_augment: int

    @classmethod
    def of(
        cls, truth: TruthSummary, protocol: ProtocolSummary, floor: FloorSummary, *, n_truth: int
    ) -> Self:
        """The headline of a run of ``n_truth`` galaxies, from its stage summaries."""
        coverage = truth.calibration["all"]["ours_combined"]
        return cls(
            truth_median_deg=truth.headline.ours.median_deg,
            peer_truth_median_deg=truth.headline.peer.median_deg,
            aug_mean_deg=protocol.ours.overall.mean_deg,
            aug_median_deg=protocol.ours.overall.median_deg,
            peer_aug_mean_deg=protocol.peer.overall.mean_deg,
            peer_aug_median_deg=protocol.peer.overall.median_deg,
            floor_aug_mean_deg=floor.oracle.deviation.overall.mean_deg,
            floor_ours_aug_mean_deg=floor.ours.deviation.overall.mean_deg,
            coverage_1sigma=coverage.within_1sigma,
            coverage_2sigma=coverage.within_2sigma,
            n_truth=n_truth,
            n_augment=protocol.n_images,
        )

    def to_json(self) -> dict[str, Any]:
        """One key per attribute (NaN becomes None)."""
        return json_ready(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Self:
        """The inverse of :meth:`to_json`."""
        return cls(
            truth_median_deg=nan_if_none(values["truth_median_deg"]),
            peer_truth_median_deg=nan_if_none(values["peer_truth_median_deg"]),
            aug_mean_deg=nan_if_none(values["aug_mean_deg"]),
            aug_median_deg=nan_if_none(values["aug_median_deg"]),
            peer_aug_mean_deg=nan_if_none(values["peer_aug_mean_deg"]),
            peer_aug_median_deg=nan_if_none(values["peer_aug_median_deg"]),
            floor_aug_mean_deg=nan_if_none(values["floor_aug_mean_deg"]),
            floor_ours_aug_mean_deg=nan_if_none(values["floor_ours_aug_mean_deg"]),
            coverage_1sigma=nan_if_none(values["coverage_1sigma"]),
            coverage_2sigma=nan_if_none(values["coverage_2sigma"]),
            n_truth=values["n_truth"],
            n_augment=values["n_augment"],
        )


@dataclass(frozen=True)
class RunConfig:
    """What a run measured with, and the command that repeats it.

    Attributes
    ----------
    algo_version : str
        Our measurement's configuration (:attr:`galpipe.science.core.RadonConfig.algo_version`).
    peer : str
        The peer's (:attr:`galpipe.validation.peer.PeerConfig.tag`).
    seed : int
        Seeds the population and the augmentations.
    quick : bool
        Whether ``--quick`` chose the sizes it was not given.
    command : str
        The ``galpipe validate`` command line of the run.
    """

    algo_version: str
    peer: str
    seed: int
    quick: bool
    command: str

    def to_json(self) -> dict[str, Any]:
        """One key per attribute."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Self:
        """The inverse of :meth:`to_json`."""
        return cls(**values)


@dataclass(frozen=True)
class Timing:
    """How long the run took, seconds.

    Attributes
    ----------
    stages_s : mapping of str to float
        Wall time of each stage, by name.
    total_s : float
        Wall time of the whole run.
    cpu_s : float
        CPU time of the run, every process (the pool's workers included).
    workers : int
        Processes of the pool.

    ``to_json`` writes the stages, ``total``, ``cpu`` and ``workers`` side by side.
    """

    stages_s: Mapping[str, float]
    total_s: float
    cpu_s: float
    workers: int

    def seconds(self) -> dict[str, float]:
        """Every time by name -- the stages, ``total`` and ``cpu`` -- sorted by name."""
        times = {**self.stages_s, "total": self.total_s, "cpu": self.cpu_s}
        return dict(sorted(times.items()))

    def to_json(self) -> dict[str, Any]:
        """The stages, ``total`` and ``cpu`` by name, and ``workers``."""
        return {**self.seconds(), "workers": self.workers}

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Self:
        """The inverse of :meth:`to_json`."""
        stages = {k: v for k, v in values.items() if k not in ("total", "cpu", "workers")}
        return cls(stages, values["total"], values["cpu"], values["workers"])


@dataclass(frozen=True)
class ValidationSummary:
    """Everything a validation run found (``summary.json``); the report is rendered from it.

    Attributes
    ----------
    headline : Headline
        The headline numbers.
    config : RunConfig
        The configurations, the seed and the command.
    population : mapping of str to Any
        The truth population's distributions in words, by name
        (:meth:`galpipe.validation.population.PopulationConfig.describe`).
    truth, protocol, floor, gaia
        Each stage's summary.
    lensing : LensingSummary or None
        The fit for weak lensing; None where the run switched it off (``null`` in JSON).
    timing : Timing
        Wall and CPU times (``timing_s`` in JSON).
    """

    headline: Headline
    config: RunConfig
    population: Mapping[str, Any]
    truth: TruthSummary
    protocol: ProtocolSummary
    floor: FloorSummary
    gaia: GaiaSummary
    lensing: LensingSummary | None
    timing: Timing

    def to_json(self) -> dict[str, Any]:
        """``summary.json``'s object: JSON-ready, NaN as None."""
        return json_ready(
            {
                "headline": self.headline.to_json(),
                "config": self.config.to_json(),
                "population": dict(self.population),
                "truth": self.truth.to_json(),
                "protocol": self.protocol.to_json(),
                "floor": self.floor.to_json(),
                "gaia": self.gaia.to_json(),
                "lensing": None if self.lensing is None else self.lensing.to_json(),
                "timing_s": self.timing.to_json(),
            }
        )

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Self:
        """The summary that :meth:`to_json` wrote (e.g. ``json.load`` of ``summary.json``)."""
        return cls(
            headline=Headline.from_json(document["headline"]),
            config=RunConfig.from_json(document["config"]),
            population=dict(document["population"]),
            truth=TruthSummary.from_json(document["truth"]),
            protocol=ProtocolSummary.from_json(document["protocol"]),
            floor=FloorSummary.from_json(document["floor"]),
            gaia=GaiaSummary.from_json(document["gaia"]),
            lensing=None
            if document["lensing"] is None
            else LensingSummary.from_json(document["lensing"]),
            timing=Timing.from_json(document["timing_s"]),
        )
