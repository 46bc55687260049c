"""SQL of ``radon_measurements``: the radon pipeline's per-band and combined results."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

# Column order of a measurement row; rows are tuples in this order.
MEASUREMENT_COLUMNS = (
    "source_id",
    "algo_version",
    "band",
    "angle_image_deg",
    "position_angle_deg",
    "angle_err_deg",
    "angle_err_window_deg",
    "angle_err_window_std_deg",
    "angle_argmax_deg",
    "sinusoid_a",
    "sinusoid_b",
    "anisotropy",
    "moments_angle_deg",
    "moments_position_angle_deg",
    "moments_err_deg",
    "moments_ellipticity",
    "band_spread_deg",
    "n_bands",
    "nonfinite_pixels",
    "masked_fraction",
    "contaminated",
    "flags",
)


def record_measurements(conn: psycopg.Connection, rows: Sequence[Sequence[Any]]) -> None:
    """Write measurement rows (tuples in :data:`MEASUREMENT_COLUMNS` order) on ``conn``.

    Runs in the worker's transaction that completes the radon tasks. One row per (galaxy,
    algo_version, band): measuring a galaxy again with the same version replaces its row
    (the same code on the same bytes gives the same numbers), never adds a second one.
    """
    names = [sql.Identifier(c) for c in MEASUREMENT_COLUMNS]
    statement = sql.SQL(
        "INSERT INTO radon_measurements ({columns}) VALUES ({values}) "
        "ON CONFLICT (source_id, algo_version, band) DO UPDATE SET {updates}, measured_at = now()"
    ).format(
        columns=sql.SQL(", ").join(names),
        values=sql.SQL(", ").join(sql.Placeholder() * len(names)),
        updates=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(n) for n in names[3:]),
    )
    with conn.cursor() as cur:
        cur.executemany(statement, rows)
