"""Galaxies with spectroscopic redshifts and their cutouts: the data a photo-z model learns from.

Two sources: the synthetic photo-z sky (:func:`synthetic_set`), and the cutouts this deployment
has fetched matched to a spectroscopic catalogue (:func:`fetched_cutouts_with_redshifts`) -- the
document's CasJobs CSV, columns ``id, ra, dec, redshift, redshiftError, class``. Either way the
per-pixel errors are what the worker gives the same cutout, so a model learns from the vectors it
will be asked about: the band's sky noise measured in the stamp
(:func:`galpipe.science.photoz_pixels.sky_noise_errors`) for a Legacy Survey cutout, the
cutout's own error planes for one fetched from SDSS frames
(:func:`galpipe.pipelines.stored_cutouts.pixel_errors`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from psycopg_pool import ConnectionPool

from galpipe.catalog.morphology_data import match_by_position, match_by_source_id
from galpipe.catalog.read import read_table
from galpipe.catalog.validate import CatalogError
from galpipe.db.cutouts import fetched_source_ids
from galpipe.db.galaxies import positions
from galpipe.errors import InputError, StorageError
from galpipe.pipelines.base import Retry
from galpipe.pipelines.stored_cutouts import StoredCutoutReader, pixel_errors, split_reads
from galpipe.science.photoz_pixels import sky_noise_errors
from galpipe.storage import ObjectStore

__all__ = [
    "ERROR_SOURCE",
    "SPEC_COLUMNS",
    "SpectroscopicCutouts",
    "SpectroscopicDataError",
    "fetched_cutouts_with_redshifts",
    "read_spectroscopic_catalog",
    "synthetic_set",
]

#: The columns of the spectroscopic catalogue this reads (the document's CasJobs query).
SPEC_COLUMNS: tuple[str, ...] = ("id", "ra", "dec", "redshift", "class")
#: The class of the catalogue rows kept.
GALAXY_CLASS = "GALAXY"
#: Where the per-pixel errors come from (``error_source`` of the photo-z design).
ERROR_SOURCE = "sky_noise"


class SpectroscopicDataError(InputError, ValueError):
    """A spectroscopic catalogue or its matching cannot be used; the message says which."""


@dataclass(frozen=True)
class SpectroscopicCutouts:
    """Cutouts of galaxies and their spectroscopic redshifts, row for row.

    Attributes
    ----------
    ids : numpy.ndarray
        int64 ``(N,)`` galaxy ids (galpipe ``source_id``).
    cubes : numpy.ndarray
        float32 ``(N, 4, S, S)`` griz stamps, nanomaggies, the galaxy at the centre.
    sigmas : numpy.ndarray
        float32 ``(N, 4, S, S)`` their 1σ errors, nanomaggies (:data:`ERROR_SOURCE`).
    z_spec : numpy.ndarray
        float64 ``(N,)`` spectroscopic redshifts.
    source : str
        What the data came from, for the report.
    unmatched : numpy.ndarray
        int64 ids of fetched galaxies without a redshift in the catalogue.
    unreadable : dict
        ``source_id -> reason`` of matched galaxies whose stored cutout could not be used.
    """

    ids: npt.NDArray[np.int64]
    cubes: npt.NDArray[np.float32]
    sigmas: npt.NDArray[np.float32]
    z_spec: npt.NDArray[np.float64]
    source: str
    unmatched: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    unreadable: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def synthetic_set(n: int, *, seed: int = 0, processes: int = 1) -> SpectroscopicCutouts:
    """``n`` galaxies of the synthetic photo-z sky, with their true redshifts.

    The sample is :func:`galpipe.synthetic.photoz_sky.sample_photoz_sky`'s.

    Needs GalSim (the ``sim`` extra).
    """
    from galpipe.synthetic.photoz_sky import sample_photoz_sky

    sample = sample_photoz_sky(n, seed=seed, processes=processes)
    cubes = sample.stamps.images
    return SpectroscopicCutouts(
        ids=np.asarray(sample.galaxies.source_id, dtype=np.int64),
        cubes=cubes,
        sigmas=sky_noise_errors(cubes),
        z_spec=np.asarray(sample.galaxies.redshift, dtype=np.float64),
        source=f"synthetic photo-z sky: {n} galaxies, seed {seed}, errors {ERROR_SOURCE}",
    )


def read_spectroscopic_catalog(path: Path) -> Any:
    """The catalogue's rows of class GALAXY with a finite redshift, as an astropy Table.

    Raises
    ------
    SpectroscopicDataError
        If the file cannot be read as a table, lacks a column of :data:`SPEC_COLUMNS`, or has
        no GALAXY row with a finite redshift (the message names the file).
    """
    path = Path(path)
    try:
        table = read_table(path)
    except CatalogError as exc:
        raise SpectroscopicDataError(f"spectroscopic catalogue: {exc}") from exc
    missing = [c for c in SPEC_COLUMNS if c not in table.colnames]
    if missing:
        raise SpectroscopicDataError(
            f"{path}: the spectroscopic catalogue lacks the column(s) {', '.join(missing)} "
            f"(expected {', '.join(SPEC_COLUMNS)}, redshiftError optional; has "
            f"{', '.join(table.colnames)})"
        )
    classes = np.char.upper(np.char.strip(np.asarray(table["class"]).astype(str)))
    try:
        redshift = np.ma.filled(np.ma.asarray(table["redshift"], dtype=np.float64), np.nan)
    except (TypeError, ValueError):
        raise SpectroscopicDataError(f"{path}: column redshift is not numeric") from None
    keep = (classes == GALAXY_CLASS) & np.isfinite(redshift) & (redshift > -1)
    if not keep.any():
        raise SpectroscopicDataError(
            f"{path}: none of its {len(table)} rows is of class {GALAXY_CLASS} with a finite "
            "redshift"
        )
    kept = table[keep]
    kept["redshift"] = redshift[keep]
    # The matchers of the labels tables read a source_id column: the catalogue's id is one.
    kept["source_id"] = kept["id"]
    return kept


def fetched_cutouts_with_redshifts(
    pool: ConnectionPool,
    store: ObjectStore,
    catalog_path: Path,
    *,
    match: Literal["source_id", "radec"] = "source_id",
    radius_arcsec: float = 1.0,
    catalog: Any = None,
    on_progress: Callable[[str], None] | None = None,
) -> SpectroscopicCutouts:
    """The deployment's fetched cutouts with the redshifts of a spectroscopic catalogue.

    Every galaxy with a ``cutouts`` row is matched to the catalogue's GALAXY rows by
    ``source_id = id`` or by position within ``radius_arcsec``
    (the labels matchers of :mod:`galpipe.catalog.morphology_data`); the matched galaxies'
    cutouts are read from the store, checked against their SHA-256
    (:class:`~galpipe.pipelines.stored_cutouts.StoredCutoutReader`). ``catalog``: the table
    :func:`read_spectroscopic_catalog` already read from ``catalog_path``, if it was.

    Raises
    ------
    SpectroscopicDataError
        If the catalogue is unusable, nothing has been fetched, no galaxy matches, the cutouts
        have several sizes, or none of the matched cutouts can be read.
    StorageError
        If the object store cannot be reached.
    """
    catalog_path = Path(catalog_path)
    table = catalog if catalog is not None else read_spectroscopic_catalog(catalog_path)
    with pool.connection() as conn:
        galaxies = fetched_source_ids(conn)
    if not galaxies:
        raise SpectroscopicDataError(
            "no cutouts have been fetched yet: run the fetch pipeline first"
        )
    if match == "source_id":
        row = match_by_source_id(table, catalog_path, galaxies)
    elif match == "radec":
        with pool.connection() as conn:
            where = positions(conn, galaxies)
        row = match_by_position(table, catalog_path, galaxies, where, radius_arcsec)
    else:
        raise SpectroscopicDataError(f"match must be 'source_id' or 'radec', got {match!r}")
    matched = row >= 0
    unmatched = np.asarray([g for g, m in zip(galaxies, matched, strict=True) if not m], np.int64)
    if not matched.any():
        raise SpectroscopicDataError(
            f"{catalog_path}: none of the {len(galaxies)} fetched galaxies matches a GALAXY row "
            f"with a redshift (match={match}"
            + (f', radius {radius_arcsec:g}"' if match == "radec" else "")
            + f"); fetched source_id {', '.join(map(str, galaxies[:5]))}"
            + (" ..." if len(galaxies) > 5 else "")
        )
    ids = [g for g, m in zip(galaxies, matched, strict=True) if m]
    z_of = dict(
        zip(ids, np.asarray(table["redshift"], dtype=np.float64)[row[matched]], strict=True)
    )
    if on_progress is not None:
        on_progress(f"reading {len(ids)} matched cutouts")
    reader = StoredCutoutReader(pool, store, name="photoz-read")
    try:
        decoded, failed = split_reads(ids, reader.submit(ids))
    finally:
        reader.close()
    cubes = [cutout.data for _, cutout in decoded]
    kept = [galaxy for galaxy, _ in decoded]
    unreadable: dict[int, str] = {}
    for outcome in failed:
        if isinstance(outcome, Retry):
            raise StorageError(
                f"reading the cutout of source_id {outcome.source_id}: {outcome.error}"
            )
        unreadable[outcome.source_id] = getattr(outcome, "reason", str(outcome))
    if not kept:
        first = next(iter(unreadable.items()))
        raise SpectroscopicDataError(
            f"none of the {len(ids)} matched cutouts can be read (source_id {first[0]}: {first[1]})"
        )
    sizes = {c.shape[-1] for c in cubes}
    if len(sizes) != 1:
        raise SpectroscopicDataError(
            f"fetched cutouts have several sizes {sorted(sizes)}: train on one"
        )
    # As the worker reads them (pipelines.photoz): a band a cutout lacks is an all-zero plane,
    # whose sky noise of 0 makes its pixels no data.
    stack = np.stack(cubes).astype(np.float32)
    # As the worker gives them: a cutout's own error planes (SDSS), else the sky noise.
    sigmas, error_sources = pixel_errors(stack, [cutout for _, cutout in decoded])
    return SpectroscopicCutouts(
        ids=np.asarray(kept, dtype=np.int64),
        cubes=stack,
        sigmas=sigmas,
        z_spec=np.asarray([z_of[g] for g in kept], dtype=np.float64),
        source=f"{catalog_path} (match={match}, {len(kept)} of {len(galaxies)} fetched "
        f"galaxies with a redshift; errors {', '.join(sorted(set(error_sources)))})",
        unmatched=unmatched,
        unreadable=unreadable,
    )
