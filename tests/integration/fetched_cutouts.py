"""Galaxies as a fetch leaves them, for the tests of what reads fetched cutouts."""

from __future__ import annotations

from collections.abc import Mapping

from psycopg_pool import ConnectionPool

from galpipe.db.cutouts import CutoutRecord, record_cutouts
from galpipe.storage import ObjectStore, StoredObject
from galpipe.survey.layout import BANDS, CUTOUT_SIZE_PX, LAYER, PIXSCALE_ARCSEC


def store_fetched(
    pool: ConnectionPool,
    store: ObjectStore,
    blobs: Mapping[int, bytes],
    positions: Mapping[int, tuple[float, float]],
    *,
    size: int = CUTOUT_SIZE_PX,
) -> dict[int, StoredObject]:
    """The galaxies rows (at ``positions``, ICRS degrees), the stored objects of ``blobs`` and
    their cutouts rows, in one transaction, as the fetch pipeline writes them."""
    with pool.connection() as conn, conn.transaction():
        conn.cursor().executemany(
            "INSERT INTO galaxies (source_id, ra, dec, catalog) VALUES (%s, %s, %s, 'synthetic')",
            [(sid, *positions[sid]) for sid in blobs],
        )
        stored = {sid: store.put(f"cutouts/test/{sid}.fits", blob) for sid, blob in blobs.items()}
        record_cutouts(
            conn,
            [
                CutoutRecord(
                    source_id=sid,
                    layer=LAYER,
                    bands=BANDS,
                    missing_bands="",
                    size=size,
                    pixscale=PIXSCALE_ARCSEC,
                    survey="x",
                    object_key=obj.key,
                    sha256=obj.sha256,
                    nbytes=obj.nbytes,
                )
                for sid, obj in stored.items()
            ],
        )
    return stored
