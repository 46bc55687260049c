"""The statement that writes a pipeline's result rows: insert, or replace the row of that key.

A result table (``radon_measurements``, ``morphology_predictions``) holds one row per key
(galaxy and version): computing it again with the same version replaces the row, its
timestamp set anew, and never adds a second one.
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

__all__ = ["replace_rows_statement"]


def replace_rows_statement(
    table: str, columns: Sequence[str], key_columns: Sequence[str], stamp_column: str
) -> sql.Composed:
    """``INSERT INTO table (columns) VALUES (...) ON CONFLICT (key) DO UPDATE`` of every other
    column, and ``stamp_column = now()``; one placeholder per column, for ``executemany``.

    ``key_columns`` must be the first columns of ``columns``, in order.
    """
    if tuple(columns[: len(key_columns)]) != tuple(key_columns):
        raise ValueError(f"{table}: key {list(key_columns)} must lead the columns {list(columns)}")
    names = [sql.Identifier(c) for c in columns]
    return sql.SQL(
        "INSERT INTO {table} ({columns}) VALUES ({values}) "
        "ON CONFLICT ({key}) DO UPDATE SET {updates}, {stamp} = now()"
    ).format(
        table=sql.Identifier(table),
        columns=sql.SQL(", ").join(names),
        values=sql.SQL(", ").join(sql.Placeholder() * len(names)),
        key=sql.SQL(", ").join(names[: len(key_columns)]),
        updates=sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(n) for n in names[len(key_columns) :]
        ),
        stamp=sql.Identifier(stamp_column),
    )
