"""SQL of ``photoz_predictions``: photometric redshifts estimated from each galaxy's pixels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import psycopg

from galpipe.db.upsert import replace_rows_statement

__all__ = ["PhotozRows", "photoz_predictions_for", "record_photoz_predictions"]

_VALUES = ("z_phot", "z_err", "n_pixels", "error_source")
_COLUMNS = ("source_id", "model_version", *_VALUES)


@dataclass(frozen=True)
class PhotozRows:
    """Redshifts of one model for a set of galaxies, as arrays (one entry per galaxy).

    Attributes
    ----------
    source_ids
        Galaxies.
    z_phot, z_err
        The combined redshift and its uncertainty (half the weighted 16-84 % spread of the
        pixels' redshifts); dimensionless.
    n_pixels
        Pixels used per galaxy.
    error_source
        Where the per-pixel errors came from (``sky_noise``, ``invvar``, ``sdss_sky_hdu``).
    """

    source_ids: Sequence[int]
    z_phot: npt.NDArray[np.float64]
    z_err: npt.NDArray[np.float64]
    n_pixels: npt.NDArray[np.int64]
    error_source: Sequence[str]


def record_photoz_predictions(
    conn: psycopg.Connection, model_version: str, rows: PhotozRows
) -> None:
    """Write one row per galaxy for ``model_version``, in the caller's transaction.

    Predicting a galaxy again with the same model replaces its row, never adds a second one.

    Raises
    ------
    ValueError
        If the columns do not have one entry per galaxy.
    """
    n = len(rows.source_ids)
    columns = [np.asarray(getattr(rows, c)) for c in _VALUES[:-1]]
    if any(c.shape != (n,) for c in columns) or len(rows.error_source) != n:
        shapes = {c: np.shape(getattr(rows, c)) for c in _VALUES}
        raise ValueError(f"photo-z rows for {n} galaxies need {n} values per column; got {shapes}")
    values = [
        (int(sid), model_version, float(z), float(e), int(npx), source)
        for sid, z, e, npx, source in zip(rows.source_ids, *columns, rows.error_source, strict=True)
    ]
    statement = replace_rows_statement(
        "photoz_predictions", _COLUMNS, ("source_id", "model_version"), "predicted_at"
    )
    with conn.cursor() as cur:
        cur.executemany(statement, values)


def photoz_predictions_for(
    conn: psycopg.Connection, model_version: str, source_ids: Sequence[int]
) -> PhotozRows:
    """The stored redshifts of ``model_version`` for those galaxies (absent ones left out), in
    ``source_id`` order."""
    rows = conn.execute(
        "SELECT source_id, z_phot, z_err, n_pixels, error_source "
        "FROM photoz_predictions WHERE model_version = %s AND source_id = ANY(%s) "
        "ORDER BY source_id",
        (model_version, list(source_ids)),
    ).fetchall()

    def column(i: int) -> npt.NDArray[np.float64]:
        return np.array([r[i] for r in rows], dtype=float)

    return PhotozRows(
        source_ids=[r[0] for r in rows],
        z_phot=column(1),
        z_err=column(2),
        n_pixels=np.array([r[3] for r in rows], dtype=np.int64),
        error_source=[r[4] for r in rows],
    )
