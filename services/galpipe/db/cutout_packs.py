"""SQL of the ``cutout_packs`` table: objects that hold the cutouts of one batch in one tile.

A pack is recorded in the transaction that completes its galaxies' fetch tasks, before their
``cutouts`` rows (which reference it). A pack object that was stored but never recorded (the
worker died between the PUT and the commit) is in the store and not here; a recorded pack that
no row references any more (every galaxy re-fetched elsewhere) is found by
:func:`unreferenced_packs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

__all__ = ["CutoutPack", "pack_keys", "record_packs", "unreferenced_packs"]


@dataclass(frozen=True)
class CutoutPack:
    """One stored pack, as the fetch pipeline records it.

    Attributes
    ----------
    pack_key
        Object key of the pack.
    healpix_order, tile
        The HEALPix order and NESTED tile (ICRS) every cutout of the pack lies in.
    sha256
        Hex SHA-256 of the whole pack, as read back after its PUT.
    nbytes
        Size of the pack, bytes.
    n_cutouts
        Cutouts written into it.
    """

    pack_key: str
    healpix_order: int
    tile: int
    sha256: str
    nbytes: int
    n_cutouts: int


def record_packs(conn: psycopg.Connection, packs: Sequence[CutoutPack]) -> None:
    """Insert the rows of ``packs`` on ``conn`` (in the caller's transaction).

    A pack key is unique to the batch that wrote it, so a row already there is the same pack
    (a commit retried after its outcome was lost) and is kept.
    """
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO cutout_packs (pack_key, healpix_order, tile, sha256, nbytes, n_cutouts) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (pack_key) DO NOTHING",
            [(p.pack_key, p.healpix_order, p.tile, p.sha256, p.nbytes, p.n_cutouts) for p in packs],
        )


def pack_keys(conn: psycopg.Connection) -> set[str]:
    """Every recorded pack key: what a sweep of the store's pack prefix compares against."""
    return {str(r[0]) for r in conn.execute("SELECT pack_key FROM cutout_packs")}


def unreferenced_packs(conn: psycopg.Connection, limit: int = 1000) -> list[str]:
    """Recorded packs that no ``cutouts`` row points into (up to ``limit``, oldest first).

    One anti-join pass over ``cutouts``; for an operator's sweep, not a hot path.
    """
    rows = conn.execute(
        "SELECT p.pack_key FROM cutout_packs p "
        "WHERE NOT EXISTS (SELECT 1 FROM cutouts c WHERE c.pack_key = p.pack_key) "
        "ORDER BY p.created_at, p.pack_key LIMIT %s",
        (limit,),
    ).fetchall()
    return [str(r[0]) for r in rows]
