"""CRD schemas vendored in tests/deploy/crd_schemas/, for custom resources without a model.

Sigstore's ClusterImagePolicy and External Secrets Operator's ExternalSecret and
ClusterSecretStore have no cloudcoil models. Each YAML file in crd_schemas/ holds the
``openAPIV3Schema`` of one served version, copied from the CRD because nothing is downloaded at
test time (its header names the source and what was left out), with the JSON-schema
``definitions`` its ``$ref`` entries point to. :func:`tests.deploy.chart_render.crd_validator`
closes it like the models' schemas, so an unknown field fails as on the API server.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

SCHEMA_DIR = Path(__file__).resolve().parent / "crd_schemas"


@functools.cache
def _vendored() -> dict[tuple[str, str], dict[str, Any]]:
    table = {}
    for path in sorted(SCHEMA_DIR.glob("*.yaml")):
        document = yaml.safe_load(path.read_text())
        schema: dict[str, Any] = dict(document["openAPIV3Schema"])
        schema["definitions"] = document.get("definitions", {})
        table[(document["apiVersion"], document["kind"])] = schema
    return table


def vendored_crd_schema(api_version: str, kind: str) -> dict[str, Any] | None:
    """The vendored JSON schema of ``kind`` in ``api_version``, or None when none is vendored."""
    return _vendored().get((api_version, kind))


def vendored_kinds() -> frozenset[tuple[str, str]]:
    """(apiVersion, kind) of every vendored schema."""
    return frozenset(_vendored())
