"""``galpipe check``: reconcile the whole state against galpipe's promise, and say every breach.

The promise: every galaxy ends with exactly one result or a stated reason, and every stored
cutout is intact. :func:`run_check` judges it in two parts.

1. **The database, on one snapshot.** One ``REPEATABLE READ, READ ONLY`` transaction runs one
   set-based query per rule (``galpipe.db.check``): every catalogue galaxy has its tasks (its
   fetch task, and the task of every route out of a pipeline whose task is done, per the
   routes of ``pipeline_routes`` in the same snapshot); no task is running on a lease that
   expired longer than one sweep ago (by the database's clock); no task was claimed more than
   ``1 + GALPIPE_MAX_RETRIES`` times; every failed or skipped task states its reason; every
   done fetch has its ``cutouts`` row, every done radon task its measurement and every done
   morphology or photoz task its prediction, each prediction by a model registered for its
   pipeline; every ``(galaxy, algo_version)`` has exactly one combined row and band rows that
   agree with it; no result row lacks the done task that wrote it; and the tasks of each
   pipeline number the galaxies that should have one. A route's backfill (``galpipe routes
   add``) queues the galaxies done before it existed, so the route rules hold for those too.
2. **The objects, after it.** The cutouts of done fetch tasks (a uniform sample, or all of them
   page by page) are read back from the store and their size and sha256 compared with the row.
   Reading 10⁷ objects takes hours, so this part holds no snapshot open; instead, a row whose
   object looks wrong is read again from the database and its object once more before it
   counts, so a row that changed meanwhile is not reported. Only rows are ever followed to
   objects: an object written whose row has not committed yet is not looked at (it is no
   breach), while a committed row whose object is missing is one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool
from rich.console import Console
from rich.table import Table

from galpipe.db import check as db
from galpipe.db.control import MEASURED_PIPELINE
from galpipe.db.queue import STATES, task_counts
from galpipe.db.routes import PIPELINES, Route, routes
from galpipe.db.status import database_now
from galpipe.pipelines.fetch import FetchPipeline
from galpipe.pipelines.worker import RECOVERY_INTERVAL_S
from galpipe.settings import Settings
from galpipe.storage import ChecksumMismatch, ObjectNotFound, ObjectStore, ObjectStoreError
from galpipe.storage.base import sha256_hex
from galpipe.survey.layout import BANDS

__all__ = [
    "EXAMPLES",
    "KINDS",
    "PREDICTED_PIPELINE",
    "PREDICTED_PIPELINES",
    "Breach",
    "CheckReport",
    "default_lease_grace_s",
    "expected_task_counts",
    "render_check",
    "run_check",
]

#: Rows, keys or groups each breach names.
EXAMPLES = 5
#: Objects read per page when every object is verified (and rows re-read per recheck).
_PAGE_ROWS = 1000
#: A Bernoulli sample of the cutouts is drawn this many times larger than wanted (at least
#: ``_SAMPLE_SLACK`` rows more), so that it holds enough rows; if it still falls short, the
#: whole table is drawn from.
_SAMPLE_OVERDRAW = 3
_SAMPLE_SLACK = 100

#: The stage ingest queues for every galaxy; the routes of the database queue the others.
FIRST_PIPELINE = FetchPipeline.name
#: The pipelines whose results are predictions of a registered model, one row per (galaxy,
#: model_version) in each one's table (``galpipe.db.check.PREDICTION_TABLES``): the ``name`` of
#: ``MorphologyPipeline`` and ``PhotozPipeline``, named here because importing those modules
#: loads ONNX Runtime and scikit-learn, which the check never needs.
PREDICTED_PIPELINES: tuple[str, ...] = tuple(db.PREDICTION_TABLES)
#: The morphology pipeline, the first of them (what bench/check.py seeds).
PREDICTED_PIPELINE = PREDICTED_PIPELINES[0]

#: Every breach kind, and what it means. The names are stable: scripts and alerts match them.
KINDS: Mapping[str, str] = {
    "missing_tasks": (
        "galaxies without a task they must have: a catalogue galaxy without its fetch task, "
        "or a done task without the task of a route out of its pipeline (pipeline_routes; "
        "fetch -> radon unless changed), which its commit or the route's backfill queues"
    ),
    "upstream_not_done": "tasks whose galaxy has no done task, in any pipeline routed to theirs, "
    "that could have queued them",
    "stale_lease": "running tasks whose lease expired longer than one sweep ago: no worker "
    "is returning them to the queue",
    "attempts_exceeded": "tasks claimed more than 1 + GALPIPE_MAX_RETRIES times",
    "missing_reason": "failed or skipped tasks that state no reason (last_error empty)",
    "missing_cutout_record": "done fetch tasks without a cutouts row",
    "missing_object": "cutouts rows whose object is not in the store",
    "object_size_mismatch": "stored objects whose size differs from cutouts.nbytes (truncated "
    "or overwritten)",
    "object_checksum_mismatch": "stored objects whose sha256 differs from cutouts.sha256 "
    "(corrupted or overwritten)",
    "object_unreadable": "stored objects the store failed to return, twice",
    "measurement_count": "done radon tasks without a combined row, or (galaxy, algo_version) "
    "pairs with other than one combined row",
    "band_rows_disagree": "(galaxy, algo_version) pairs whose per-band rows disagree with the "
    "combined row: not one row per survey band, more bands stacked than measured, or "
    "non-finite pixel counts that do not add up",
    "prediction_count": "done morphology or photoz tasks without a prediction row "
    "(morphology_predictions, photoz_predictions; of any model_version)",
    "prediction_model": "prediction rows whose model_version is registered (models) for another "
    "pipeline than the one whose table holds them",
    "orphan_result": "result rows (cutouts, radon_measurements, morphology_predictions, "
    "photoz_predictions) that no done task wrote",
    "counts_do_not_add_up": "a pipeline's tasks do not number the galaxies that should have "
    "one (fetch: every galaxy; a route's downstream: every galaxy done in its upstreams), or "
    "tasks of no known pipeline",
}


@dataclass(frozen=True)
class Breach:
    """One rule broken: what, how many, and where.

    Attributes
    ----------
    kind
        A key of :data:`KINDS`.
    count
        Rows that break it (galaxies, tasks, objects or ``(galaxy, algo_version)`` pairs).
    examples
        Up to :data:`EXAMPLES` of them: source ids, object keys, ``"<source_id>
        <algo_version>"`` pairs, or (``counts_do_not_add_up``) one line per pipeline.
    pipeline
        The pipeline whose tasks or results break it, where there is one.
    """

    kind: str
    count: int
    examples: tuple[str, ...]
    pipeline: str | None = None

    @property
    def meaning(self) -> str:
        """What the kind means (:data:`KINDS`)."""
        return KINDS[self.kind]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "kind": self.kind,
            "pipeline": self.pipeline,
            "count": self.count,
            "examples": list(self.examples),
            "meaning": self.meaning,
        }

    def summary(self) -> str:
        """One line: kind, pipeline, count and examples."""
        where = f" [{self.pipeline}]" if self.pipeline else ""
        return f"{self.kind}{where}: {self.count:,} (e.g. {', '.join(self.examples)})"


@dataclass(frozen=True)
class CheckReport:
    """What :func:`run_check` found, as of ``taken_at`` (the database's clock).

    Attributes
    ----------
    taken_at
        When the snapshot of the database checks was taken.
    breaches
        Every rule broken, in the order of :data:`KINDS`; empty when the state is clean.
    counts
        Tasks by pipeline and state in the snapshot (every state present).
    expected
        How many tasks each pipeline should have, and of what (:func:`expected_task_counts`,
        on the snapshot's routes).
    galaxies
        Catalogue galaxies in the snapshot.
    objects_verified
        Objects read back and compared with their rows.
    sample
        Objects asked for (``None``: every object).
    lease_grace_s
        Seconds a lease may be past its expiry before it is stale.
    attempts_limit
        Most claims a task may have had (``1 + GALPIPE_MAX_RETRIES``).
    """

    taken_at: datetime
    breaches: tuple[Breach, ...]
    counts: Mapping[str, Mapping[str, int]]
    expected: Mapping[str, tuple[int, str]]
    galaxies: int
    objects_verified: int
    sample: int | None
    lease_grace_s: float
    attempts_limit: int

    @property
    def ok(self) -> bool:
        """Whether no rule is broken."""
        return not self.breaches

    def kinds(self) -> set[str]:
        """The kinds of the breaches found."""
        return {b.kind for b in self.breaches}

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: the verdict, the counts, what was verified, every breach."""
        return {
            "ok": self.ok,
            "taken_at": self.taken_at.isoformat(),
            "galaxies": self.galaxies,
            "counts": {p: dict(states) for p, states in self.counts.items()},
            "expected": {p: {"tasks": n, "of": of} for p, (n, of) in self.expected.items()},
            "objects_verified": self.objects_verified,
            "sample": self.sample,
            "lease_grace_s": self.lease_grace_s,
            "attempts_limit": self.attempts_limit,
            "breaches": [b.to_json() for b in self.breaches],
        }

    def failure_message(self) -> str:
        """The error line of a failed check: every breach's summary."""
        return f"{len(self.breaches)} breach(es): " + "; ".join(b.summary() for b in self.breaches)


def default_lease_grace_s(settings: Settings) -> float:
    """Seconds an expired lease may wait for a live worker's sweep before it counts as stale.

    A worker sweeps expired leases of its pipeline before a claim, at most every
    ``RECOVERY_INTERVAL_S`` (or once a lease period, if that is shorter); an idle worker claims
    again within ``GALPIPE_POLL_MAX_SECONDS``. So while any worker of the pipeline runs, no
    lease stays expired for longer than their sum.
    """
    return min(RECOVERY_INTERVAL_S, settings.lease_seconds) + settings.poll_max_seconds


def run_check(
    pool: ConnectionPool,
    store: ObjectStore,
    settings: Settings,
    *,
    sample: int | None = None,
    lease_grace_s: float | None = None,
    threads: int = 16,
) -> CheckReport:
    """Reconcile galpipe's state and report every breach of its promise.

    Parameters
    ----------
    pool
        Connection pool on the galpipe database.
    store
        The object store the fetch pipeline writes to.
    settings
        ``GALPIPE_MAX_RETRIES`` (the attempt limit) and the lease and poll settings (the
        default grace).
    sample
        Verify a uniform random sample of this many objects of done fetch tasks; ``None``
        verifies every one.
    lease_grace_s
        Seconds a running task's lease may be past expiry; default
        :func:`default_lease_grace_s`.
    threads
        Objects read concurrently.

    Returns
    -------
    CheckReport
        Clean when ``report.ok``.

    Raises
    ------
    ValueError
        If ``sample`` is not positive or ``lease_grace_s`` is negative.
    psycopg.Error
        If the database fails.
    """
    if sample is not None and sample <= 0:
        raise ValueError(f"sample must be a positive number of objects, got {sample}")
    grace = default_lease_grace_s(settings) if lease_grace_s is None else float(lease_grace_s)
    if grace < 0:
        raise ValueError(f"lease_grace_s must be >= 0 seconds, got {grace}")
    limit = 1 + settings.max_retries
    with pool.connection() as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        taken_at = database_now(conn)
        counts = task_counts(conn)
        galaxies = db.galaxy_count(conn)
        graph = routes(conn)
        expected = _expected_in_snapshot(conn, counts, galaxies, graph)
        found = list(_database_breaches(conn, counts, expected, graph, grace, limit))
        sampled = _sample(conn, counts, sample) if sample is not None else None
    objects = _ObjectTally()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="check-read") as readers:
        pages = [sampled] if sampled is not None else _all_object_pages(pool)
        for page in pages:
            objects.add(_verify_page(pool, store, readers, page))
    found.extend(objects.breaches())
    order = list(KINDS)
    found.sort(key=lambda b: (order.index(b.kind), b.pipeline or ""))
    return CheckReport(
        taken_at=taken_at,
        breaches=tuple(found),
        counts={p: {s: c.get(s, 0) for s in STATES} for p, c in sorted(counts.items())},
        expected=expected,
        galaxies=galaxies,
        objects_verified=objects.verified,
        sample=sample,
        lease_grace_s=grace,
        attempts_limit=limit,
    )


# -- the database rules ------------------------------------------------------------------------


def _database_breaches(
    conn: psycopg.Connection,
    counts: Mapping[str, Mapping[str, int]],
    expected: Mapping[str, tuple[int, str]],
    graph: Sequence[Route],
    grace: float,
    limit: int,
) -> Iterator[Breach]:
    """Every rule of the snapshot, in :data:`KINDS` order; only the broken ones come out."""
    first, n = FIRST_PIPELINE, EXAMPLES
    upstreams = _upstreams(graph)
    yield from _one("missing_tasks", db.galaxies_without_task(conn, first, n), first)
    for route in graph:
        yield from _one(
            "missing_tasks",
            db.done_without_downstream(conn, route.upstream, route.downstream, n),
            route.downstream,
        )
    for downstream, sources in upstreams.items():
        yield from _one(
            "upstream_not_done",
            db.downstream_without_done_upstream(conn, sources, downstream, n),
            downstream,
        )
    yield from _each("stale_lease", db.stale_leases(conn, grace, n))
    yield from _each("attempts_exceeded", db.attempts_over(conn, limit, n))
    yield from _each("missing_reason", db.finished_without_reason(conn, n))
    yield from _one("missing_cutout_record", db.done_without_cutout(conn, first, n), first)
    yield from _one(
        "measurement_count",
        db.done_without_measurement(conn, MEASURED_PIPELINE, n),
        MEASURED_PIPELINE,
    )
    count, disagree = db.measurement_groups(conn, list(BANDS), n)
    yield from _one("measurement_count", count, MEASURED_PIPELINE)
    yield from _one("band_rows_disagree", disagree, MEASURED_PIPELINE)
    for predicted in PREDICTED_PIPELINES:
        yield from _one(
            "prediction_count", db.done_without_prediction(conn, predicted, n), predicted
        )
    for predicted in PREDICTED_PIPELINES:
        yield from _one(
            "prediction_model",
            db.predictions_of_another_pipelines_model(conn, predicted, n),
            predicted,
        )
    yield from _one("orphan_result", db.cutouts_without_done_task(conn, first, n), first)
    yield from _one(
        "orphan_result",
        db.measurements_without_done_task(conn, MEASURED_PIPELINE, n),
        MEASURED_PIPELINE,
    )
    for predicted in PREDICTED_PIPELINES:
        yield from _one(
            "orphan_result", db.predictions_without_done_task(conn, predicted, n), predicted
        )
    yield from _counts_breach(expected, counts)


def _expected_in_snapshot(
    conn: psycopg.Connection,
    counts: Mapping[str, Mapping[str, int]],
    galaxies: int,
    graph: Sequence[Route],
) -> dict[str, tuple[int, str]]:
    """:func:`expected_task_counts`, counting in the snapshot the galaxies done in any upstream
    of a pipeline routed from several (one done in two of them has one task, not two)."""
    done_in_any = {
        d: db.galaxies_done_in_any(conn, sources)
        for d, sources in _upstreams(graph).items()
        if len(sources) > 1
    }
    return expected_task_counts(counts, galaxies, graph, done_in_any)


def _upstreams(graph: Sequence[Route]) -> dict[str, list[str]]:
    """Each routed pipeline's upstream pipelines, by name."""
    upstreams: dict[str, list[str]] = {}
    for route in graph:
        upstreams.setdefault(route.downstream, []).append(route.upstream)
    return upstreams


def _one(kind: str, finding: db.Finding, pipeline: str | None = None) -> Iterator[Breach]:
    if finding.count:
        yield Breach(kind, finding.count, finding.examples, pipeline)


def _each(kind: str, findings: Mapping[str, db.Finding]) -> Iterator[Breach]:
    for pipeline, finding in findings.items():
        yield from _one(kind, finding, pipeline)


def expected_task_counts(
    counts: Mapping[str, Mapping[str, int]],
    galaxies: int,
    graph: Sequence[Route],
    done_in_any: Mapping[str, int] | None = None,
) -> dict[str, tuple[int, str]]:
    """How many tasks each pipeline should have, and of what.

    Every galaxy has a fetch task; the downstream of routes has one task per galaxy done in
    its upstreams (``done_in_any`` gives that number for a pipeline routed from several; one
    upstream's is its done count); a known pipeline no route leads to any more keeps the tasks
    its removed route queued, so no number is expected of it; any other pipeline has none.
    """
    expected = {FIRST_PIPELINE: (galaxies, "galaxies")}
    for downstream, sources in sorted(_upstreams(graph).items()):
        if len(sources) == 1:
            done = counts.get(sources[0], {}).get("done", 0)
        else:
            done = (done_in_any or {})[downstream]
        expected[downstream] = (done, "done " + " or ".join(sources))
    for pipeline in counts:
        if pipeline not in PIPELINES:
            expected.setdefault(pipeline, (0, "no such pipeline"))
    return expected


def _counts_breach(
    expected: Mapping[str, tuple[int, str]], counts: Mapping[str, Mapping[str, int]]
) -> Iterator[Breach]:
    """Each pipeline's tasks (the sum of its state counts) against the number it should have."""
    off = 0
    lines = []
    for pipeline, (want, of_what) in sorted(expected.items()):
        have = sum(counts.get(pipeline, {}).values())
        if have != want:
            off += abs(have - want)
            lines.append(f"{pipeline}: {have} tasks, {want} {of_what}")
    if off:
        yield Breach("counts_do_not_add_up", off, tuple(lines))


# -- the objects -------------------------------------------------------------------------------


def _sample(
    conn: psycopg.Connection, counts: Mapping[str, Mapping[str, int]], n: int
) -> list[db.ObjectRow]:
    """``n`` object rows drawn uniformly (in the snapshot); fewer only if fewer exist."""
    done = max(counts.get(FIRST_PIPELINE, {}).get("done", 0), 1)
    percent = 100.0 * max(_SAMPLE_OVERDRAW * n, n + _SAMPLE_SLACK) / done
    rows = db.sample_objects(conn, FIRST_PIPELINE, n, percent)
    if len(rows) < n and percent < 100.0:
        rows = db.sample_objects(conn, FIRST_PIPELINE, n, 100.0)
    return rows


def _all_object_pages(pool: ConnectionPool) -> Iterator[list[db.ObjectRow]]:
    """Every object row of a done fetch task, a page at a time, each page its own statement."""
    after = -(2**63)
    while True:
        with pool.connection() as conn:
            page = db.object_page(conn, FIRST_PIPELINE, after, _PAGE_ROWS)
        if not page:
            return
        yield page
        after = page[-1].source_id


def _verify_object(store: ObjectStore, row: db.ObjectRow) -> str | None:
    """The breach kind of ``row``'s object, or ``None`` when it is intact."""
    try:
        if row.pack_key is None or row.pack_offset is None:
            data = store.get(row.object_key)
        else:  # a packed cutout: its slice of the pack
            data = store.get_range(row.pack_key, row.pack_offset, row.nbytes)
    except ObjectNotFound:
        return "missing_object"
    except ChecksumMismatch:
        return "object_checksum_mismatch"  # a digest the backend recorded disagrees
    except ObjectStoreError:
        return "object_unreadable"
    if len(data) != row.nbytes:
        return "object_size_mismatch"
    if sha256_hex(data) != row.sha256:
        return "object_checksum_mismatch"
    return None


@dataclass
class _PageResult:
    verified: int
    bad: list[tuple[str, db.ObjectRow]]


def _verify_page(
    pool: ConnectionPool,
    store: ObjectStore,
    readers: ThreadPoolExecutor,
    rows: Sequence[db.ObjectRow],
) -> _PageResult:
    """Verify ``rows``' objects; confirm each bad one against its row as it is now."""
    kinds = list(readers.map(lambda row: _verify_object(store, row), rows))
    suspects = [(k, row) for k, row in zip(kinds, rows, strict=True) if k is not None]
    if not suspects:
        return _PageResult(len(rows), [])
    with pool.connection() as conn:
        now = db.object_rows(conn, FIRST_PIPELINE, [row.source_id for _, row in suspects])
    confirmed = []
    for _, row in suspects:
        # The row changed or its task is no longer done: it was read mid-change, not broken.
        if now.get(row.source_id) != row:
            continue
        kind = _verify_object(store, row)
        if kind is not None:
            confirmed.append((kind, row))
    return _PageResult(len(rows), confirmed)


@dataclass
class _ObjectTally:
    """Bad objects by kind (counts and the first few keys), and how many were verified."""

    verified: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, page: _PageResult) -> None:
        self.verified += page.verified
        for kind, row in page.bad:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            keys = self.examples.setdefault(kind, [])
            if len(keys) < EXAMPLES:
                keys.append(row.object_key)

    def breaches(self) -> Iterable[Breach]:
        for kind, n in self.counts.items():
            yield Breach(kind, n, tuple(self.examples[kind]), FIRST_PIPELINE)


# -- rendering -------------------------------------------------------------------------------


def render_check(report: CheckReport, console: Console) -> None:
    """Print ``report`` as rich tables: tasks against what they should number, then breaches."""
    expected = report.expected
    tasks = Table(title=f"Tasks at {report.taken_at:%Y-%m-%d %H:%M:%S %Z}")
    tasks.add_column("pipeline")
    for state in STATES:
        tasks.add_column(state, justify="right")
    tasks.add_column("total", justify="right")
    tasks.add_column("should be", justify="right")
    for pipeline in sorted({*expected, *report.counts}):
        states = report.counts.get(pipeline, {})
        total = sum(states.values())
        if pipeline in expected:
            want, of_what = expected[pipeline]
            colour, should_be = ("green" if total == want else "red"), f"{want:,} ({of_what})"
        else:  # a known pipeline whose route was removed: its tasks stay, unjudged
            colour, should_be = "default", "- (no route)"
        tasks.add_row(
            pipeline,
            *(f"{states.get(s, 0):,}" for s in STATES),
            f"[{colour}]{total:,}[/]",
            should_be,
        )
    console.print(tasks)
    scope = "all" if report.sample is None else f"a sample of {report.sample:,}"
    console.print(
        f"{report.galaxies:,} galaxies; {report.objects_verified:,} objects verified ({scope}); "
        f"stale lease: expired > {report.lease_grace_s:g} s ago; "
        f"attempt limit {report.attempts_limit}"
    )
    if report.ok:
        console.print("[green]no breach[/green]: every galaxy has its tasks, results and objects")
        return
    breaches = Table(title=f"Breaches ({len(report.breaches)})")
    breaches.add_column("kind", style="red")
    breaches.add_column("pipeline")
    breaches.add_column("count", justify="right")
    breaches.add_column("where (examples)", overflow="fold")
    breaches.add_column("meaning", overflow="fold")
    for b in report.breaches:
        breaches.add_row(
            b.kind, b.pipeline or "-", f"{b.count:,}", "\n".join(b.examples), b.meaning
        )
    console.print(breaches)
