"""SQL for the ``galaxies`` table: bulk insert of a catalogue chunk through COPY.

A chunk is copied into a temporary staging table, then inserted with
``ON CONFLICT (source_id) DO NOTHING``: a galaxy is never modified once ingested, which is what
makes re-ingesting a file change nothing. Ids that were already present are compared with the
staged coordinates; those that disagree come back as :class:`CoordinateConflict` so the caller
can reject the row instead of silently counting it as already present.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg

# Two positions of one source_id closer than this are "the same coordinates". 1e-6 deg is
# 3.6 mas: it absorbs the round-off of a text export (CSV with 6 decimals) of Gaia positions
# while any real disagreement between two catalogues is far larger.
SAME_POSITION_TOLERANCE_DEG = 1e-6

_DROP_STAGE = "DROP TABLE IF EXISTS pg_temp.galpipe_ingest_stage"

# ON COMMIT DROP: nothing is left behind on a pooled connection.
_CREATE_STAGE = """
CREATE TEMPORARY TABLE galpipe_ingest_stage (
    row_number bigint NOT NULL,
    source_id  bigint NOT NULL,
    ra         double precision NOT NULL,
    dec        double precision NOT NULL,
    extra      jsonb NOT NULL
) ON COMMIT DROP
"""

_COPY_STAGE = "COPY galpipe_ingest_stage (row_number, source_id, ra, dec, extra) FROM STDIN"

# Sorted by id so that two concurrent ingests of overlapping files take row locks in the same
# order and cannot deadlock on each other.
_INSERT_NEW = """
INSERT INTO galaxies (source_id, ra, dec, catalog, extra)
SELECT source_id, ra, dec, %(catalog)s, extra FROM galpipe_ingest_stage
ORDER BY source_id
ON CONFLICT (source_id) DO NOTHING
"""

# Rows inserted by this chunk compare equal to themselves, so only ids that were present
# before (or were inserted meanwhile by a concurrent ingest) can show up here. The RA
# difference is wrapped at 0/360 and scaled by cos(dec) to an angle on the sky.
_CONFLICTS = """
SELECT s.row_number, s.source_id, g.ra, g.dec
FROM galpipe_ingest_stage s
JOIN galaxies g ON g.source_id = s.source_id
WHERE abs(g.dec - s.dec) > %(tol)s
   OR least(abs(g.ra - s.ra), 360 - abs(g.ra - s.ra)) * cos(radians(s.dec)) > %(tol)s
ORDER BY s.row_number
"""


@dataclass(frozen=True)
class CoordinateConflict:
    """A staged row whose ``source_id`` is already stored at a different position.

    Attributes
    ----------
    row
        The row number the caller staged it with.
    source_id
        The galaxy id.
    ra, dec
        The coordinates already stored, in degrees.
    """

    row: int
    source_id: int
    ra: float
    dec: float


@dataclass(frozen=True)
class InsertOutcome:
    """What :func:`insert_galaxies` did with one chunk.

    Attributes
    ----------
    inserted
        Galaxies newly stored.
    conflicts
        Staged rows whose id is already stored with different coordinates (not modified).
        Every other staged row not inserted was already present with the same coordinates.
    """

    inserted: int
    conflicts: list[CoordinateConflict]


StagedRow = tuple[int, int, float, float, str]
"""``(row_number, source_id, ra_deg, dec_deg, extra_json)`` as staged for COPY."""


def insert_galaxies(
    conn: psycopg.Connection,
    catalog: str,
    rows: Iterable[StagedRow],
    *,
    tolerance_deg: float = SAME_POSITION_TOLERANCE_DEG,
) -> InsertOutcome:
    """Insert a chunk of validated galaxies in bulk; existing galaxies are left untouched.

    Runs in a transaction on ``conn`` (a savepoint when the caller already has one open, so
    the insert commits together with the caller's other writes, e.g. the fetch enqueue).

    Parameters
    ----------
    conn
        Connection to the galpipe database.
    catalog
        Name recorded in ``galaxies.catalog`` for the new rows.
    rows
        ``(row_number, source_id, ra, dec, extra_json)``: ra in [0, 360) deg, dec in
        [-90, 90] deg, ids unique within the chunk, ``extra_json`` a JSON object as text.
    tolerance_deg
        Largest separation, in degrees, at which a stored position counts as the same.

    Returns
    -------
    InsertOutcome
        Counts of new rows and the rows whose id is stored at another position.
    """
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(_DROP_STAGE)
        cur.execute(_CREATE_STAGE)
        with cur.copy(_COPY_STAGE) as copy:
            for row in rows:
                copy.write_row(row)
        # Without statistics the planner may hash-join the whole galaxies table per chunk.
        cur.execute("ANALYZE galpipe_ingest_stage")
        cur.execute(_INSERT_NEW, {"catalog": catalog})
        inserted = cur.rowcount
        cur.execute(_CONFLICTS, {"tol": float(tolerance_deg)})
        conflicts = [
            CoordinateConflict(int(r), int(sid), float(ra), float(dec))
            for r, sid, ra, dec in cur.fetchall()
        ]
    return InsertOutcome(inserted=inserted, conflicts=conflicts)


def positions(
    conn: psycopg.Connection, source_ids: Iterable[int]
) -> dict[int, tuple[float, float]]:
    """ICRS (ra, dec) in degrees of the galaxies ``source_ids`` that exist, by id."""
    rows = conn.execute(
        "SELECT source_id, ra, dec FROM galaxies WHERE source_id = ANY(%s)", (list(source_ids),)
    ).fetchall()
    return {sid: (ra, dec) for sid, ra, dec in rows}


def positions_and_extras(
    conn: psycopg.Connection, source_ids: Iterable[int]
) -> dict[int, tuple[float, float, dict[str, Any]]]:
    """ICRS (ra, dec) in degrees and the catalogue's extra columns (``galaxies.extra``) of the
    galaxies ``source_ids`` that exist, by id."""
    rows = conn.execute(
        "SELECT source_id, ra, dec, extra FROM galaxies WHERE source_id = ANY(%s)",
        (list(source_ids),),
    ).fetchall()
    return {sid: (ra, dec, dict(extra or {})) for sid, ra, dec, extra in rows}
