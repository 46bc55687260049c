"""Catalog ingest: read a galaxy catalogue, check every row, store the good ones in bulk.

``galpipe ingest FILE`` and :func:`ingest_catalog` run the same steps:

1. **Read** the whole file with :meth:`astropy.table.Table.read` (CSV, ECSV, FITS, VOTable; any
   other astropy reader by name). A file that is missing, empty, not a table, or lacks the id or
   coordinate columns stops here with a :class:`~galpipe.catalog.validate.CatalogError` naming
   the file and the problem.
2. **Validate** the id, ra and dec columns with vectorised numpy checks
   (:func:`~galpipe.catalog.validate.validate_rows`). A rejected row keeps its 1-based data-row
   number and every reason.
3. **Store** the accepted rows in chunks (``chunk_rows``): each chunk is COPYed to a staging
   table, inserted with ``ON CONFLICT DO NOTHING`` and its ``fetch`` tasks are queued, all in
   one transaction. An interrupted ingest keeps the chunks it committed; running it again
   resumes, since rows already present change nothing.
4. **Report**: rejected rows go to a CSV (``row,source_id,reason,ra,dec``, raw values as read)
   and the :class:`IngestSummary` reconciles: ``read = ingested + already_present + rejected``.

Decisions worth knowing:

- Ids must be integers in ``[0, 2**63)`` (Gaia ``source_id`` is a positive int64). A
  floating-point id column is accepted only row by row where the value is integral and at most
  ``2**53``: above that a float cannot tell neighbouring integers apart, so the id may already
  be wrong (Gaia ids are ~1e18; export them as integers).
- Of several rows with one id, the first *otherwise valid* row is kept; later ones are rejected
  as ``duplicate source_id (first at row N)``.
- A galaxy is never modified once stored. An id already stored at the same position (within
  :data:`~galpipe.db.galaxies.SAME_POSITION_TOLERANCE_DEG`) counts as *already present* (its
  ``extra`` and ``catalog`` stay as first ingested); one stored at a different position is
  *rejected* with the stored coordinates in the reason, and gets no fetch task.
- Every column other than id/ra/dec (or the ``keep`` list) is stored in ``galaxies.extra`` as
  JSON, values verbatim: NaN, infinities and masked values become ``null``; float32 values
  keep their shortest decimal form (``0.1``, not ``0.10000000149011612``).
- Coordinate columns with an angle unit (FITS ``TUNIT``, VOTable or ECSV ``unit``) are
  converted to degrees; without a unit they are taken to be degrees.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from psycopg_pool import ConnectionPool

from galpipe.catalog.extras import extra_json
from galpipe.catalog.read import COMPRESSION_SUFFIXES, LoadedCatalog, load_catalog
from galpipe.catalog.report import (
    Rejection,
    default_report_path,
    prepare_report,
    write_report,
)
from galpipe.catalog.validate import CatalogError
from galpipe.db.galaxies import StagedRow, insert_galaxies
from galpipe.db.queue import TaskQueue

log = logging.getLogger(__name__)

FETCH_PIPELINE = "fetch"
DEFAULT_CHUNK_ROWS = 100_000


@dataclass(frozen=True)
class IngestSummary:
    """What an ingest did. ``read = ingested + already_present + rejected`` always holds.

    Attributes
    ----------
    read
        Data rows in the file.
    ingested
        Galaxies newly stored.
    already_present
        Rows whose galaxy was already stored with the same coordinates (left as it was).
    rejected
        Rows not stored; each is in the report with its reasons.
    fetch_queued
        ``fetch`` tasks newly queued (galaxies that already had one keep it).
    report_path
        The report of rejected rows, or None when no row was rejected.
    """

    read: int
    ingested: int
    already_present: int
    rejected: int
    fetch_queued: int
    report_path: Path | None

    def __post_init__(self) -> None:
        counts = (self.read, self.ingested, self.already_present, self.rejected)
        if min(*counts, self.fetch_queued) < 0:
            raise ValueError(f"negative count in {self}")
        if self.read != self.ingested + self.already_present + self.rejected:
            raise ValueError(
                f"ingest counts do not reconcile: read {self.read} != ingested "
                f"{self.ingested} + already present {self.already_present} + rejected "
                f"{self.rejected}"
            )
        if (self.report_path is None) != (self.rejected == 0):
            raise ValueError(f"rejected rows need a report and only they do: {self}")


def default_catalog_name(path: Path) -> str:
    """The file name without its table and compression suffixes (``gaia.fits.gz`` → ``gaia``)."""
    name = path.name
    for suffix in COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    stem = Path(name).stem
    return stem or path.name


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int, label: str) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(rows)``; draws a rich bar on stderr only when ``enabled``."""
    if not enabled:
        yield lambda rows: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda rows: bar.advance(task, rows)


def store_catalog(
    pool: ConnectionPool,
    catalog: LoadedCatalog,
    *,
    catalog_name: str | None = None,
    report_path: str | os.PathLike[str] | None = None,
    progress: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> IngestSummary:
    """Store the accepted rows of ``catalog`` and queue their fetch tasks, chunk by chunk.

    Parameters
    ----------
    pool
        Connection pool on the galpipe database.
    catalog
        The output of :func:`load_catalog`.
    catalog_name
        Recorded in ``galaxies.catalog``; defaults to the file name without suffixes.
    report_path
        Where rejected rows are listed; defaults to ``<file>.rejected.csv`` next to the file.
        A report left by an earlier run is removed, and one is written only if a row is
        rejected.
    progress
        Draw a progress bar on stderr when the file has more than one chunk of rows.
    chunk_rows
        Accepted rows per COPY and transaction (bounds memory and transaction size).
    """
    if chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    path = catalog.path
    name = _catalog_name(path, catalog_name)
    report = Path(report_path) if report_path is not None else default_report_path(path)
    prepare_report(path, report)

    rows = catalog.rows
    rejected = rows.rejected_rows
    tally = _Tally(rejections=catalog.rejections(rejected, rows.reason[rejected].tolist()))
    accepted = np.flatnonzero(rows.accepted)
    queue = TaskQueue(pool)
    show_bar = progress and catalog.n_rows > chunk_rows
    with _progress_bar(show_bar, catalog.n_rows, f"ingesting {path.name}") as advance:
        advance(len(tally.rejections))
        for start in range(0, len(accepted), chunk_rows):
            index = accepted[start : start + chunk_rows]
            _store_chunk(pool, queue, catalog, name, index, tally)
            advance(len(index))

    summary = _summarise(catalog, report, tally)
    log.info(
        "ingested %s as %r: read %d, ingested %d, already present %d, rejected %d",
        path,
        name,
        summary.read,
        summary.ingested,
        summary.already_present,
        summary.rejected,
        extra={"catalog": name, "fetch_queued": summary.fetch_queued},
    )
    return summary


@dataclass
class _Tally:
    """What :func:`store_catalog` has done so far, chunk after chunk."""

    rejections: list[Rejection]
    ingested: int = 0
    already_present: int = 0
    fetch_queued: int = 0


def _catalog_name(path: Path, given: str | None) -> str:
    name = given if given is not None else default_catalog_name(path)
    if not name.strip():
        raise CatalogError(f"{path}: the catalog name is empty")
    return name


def _staged_rows(catalog: LoadedCatalog, index: np.ndarray) -> list[StagedRow]:
    """Rows ``index`` (0-based) of ``catalog`` as :func:`insert_galaxies` stages them."""
    rows = catalog.rows
    return list(
        zip(
            (index + 1).tolist(),
            rows.source_id[index].tolist(),
            rows.ra[index].tolist(),
            rows.dec[index].tolist(),
            extra_json(catalog, index),
            strict=True,
        )
    )


def _store_chunk(
    pool: ConnectionPool,
    queue: TaskQueue,
    catalog: LoadedCatalog,
    name: str,
    index: np.ndarray,
    tally: _Tally,
) -> None:
    """Insert accepted rows ``index`` and queue their fetch tasks in one transaction.

    A row whose id is stored at other coordinates gets no fetch task and becomes a rejection.
    """
    ids = catalog.rows.source_id[index]
    with pool.connection() as conn, conn.transaction():
        outcome = insert_galaxies(conn, name, _staged_rows(catalog, index))
        conflicting = np.array([c.source_id for c in outcome.conflicts], dtype=np.int64)
        to_fetch = ids[~np.isin(ids, conflicting)]
        tally.fetch_queued += queue.enqueue(FETCH_PIPELINE, to_fetch.tolist(), conn=conn)
    tally.rejections += catalog.rejections(
        [c.row - 1 for c in outcome.conflicts],
        [
            f"{catalog.id_col} already ingested with different coordinates "
            f"(ra={c.ra!r}, dec={c.dec!r})"
            for c in outcome.conflicts
        ],
    )
    tally.ingested += outcome.inserted
    tally.already_present += len(index) - outcome.inserted - len(outcome.conflicts)


def _summarise(catalog: LoadedCatalog, report: Path, tally: _Tally) -> IngestSummary:
    """Write the report of rejected rows (in row order), if any, and count what was done."""
    if tally.rejections:
        tally.rejections.sort(key=lambda r: r.row)
        write_report(report, tally.rejections)
    return IngestSummary(
        read=catalog.n_rows,
        ingested=tally.ingested,
        already_present=tally.already_present,
        rejected=len(tally.rejections),
        fetch_queued=tally.fetch_queued,
        report_path=report if tally.rejections else None,
    )


def ingest_catalog(
    pool: ConnectionPool,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    id_col: str = "source_id",
    ra_col: str = "ra",
    dec_col: str = "dec",
    keep: Sequence[str] | None = None,
    catalog_name: str | None = None,
    report_path: str | os.PathLike[str] | None = None,
    progress: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> IngestSummary:
    """Read, validate and store a catalogue file: :func:`load_catalog` + :func:`store_catalog`.

    Idempotent: ingesting the same file again stores nothing new, queues no new task and
    reports every valid row as already present.

    Raises
    ------
    CatalogError
        If the file cannot be read as a catalogue (nothing is stored then).
    """
    catalog = load_catalog(
        path, format=format, id_col=id_col, ra_col=ra_col, dec_col=dec_col, keep=keep
    )
    return store_catalog(
        pool,
        catalog,
        catalog_name=catalog_name,
        report_path=report_path,
        progress=progress,
        chunk_rows=chunk_rows,
    )
