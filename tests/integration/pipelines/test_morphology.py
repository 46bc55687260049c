"""The morphology pipeline on the worker loop: stored cutouts in, Galaxy Zoo fractions out."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from psycopg_pool import ConnectionPool

from galpipe.db.morphology import predictions_for
from galpipe.db.queue import TaskQueue
from galpipe.db.routes import add_route
from galpipe.learning.inference import MorphologyModel
from galpipe.pipelines.model_artefacts import (
    ModelArtefactError,
    ModelSpec,
    publish_model,
)
from galpipe.pipelines.morphology import MorphologyPipeline, build_morphology_pipeline
from galpipe.pipelines.stored_cutouts import decode_cutout
from galpipe.pipelines.worker import Worker
from galpipe.science import gz2
from galpipe.science.morphology_input import channels_for, network_input
from galpipe.settings import Settings, SettingsError
from galpipe.storage import LocalObjectStore
from galpipe.synthetic.catalog import make_truths
from galpipe.synthetic.fitsfile import cutout_fits_bytes
from tests.integration.fetched_cutouts import store_fetched

torch = pytest.importorskip("torch", reason="exporting a network needs the train extra")

from galpipe.learning.networks import build_network  # noqa: E402
from galpipe.learning.onnx_export import export_onnx  # noqa: E402

MODE = "asinh_bands"


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    torch.manual_seed(0)
    return export_onnx(build_network("small_cnn", channels_for(MODE)), channels_for(MODE), 40)


def _spec(**changes: object) -> ModelSpec:
    spec = ModelSpec(
        pipeline="morphology",
        architecture="small_cnn",
        input_mode=MODE,
        input_size=40,
        input_channels=channels_for(MODE),
        training_data_sha256="0" * 64,
        metrics={},
    )
    return replace(spec, **changes)


def _fetched(pool: ConnectionPool, store: LocalObjectStore, blobs: dict[int, bytes]) -> None:
    """Galaxies as a fetch leaves them: rows, objects, done fetch tasks, and the route that
    queues their morphology tasks."""
    store_fetched(pool, store, blobs, dict.fromkeys(blobs, (10.0, 0.0)))
    TaskQueue(pool).enqueue("fetch", list(blobs))
    with pool.connection() as conn:
        conn.execute("UPDATE tasks SET state = 'done' WHERE pipeline = 'fetch'")
        assert add_route(conn, "fetch", "morphology") == len(blobs)


def test_every_galaxy_is_predicted_or_failed_with_its_reason(
    pool: ConnectionPool, tmp_path: Path, onnx_bytes: bytes
) -> None:
    truths = make_truths(12, seed=11)
    store = LocalObjectStore(tmp_path / "objects")
    blobs = {t.source_id: cutout_fits_bytes(t) for t in truths}
    broken, tampered, *good = list(blobs)
    blobs[broken] = b"SIMPLE  = not a cutout"
    _fetched(pool, store, blobs)
    (tmp_path / "objects" / f"cutouts/test/{tampered}.fits").write_bytes(b"changed")
    with pool.connection() as conn:
        record = publish_model(conn, store, onnx_bytes, _spec())
    model = MorphologyModel.from_bytes(onnx_bytes, device="cpu")
    pipeline = MorphologyPipeline(pool=pool, store=store, model=model, record=record, batch_size=5)
    worker = Worker(pipeline, TaskQueue(pool), owner="morphology-test")
    worker.run(stop_when_idle=True)
    pipeline.close()

    assert worker.stats.outcomes == {"done": 10, "failed": 2}
    with pool.connection() as conn:
        failed = dict(
            conn.execute(
                "SELECT source_id, last_error FROM tasks "
                "WHERE pipeline = 'morphology' AND state = 'failed'"
            ).fetchall()
        )
        rows = predictions_for(conn, record.model_version, list(blobs))
    assert set(failed) == {broken, tampered}
    assert "checksum" in failed[tampered].lower() or "sha256" in failed[tampered].lower()
    assert sorted(rows.source_ids) == sorted(good)
    # What was stored is the network's output for the decoded, rendered cutout: the same path
    # done by hand gives the same fractions (to the float32 precision of the table).
    cubes = np.stack([decode_cutout(blobs[sid], 40).data for sid in rows.source_ids])
    expected = model.predict(network_input(cubes, MODE))
    np.testing.assert_allclose(rows.fractions, expected, atol=1e-6)
    gz2.check_fractions(rows.fractions, atol=1e-5)
    codes, probability = gz2.six_class(expected)
    assert rows.six_class == [gz2.SIX_CLASSES[c] for c in codes]
    np.testing.assert_allclose(rows.six_class_probability, probability, atol=1e-6)


def test_a_cutout_of_another_size_fails_naming_both_sizes(
    pool: ConnectionPool, tmp_path: Path, onnx_bytes: bytes
) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    [truth] = make_truths(1, seed=2)
    _fetched(pool, store, {truth.source_id: cutout_fits_bytes(truth)})
    with pool.connection() as conn:
        record = publish_model(conn, store, onnx_bytes, _spec())
    model = MorphologyModel.from_bytes(onnx_bytes, device="cpu")
    pipeline = MorphologyPipeline(
        pool=pool, store=store, model=model, record=replace(record, input_size=64)
    )
    worker = Worker(pipeline, TaskQueue(pool), owner="morphology-test")
    worker.run(stop_when_idle=True)
    pipeline.close()
    with pool.connection() as conn:
        (error,) = conn.execute(
            "SELECT last_error FROM tasks WHERE pipeline = 'morphology'"
        ).fetchone()
    assert "40 px" in error
    assert "64 px" in error


def test_the_worker_refuses_weights_that_do_not_hash_to_its_model(
    pool: ConnectionPool, tmp_path: Path, onnx_bytes: bytes, database_url: str
) -> None:
    store_dir = tmp_path / "objects"
    store = LocalObjectStore(store_dir)
    with pool.connection() as conn:
        record = publish_model(conn, store, onnx_bytes, _spec())
    settings = Settings.from_env(
        {
            "GALPIPE_DATABASE_URL": database_url,
            "GALPIPE_OBJECT_STORE": store_dir.as_uri(),
            "GALPIPE_MORPHOLOGY_MODEL": record.model_version,
            "GALPIPE_MORPHOLOGY_DEVICE": "cpu",
        }
    )
    pipeline = build_morphology_pipeline(settings, pool, threading.Event())
    assert pipeline.model_version == record.model_version
    pipeline.close()
    # Retrained in place: other weights under the same key.
    (store_dir / record.object_key).write_bytes(onnx_bytes[:-1] + b"\x00")
    with pytest.raises(ModelArtefactError, match="do not hash"):
        build_morphology_pipeline(settings, pool, threading.Event())
    with pytest.raises(SettingsError, match="GALPIPE_MORPHOLOGY_MODEL"):
        build_morphology_pipeline(replace(settings, morphology_model=None), pool, threading.Event())


def test_a_model_whose_rendering_does_not_fit_its_channels_is_refused(
    pool: ConnectionPool, tmp_path: Path, onnx_bytes: bytes
) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    with pool.connection() as conn:
        record = publish_model(conn, store, onnx_bytes, _spec(input_mode="lupton_rgb"))
    model = MorphologyModel.from_bytes(onnx_bytes, device="cpu")
    with pytest.raises(ValueError, match="lupton_rgb"):
        MorphologyPipeline(pool=pool, store=store, model=model, record=record)
