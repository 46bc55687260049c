"""Labelled sets for training and evaluation: the synthetic Galaxy Zoo, and our stored cutouts.

The Kaggle layout and labels tables are read by :mod:`galpipe.catalog.morphology_data`; this
module adds the two sources that need more of galpipe: the synthetic Galaxy Zoo (whose true
fractions and S/N come along, so the vote-noise floor is known) and the cutouts a galpipe
deployment has already fetched, read from its object store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from psycopg_pool import ConnectionPool

from galpipe.catalog.morphology_data import read_fits_with_labels
from galpipe.db.cutouts import CutoutRecord, cutouts_for, fetched_source_ids
from galpipe.db.galaxies import positions
from galpipe.errors import InputError
from galpipe.learning.dataset import LabelledImages
from galpipe.pipelines.cutout_packs import read_cutout_bytes
from galpipe.science.morphology_input import network_input
from galpipe.storage import ObjectStore

__all__ = ["SyntheticSet", "fetched_cutouts_with_labels", "synthetic_set"]


@dataclass(frozen=True)
class SyntheticSet:
    """A synthetic Galaxy Zoo ready for a network, with what only a simulation knows.

    Attributes
    ----------
    data : LabelledImages
        Network inputs and the volunteers' vote fractions (the labels a model is trained on).
    true_fractions : numpy.ndarray
        ``(N, 37)`` fractions without vote noise.
    snr : numpy.ndarray
        ``(N,)`` r-band half-light S/N.
    n_volunteers : int
        Volunteers per galaxy.
    """

    data: LabelledImages
    true_fractions: npt.NDArray[np.float64]
    snr: npt.NDArray[np.float64]
    n_volunteers: int


def synthetic_set(
    n: int, *, seed: int = 0, mode: str = "asinh_bands", processes: int = 1
) -> SyntheticSet:
    """``n`` galaxies of the synthetic Galaxy Zoo, rendered into network inputs of ``mode``.

    The sample is :func:`galpipe.synthetic.galaxy_zoo.sample_galaxy_zoo`'s; its labels are the
    volunteers' vote fractions.

    Needs GalSim (the ``sim`` extra).
    """
    from galpipe.synthetic.galaxy_zoo import sample_galaxy_zoo

    sample = sample_galaxy_zoo(n, seed=seed, processes=processes)
    data = LabelledImages(
        ids=sample.ids,
        images=network_input(sample.stamps, mode),
        fractions=sample.vote_fractions,
        source=f"synthetic Galaxy Zoo: {n} galaxies, seed {seed}, {sample.n_volunteers} "
        f"volunteers, input {mode}",
    )
    return SyntheticSet(data, sample.true_fractions, sample.morphologies.snr, sample.n_volunteers)


def fetched_cutouts_with_labels(
    pool: ConnectionPool,
    store: ObjectStore,
    labels_path: Path,
    *,
    match: Literal["source_id", "radec"] = "source_id",
    radius_arcsec: float = 1.0,
    mode: str = "asinh_bands",
) -> LabelledImages:
    """The deployment's fetched cutouts, labelled from a table of vote fractions.

    Every galaxy with a ``cutouts`` row is read (checked against its SHA-256) and matched to
    the labels by ``source_id`` or by position (:func:`read_fits_with_labels`); galaxies without
    a label come back in ``unmatched``.

    Raises
    ------
    InputError
        If no cutout has been fetched yet, or the labels cannot be matched.
    """
    with pool.connection() as conn:
        ids = fetched_source_ids(conn)
        records: dict[int, CutoutRecord] = cutouts_for(conn, ids)
        where = positions(conn, ids) if match == "radec" else None
    if not records:
        raise InputError("no cutouts have been fetched yet: run the fetch pipeline first")
    size = {r.size for r in records.values()}
    if len(size) != 1:
        raise InputError(f"fetched cutouts have several sizes {sorted(size)}: train on one")
    blobs = ((sid, read_cutout_bytes(store, r)) for sid, r in records.items())
    return read_fits_with_labels(
        blobs,
        labels_path,
        match=match,
        positions=where,
        radius_arcsec=radius_arcsec,
        mode=mode,
        size=size.pop(),
    )
