"""SQL of the ``cutouts`` table: where each galaxy's FITS cutout is stored, and its checksum."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class CutoutRecord:
    """One stored cutout, as the fetch pipeline records it.

    ``object_key`` is the galaxy's own key. A cutout stored in a pack (migration 0014,
    :mod:`galpipe.db.cutout_packs`) has ``pack_key`` and ``pack_offset`` set: its ``nbytes``
    bytes start at byte ``pack_offset`` of the object ``pack_key``, and no object exists at
    ``object_key``. Both are None for a cutout stored as its own object.
    """

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
    pack_key: str | None = None
    pack_offset: int | None = None

    @property
    def stored_key(self) -> str:
        """The key of the object holding the bytes: the pack's, or the galaxy's own."""
        return self.object_key if self.pack_key is None else self.pack_key


_COLUMNS = (
    "source_id, layer, bands, missing_bands, size, pixscale, survey, object_key, sha256, nbytes, "
    "pack_key, pack_offset"
)


def record_cutouts(conn: psycopg.Connection, records: Sequence[CutoutRecord]) -> None:
    """Insert (or, after a re-fetch, replace) the rows of ``records`` on ``conn``.

    Runs in the caller's transaction: the fetch worker's, which also completes the tasks. A
    packed record's pack must be recorded first (:func:`galpipe.db.cutout_packs.record_packs`).
    """
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO cutouts ({_COLUMNS}) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (source_id) DO UPDATE SET layer = EXCLUDED.layer, "
            "bands = EXCLUDED.bands, missing_bands = EXCLUDED.missing_bands, "
            "size = EXCLUDED.size, pixscale = EXCLUDED.pixscale, survey = EXCLUDED.survey, "
            "object_key = EXCLUDED.object_key, sha256 = EXCLUDED.sha256, "
            "nbytes = EXCLUDED.nbytes, pack_key = EXCLUDED.pack_key, "
            "pack_offset = EXCLUDED.pack_offset, fetched_at = now()",
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
                    r.pack_key,
                    r.pack_offset,
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
