"""SQL of ``morphology_predictions``: Galaxy Zoo 2 vote fractions predicted per galaxy.

Column ``classN_M`` holds the Kaggle column ``ClassN.M`` (:data:`FRACTION_COLUMNS` follows
:data:`galpipe.science.gz2.ANSWER_COLUMNS`, the one definition of the tree's order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from galpipe.db.upsert import replace_rows_statement
from galpipe.science.gz2 import ANSWER_COLUMNS, N_ANSWERS

__all__ = [
    "FRACTION_COLUMNS",
    "JOINED_PREDICTION_COLUMNS",
    "PredictionRows",
    "joined_prediction_select",
    "latest_predicted_model",
    "predictions_for",
    "record_predictions",
]

#: The table's fraction columns, in the order of :data:`galpipe.science.gz2.ANSWER_COLUMNS`.
FRACTION_COLUMNS: tuple[str, ...] = tuple(c.lower().replace(".", "_") for c in ANSWER_COLUMNS)

#: Names a prediction's columns take when joined into a results catalogue (the demo's and
#: ``galpipe export``'s), in :func:`joined_prediction_select` order: the six-class label, its
#: fraction, then ``gz2_classN_M`` (the fraction of GZ2 answer ``ClassN.M``).
JOINED_PREDICTION_COLUMNS: tuple[str, ...] = (
    "morph_class",
    "morph_class_probability",
    *(f"gz2_{c}" for c in FRACTION_COLUMNS),
)


def joined_prediction_select(alias: str) -> sql.Composed:
    """The select list of a ``morphology_predictions`` row aliased ``alias``, renamed to
    :data:`JOINED_PREDICTION_COLUMNS` (NULLs where a LEFT JOIN found no prediction)."""
    table = sql.Identifier(alias)
    sources = ("six_class", "six_class_probability", *FRACTION_COLUMNS)
    return sql.SQL(", ").join(
        sql.SQL("{}.{} AS {}").format(table, sql.Identifier(src), sql.Identifier(name))
        for src, name in zip(sources, JOINED_PREDICTION_COLUMNS, strict=True)
    )


def latest_predicted_model(conn: psycopg.Connection) -> str | None:
    """The most recently registered morphology model with at least one prediction, or None."""
    row = conn.execute(
        "SELECT m.model_version FROM models m WHERE m.pipeline = 'morphology' AND EXISTS "
        "(SELECT 1 FROM morphology_predictions p WHERE p.model_version = m.model_version) "
        "ORDER BY m.created_at DESC, m.model_version LIMIT 1"
    ).fetchone()
    return None if row is None else str(row[0])


@dataclass(frozen=True)
class PredictionRows:
    """Predictions of one model for a set of galaxies, as arrays.

    Attributes
    ----------
    source_ids
        ``(N,)`` galaxies.
    fractions
        ``(N, 37)`` tree-normalised fractions, dimensionless, in ``ANSWER_COLUMNS`` order.
    six_class
        ``(N,)`` class names (:data:`galpipe.science.gz2.SIX_CLASSES`).
    six_class_probability
        ``(N,)`` the deciding fraction, dimensionless.
    """

    source_ids: Sequence[int]
    fractions: npt.NDArray[np.float64]
    six_class: Sequence[str]
    six_class_probability: npt.NDArray[np.float64]


_COLUMNS = ("source_id", "model_version", *FRACTION_COLUMNS, "six_class", "six_class_probability")


def record_predictions(conn: psycopg.Connection, model_version: str, rows: PredictionRows) -> None:
    """Write one row per galaxy for ``model_version``, in the caller's transaction.

    Predicting a galaxy again with the same model replaces its row (same bytes, same model,
    same numbers), never adds a second one.

    Raises
    ------
    ValueError
        If the arrays do not have one row per galaxy and 37 fractions each.
    """
    n = len(rows.source_ids)
    fractions = np.asarray(rows.fractions, dtype=float)
    if fractions.shape != (n, N_ANSWERS) or not (
        len(rows.six_class) == n == len(rows.six_class_probability)
    ):
        raise ValueError(
            f"predictions for {n} galaxies need fractions of shape ({n}, {N_ANSWERS}) and {n} "
            f"labels; got fractions {fractions.shape}, {len(rows.six_class)} labels and "
            f"{len(rows.six_class_probability)} probabilities"
        )
    values = [
        (int(sid), model_version, *map(float, f), label, float(p))
        for sid, f, label, p in zip(
            rows.source_ids, fractions, rows.six_class, rows.six_class_probability, strict=True
        )
    ]
    statement = replace_rows_statement(
        "morphology_predictions", _COLUMNS, ("source_id", "model_version"), "predicted_at"
    )
    with conn.cursor() as cur:
        cur.executemany(statement, values)


def predictions_for(
    conn: psycopg.Connection, model_version: str, source_ids: Sequence[int]
) -> PredictionRows:
    """The stored predictions of ``model_version`` for those galaxies (absent ones left out),
    in ``source_id`` order."""
    names = sql.SQL(", ").join(sql.Identifier(c) for c in (*FRACTION_COLUMNS,))
    rows = conn.execute(
        sql.SQL(
            "SELECT source_id, {fractions}, six_class, six_class_probability "
            "FROM morphology_predictions WHERE model_version = %s AND source_id = ANY(%s) "
            "ORDER BY source_id"
        ).format(fractions=names),
        (model_version, list(source_ids)),
    ).fetchall()
    return PredictionRows(
        source_ids=[r[0] for r in rows],
        fractions=np.array([r[1 : 1 + N_ANSWERS] for r in rows], dtype=float).reshape(
            -1, N_ANSWERS
        ),
        six_class=[r[1 + N_ANSWERS] for r in rows],
        six_class_probability=np.array([r[2 + N_ANSWERS] for r in rows], dtype=float),
    )
