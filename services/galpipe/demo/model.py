"""The demo's morphology model, and the routes that queue the demo's pipelines.

The demo ships a small pre-trained network (``demo/models/morphology-small_cnn.onnx``) with
the report ``galpipe morphology train`` wrote for it (``morphology-small_cnn.json``); when the
demo runs the morphology pipeline, :func:`publish_demo_model` registers it in the demo's
object store and database as any trained model is registered
(:func:`galpipe.pipelines.model_artefacts.publish_model`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

import psycopg

from galpipe.db.models import ModelRecord
from galpipe.db.routes import add_route, remove_route
from galpipe.demo import DemoError
from galpipe.errors import InputError
from galpipe.pipelines.model_artefacts import (
    check_report_version,
    model_spec_from_report,
    publish_model,
)
from galpipe.storage import ObjectStore

__all__ = ["DEMO_MODEL", "publish_demo_model", "route_pipelines", "shipped_model"]

#: File stem of the shipped model under ``galpipe/demo/models/``.
DEMO_MODEL = "morphology-small_cnn"


def shipped_model(stem: str = DEMO_MODEL) -> tuple[bytes, dict[str, Any]]:
    """The ONNX bytes and the training report of the model shipped with the demo.

    Raises
    ------
    DemoError
        If either file is missing from the installed package, the report is not JSON, or
        the bytes do not hash to the report's ``model_version``.
    """
    folder = resources.files("galpipe.demo") / "models"
    onnx, report_file = folder / f"{stem}.onnx", folder / f"{stem}.json"
    try:
        onnx_bytes = onnx.read_bytes()
        report = json.loads(report_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DemoError(
            f"the demo's morphology model {stem} (galpipe/demo/models/) cannot be read: {exc}"
        ) from None
    try:
        check_report_version(
            report,
            onnx_bytes,
            onnx_name=f"galpipe/demo/models/{stem}.onnx",
            report_name=f"{stem}.json",
        )
    except InputError as exc:
        raise DemoError(f"the shipped model and its report do not belong together: {exc}") from None
    return onnx_bytes, report


def publish_demo_model(
    conn: psycopg.Connection, store: ObjectStore, stem: str = DEMO_MODEL
) -> ModelRecord:
    """Store and register the shipped model; returns its ``models`` row (version = SHA-256).

    Raises
    ------
    DemoError
        If the shipped files cannot be read or do not belong together.
    InputError
        If the report has no usable ``"model"`` entry.
    """
    onnx_bytes, report = shipped_model(stem)
    spec = model_spec_from_report(report, source=f"galpipe/demo/models/{stem}.json")
    return publish_model(conn, store, onnx_bytes, spec)


def route_pipelines(conn: psycopg.Connection, pipelines: Sequence[str]) -> None:
    """Make fetch's completions queue the downstream pipelines of ``pipelines``.

    ``fetch -> morphology`` is added when morphology is asked for; ``fetch -> radon`` (which
    the migrations seed) is removed when radon is not, so that no radon task is queued. With
    the default pipelines nothing changes. Routes are the database's: on a shared database
    (``--database-url``) they stay changed after the demo.
    """
    if "morphology" in pipelines:
        add_route(conn, "fetch", "morphology")
    if "radon" not in pipelines:
        remove_route(conn, "fetch", "radon")
