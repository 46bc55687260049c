"""SQL of ``galpipe export``: radon results joined with their galaxies and task states.

One row per galaxy, in ``source_id`` order: the galaxy (``ra``, ``dec``, ``catalog``,
``extra``), its state from the ``galaxy_states`` view, the combined measurement of one
``algo_version``, for the wide layout the four per-band measurements side by side and, with a
morphology model, that model's prediction (LEFT JOIN: NULLs where it has none). Rows stream
through a server-side cursor, so memory on both sides stays bounded by one chunk.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from galpipe.db.measurements import MEASUREMENT_COLUMNS
from galpipe.db.morphology import JOINED_PREDICTION_COLUMNS, joined_prediction_select

#: Bands of the per-band rows, in export order.
BANDS = ("g", "r", "i", "z")

#: Galaxy columns, first in every row: ``extra`` is a JSON object, ``state`` a galaxy state.
GALAXY_COLUMNS = ("source_id", "ra", "dec", "catalog", "extra", "state")

#: Columns only a combined row carries (how the bands agree, and the masking of the stamp).
_COMBINED_ONLY = ("band_spread_deg", "n_bands", "masked_fraction", "contaminated")

#: ``radon_measurements`` columns that a combined row fills, in row order.
COMBINED_COLUMNS = (
    "angle_image_deg",
    "position_angle_deg",
    "angle_err_deg",
    "anisotropy",
    "band_spread_deg",
    "n_bands",
    "nonfinite_pixels",
    "masked_fraction",
    "contaminated",
    "flags",
)

#: ``radon_measurements`` columns that a per-band row fills, in row order (once per band):
#: every measured column (after the key ``source_id, algo_version, band``) but the
#: combined-only ones.
BAND_COLUMNS = tuple(column for column in MEASUREMENT_COLUMNS[3:] if column not in _COMBINED_ONLY)

#: Columns a morphology model's prediction adds, last in every row, in row order.
MORPHOLOGY_COLUMNS = JOINED_PREDICTION_COLUMNS

SELECTIONS = ("transformed", "all")

# Versions newest first: the one measured most recently is the default of an export.
_VERSIONS_SQL = """
SELECT algo_version, count(*) FILTER (WHERE band = 'combined'), max(measured_at)
FROM radon_measurements
GROUP BY algo_version
ORDER BY max(measured_at) DESC, algo_version
"""


@dataclass(frozen=True)
class AlgoVersion:
    """An ``algo_version`` present in ``radon_measurements``.

    Attributes
    ----------
    version
        The version string.
    galaxies
        Galaxies with a combined row of this version.
    last_measured_at
        When its most recent row was written.
    """

    version: str
    galaxies: int
    last_measured_at: datetime


def algo_versions(conn: psycopg.Connection) -> list[AlgoVersion]:
    """Every version with results, the most recently measured first."""
    rows = conn.execute(_VERSIONS_SQL).fetchall()
    return [AlgoVersion(str(v), int(n), at) for v, n, at in rows]


def _results_query(wide: bool, morphology: bool, tiled: bool = False) -> sql.Composed:
    """The export SELECT: combined columns, then (``wide``) each band's columns in BANDS order,
    then (``morphology``) the prediction of model ``%(model_version)s``, then (``tiled``) the
    galaxy's tile from :data:`TILE_TABLE`, the rows ordered by tile rather than ``source_id``.

    Only identifiers and fixed band literals are composed; every value is a parameter.
    """
    select: list[sql.Composable] = [
        sql.SQL("g.source_id, g.ra, g.dec, g.catalog, g.extra, s.state")
    ]
    select += [sql.SQL("c.{}").format(sql.Identifier(col)) for col in COMBINED_COLUMNS]
    joins: list[sql.Composable] = []
    for band in BANDS if wide else ():
        alias = sql.Identifier(f"m_{band}")
        select += [sql.SQL("{}.{}").format(alias, sql.Identifier(col)) for col in BAND_COLUMNS]
        joins.append(
            sql.SQL(
                "LEFT JOIN radon_measurements {a} ON {a}.source_id = g.source_id "
                "AND {a}.algo_version = %(version)s AND {a}.band = {band}"
            ).format(a=alias, band=sql.Literal(band))
        )
    if morphology:
        select.append(joined_prediction_select("p"))
        joins.append(
            sql.SQL(
                "LEFT JOIN morphology_predictions p ON p.source_id = g.source_id "
                "AND p.model_version = %(model_version)s"
            )
        )
    order = sql.SQL("g.source_id")
    if tiled:
        select.append(sql.SQL("t.healpix"))
        joins.append(sql.SQL("JOIN {} t ON t.source_id = g.source_id").format(_TILE_TABLE))
        order = sql.SQL("t.healpix, g.source_id")
    return sql.SQL(
        "SELECT {select} FROM galaxies g "
        "JOIN galaxy_states s ON s.source_id = g.source_id "
        "LEFT JOIN radon_measurements c ON c.source_id = g.source_id "
        "AND c.algo_version = %(version)s AND c.band = 'combined' "
        "{joins} "
        "WHERE %(everything)s OR (s.state = 'transformed' AND c.source_id IS NOT NULL) "
        "ORDER BY {order}"
    ).format(select=sql.SQL(", ").join(select), joins=sql.SQL(" ").join(joins), order=order)


#: Temporary table of one export's tiles (``source_id``, ``healpix``): it lives in the
#: transaction of :func:`tile_table` and lets the server sort the rows by tile.
TILE_TABLE = "galpipe_export_tiles"
_TILE_TABLE = sql.Identifier(TILE_TABLE)

_QUERIES = {
    (wide, morphology, tiled): _results_query(wide, morphology, tiled)
    for wide in (False, True)
    for morphology in (False, True)
    for tiled in (False, True)
}

# The selected galaxies' positions: the FROM and WHERE of _results_query, no order needed.
_POSITIONS_SQL = """
SELECT g.source_id, g.ra, g.dec FROM galaxies g
JOIN galaxy_states s ON s.source_id = g.source_id
LEFT JOIN radon_measurements c ON c.source_id = g.source_id
AND c.algo_version = %(version)s AND c.band = 'combined'
WHERE %(everything)s OR (s.state = 'transformed' AND c.source_id IS NOT NULL)
"""

# One row per key of the tiled galaxies' ``extra``: how many values are present (not JSON
# null) and how many of those are booleans, integers (no fraction or exponent: Python's json
# reads them as int) and numbers.
_EXTRA_KINDS_SQL = sql.SQL("""
SELECT e.key,
       count(*) FILTER (WHERE jsonb_typeof(e.value) <> 'null'),
       count(*) FILTER (WHERE jsonb_typeof(e.value) = 'boolean'),
       count(*) FILTER (WHERE jsonb_typeof(e.value) = 'number' AND e.value::text ~ '^-?[0-9]+$'),
       count(*) FILTER (WHERE jsonb_typeof(e.value) = 'number')
FROM {} t JOIN galaxies g ON g.source_id = t.source_id, jsonb_each(g.extra) e
GROUP BY e.key
ORDER BY e.key
""").format(_TILE_TABLE)


def stream_results(
    conn: psycopg.Connection,
    algo_version: str,
    *,
    selection: str = "transformed",
    wide: bool = False,
    morphology_model: str | None = None,
    chunk_rows: int = 10_000,
    tiled: bool = False,
) -> Iterator[Sequence[tuple[Any, ...]]]:
    """Yield the export rows in chunks of at most ``chunk_rows``, ordered by ``source_id``.

    Parameters
    ----------
    conn
        Connection to the galpipe database; the rows are read in one transaction on it (one
        snapshot), through a server-side cursor.
    algo_version
        Measurements of this version only.
    selection
        ``"transformed"``: galaxies whose radon task is done and that have a combined row of
        ``algo_version``. ``"all"``: every galaxy, with NULL measurements where it has none.
    wide
        Add the per-band columns (:data:`BAND_COLUMNS` for each band of :data:`BANDS`).
    morphology_model
        Add the prediction of this morphology model (64-hex version) as
        :data:`~galpipe.db.morphology.JOINED_PREDICTION_COLUMNS`; ``None`` adds none.
    chunk_rows
        Rows per fetch from the server.
    tiled
        Only the galaxies of :data:`TILE_TABLE` (filled in this transaction by
        :func:`tile_table`), each row ending with its ``healpix`` tile, ordered by tile, then
        ``source_id``.

    Yields
    ------
    list of tuple
        Rows: :data:`GALAXY_COLUMNS`, then :data:`COMBINED_COLUMNS`, then (``wide``) the band
        columns, then (``morphology_model``) :data:`MORPHOLOGY_COLUMNS`, then (``tiled``) the
        tile. ``extra`` is a dict (JSON object), NULLs are ``None``.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection {selection!r}: expected one of {', '.join(SELECTIONS)}")
    if chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    params = {
        "version": algo_version,
        "everything": selection == "all",
        "model_version": morphology_model,
    }
    with conn.transaction(), conn.cursor(name="galpipe_export") as cur:
        cur.itersize = chunk_rows
        cur.execute(_QUERIES[wide, morphology_model is not None, tiled], params)
        while rows := cur.fetchmany(chunk_rows):
            yield rows


@contextlib.contextmanager
def tile_table(conn: psycopg.Connection) -> Iterator[None]:
    """One REPEATABLE READ transaction holding an empty :data:`TILE_TABLE`, dropped at its end.

    Every read of the export inside it (positions, extra keys, the tiled rows) sees one
    snapshot, so a galaxy measured between two of them is in all of them or in none.
    """
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.execute(
            sql.SQL(
                "CREATE TEMPORARY TABLE {} (source_id bigint PRIMARY KEY, healpix bigint NOT NULL)"
                " ON COMMIT DROP"
            ).format(_TILE_TABLE)
        )
        yield


def stream_positions(
    conn: psycopg.Connection,
    algo_version: str,
    *,
    selection: str = "transformed",
    chunk_rows: int = 10_000,
) -> Iterator[Sequence[tuple[int, float, float]]]:
    """Yield ``(source_id, ra, dec)`` of the galaxies :func:`stream_results` selects, in chunks.

    Read through a server-side cursor (in the caller's transaction, when there is one); no
    order. ``ra`` and ``dec`` are ICRS degrees.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection {selection!r}: expected one of {', '.join(SELECTIONS)}")
    params = {"version": algo_version, "everything": selection == "all"}
    with conn.transaction(), conn.cursor(name="galpipe_export_positions") as cur:
        cur.itersize = chunk_rows
        cur.execute(_POSITIONS_SQL, params)
        while rows := cur.fetchmany(chunk_rows):
            yield rows


def store_tiles(conn: psycopg.Connection, rows: Iterable[tuple[int, int]]) -> None:
    """COPY ``(source_id, healpix)`` rows into :data:`TILE_TABLE` (inside :func:`tile_table`)."""
    copy_sql = sql.SQL("COPY {} (source_id, healpix) FROM STDIN").format(_TILE_TABLE)
    with conn.cursor() as cur, cur.copy(copy_sql) as copy:
        for row in rows:
            copy.write_row(row)


def analyze_tiles(conn: psycopg.Connection) -> None:
    """Give the planner the size of :data:`TILE_TABLE` (temporary tables get no autovacuum)."""
    conn.execute(sql.SQL("ANALYZE {}").format(_TILE_TABLE))


@dataclass(frozen=True)
class ExtraKey:
    """A key of ``galaxies.extra`` among the tiled galaxies, with what its values are.

    Attributes
    ----------
    key
        The JSON key.
    present
        Values that are not JSON null.
    booleans, integers, numbers
        Of those, how many are booleans, integers, and numbers (integers included).
    """

    key: str
    present: int
    booleans: int
    integers: int
    numbers: int


def extra_keys(conn: psycopg.Connection) -> list[ExtraKey]:
    """Every key of the ``extra`` of the galaxies in :data:`TILE_TABLE`, sorted."""
    rows = conn.execute(_EXTRA_KINDS_SQL).fetchall()
    return [ExtraKey(str(k), int(p), int(b), int(i), int(n)) for k, p, b, i, n in rows]
