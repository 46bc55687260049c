"""SQL of ``galpipe check``: one set-based query per invariant of the task graph and its results.

Each query returns how many rows break its rule and a few of them, in key order (the examples):
the hits are materialised once, counted, and the examples are a top-N sort of them, so a
clean table costs one anti-join or one scan and a broken one never ships its whole list. The
caller runs them in one ``REPEATABLE READ, READ ONLY`` transaction, so every rule is judged on
one snapshot and ``now()`` is that snapshot's clock.

What each rule reads (at 10⁷ tasks):

- the anti-joins (galaxy ↔ task, task ↔ downstream task, task ↔ result row) probe primary keys
  (``tasks (pipeline, source_id)``, ``cutouts (source_id)``, ``radon_measurements (source_id,
  algo_version, band)``, ``morphology_predictions`` and ``photoz_predictions (source_id,
  model_version)``) or merge two of them in key order;
- a prediction's model is looked up by primary key in ``models``: one pass over each
  prediction table;
- stale leases read the partial index ``tasks_leases`` (running tasks only);
- attempts and stated reasons are one sequential scan of ``tasks`` each;
- the measurement rows are grouped per ``(source_id, algo_version)`` in primary-key order: one
  streaming pass, no hash table.

The object rows to verify come out separately: a uniform sample (:data:`SAMPLE_OBJECTS_SQL`) or
every row in ``source_id`` pages (:data:`OBJECT_PAGE_SQL`), each page its own short statement,
so verifying 10⁷ objects never holds one snapshot (and vacuum) back for hours.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, LiteralString

import psycopg

__all__ = [
    "PREDICTION_TABLES",
    "Finding",
    "ObjectRow",
    "attempts_over",
    "cutouts_without_done_task",
    "done_without_cutout",
    "done_without_downstream",
    "done_without_measurement",
    "done_without_prediction",
    "downstream_without_done_upstream",
    "finished_without_reason",
    "galaxies_done_in_any",
    "galaxies_without_task",
    "galaxy_count",
    "measurement_groups",
    "measurements_without_done_task",
    "object_page",
    "object_rows",
    "predictions_of_another_pipelines_model",
    "predictions_without_done_task",
    "sample_objects",
    "stale_leases",
]


#: The predicting pipelines and the table of each one's results, one row per ``(source_id,
#: model_version)`` with ``predicted_at``; its ``model_version`` references ``models``.
PREDICTION_TABLES: Mapping[str, LiteralString] = {
    "morphology": "morphology_predictions",
    "photoz": "photoz_predictions",
}


@dataclass(frozen=True)
class Finding:
    """Rows that break one rule: how many, and the first few (by key) as text.

    Attributes
    ----------
    count
        Rows that break the rule (galaxies, tasks or ``(source_id, algo_version)`` groups, as
        the rule says).
    examples
        At most the requested number of them, in key order: a source id, or
        ``"<source_id> <algo_version>"`` for a measurement group.
    """

    count: int
    examples: tuple[str, ...]


@dataclass(frozen=True)
class ObjectRow:
    """A ``cutouts`` row of a done fetch task: where its object is and what it must be."""

    source_id: int
    object_key: str
    sha256: str
    nbytes: int
    pack_key: str | None = None  # a packed cutout's pack (migration 0014); then its bytes
    pack_offset: int | None = None  # are nbytes from this offset of the pack


def _finding(conn: psycopg.Connection, hits: LiteralString, params: dict[str, Any]) -> Finding:
    """Count the rows of ``hits`` (a SELECT of ``key`` and ``label``) and keep the first few."""
    query: LiteralString = (
        "WITH hit AS MATERIALIZED (" + hits + ") "
        "SELECT (SELECT count(*) FROM hit), "
        "ARRAY(SELECT label FROM hit ORDER BY key LIMIT %(examples)s)"
    )
    row = conn.execute(query, params).fetchone()
    assert row is not None  # an aggregate always returns its row
    return Finding(int(row[0]), tuple(row[1]))


def _per_pipeline(
    conn: psycopg.Connection, where: LiteralString, params: dict[str, Any]
) -> dict[str, Finding]:
    """Tasks matching ``where``, counted per pipeline with the first few ids of each."""
    query: LiteralString = (
        "SELECT pipeline, count(*), "
        "(array_agg(source_id::text ORDER BY source_id) FILTER (WHERE rank <= %(examples)s)) "
        "FROM (SELECT pipeline, source_id, "
        "row_number() OVER (PARTITION BY pipeline ORDER BY source_id) AS rank "
        "FROM tasks WHERE " + where + ") AS hit "
        "GROUP BY pipeline ORDER BY pipeline"
    )
    rows = conn.execute(query, params).fetchall()
    return {p: Finding(int(n), tuple(ex or ())) for p, n, ex in rows}


# -- the catalogue and the task graph ------------------------------------------------------------


def galaxy_count(conn: psycopg.Connection) -> int:
    """Galaxies in the catalogue."""
    row = conn.execute("SELECT count(*) FROM galaxies").fetchone()
    return int(row[0]) if row else 0


def galaxies_without_task(conn: psycopg.Connection, pipeline: str, examples: int) -> Finding:
    """Galaxies that have no task of ``pipeline`` (the first stage: every galaxy needs one)."""
    hits: LiteralString = (
        "SELECT g.source_id AS key, g.source_id::text AS label FROM galaxies g "
        "WHERE NOT EXISTS (SELECT 1 FROM tasks t "
        "WHERE t.pipeline = %(pipeline)s AND t.source_id = g.source_id)"
    )
    return _finding(conn, hits, {"pipeline": pipeline, "examples": examples})


def done_without_downstream(
    conn: psycopg.Connection, upstream: str, downstream: str, examples: int
) -> Finding:
    """Done ``upstream`` tasks without a ``downstream`` task (both commit in one transaction)."""
    hits: LiteralString = (
        "SELECT u.source_id AS key, u.source_id::text AS label FROM tasks u "
        "WHERE u.pipeline = %(upstream)s AND u.state = 'done' "
        "AND NOT EXISTS (SELECT 1 FROM tasks d "
        "WHERE d.pipeline = %(downstream)s AND d.source_id = u.source_id)"
    )
    params = {"upstream": upstream, "downstream": downstream, "examples": examples}
    return _finding(conn, hits, params)


def downstream_without_done_upstream(
    conn: psycopg.Connection, upstreams: Sequence[str], downstream: str, examples: int
) -> Finding:
    """``downstream`` tasks whose galaxy has no done task, in any of ``upstreams`` (the
    pipelines routed to it), that could have queued them."""
    hits: LiteralString = (
        "SELECT d.source_id AS key, d.source_id::text AS label FROM tasks d "
        "WHERE d.pipeline = %(downstream)s "
        "AND NOT EXISTS (SELECT 1 FROM tasks u WHERE u.pipeline = ANY(%(upstreams)s) "
        "AND u.source_id = d.source_id AND u.state = 'done')"
    )
    params = {"upstreams": list(upstreams), "downstream": downstream, "examples": examples}
    return _finding(conn, hits, params)


def galaxies_done_in_any(conn: psycopg.Connection, pipelines: Sequence[str]) -> int:
    """Galaxies with a done task in at least one of ``pipelines``: the tasks a pipeline routed
    from all of them should have (one scan of their done tasks)."""
    row = conn.execute(
        "SELECT count(DISTINCT source_id) FROM tasks "
        "WHERE pipeline = ANY(%(pipelines)s) AND state = 'done'",
        {"pipelines": list(pipelines)},
    ).fetchone()
    return int(row[0]) if row else 0


def stale_leases(conn: psycopg.Connection, grace_s: float, examples: int) -> dict[str, Finding]:
    """Running tasks whose lease expired more than ``grace_s`` seconds before ``now()``, per
    pipeline (a range of the partial index ``tasks_leases``)."""
    where: LiteralString = (
        "state = 'running' AND lease_expires < now() - make_interval(secs => %(grace)s)"
    )
    return _per_pipeline(conn, where, {"grace": float(grace_s), "examples": examples})


def attempts_over(conn: psycopg.Connection, limit: int, examples: int) -> dict[str, Finding]:
    """Tasks claimed more than ``limit`` times, per pipeline."""
    return _per_pipeline(conn, "attempts > %(limit)s", {"limit": limit, "examples": examples})


def finished_without_reason(conn: psycopg.Connection, examples: int) -> dict[str, Finding]:
    """Failed or skipped tasks whose ``last_error`` states no reason (NULL or blank)."""
    where: LiteralString = (
        "state IN ('failed', 'skipped') AND (last_error IS NULL OR last_error !~ '[^[:space:]]')"
    )
    return _per_pipeline(conn, where, {"examples": examples})


# -- results and their tasks ---------------------------------------------------------------------


def done_without_cutout(conn: psycopg.Connection, pipeline: str, examples: int) -> Finding:
    """Done ``pipeline`` (fetch) tasks without a ``cutouts`` row."""
    hits: LiteralString = (
        "SELECT t.source_id AS key, t.source_id::text AS label FROM tasks t "
        "WHERE t.pipeline = %(pipeline)s AND t.state = 'done' "
        "AND NOT EXISTS (SELECT 1 FROM cutouts c WHERE c.source_id = t.source_id)"
    )
    return _finding(conn, hits, {"pipeline": pipeline, "examples": examples})


# A result row is accounted for by its galaxy's task when that task is done, or when it was
# queued again after the row was written (an operator's requeue: the earlier result stays while
# the new run is pending). The row and the done task commit in one transaction, so a row newer
# than its task's last enqueue, with the task not done, was written by no completion.


def cutouts_without_done_task(conn: psycopg.Connection, pipeline: str, examples: int) -> Finding:
    """``cutouts`` rows that no done ``pipeline`` (fetch) task accounts for."""
    hits: LiteralString = (
        "SELECT c.source_id AS key, c.source_id::text AS label FROM cutouts c "
        "WHERE NOT EXISTS (SELECT 1 FROM tasks t "
        "WHERE t.pipeline = %(pipeline)s AND t.source_id = c.source_id "
        "AND (t.state = 'done' OR t.enqueued_at > c.fetched_at))"
    )
    return _finding(conn, hits, {"pipeline": pipeline, "examples": examples})


def measurements_without_done_task(
    conn: psycopg.Connection, pipeline: str, examples: int
) -> Finding:
    """Galaxies with ``radon_measurements`` rows that no done ``pipeline`` task accounts for."""
    hits: LiteralString = (
        "SELECT DISTINCT m.source_id AS key, m.source_id::text AS label "
        "FROM radon_measurements m "
        "WHERE NOT EXISTS (SELECT 1 FROM tasks t "
        "WHERE t.pipeline = %(pipeline)s AND t.source_id = m.source_id "
        "AND (t.state = 'done' OR t.enqueued_at > m.measured_at))"
    )
    return _finding(conn, hits, {"pipeline": pipeline, "examples": examples})


def _prediction_table(pipeline: str) -> LiteralString:
    """The table of ``pipeline``'s predictions (:data:`PREDICTION_TABLES`)."""
    try:
        return PREDICTION_TABLES[pipeline]
    except KeyError:
        raise ValueError(
            f"pipeline {pipeline!r} writes no predictions; those that do: "
            f"{', '.join(PREDICTION_TABLES)}"
        ) from None


def predictions_without_done_task(
    conn: psycopg.Connection, pipeline: str, examples: int
) -> Finding:
    """Galaxies with rows of ``pipeline``'s prediction table (of any model) that no done
    ``pipeline`` task accounts for."""
    hits: LiteralString = (
        "SELECT DISTINCT p.source_id AS key, p.source_id::text AS label "
        "FROM " + _prediction_table(pipeline) + " p "
        "WHERE NOT EXISTS (SELECT 1 FROM tasks t "
        "WHERE t.pipeline = %(pipeline)s AND t.source_id = p.source_id "
        "AND (t.state = 'done' OR t.enqueued_at > p.predicted_at))"
    )
    return _finding(conn, hits, {"pipeline": pipeline, "examples": examples})


def done_without_prediction(conn: psycopg.Connection, pipeline: str, examples: int) -> Finding:
    """Done ``pipeline`` tasks whose galaxy has no row in that pipeline's prediction table, of
    any model (a prefix of its primary key)."""
    hits: LiteralString = (
        "SELECT t.source_id AS key, t.source_id::text AS label FROM tasks t "
        "WHERE t.pipeline = %(pipeline)s AND t.state = 'done' "
        "AND NOT EXISTS (SELECT 1 FROM " + _prediction_table(pipeline) + " p "
        "WHERE p.source_id = t.source_id)"
    )
    return _finding(conn, hits, {"pipeline": pipeline, "examples": examples})


def predictions_of_another_pipelines_model(
    conn: psycopg.Connection, pipeline: str, examples: int
) -> Finding:
    """Rows of ``pipeline``'s prediction table whose ``model_version`` is registered in
    ``models`` for another pipeline.

    The foreign key makes every prediction's model a registered one; that it is a model *of
    this pipeline* only the workers ensure (they refuse to load another pipeline's model).
    Labels are ``"<source_id> <model_version>"``, in primary-key order.
    """
    hits: LiteralString = (
        "SELECT ROW(p.source_id, p.model_version) AS key, "
        "p.source_id::text || ' ' || p.model_version AS label "
        "FROM " + _prediction_table(pipeline) + " p "
        "JOIN models m ON m.model_version = p.model_version "
        "WHERE m.pipeline <> %(pipeline)s"
    )
    return _finding(conn, hits, {"pipeline": pipeline, "examples": examples})


def done_without_measurement(conn: psycopg.Connection, pipeline: str, examples: int) -> Finding:
    """Done ``pipeline`` (radon) tasks whose galaxy has no combined row of any version."""
    hits: LiteralString = (
        "SELECT t.source_id AS key, t.source_id::text AS label FROM tasks t "
        "WHERE t.pipeline = %(pipeline)s AND t.state = 'done' "
        "AND NOT EXISTS (SELECT 1 FROM radon_measurements m "
        "WHERE m.source_id = t.source_id AND m.band = 'combined')"
    )
    return _finding(conn, hits, {"pipeline": pipeline, "examples": examples})


# One pass over radon_measurements in primary-key order, one group per (galaxy, version). The
# radon pipeline writes one combined row and one row per survey band for each (bands it could
# not measure included, their angles NULL); the combined row's n_bands counts the bands that
# entered the stack, which had a measured angle, and its nonfinite_pixels is the bands' sum.
_GROUPS_SQL: LiteralString = """
WITH grouped AS (
    SELECT source_id, algo_version,
           count(*) FILTER (WHERE band = 'combined') AS combined,
           count(*) FILTER (WHERE band <> 'combined') AS band_rows,
           count(DISTINCT band) FILTER (WHERE band = ANY(%(bands)s)) AS survey_bands,
           count(*) FILTER (WHERE band <> 'combined' AND angle_image_deg IS NOT NULL)
               AS measured_bands,
           max(n_bands) FILTER (WHERE band = 'combined') AS n_bands,
           sum(nonfinite_pixels) FILTER (WHERE band <> 'combined') AS band_nonfinite,
           max(nonfinite_pixels) FILTER (WHERE band = 'combined') AS combined_nonfinite
    FROM radon_measurements
    GROUP BY source_id, algo_version
), judged AS MATERIALIZED (
    SELECT source_id, algo_version,
           combined <> 1 AS bad_count,
           combined = 1 AND (
               band_rows <> cardinality(%(bands)s::text[])
               OR survey_bands <> cardinality(%(bands)s::text[])
               OR n_bands > measured_bands
               OR combined_nonfinite IS DISTINCT FROM band_nonfinite
           ) AS disagree
    FROM grouped
)
SELECT
    (SELECT count(*) FROM judged WHERE bad_count),
    ARRAY(SELECT source_id || ' ' || algo_version FROM judged WHERE bad_count
          ORDER BY source_id, algo_version LIMIT %(examples)s),
    (SELECT count(*) FROM judged WHERE disagree),
    ARRAY(SELECT source_id || ' ' || algo_version FROM judged WHERE disagree
          ORDER BY source_id, algo_version LIMIT %(examples)s)
"""


def measurement_groups(
    conn: psycopg.Connection, bands: Sequence[str], examples: int
) -> tuple[Finding, Finding]:
    """Judge every ``(source_id, algo_version)`` group of ``radon_measurements``.

    Parameters
    ----------
    conn
        Connection (the caller's snapshot).
    bands
        The survey bands a measurement has one row each of (``g r i z``).
    examples
        How many groups to name per finding.

    Returns
    -------
    tuple of Finding
        Groups whose combined rows are not exactly one; groups with one combined row whose
        band rows disagree with it (not one row per survey band, more bands stacked than
        measured, non-finite pixel counts that do not add up). Examples read
        ``"<source_id> <algo_version>"``.
    """
    row = conn.execute(_GROUPS_SQL, {"bands": list(bands), "examples": examples}).fetchone()
    assert row is not None
    return Finding(int(row[0]), tuple(row[1])), Finding(int(row[2]), tuple(row[3]))


# -- the objects to verify -------------------------------------------------------------------

_OBJECT_COLUMNS: LiteralString = (
    "c.source_id, c.object_key, c.sha256, c.nbytes, c.pack_key, c.pack_offset"
)
_DONE_JOIN: LiteralString = (
    "JOIN tasks t ON t.pipeline = %(pipeline)s AND t.source_id = c.source_id AND t.state = 'done'"
)

#: A uniform sample of the cutouts of done tasks: a Bernoulli sample of the table (every row
#: with the same probability, ``%(percent)s`` chosen to give a few times the wanted number),
#: of which ``%(n)s`` are kept at random. Reads the table once, sorts only the sampled rows.
SAMPLE_OBJECTS_SQL: LiteralString = (
    "SELECT "
    + _OBJECT_COLUMNS
    + " FROM cutouts c TABLESAMPLE BERNOULLI (%(percent)s) "
    + _DONE_JOIN
    + " ORDER BY random() LIMIT %(n)s"
)

#: The next page of cutouts of done tasks after ``%(after)s`` in ``source_id`` order (a range
#: of the primary key), for verifying every object.
OBJECT_PAGE_SQL: LiteralString = (
    "SELECT "
    + _OBJECT_COLUMNS
    + " FROM cutouts c "
    + _DONE_JOIN
    + " WHERE c.source_id > %(after)s ORDER BY c.source_id LIMIT %(n)s"
)

_OBJECT_ROWS_SQL: LiteralString = (
    "SELECT "
    + _OBJECT_COLUMNS
    + " FROM cutouts c "
    + _DONE_JOIN
    + " WHERE c.source_id = ANY(%(ids)s)"
)


def sample_objects(
    conn: psycopg.Connection, pipeline: str, n: int, percent: float
) -> list[ObjectRow]:
    """At most ``n`` cutouts of done ``pipeline`` tasks, drawn uniformly at random from a
    ``percent`` % Bernoulli sample of ``cutouts``."""
    params = {"pipeline": pipeline, "n": n, "percent": float(min(100.0, max(percent, 0.0)))}
    return [ObjectRow(*row) for row in conn.execute(SAMPLE_OBJECTS_SQL, params).fetchall()]


def object_page(conn: psycopg.Connection, pipeline: str, after: int, n: int) -> list[ObjectRow]:
    """The next ``n`` cutouts of done ``pipeline`` tasks with ``source_id > after``."""
    params = {"pipeline": pipeline, "after": after, "n": n}
    return [ObjectRow(*row) for row in conn.execute(OBJECT_PAGE_SQL, params).fetchall()]


def object_rows(
    conn: psycopg.Connection, pipeline: str, source_ids: Sequence[int]
) -> dict[int, ObjectRow]:
    """The cutouts of ``source_ids`` whose ``pipeline`` task is done, as they are now."""
    params = {"pipeline": pipeline, "ids": list(source_ids)}
    rows = conn.execute(_OBJECT_ROWS_SQL, params).fetchall()
    return {row[0]: ObjectRow(*row) for row in rows}
