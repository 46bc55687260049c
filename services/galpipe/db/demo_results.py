"""SQL of ``galpipe demo``: the results of the demo's own galaxies.

The demo may run against a shared database (``--database-url``), so the query here is
restricted to the source ids of the demo's catalogue rather than reading whole tables (as are
its task counts, :func:`galpipe.db.queue.task_counts` with ``source_ids``).
:func:`demo_results` reads the fetch and radon results, :func:`demo_morphology_results` the
morphology ones when the demo ran that pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from galpipe.db.morphology import JOINED_PREDICTION_COLUMNS, joined_prediction_select

_RESULTS_SQL = """
SELECT g.source_id, g.ra, g.dec,
       f.state::text AS fetch_state, f.attempts AS fetch_attempts, f.last_error AS fetch_error,
       r.state::text AS radon_state, r.attempts AS radon_attempts, r.last_error AS radon_error,
       c.object_key, c.missing_bands,
       m.algo_version, m.position_angle_deg, m.angle_image_deg, m.angle_err_deg,
       m.anisotropy, m.band_spread_deg, m.n_bands, m.masked_fraction, m.contaminated, m.flags
FROM galaxies g
LEFT JOIN tasks f ON f.pipeline = 'fetch' AND f.source_id = g.source_id
LEFT JOIN tasks r ON r.pipeline = 'radon' AND r.source_id = g.source_id
LEFT JOIN cutouts c ON c.source_id = g.source_id
LEFT JOIN radon_measurements m
       ON m.source_id = g.source_id AND m.band = 'combined' AND m.algo_version = %(version)s
WHERE g.source_id = ANY(%(ids)s)
ORDER BY g.source_id
"""

#: Columns of :func:`demo_results` rows, in order.
RESULT_COLUMNS = (
    "source_id",
    "ra",
    "dec",
    "fetch_state",
    "fetch_attempts",
    "fetch_error",
    "radon_state",
    "radon_attempts",
    "radon_error",
    "object_key",
    "missing_bands",
    "algo_version",
    "position_angle_deg",
    "angle_image_deg",
    "angle_err_deg",
    "anisotropy",
    "band_spread_deg",
    "n_bands",
    "masked_fraction",
    "contaminated",
    "flags",
)


def demo_results(
    conn: psycopg.Connection, source_ids: Sequence[int], algo_version: str
) -> list[dict[str, Any]]:
    """One row per galaxy of ``source_ids`` (ordered by id): its task states and errors, its
    cutout and its combined measurement of ``algo_version`` (None where there is none).

    Keys are :data:`RESULT_COLUMNS`; angles in degrees, ``ra``/``dec`` in degrees (ICRS).
    """
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_RESULTS_SQL, {"ids": list(source_ids), "version": algo_version})
        return list(cur.fetchall())


#: Columns of :func:`demo_morphology_results` rows, in order: the morphology task, then the
#: prediction (``gz2_classN_M`` holds the fraction of GZ2 answer ``ClassN.M``).
MORPHOLOGY_COLUMNS = (
    "source_id",
    "morphology_state",
    "morphology_attempts",
    "morphology_error",
    "morph_model_version",
    *JOINED_PREDICTION_COLUMNS,
)

_MORPHOLOGY_SQL = sql.SQL(
    """
SELECT g.source_id,
       t.state::text AS morphology_state, t.attempts AS morphology_attempts,
       t.last_error AS morphology_error,
       p.model_version AS morph_model_version, {prediction}
FROM galaxies g
LEFT JOIN tasks t ON t.pipeline = 'morphology' AND t.source_id = g.source_id
LEFT JOIN morphology_predictions p
       ON p.source_id = g.source_id AND p.model_version = %(version)s
WHERE g.source_id = ANY(%(ids)s)
ORDER BY g.source_id
"""
).format(prediction=joined_prediction_select("p"))


def demo_morphology_results(
    conn: psycopg.Connection, source_ids: Sequence[int], model_version: str
) -> list[dict[str, Any]]:
    """One row per galaxy of ``source_ids`` (ordered by id): its morphology task's state and
    error, and the prediction of ``model_version`` (None where there is none).

    Keys are :data:`MORPHOLOGY_COLUMNS`; fractions and the class probability dimensionless.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_MORPHOLOGY_SQL, {"ids": list(source_ids), "version": model_version})
        return list(cur.fetchall())
