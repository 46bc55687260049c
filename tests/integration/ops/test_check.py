"""``galpipe check`` against state the real pipelines made, then against each corruption of it.

The clean state is built once per module by the production code: the synthetic sky served on
loopback, a fetch worker (its cutouts into a local store), a radon worker (its measurements),
plus a galaxy on blank sky (skipped, with its reason) and one ingested after the run (its
fetch task queued). Every test gets a copy (a database cloned from it, the store's directory
copied), corrupts one thing as a failure or a bug would, and asserts that the check names the
right breach kind and the right galaxy or key, and nothing else. The morphology tests first
route fetch -> morphology in their copy and run a morphology worker with the demo's shipped
network over it; the photo-z tests route fetch -> photoz and run a photo-z worker with a small
kNN trained on the stored cutouts themselves.
"""

from __future__ import annotations

import itertools
import json
import shutil
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

import galpipe.cli
from galpipe.cli import main
from galpipe.db import check as rules
from galpipe.db.breaker import BreakerPolicy, CircuitBreaker
from galpipe.db.connection import open_pool
from galpipe.db.control import requeue_for_version
from galpipe.db.galaxies import insert_galaxies
from galpipe.db.queue import TaskQueue
from galpipe.db.ratelimit import RateLimitPolicy, TokenBucket
from galpipe.db.routes import add_route, remove_route
from galpipe.demo.model import publish_demo_model
from galpipe.learning.inference import MorphologyModel
from galpipe.learning.pixel_redshift import PixelRedshiftModel
from galpipe.ops.check import (
    EXAMPLES,
    PREDICTED_PIPELINES,
    CheckReport,
    default_lease_grace_s,
    run_check,
)
from galpipe.pipelines.fetch import FetchPipeline
from galpipe.pipelines.model_artefacts import ModelSpec, publish_model
from galpipe.pipelines.morphology import MorphologyPipeline
from galpipe.pipelines.photoz import PhotozPipeline
from galpipe.pipelines.radon import RadonPipeline
from galpipe.pipelines.stored_cutouts import decode_cutout
from galpipe.pipelines.worker import Worker
from galpipe.science.core import RadonConfig
from galpipe.science.photoz_pixels import pixel_vectors, sky_noise_errors
from galpipe.science.radon import RadonOperator
from galpipe.settings import Settings
from galpipe.storage import LocalObjectStore, ObjectStore, S3ObjectStore
from galpipe.survey.layout import BANDS, PIXSCALE_ARCSEC
from galpipe.survey.legacysurvey import CutoutRequest, LegacySurveyClient
from galpipe.synthetic import BlankRegion, FaultConfig, SyntheticSky, make_truths, truth_for
from galpipe.synthetic.truth import SkyConfig, TruthGalaxy
from tests.conftest import TEMPLATE_DB

ZEROS_BOX = BlankRegion(100.0, 101.0, 0.0, 1.0, "zeros")
BLANK_ID, PENDING_ID = 11, 12
EASY = SkyConfig(axis_ratio=(0.3, 0.5), r_mag=(17.0, 18.0), neighbour_fraction=0.0)
SETTINGS = Settings()
_names = itertools.count()


@pytest.fixture(autouse=True)
def _test_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """main's logging set-up is the process's; the test run keeps its own."""
    monkeypatch.setattr(galpipe.cli, "configure_logging", lambda *_: None)


# --------------------------------------------------------------------------------------------
# Building state with the real pipelines


def _ingest(pool: ConnectionPool, truths: Sequence[TruthGalaxy]) -> None:
    rows = [(i, t.source_id, t.ra, t.dec, "{}") for i, t in enumerate(truths)]
    with pool.connection() as conn, conn.transaction():
        insert_galaxies(conn, "test", rows)
        TaskQueue(pool).enqueue("fetch", [t.source_id for t in truths], conn=conn)


def _fetch(pool: ConnectionPool, store: ObjectStore, sky: SyntheticSky) -> None:
    """One fetch worker, run until the queue is empty."""
    stop = threading.Event()
    bucket = TokenBucket(pool, "fetch", RateLimitPolicy(200.0, 10.0))
    bucket.configure()
    pipeline = FetchPipeline(
        pool=pool,
        client=LegacySurveyClient(CutoutRequest(base_url=sky.url), read_timeout=5.0),
        store=store,
        bucket=bucket,
        breaker=CircuitBreaker(pool, "fetch", BreakerPolicy()),
        owner="check-test",
        threads=4,
        stop=stop,
    )
    try:
        worker = Worker(pipeline, TaskQueue(pool), owner="check-test", stop_event=stop)
        worker.run(stop_when_idle=True)
    finally:
        pipeline.close()
        pipeline.client.close()


def _measure(pool: ConnectionPool, store: ObjectStore, operator: RadonOperator) -> None:
    """One radon worker, run until the queue is empty."""
    pipeline = RadonPipeline(pool=pool, store=store, config=RadonConfig(), operator=operator)
    try:
        Worker(pipeline, TaskQueue(pool), owner="check-test").run(stop_when_idle=True)
    finally:
        pipeline.close()


def _predict(pool: ConnectionPool, store: ObjectStore) -> str:
    """Route fetch -> morphology (its backfill queues every done fetch) and run one morphology
    worker, with the demo's shipped network, until the queue is empty; returns its version."""
    with pool.connection() as conn:
        record = publish_demo_model(conn, store)
        add_route(conn, "fetch", "morphology")
    model = MorphologyModel.from_bytes(store.get(record.object_key), device="cpu")
    pipeline = MorphologyPipeline(pool=pool, store=store, model=model, record=record, threads=2)
    try:
        Worker(pipeline, TaskQueue(pool), owner="check-test").run(stop_when_idle=True)
    finally:
        pipeline.close()
    return record.model_version


def _train_photoz_on_the_store(pool: ConnectionPool, store: ObjectStore) -> bytes:
    """A pixel kNN fitted on the stored cutouts of the done fetches, with stand-in redshifts:
    a model the photo-z worker can run over the same galaxies (its answers are not judged)."""
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT c.source_id, c.object_key FROM cutouts c JOIN tasks t "
            "ON t.pipeline = 'fetch' AND t.source_id = c.source_id AND t.state = 'done' "
            "ORDER BY c.source_id"
        ).fetchall()
    size = SETTINGS.cutout_size
    cubes = np.stack([decode_cutout(store.get(key), size).data for _, key in rows])
    centres = np.full((len(cubes), 2), (size - 1) / 2.0)
    vectors = pixel_vectors(
        cubes, sky_noise_errors(cubes), centres, pixel_scale_arcsec=PIXSCALE_ARCSEC
    )
    redshifts = np.linspace(0.1, 0.8, len(rows))
    ids = [sid for sid, _ in rows]
    model = PixelRedshiftModel(combiner="density_mode").fit(vectors, redshifts, ids, k_grid=(2, 4))
    return model.to_bytes()


def _predict_photoz(pool: ConnectionPool, store: ObjectStore) -> str:
    """Route fetch -> photoz (its backfill queues every done fetch) and run one photo-z worker
    until the queue is empty; returns its model's version."""
    data = _train_photoz_on_the_store(pool, store)
    spec = ModelSpec(
        pipeline="photoz",
        architecture="pixel_knn",
        input_mode="pixel_vectors",
        input_size=SETTINGS.cutout_size,
        input_channels=len(BANDS),
        training_data_sha256="0" * 64,
        metrics={},
    )
    with pool.connection() as conn:
        record = publish_model(conn, store, data, spec)
        add_route(conn, "fetch", "photoz")
    model = PixelRedshiftModel.from_bytes(data)
    pipeline = PhotozPipeline(pool=pool, store=store, model=model, record=record, threads=2)
    try:
        Worker(pipeline, TaskQueue(pool), owner="check-test").run(stop_when_idle=True)
    finally:
        pipeline.close()
    return record.model_version


def _new_database(pg_server, template: str) -> str:
    name = f"galpipe_check_{next(_names)}"
    admin = pg_server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    return name


def _drop_database(pg_server, name: str) -> None:
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@dataclass(frozen=True)
class World:
    """A database and a store directory holding a clean, finished run (the template)."""

    database: str
    objects: Path
    measured: tuple[int, ...]


@pytest.fixture(scope="module")
def world(pg_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from tests.unit.science import operator_for

    database = _new_database(pg_server, TEMPLATE_DB)
    objects = tmp_path_factory.mktemp("check-world") / "objects"
    truths = make_truths(5, seed=11, config=EASY)
    blank = truth_for(BLANK_ID, ZEROS_BOX.ra_min + 0.5, 0.5)
    pending = truth_for(PENDING_ID, 20.0, 20.0)
    sky = SyntheticSky([*truths, blank], faults=FaultConfig(blank_regions=(ZEROS_BOX,)), rate=0)
    sky.start()
    pool = open_pool(make_conninfo(pg_server.get_uri(), dbname=database), max_size=8)
    try:
        store = LocalObjectStore(objects)
        _ingest(pool, [*truths, blank])
        _fetch(pool, store, sky)
        _measure(pool, store, operator_for(tmp_path_factory))
        _ingest(pool, [pending])
    finally:
        pool.close()
        sky.stop()
    yield World(database, objects, tuple(sorted(t.source_id for t in truths)))
    _drop_database(pg_server, database)


@dataclass
class State:
    """A private copy of the world for one test."""

    pool: ConnectionPool
    store: ObjectStore
    objects: Path
    database_url: str
    measured: tuple[int, ...]

    def sql(self, query: str, params: Sequence[object] = ()) -> list[tuple]:
        with self.pool.connection() as conn:
            cur = conn.execute(query, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def key(self, source_id: int) -> str:
        return str(
            self.sql("SELECT object_key FROM cutouts WHERE source_id = %s", [source_id])[0][0]
        )

    def check(self, **kwargs) -> CheckReport:
        return run_check(self.pool, self.store, SETTINGS, **kwargs)


@pytest.fixture
def state(world: World, pg_server, tmp_path: Path) -> Iterator[State]:
    name = _new_database(pg_server, world.database)
    objects = tmp_path / "objects"
    shutil.copytree(world.objects, objects)
    url = make_conninfo(pg_server.get_uri(), dbname=name)
    pool = open_pool(url, max_size=4)
    yield State(pool, LocalObjectStore(objects), objects, url, world.measured)
    pool.close()
    _drop_database(pg_server, name)


@pytest.fixture
def predicted(state: State) -> str:
    """``state`` with every done fetch predicted by the morphology pipeline; its model."""
    return _predict(state.pool, state.store)


@pytest.fixture
def photoz_predicted(state: State) -> str:
    """``state`` with every done fetch given to the photo-z pipeline; its model."""
    return _predict_photoz(state.pool, state.store)


def _register_as(state: State, version: str, pipeline: str) -> str:
    """Register a copy of model ``version``'s row under a new version for ``pipeline``."""
    other = ("e" if pipeline == "morphology" else "d") * 64
    state.sql(
        "INSERT INTO models (model_version, pipeline, architecture, input_mode, input_size, "
        "input_channels, training_data_sha256, metrics, object_key, nbytes) "
        "SELECT %s, %s, architecture, input_mode, input_size, input_channels, "
        "training_data_sha256, metrics, object_key, nbytes FROM models WHERE model_version = %s",
        [other, pipeline, version],
    )
    return other


def only(report: CheckReport, kind: str):
    """The one breach of ``kind``; and no breach of another kind beside it."""
    assert report.kinds() == {kind}, [b.summary() for b in report.breaches]
    (breach,) = report.breaches
    return breach


# --------------------------------------------------------------------------------------------
# The clean state


def test_the_pipelines_leave_a_clean_state(state: State) -> None:
    report = state.check()
    assert report.ok, [b.summary() for b in report.breaches]
    states = dict(state.sql("SELECT source_id, state::text FROM tasks WHERE pipeline = 'fetch'"))
    assert states[BLANK_ID] == "skipped"
    assert states[PENDING_ID] == "queued"
    assert report.galaxies == len(state.measured) + 2
    assert report.counts["fetch"]["done"] == report.counts["radon"]["done"] == len(state.measured)
    assert report.objects_verified == len(state.measured)
    assert state.check(sample=2).objects_verified == 2
    assert state.check(sample=1000).objects_verified == len(state.measured)


def test_a_requeue_for_a_new_version_is_not_a_breach(state: State) -> None:
    # The earlier version's rows stay while the galaxy waits to be measured again.
    with state.pool.connection() as conn:
        assert requeue_for_version(conn, "radon", algo_version="v-next", dry_run=False) == len(
            state.measured
        )
    assert state.check().ok


def test_the_morphology_rules_find_nothing_without_morphology_data(state: State) -> None:
    assert state.sql("SELECT count(*) FROM tasks WHERE pipeline = 'morphology'") == [(0,)]
    assert state.sql("SELECT count(*) FROM morphology_predictions") == [(0,)]
    with state.pool.connection() as conn:
        assert rules.done_without_prediction(conn, "morphology", EXAMPLES).count == 0
        assert rules.predictions_without_done_task(conn, "morphology", EXAMPLES).count == 0
    assert state.check().ok


def test_the_morphology_pipeline_leaves_a_clean_state(state: State, predicted: str) -> None:
    report = state.check()
    assert report.ok, [b.summary() for b in report.breaches]
    assert report.counts["morphology"]["done"] == len(state.measured)
    rows = state.sql(
        "SELECT source_id FROM morphology_predictions WHERE model_version = %s ORDER BY source_id",
        [predicted],
    )
    assert tuple(r[0] for r in rows) == state.measured


def test_the_prediction_rules_cover_every_predicting_pipeline() -> None:
    assert {MorphologyPipeline.name, PhotozPipeline.name} == set(PREDICTED_PIPELINES)
    assert set(rules.PREDICTION_TABLES) == set(PREDICTED_PIPELINES)


def test_the_photoz_rules_find_nothing_without_photoz_data(state: State) -> None:
    assert state.sql("SELECT count(*) FROM tasks WHERE pipeline = 'photoz'") == [(0,)]
    assert state.sql("SELECT count(*) FROM photoz_predictions") == [(0,)]
    with state.pool.connection() as conn:
        assert rules.done_without_prediction(conn, "photoz", EXAMPLES).count == 0
        assert rules.predictions_without_done_task(conn, "photoz", EXAMPLES).count == 0
        assert rules.predictions_of_another_pipelines_model(conn, "photoz", EXAMPLES).count == 0
        with pytest.raises(ValueError, match="pipeline 'radon' writes no predictions"):
            rules.done_without_prediction(conn, "radon", EXAMPLES)


def test_the_photoz_pipeline_leaves_a_clean_state(state: State, photoz_predicted: str) -> None:
    report = state.check()
    assert report.ok, [b.summary() for b in report.breaches]
    assert report.expected["photoz"] == (len(state.measured), "done fetch")
    done = state.sql("SELECT source_id FROM tasks WHERE pipeline = 'photoz' AND state = 'done'")
    assert len(done) == report.counts["photoz"]["done"] >= len(state.measured) - 1
    rows = state.sql(
        "SELECT source_id FROM photoz_predictions WHERE model_version = %s ORDER BY source_id",
        [photoz_predicted],
    )
    assert rows == sorted(done)


# --------------------------------------------------------------------------------------------
# The task graph


def test_a_galaxy_without_its_fetch_task(state: State) -> None:
    state.sql("DELETE FROM tasks WHERE pipeline = 'fetch' AND source_id = %s", [PENDING_ID])
    report = state.check()
    assert report.kinds() == {"missing_tasks", "counts_do_not_add_up"}
    missing, counts = report.breaches
    assert (missing.pipeline, missing.count, missing.examples) == ("fetch", 1, (str(PENDING_ID),))
    assert counts.count == 1
    assert any(line.startswith("fetch:") for line in counts.examples)


def test_a_done_fetch_without_its_radon_task(state: State) -> None:
    sid = state.measured[0]
    state.sql("DELETE FROM tasks WHERE pipeline = 'radon' AND source_id = %s", [sid])
    report = state.check()
    # Its measurements lost their task too.
    assert report.kinds() == {"missing_tasks", "orphan_result", "counts_do_not_add_up"}
    missing = next(b for b in report.breaches if b.kind == "missing_tasks")
    assert (missing.pipeline, missing.examples) == ("radon", (str(sid),))


def test_a_radon_task_before_its_fetch_is_done(state: State) -> None:
    TaskQueue(state.pool).enqueue("radon", [PENDING_ID])
    report = state.check()
    assert report.kinds() == {"upstream_not_done", "counts_do_not_add_up"}
    assert report.breaches[0].examples == (str(PENDING_ID),)


def test_a_done_fetch_lacks_a_morphology_task_only_once_the_route_exists(state: State) -> None:
    done = [
        r[0]
        for r in state.sql(
            "SELECT source_id FROM tasks WHERE pipeline = 'fetch' "
            "AND state = 'done' ORDER BY source_id"
        )
    ]
    assert state.check().ok  # no route to morphology: no morphology task is owed
    with state.pool.connection() as conn:
        assert add_route(conn, "fetch", "morphology") == len(done)
    report = state.check()
    assert report.ok, [b.summary() for b in report.breaches]  # the backfill queued them
    assert report.expected["morphology"] == (len(done), "done fetch")
    state.sql("DELETE FROM tasks WHERE pipeline = 'morphology' AND source_id = %s", [done[0]])
    report = state.check()
    assert report.kinds() == {"missing_tasks", "counts_do_not_add_up"}
    missing = report.breaches[0]
    assert (missing.pipeline, missing.examples) == ("morphology", (str(done[0]),))
    # Removed, the route owes nothing more, and the tasks it queued are no breach.
    with state.pool.connection() as conn:
        assert remove_route(conn, "fetch", "morphology")
    assert state.check().ok


def test_a_task_routed_from_two_pipelines_needs_a_done_task_in_either(state: State) -> None:
    with state.pool.connection() as conn:
        add_route(conn, "fetch", "morphology")
        add_route(conn, "radon", "morphology")
    report = state.check()
    assert report.ok, [b.summary() for b in report.breaches]
    assert report.expected["morphology"] == (len(state.measured), "done fetch or radon")
    TaskQueue(state.pool).enqueue("morphology", [PENDING_ID])
    report = state.check()
    assert report.kinds() == {"upstream_not_done", "counts_do_not_add_up"}
    assert report.breaches[0].pipeline == "morphology"
    assert report.breaches[0].examples == (str(PENDING_ID),)


def test_tasks_of_an_unknown_pipeline_do_not_add_up(state: State) -> None:
    TaskQueue(state.pool).enqueue("bogus", [PENDING_ID, BLANK_ID])
    breach = only(state.check(), "counts_do_not_add_up")
    assert breach.count == 2
    assert breach.examples == ("bogus: 2 tasks, 0 no such pipeline",)


def test_a_lease_expired_beyond_one_sweep_is_stale(state: State) -> None:
    queue = TaskQueue(state.pool)
    (task,) = queue.claim_batch("fetch", 1, 300.0, "dead-worker")
    assert task.source_id == PENDING_ID
    # A live lease, and one that expired moments ago (a sweep may still be coming): no breach.
    assert state.check().ok
    state.sql(
        "UPDATE tasks SET lease_expires = now() - interval '1 second' WHERE source_id = %s",
        [PENDING_ID],
    )
    assert state.check().ok
    grace = default_lease_grace_s(SETTINGS)
    state.sql(
        "UPDATE tasks SET lease_expires = now() - make_interval(secs => %s) WHERE source_id = %s",
        [grace + 5.0, PENDING_ID],
    )
    breach = only(state.check(), "stale_lease")
    assert (breach.pipeline, breach.examples) == ("fetch", (str(PENDING_ID),))
    # A shorter grace, given explicitly, catches the lease that expired moments ago.
    state.sql(
        "UPDATE tasks SET lease_expires = now() - interval '2 seconds' WHERE source_id = %s",
        [PENDING_ID],
    )
    assert only(state.check(lease_grace_s=1.0), "stale_lease").count == 1


def test_attempts_beyond_the_retry_limit(state: State) -> None:
    sid = state.measured[1]
    limit = 1 + SETTINGS.max_retries
    state.sql(
        "UPDATE tasks SET attempts = %s WHERE pipeline = 'fetch' AND source_id = %s", [limit, sid]
    )
    assert state.check().ok  # the last allowed attempt
    state.sql(
        "UPDATE tasks SET attempts = %s WHERE pipeline = 'fetch' AND source_id = %s",
        [limit + 1, sid],
    )
    breach = only(state.check(), "attempts_exceeded")
    assert (breach.pipeline, breach.examples) == ("fetch", (str(sid),))


def test_a_skip_without_a_reason(state: State) -> None:
    state.sql("UPDATE tasks SET last_error = ' ' WHERE source_id = %s", [BLANK_ID])
    breach = only(state.check(), "missing_reason")
    assert (breach.pipeline, breach.examples) == ("fetch", (str(BLANK_ID),))


# --------------------------------------------------------------------------------------------
# Results and their tasks


def test_a_done_fetch_without_its_cutouts_row(state: State) -> None:
    sid = state.measured[2]
    state.sql("DELETE FROM cutouts WHERE source_id = %s", [sid])
    breach = only(state.check(), "missing_cutout_record")
    assert (breach.pipeline, breach.examples) == ("fetch", (str(sid),))


def test_a_cutouts_row_no_done_task_wrote(state: State) -> None:
    sid = state.measured[0]
    state.sql(
        "INSERT INTO cutouts (source_id, layer, bands, size, pixscale, object_key, sha256, nbytes) "
        "SELECT %s, layer, bands, size, pixscale, object_key || '.copy', sha256, nbytes "
        "FROM cutouts WHERE source_id = %s",
        [BLANK_ID, sid],
    )
    breach = only(state.check(), "orphan_result")
    assert (breach.pipeline, breach.examples) == ("fetch", (str(BLANK_ID),))


def test_measurements_no_done_task_wrote(state: State) -> None:
    sid = state.measured[0]
    state.sql(
        "INSERT INTO radon_measurements (source_id, algo_version, band, flags) "
        "SELECT %s, algo_version, band, flags FROM radon_measurements WHERE source_id = %s",
        [PENDING_ID, sid],
    )
    breach = only(state.check(), "orphan_result")
    assert (breach.pipeline, breach.examples) == ("radon", (str(PENDING_ID),))


def test_a_done_radon_task_without_a_combined_row(state: State) -> None:
    sid = state.measured[3]
    state.sql("DELETE FROM radon_measurements WHERE source_id = %s", [sid])
    breach = only(state.check(), "measurement_count")
    assert (breach.pipeline, breach.examples) == ("radon", (str(sid),))


def test_band_rows_without_their_combined_row(state: State) -> None:
    sid = state.measured[3]
    version = state.sql("SELECT algo_version FROM radon_measurements LIMIT 1")[0][0]
    # The galaxy keeps a complete measurement of another version, so only the pair is wrong.
    with state.pool.connection() as conn:
        conn.execute(
            "CREATE TEMP TABLE copied AS SELECT * FROM radon_measurements WHERE source_id = %s",
            [sid],
        )
        conn.execute("UPDATE copied SET algo_version = 'v-other'")
        conn.execute("INSERT INTO radon_measurements SELECT * FROM copied")
        conn.execute("DROP TABLE copied")
    state.sql(
        "DELETE FROM radon_measurements WHERE source_id = %s AND algo_version = %s "
        "AND band = 'combined'",
        [sid, version],
    )
    breach = only(state.check(), "measurement_count")
    assert breach.examples == (f"{sid} {version}",)


def test_a_doubled_combined_row(state: State) -> None:
    # The primary key forbids it today; the check counts rather than trusts the key, so a
    # schema change that loosened it would not hide duplicates.
    sid = state.measured[4]
    state.sql("ALTER TABLE radon_measurements DROP CONSTRAINT radon_measurements_pkey")
    state.sql(
        "INSERT INTO radon_measurements SELECT * FROM radon_measurements "
        "WHERE source_id = %s AND band = 'combined'",
        [sid],
    )
    breach = only(state.check(), "measurement_count")
    assert breach.examples[0].startswith(f"{sid} ")


def test_a_done_morphology_task_without_a_prediction(state: State, predicted: str) -> None:
    sid = state.measured[2]
    # A prediction of another model is a prediction: the galaxy keeps one.
    other = "f" * 64
    state.sql(
        "INSERT INTO models (model_version, pipeline, architecture, input_mode, input_size, "
        "input_channels, training_data_sha256, metrics, object_key, nbytes) "
        "SELECT %s, pipeline, architecture, input_mode, input_size, input_channels, "
        "training_data_sha256, metrics, object_key, nbytes FROM models WHERE model_version = %s",
        [other, predicted],
    )
    with state.pool.connection() as conn:
        conn.execute(
            "CREATE TEMP TABLE copied AS SELECT * FROM morphology_predictions WHERE source_id = %s",
            [sid],
        )
        conn.execute("UPDATE copied SET model_version = %s", [other])
        conn.execute("INSERT INTO morphology_predictions SELECT * FROM copied")
        conn.execute("DROP TABLE copied")
    state.sql(
        "DELETE FROM morphology_predictions WHERE source_id = %s AND model_version = %s",
        [sid, predicted],
    )
    assert state.check().ok
    state.sql("DELETE FROM morphology_predictions WHERE source_id = %s", [sid])
    breach = only(state.check(), "prediction_count")
    assert (breach.pipeline, breach.count, breach.examples) == ("morphology", 1, (str(sid),))


def test_predictions_no_done_task_wrote(state: State, predicted: str) -> None:
    sid, failed = state.measured[0], state.measured[1]
    # A galaxy without a morphology task, given a copy of another's prediction.
    with state.pool.connection() as conn:
        conn.execute(
            "CREATE TEMP TABLE copied AS SELECT * FROM morphology_predictions WHERE source_id = %s",
            [sid],
        )
        conn.execute("UPDATE copied SET source_id = %s", [PENDING_ID])
        conn.execute("INSERT INTO morphology_predictions SELECT * FROM copied")
        conn.execute("DROP TABLE copied")
    breach = only(state.check(), "orphan_result")
    assert (breach.pipeline, breach.examples) == ("morphology", (str(PENDING_ID),))
    # A galaxy whose task is queued again after its prediction is accounted for (the new run
    # is pending); one whose task failed without being queued again is not.
    state.sql(
        "UPDATE tasks SET state = 'queued', enqueued_at = now() "
        "WHERE pipeline = 'morphology' AND source_id = %s",
        [sid],
    )
    state.sql(
        "UPDATE tasks SET state = 'failed', last_error = 'set by the test' "
        "WHERE pipeline = 'morphology' AND source_id = %s",
        [failed],
    )
    breach = only(state.check(), "orphan_result")
    assert (breach.pipeline, breach.count) == ("morphology", 2)
    assert breach.examples == tuple(str(i) for i in sorted([PENDING_ID, failed]))


def _photoz_done(state: State) -> list[int]:
    rows = state.sql(
        "SELECT source_id FROM tasks WHERE pipeline = 'photoz' AND state = 'done' "
        "ORDER BY source_id"
    )
    return [r[0] for r in rows]


def test_a_done_photoz_task_without_a_prediction(state: State, photoz_predicted: str) -> None:
    sid = _photoz_done(state)[1]
    # A prediction of another photo-z model is a prediction: the galaxy keeps one.
    other = _register_as(state, photoz_predicted, "photoz")
    state.sql("UPDATE photoz_predictions SET model_version = %s WHERE source_id = %s", [other, sid])
    assert state.check().ok
    state.sql("DELETE FROM photoz_predictions WHERE source_id = %s", [sid])
    breach = only(state.check(), "prediction_count")
    assert (breach.pipeline, breach.count, breach.examples) == ("photoz", 1, (str(sid),))


def test_photoz_predictions_no_done_task_wrote(state: State, photoz_predicted: str) -> None:
    sid, failed = _photoz_done(state)[:2]
    # A galaxy without a photoz task, given a copy of another's redshift.
    state.sql(
        "INSERT INTO photoz_predictions (source_id, model_version, z_phot, z_err, n_pixels, "
        "error_source) SELECT %s, model_version, z_phot, z_err, n_pixels, error_source "
        "FROM photoz_predictions WHERE source_id = %s",
        [PENDING_ID, sid],
    )
    breach = only(state.check(), "orphan_result")
    assert (breach.pipeline, breach.examples) == ("photoz", (str(PENDING_ID),))
    # A task failed after its row was written (and not queued again) accounts for nothing.
    state.sql(
        "UPDATE tasks SET state = 'failed', last_error = 'set by the test' "
        "WHERE pipeline = 'photoz' AND source_id = %s",
        [failed],
    )
    breach = only(state.check(), "orphan_result")
    assert (breach.pipeline, breach.count) == ("photoz", 2)
    assert breach.examples == tuple(str(i) for i in sorted([PENDING_ID, failed]))


def test_a_photoz_prediction_by_a_morphology_model(state: State, photoz_predicted: str) -> None:
    sid = _photoz_done(state)[0]
    # Registered (the foreign key holds), but for the other pipeline.
    other = _register_as(state, photoz_predicted, "morphology")
    state.sql("UPDATE photoz_predictions SET model_version = %s WHERE source_id = %s", [other, sid])
    breach = only(state.check(), "prediction_model")
    assert (breach.pipeline, breach.count, breach.examples) == ("photoz", 1, (f"{sid} {other}",))


def test_a_morphology_prediction_by_a_photoz_model(state: State, predicted: str) -> None:
    sid = state.measured[0]
    other = _register_as(state, predicted, "photoz")
    state.sql(
        "UPDATE morphology_predictions SET model_version = %s WHERE source_id = %s",
        [other, sid],
    )
    breach = only(state.check(), "prediction_model")
    assert (breach.pipeline, breach.count, breach.examples) == (
        "morphology",
        1,
        (f"{sid} {other}",),
    )


@pytest.mark.parametrize(
    "corruption",
    [
        "DELETE FROM radon_measurements WHERE source_id = %(sid)s AND band = 'r'",
        "UPDATE radon_measurements SET n_bands = 5 WHERE source_id = %(sid)s AND band = 'combined'",
        "UPDATE radon_measurements SET nonfinite_pixels = nonfinite_pixels + 1 "
        "WHERE source_id = %(sid)s AND band = 'g'",
    ],
    ids=["a band row missing", "more bands stacked than measured", "pixel counts"],
)
def test_band_rows_that_disagree_with_the_combined_row(state: State, corruption: str) -> None:
    sid = state.measured[1]
    with state.pool.connection() as conn:
        conn.execute(corruption, {"sid": sid})  # type: ignore[arg-type]
    breach = only(state.check(), "band_rows_disagree")
    assert breach.count == 1
    assert breach.examples[0].startswith(f"{sid} ")


# --------------------------------------------------------------------------------------------
# Stored objects


def test_a_deleted_object(state: State) -> None:
    key = state.key(state.measured[0])
    state.store.delete(key)
    breach = only(state.check(), "missing_object")
    assert (breach.pipeline, breach.examples) == ("fetch", (key,))


def test_a_flipped_byte(state: State) -> None:
    key = state.key(state.measured[1])
    path = state.objects / key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    breach = only(state.check(), "object_checksum_mismatch")
    assert breach.examples == (key,)


def test_a_truncated_object(state: State) -> None:
    key = state.key(state.measured[2])
    path = state.objects / key
    path.write_bytes(path.read_bytes()[:-2880])
    breach = only(state.check(), "object_size_mismatch")
    assert breach.examples == (key,)


def test_a_sample_sees_only_what_it_draws(state: State) -> None:
    for sid in state.measured:
        state.store.delete(state.key(sid))
    report = state.check(sample=2)
    assert report.objects_verified == 2
    assert only(report, "missing_object").count == 2


def test_objects_on_s3(
    pg_server, s3_client, bucket: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    truths = make_truths(3, seed=5, config=EASY)
    database = _new_database(pg_server, TEMPLATE_DB)
    pool = open_pool(make_conninfo(pg_server.get_uri(), dbname=database), max_size=8)
    store = S3ObjectStore(s3_client, bucket, "check")
    sky = SyntheticSky(truths, rate=0).start()
    try:
        _ingest(pool, truths)
        _fetch(pool, store, sky)
        report = run_check(pool, store, SETTINGS)
        assert report.ok, [b.summary() for b in report.breaches]
        assert report.objects_verified == 3
        with pool.connection() as conn:
            keys = [r[0] for r in conn.execute("SELECT object_key FROM cutouts ORDER BY 1")]
        s3_client.delete_object(Bucket=bucket, Key=f"check/{keys[0]}")
        # Overwritten behind the store's back: S3's own checksum is of the new bytes.
        s3_client.put_object(Bucket=bucket, Key=f"check/{keys[1]}", Body=b"SIMPLE  = F")
        report = run_check(pool, store, SETTINGS)
        assert report.kinds() == {"missing_object", "object_size_mismatch"}
        by_kind = {b.kind: b.examples for b in report.breaches}
        assert by_kind == {"missing_object": (keys[0],), "object_size_mismatch": (keys[1],)}
    finally:
        sky.stop()
        pool.close()
        _drop_database(pg_server, database)


# --------------------------------------------------------------------------------------------
# The command


def test_the_command_exits_0_when_clean_and_1_naming_the_breach(
    state: State, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GALPIPE_DATABASE_URL", state.database_url)
    monkeypatch.setenv("GALPIPE_OBJECT_STORE", state.objects.as_uri())
    monkeypatch.setenv("COLUMNS", "300")  # rich's width: keys on one line
    assert main(["check", "--all"]) == 0
    assert "no breach" in capsys.readouterr().out

    key = state.key(state.measured[0])
    state.store.delete(key)
    assert main(["check", "--json", "--sample", "100"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["ok"] is False
    assert report["sample"] == 100
    assert [(b["kind"], b["examples"]) for b in report["breaches"]] == [("missing_object", [key])]
    assert captured.err.startswith("galpipe check: 1 breach(es): missing_object [fetch]: 1")
    assert key in captured.err

    assert main(["check"]) == 1
    out = capsys.readouterr().out
    assert "missing_object" in out
    assert key in out


def test_the_command_refuses_a_sample_of_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--sample", "0"])
    assert exit_info.value.code == 2
    assert "expected a positive integer" in capsys.readouterr().err
