"""``radon_measurements`` rows from column-keyed records: NULL for what a record leaves out."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from psycopg_pool import ConnectionPool

from galpipe.db.measurements import (
    MEASUREMENT_COLUMNS,
    MeasurementRecord,
    measurement_values,
    record_measurements,
)


def _stored(pool: ConnectionPool, source_id: int, band: str) -> dict[str, object]:
    with pool.connection() as conn:
        cursor = conn.execute(
            "SELECT * FROM radon_measurements WHERE source_id = %s AND band = %s",
            (source_id, band),
        )
        names = [d.name for d in cursor.description or ()]
        row = cursor.fetchone()
    assert row is not None
    return dict(zip(names, row, strict=True))


def test_columns_a_record_leaves_out_are_stored_as_null(
    pool: ConnectionPool, add_galaxies: Callable[..., list[int]]
) -> None:
    (sid,) = add_galaxies(1)
    record = MeasurementRecord(
        source_id=sid, algo_version="v-test", band="combined", angle_image_deg=12.5, flags=0
    )
    with pool.connection() as conn:
        record_measurements(conn, [record])
    stored = _stored(pool, sid, "combined")
    assert (stored["angle_image_deg"], stored["flags"]) == (12.5, 0)
    left_out = set(MEASUREMENT_COLUMNS) - set(record)
    assert left_out  # the test means something only if the record leaves columns out
    assert {c: stored[c] for c in left_out} == dict.fromkeys(left_out)


def test_measuring_again_replaces_the_row_and_nulls_what_is_left_out(
    pool: ConnectionPool, add_galaxies: Callable[..., list[int]]
) -> None:
    (sid,) = add_galaxies(1)
    first = MeasurementRecord(
        source_id=sid, algo_version="v-test", band="r", flags=0, angle_image_deg=1.0, sinusoid_a=3.0
    )
    second = MeasurementRecord(source_id=sid, algo_version="v-test", band="r", flags=1)
    with pool.connection() as conn:
        record_measurements(conn, [first])
        record_measurements(conn, [second])
        (count,) = conn.execute("SELECT count(*) FROM radon_measurements").fetchone() or (0,)
    stored = _stored(pool, sid, "r")
    assert count == 1
    assert (stored["angle_image_deg"], stored["sinusoid_a"], stored["flags"]) == (None, None, 1)


def test_an_unknown_column_is_refused_by_name_and_nothing_is_written(
    pool: ConnectionPool, add_galaxies: Callable[..., list[int]]
) -> None:
    (sid,) = add_galaxies(1)
    good = {"source_id": sid, "algo_version": "v-test", "band": "g", "flags": 0}
    bad = {**good, "band": "r", "position_angle": 10.0}  # the column is position_angle_deg
    with pool.connection() as conn:
        unknown = r"unknown column\(s\) position_angle \(radon_measurements has"
        with pytest.raises(ValueError, match=unknown):
            record_measurements(conn, [good, bad])
        (count,) = conn.execute("SELECT count(*) FROM radon_measurements").fetchone() or (0,)
    assert count == 0


def test_values_follow_the_column_order_and_required_columns_are_required() -> None:
    values = measurement_values({"flags": 4, "band": "z", "algo_version": "v", "source_id": 7})
    assert len(values) == len(MEASUREMENT_COLUMNS)
    assert values[:3] == (7, "v", "z")
    assert values[MEASUREMENT_COLUMNS.index("flags")] == 4
    assert values.count(None) == len(MEASUREMENT_COLUMNS) - 4
    with pytest.raises(ValueError, match="missing band, flags"):
        measurement_values({"source_id": 7, "algo_version": "v"})
