"""Trained models as artefacts: their bytes in the object store, addressed by their SHA-256.

A morphology network is ONNX bytes, a photo-z model the bytes of
:meth:`galpipe.learning.pixel_redshift.PixelRedshiftModel.to_bytes`.
:func:`publish_model` stores the bytes under ``models/<pipeline>/<sha256>.<suffix>`` and registers
the row (:mod:`galpipe.db.models`) whose ``model_version`` is that SHA-256;
:func:`load_model_bytes` reads them back for a worker and refuses bytes that do not hash to the
version asked for, whether the object was overwritten, truncated or corrupted in transit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from galpipe.db.models import ModelRecord, get_model, register_model
from galpipe.errors import ConfigurationError, InputError, StorageError
from galpipe.runtime.database import database_errors, pool_from_settings
from galpipe.settings import Settings
from galpipe.storage import (
    ChecksumMismatch,
    ObjectNotFound,
    ObjectStore,
    object_store_from_settings,
    sha256_hex,
)

__all__ = [
    "ModelArtefactError",
    "ModelNotRegistered",
    "ModelSpec",
    "check_report_version",
    "load_model_bytes",
    "load_registered_model",
    "model_object_key",
    "model_spec_from_report",
    "publish_model",
    "publish_with_settings",
    "report_entry",
]


class ModelNotRegistered(ConfigurationError, LookupError):  # noqa: N818
    """The configured model version is not in the ``models`` table."""


class ModelArtefactError(StorageError):
    """A registered model's bytes are missing, or do not hash to its version."""


@dataclass(frozen=True)
class ModelSpec:
    """What a model is, besides its bytes: the columns of ``models`` a trainer knows.

    Attributes
    ----------
    pipeline
        The pipeline that runs it (``morphology``).
    architecture
        The network's name.
    input_mode, input_size, input_channels
        The rendering of a cutout into the network's input, its side (pixels) and channels.
    training_data_sha256
        SHA-256 of the training set.
    metrics
        Held-out metrics (JSON-serialisable).
    """

    pipeline: str
    architecture: str
    input_mode: str
    input_size: int
    input_channels: int
    training_data_sha256: str
    metrics: Mapping[str, Any]


def report_entry(spec: ModelSpec, onnx_bytes: bytes) -> dict[str, Any]:
    """The ``"model"`` entry of a training report: ``spec`` and the version of ``onnx_bytes``,
    what :func:`model_spec_from_report` and :func:`check_report_version` read back."""
    return {"model_version": sha256_hex(onnx_bytes), **asdict(spec), "metrics": dict(spec.metrics)}


def check_report_version(
    report: Mapping[str, Any], onnx_bytes: bytes, *, onnx_name: str, report_name: str
) -> None:
    """Refuse ``onnx_bytes`` unless they hash to the report's ``model_version`` (when it has one).

    Raises
    ------
    InputError
        If the bytes are not the model the report describes; the message names both files.
    """
    model = report.get("model") if isinstance(report, Mapping) else None
    recorded = model.get("model_version") if isinstance(model, Mapping) else None
    if recorded is not None and recorded != sha256_hex(onnx_bytes):
        raise InputError(
            f"{onnx_name} does not hash to the model_version {recorded} of {report_name}: "
            "not the model that report describes"
        )


def model_spec_from_report(report: Mapping[str, Any], source: str = "report") -> ModelSpec:
    """The :class:`ModelSpec` under ``"model"`` of a training report (``galpipe morphology
    train``, ``galpipe photoz train``).

    Parameters
    ----------
    report
        The parsed ``report.json``.
    source
        What the report is (its path), for the error message.

    Raises
    ------
    InputError
        If ``"model"`` or one of its entries is missing or malformed (the message names it).
    """
    try:
        model = report["model"]
        return ModelSpec(
            pipeline=model["pipeline"],
            architecture=model["architecture"],
            input_mode=model["input_mode"],
            input_size=int(model["input_size"]),
            input_channels=int(model["input_channels"]),
            training_data_sha256=model["training_data_sha256"],
            metrics=model["metrics"],
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"{source}: not a report of `galpipe morphology train` or `galpipe photoz train` "
            f"({exc!r} missing or malformed under 'model')"
        ) from None


#: The file suffix of each pipeline's model bytes in the object store.
_SUFFIX = {"morphology": "onnx", "photoz": "bin"}


def model_object_key(pipeline: str, model_version: str) -> str:
    """The object-store key of a model's bytes."""
    return f"models/{pipeline}/{model_version}.{_SUFFIX.get(pipeline, 'bin')}"


def publish_model(
    conn: psycopg.Connection, store: ObjectStore, onnx_bytes: bytes, spec: ModelSpec
) -> ModelRecord:
    """Store ``onnx_bytes`` and register them; the same bytes again change nothing.

    The object is written before the row, so a registered version always has its bytes (a
    crash in between leaves an unregistered object, which the next publication overwrites
    with the same bytes).

    Returns
    -------
    ModelRecord
        The registered row (the first registration's, if these bytes were published before).
    """
    version = sha256_hex(onnx_bytes)
    key = model_object_key(spec.pipeline, version)
    stored = store.put(key, onnx_bytes)
    record = ModelRecord(
        model_version=version,
        pipeline=spec.pipeline,
        architecture=spec.architecture,
        input_mode=spec.input_mode,
        input_size=spec.input_size,
        input_channels=spec.input_channels,
        training_data_sha256=spec.training_data_sha256,
        object_key=key,
        nbytes=stored.nbytes,
        metrics=dict(spec.metrics),
    )
    register_model(conn, record)
    registered = get_model(conn, version)
    if registered is None:  # inserted or found above, in this transaction: cannot happen
        raise ModelArtefactError(f"model {version}: registered but not found")
    return registered


def load_model_bytes(
    conn: psycopg.Connection,
    store: ObjectStore,
    model_version: str,
    pipeline: str = "morphology",
) -> tuple[ModelRecord, bytes]:
    """The registered row of ``model_version`` and its bytes, verified against the version.

    Raises
    ------
    ModelNotRegistered
        If no model of that version is registered for ``pipeline``.
    ModelArtefactError
        If its object is missing or its bytes do not hash to ``model_version``.
    """
    record = get_model(conn, model_version)
    if record is None:
        raise ModelNotRegistered(
            f"model {model_version} is not registered (`galpipe {pipeline} models` lists the "
            f"registered ones; `galpipe {pipeline} train --publish` registers one)"
        )
    if record.pipeline != pipeline:
        raise ModelNotRegistered(
            f"model {model_version} is a {record.pipeline} model, not a {pipeline} one "
            f"(`galpipe {pipeline} models` lists those)"
        )
    try:
        data = store.get(record.object_key, record.model_version)
    except ObjectNotFound as exc:
        raise ModelArtefactError(f"model {model_version}: its bytes are missing: {exc}") from None
    except ChecksumMismatch as exc:
        raise ModelArtefactError(
            f"model {model_version}: refusing bytes that do not hash to the version: {exc}"
        ) from None
    return record, data


def publish_with_settings(settings: Settings, model_bytes: bytes, spec: ModelSpec) -> ModelRecord:
    """:func:`publish_model` into the object store and database of ``settings`` (the
    ``publish`` and ``train --publish`` commands)."""
    store = object_store_from_settings(settings)
    with database_errors(), pool_from_settings(settings) as pool, pool.connection() as conn:
        return publish_model(conn, store, model_bytes, spec)


def load_registered_model(
    settings: Settings, model_version: str, pipeline: str
) -> tuple[ModelRecord, bytes]:
    """:func:`load_model_bytes` from the object store and database of ``settings`` (the
    ``evaluate`` commands, given a registered version)."""
    store = object_store_from_settings(settings)
    with database_errors(), pool_from_settings(settings) as pool, pool.connection() as conn:
        return load_model_bytes(conn, store, model_version, pipeline)
