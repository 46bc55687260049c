"""SQL of ``models``: trained networks registered as artefacts, addressed by their SHA-256.

A model's version *is* the SHA-256 (hex) of its ONNX bytes, so a row can never describe other
bytes than the ones it names; the bytes themselves live in the object store under
``object_key`` and are checked against the version whenever they are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

__all__ = ["ModelRecord", "get_model", "list_models", "register_model"]

_COLUMNS = (
    "model_version",
    "pipeline",
    "architecture",
    "input_mode",
    "input_size",
    "input_channels",
    "training_data_sha256",
    "metrics",
    "object_key",
    "nbytes",
)


@dataclass(frozen=True)
class ModelRecord:
    """One ``models`` row.

    Attributes
    ----------
    model_version
        SHA-256 (64 lowercase hex digits) of the ONNX bytes.
    pipeline
        The pipeline that runs the model (``morphology``).
    architecture
        The network (``efficientnet_b0``, ``resnet18``, ...).
    input_mode, input_size, input_channels
        How a cutout becomes the network's input: the rendering, its side in pixels and its
        number of channels.
    training_data_sha256
        SHA-256 of the training set (ids, images and labels).
    metrics
        Held-out metrics at registration (JSON-serialisable).
    object_key, nbytes
        Where the ONNX bytes are stored, and their size in bytes.
    created_at
        Set by the database on registration; ``None`` on a record not yet stored.
    """

    model_version: str
    pipeline: str
    architecture: str
    input_mode: str
    input_size: int
    input_channels: int
    training_data_sha256: str
    object_key: str
    nbytes: int
    metrics: Mapping[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None


def register_model(conn: psycopg.Connection, model: ModelRecord) -> bool:
    """Insert ``model``; registering the same version again changes nothing.

    Returns
    -------
    bool
        True if the row is new, False if that version was registered before (its first
        registration, metrics included, stays: the bytes are the same by construction).
    """
    values = [getattr(model, c) for c in _COLUMNS]
    values[_COLUMNS.index("metrics")] = Jsonb(dict(model.metrics))
    placeholders = ", ".join(["%s"] * len(_COLUMNS))
    cur = conn.execute(
        f"INSERT INTO models ({', '.join(_COLUMNS)}) VALUES ({placeholders}) "
        "ON CONFLICT (model_version) DO NOTHING",
        values,
    )
    return cur.rowcount == 1


def _record(row: tuple[Any, ...]) -> ModelRecord:
    named = dict(zip((*_COLUMNS, "created_at"), row, strict=True))
    return ModelRecord(**named)


def get_model(conn: psycopg.Connection, model_version: str) -> ModelRecord | None:
    """The registered model of that version, or None."""
    row = conn.execute(
        f"SELECT {', '.join(_COLUMNS)}, created_at FROM models WHERE model_version = %s",
        (model_version,),
    ).fetchone()
    return None if row is None else _record(row)


def list_models(conn: psycopg.Connection, pipeline: str | None = None) -> list[ModelRecord]:
    """Registered models, newest first, optionally of one pipeline."""
    rows = conn.execute(
        f"SELECT {', '.join(_COLUMNS)}, created_at FROM models "
        "WHERE %(pipeline)s::text IS NULL OR pipeline = %(pipeline)s "
        "ORDER BY created_at DESC, model_version",
        {"pipeline": pipeline},
    ).fetchall()
    return [_record(r) for r in rows]
