"""SQL of the ``cutouts`` table: where each galaxy's FITS cutout is stored, and its checksum."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class CutoutRecord:
    """One stored cutout, as the fetch pipeline records it."""

    source_id: int
    layer: str
    bands: str
    missing_bands: str
    size: int
    pixscale: float
    survey: str | None
    object_key: str
    sha256: str
    nbytes: int


_COLUMNS = (
    "source_id, layer, bands, missing_bands, size, pixscale, survey, object_key, sha256, nbytes"
)


def record_cutouts(conn: psycopg.Connection, records: Sequence[CutoutRecord]) -> None:
    """Insert (or, after a re-fetch, replace) the rows of ``records`` on ``conn``.

    Runs in the caller's transaction: the fetch worker's, which also completes the tasks.
    """
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO cutouts ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (source_id) DO UPDATE SET layer = EXCLUDED.layer, "
            "bands = EXCLUDED.bands, missing_bands = EXCLUDED.missing_bands, "
            "size = EXCLUDED.size, pixscale = EXCLUDED.pixscale, survey = EXCLUDED.survey, "
            "object_key = EXCLUDED.object_key, sha256 = EXCLUDED.sha256, "
            "nbytes = EXCLUDED.nbytes, fetched_at = now()",
            [
                (
                    r.source_id,
                    r.layer,
                    r.bands,
                    r.missing_bands,
                    r.size,
                    r.pixscale,
                    r.survey,
                    r.object_key,
                    r.sha256,
                    r.nbytes,
                )
                for r in records
            ],
        )


def cutouts_for(conn: psycopg.Connection, source_ids: Sequence[int]) -> dict[int, CutoutRecord]:
    """The cutout rows of ``source_ids`` that exist, by id."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM cutouts WHERE source_id = ANY(%s)", (list(source_ids),)
    ).fetchall()
    return {row[0]: CutoutRecord(*row) for row in rows}


def fetched_source_ids(conn: psycopg.Connection) -> list[int]:
    """Every galaxy with a stored cutout, in ``source_id`` order."""
    return [int(r[0]) for r in conn.execute("SELECT source_id FROM cutouts ORDER BY source_id")]
