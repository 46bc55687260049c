"""Models as artefacts: bytes in the object store under their SHA-256, a row in ``models``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from galpipe.db.models import get_model, list_models
from galpipe.pipelines.model_artefacts import (
    ModelArtefactError,
    ModelNotRegistered,
    ModelSpec,
    load_model_bytes,
    model_object_key,
    publish_model,
)
from galpipe.storage import LocalObjectStore, sha256_hex

SPEC = ModelSpec(
    pipeline="morphology",
    architecture="small_cnn",
    input_mode="asinh_bands",
    input_size=40,
    input_channels=4,
    training_data_sha256="ab" * 32,
    metrics={"rmse": 0.1, "rmse_per_answer": [0.1] * 37},
)


def test_published_bytes_are_addressed_by_their_hash_and_read_back(
    pool: ConnectionPool, tmp_path: Path
) -> None:
    store = LocalObjectStore(tmp_path)
    data = b"\x08\x07onnx model bytes"
    with pool.connection() as conn:
        record = publish_model(conn, store, data, SPEC)
    assert record.model_version == sha256_hex(data)
    assert record.object_key == model_object_key("morphology", record.model_version)
    assert record.nbytes == len(data)
    assert record.created_at is not None
    assert record.metrics["rmse"] == 0.1
    with pool.connection() as conn:
        again, read = load_model_bytes(conn, store, record.model_version)
        assert read == data
        assert again == record
        # Publishing the same bytes again changes nothing: one row, the first metrics.
        publish_model(conn, store, data, replace(SPEC, metrics={"rmse": 9}))
        assert [m.model_version for m in list_models(conn, "morphology")] == [record.model_version]
        assert get_model(conn, record.model_version).metrics["rmse"] == 0.1  # type: ignore[union-attr]
        assert list_models(conn, "photoz") == []


def test_bytes_that_do_not_hash_to_the_version_are_refused(
    pool: ConnectionPool, tmp_path: Path
) -> None:
    store = LocalObjectStore(tmp_path)
    with pool.connection() as conn:
        record = publish_model(conn, store, b"the trained network", SPEC)
    (tmp_path / record.object_key).write_bytes(b"the trained network, retrained in place")
    with pool.connection() as conn, pytest.raises(ModelArtefactError, match="refusing bytes"):
        load_model_bytes(conn, store, record.model_version)
    (tmp_path / record.object_key).unlink()
    with pool.connection() as conn, pytest.raises(ModelArtefactError, match="missing"):
        load_model_bytes(conn, store, record.model_version)


def test_an_unregistered_version_is_named(pool: ConnectionPool, tmp_path: Path) -> None:
    with pool.connection() as conn, pytest.raises(ModelNotRegistered, match="0" * 64):
        load_model_bytes(conn, LocalObjectStore(tmp_path), "0" * 64)


def test_the_table_refuses_a_version_that_is_not_a_sha256(pool: ConnectionPool) -> None:
    with pool.connection() as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO models (model_version, pipeline, architecture, input_mode, input_size, "
            "input_channels, training_data_sha256, object_key, nbytes) "
            "VALUES ('v1', 'morphology', 'x', 'asinh_bands', 40, 4, %s, 'k', 1)",
            ("ab" * 32,),
        )
