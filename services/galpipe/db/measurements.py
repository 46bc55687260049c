"""SQL of ``radon_measurements``: the radon pipeline's per-band and combined results.

A pipeline hands each row over as a :class:`MeasurementRecord`, keyed by column name; the
columns it leaves out are NULL. A per-band row and a combined row fill different columns
(:data:`galpipe.db.results.BAND_COLUMNS`), so neither has to spell out the other's NULLs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NotRequired, TypedDict

import psycopg

from galpipe.db.upsert import replace_rows_statement

__all__ = [
    "KEY_COLUMNS",
    "MEASUREMENT_COLUMNS",
    "REQUIRED_COLUMNS",
    "MeasurementRecord",
    "measurement_values",
    "record_measurements",
]

#: Every column a measurement row can fill, in the table's order.
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
#: The columns that identify a row (the table's unique key).
KEY_COLUMNS = ("source_id", "algo_version", "band")
#: The columns a record must give (NOT NULL): the key, and the flags that say why a value is NULL.
REQUIRED_COLUMNS = (*KEY_COLUMNS, "flags")


class MeasurementRecord(TypedDict):
    """One ``radon_measurements`` row by column name; a column left out is stored as NULL.

    ``None`` is NULL too: a value the measurement could not give (its flag says why).
    """

    source_id: int
    algo_version: str
    band: str
    flags: int
    angle_image_deg: NotRequired[float | None]
    position_angle_deg: NotRequired[float | None]
    angle_err_deg: NotRequired[float | None]
    angle_err_window_deg: NotRequired[float | None]
    angle_err_window_std_deg: NotRequired[float | None]
    angle_argmax_deg: NotRequired[float | None]
    sinusoid_a: NotRequired[float | None]
    sinusoid_b: NotRequired[float | None]
    anisotropy: NotRequired[float | None]
    moments_angle_deg: NotRequired[float | None]
    moments_position_angle_deg: NotRequired[float | None]
    moments_err_deg: NotRequired[float | None]
    moments_ellipticity: NotRequired[float | None]
    band_spread_deg: NotRequired[float | None]
    n_bands: NotRequired[int | None]
    nonfinite_pixels: NotRequired[int | None]
    masked_fraction: NotRequired[float | None]
    contaminated: NotRequired[bool | None]


_KNOWN_COLUMNS = frozenset(MEASUREMENT_COLUMNS)


def measurement_values(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """The values of ``record`` in :data:`MEASUREMENT_COLUMNS` order, NULL (None) where absent.

    Raises
    ------
    ValueError
        If ``record`` names a column ``radon_measurements`` does not have, or lacks one of
        :data:`REQUIRED_COLUMNS`; the message names the columns.
    """
    unknown = sorted(set(record) - _KNOWN_COLUMNS)
    if unknown:
        raise ValueError(
            f"measurement record for source_id {record.get('source_id')!r}: unknown column(s) "
            f"{', '.join(unknown)} (radon_measurements has {', '.join(MEASUREMENT_COLUMNS)})"
        )
    missing = [column for column in REQUIRED_COLUMNS if record.get(column) is None]
    if missing:
        raise ValueError(f"measurement record {dict(record)!r}: missing {', '.join(missing)}")
    return tuple(record.get(column) for column in MEASUREMENT_COLUMNS)


def record_measurements(conn: psycopg.Connection, records: Iterable[Mapping[str, Any]]) -> None:
    """Write measurement records (:class:`MeasurementRecord`) on ``conn``.

    Runs in the worker's transaction that completes the radon tasks. One row per (galaxy,
    algo_version, band): measuring a galaxy again with the same version replaces its row
    (the same code on the same bytes gives the same numbers), never adds a second one; the
    columns a record leaves out become NULL then too.

    Raises
    ------
    ValueError
        If a record names an unknown column or lacks a required one; nothing is written.
    """
    rows: Sequence[tuple[Any, ...]] = [measurement_values(record) for record in records]
    statement = replace_rows_statement(
        "radon_measurements", MEASUREMENT_COLUMNS, KEY_COLUMNS, "measured_at"
    )
    with conn.cursor() as cur:
        cur.executemany(statement, rows)
