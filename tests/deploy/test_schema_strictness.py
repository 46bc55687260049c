"""The schema checks of every rendered object are strict, as the API server's field validation is.

`validate_object` (tests/deploy/chart_render.py) must reject what a real API server rejects with
kubectl's default strict field validation: an unknown (misspelt or misplaced) field of a built-in
kind or of any custom resource the repository renders, a wrongly typed value; and must still take
what the CRDs leave free-form (a HelmRelease's values).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.chart_render import (
    REPO_ROOT,
    crd_validator,
    render_set,
    validate_object,
)

K8S = REPO_ROOT / "k8s"


def _k8s_objects() -> list[dict[str, Any]]:
    return [
        d
        for f in sorted(K8S.rglob("*.yaml"))
        if f.name != "kustomization.yaml"
        for d in yaml.safe_load_all(Path(f).read_text())
        if d
    ]


def _custom_resources() -> dict[str, dict[str, Any]]:
    """One object of every custom-resource kind the chart (dev values) and k8s/ render."""
    found: dict[str, dict[str, Any]] = {}
    for obj in [*render_set("dev"), *_k8s_objects()]:
        if crd_validator(obj["apiVersion"], obj["kind"]) is not None:
            found.setdefault(f"{obj['apiVersion']}/{obj['kind']}", obj)
    return found


CUSTOM_RESOURCES = _custom_resources()


def _rejected(obj: dict[str, Any], match: str) -> None:
    with pytest.raises(AssertionError, match=match):
        validate_object(obj)


def test_every_custom_resource_kind_of_the_repository_is_checked() -> None:
    """The kinds the issue names are all rendered, and each has a strict CRD schema here."""
    kinds = {key.rsplit("/", 1)[1] for key in CUSTOM_RESOURCES}
    assert {
        "ScaledObject",
        "TriggerAuthentication",
        "ServiceMonitor",
        "PrometheusRule",
        "HelmRelease",
        "OCIRepository",
        "Kustomization",
        "Provider",
        "Alert",
        "ImagePolicy",
    } <= kinds


@pytest.mark.parametrize("kind", sorted(CUSTOM_RESOURCES))
def test_an_unknown_spec_field_fails_for_every_custom_resource_kind(kind: str) -> None:
    obj = copy.deepcopy(CUSTOM_RESOURCES[kind])
    validate_object(obj)  # as rendered: valid
    obj["spec"]["notAField"] = 1
    _rejected(obj, r'unknown field "spec\.notAField"')


@pytest.mark.parametrize("kind", sorted(CUSTOM_RESOURCES))
def test_an_unknown_metadata_field_fails_for_every_custom_resource_kind(kind: str) -> None:
    """A CRD leaves metadata to the API server, which decodes it as ObjectMeta, strictly."""
    obj = copy.deepcopy(CUSTOM_RESOURCES[kind])
    obj["metadata"]["annotation"] = {"a": "b"}
    _rejected(obj, r'unknown field "metadata\.annotation"')


def test_a_misspelt_scaled_object_field_fails() -> None:
    scaled = copy.deepcopy(CUSTOM_RESOURCES["keda.sh/v1alpha1/ScaledObject"])
    scaled["spec"]["minReplicaCont"] = scaled["spec"].pop("minReplicaCount", 0)
    _rejected(scaled, r'ScaledObject/galpipe-\w+ .*unknown field "spec\.minReplicaCont"')
    nested = copy.deepcopy(CUSTOM_RESOURCES["keda.sh/v1alpha1/ScaledObject"])
    nested["spec"]["triggers"][0]["authenticationRef"]["nam"] = "x"
    _rejected(nested, r'unknown field "spec\.triggers\[0\]\.authenticationRef\.nam"')


def test_a_misspelt_helm_release_field_fails_while_its_values_stay_free_form() -> None:
    release = next(
        o
        for o in _k8s_objects()
        if o["kind"] == "HelmRelease" and o["metadata"]["name"] == "galpipe"
    )
    misspelt = copy.deepcopy(release)
    misspelt["spec"]["intervall"] = misspelt["spec"].pop("interval")
    # The CRD requires interval too: both problems are named.
    _rejected(misspelt, r'unknown field "spec\.intervall"')
    nested = copy.deepcopy(release)
    nested["spec"]["upgrade"]["remediation"]["retrys"] = 3
    _rejected(nested, r'unknown field "spec\.upgrade\.remediation\.retrys"')
    # values is x-kubernetes-preserve-unknown-fields: the chart's own schema checks it.
    free = copy.deepcopy(release)
    free["spec"]["values"]["anything"] = {"nested": [1, "two"]}
    validate_object(free)


def test_a_wrongly_typed_or_patterned_custom_resource_value_fails() -> None:
    scaled = copy.deepcopy(CUSTOM_RESOURCES["keda.sh/v1alpha1/ScaledObject"])
    scaled["spec"]["maxReplicaCount"] = "5"
    _rejected(scaled, r"spec\.maxReplicaCount: '5' is not of type 'integer'")
    source = copy.deepcopy(CUSTOM_RESOURCES["source.toolkit.fluxcd.io/v1beta2/OCIRepository"])
    source["spec"]["interval"] = "five minutes"
    _rejected(source, r"spec\.interval: 'five minutes' does not match")


def test_an_unknown_field_of_a_built_in_kind_fails() -> None:
    deployment = next(o for o in render_set("dev") if o["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFS"] = (
        True
    )
    _rejected(deployment, "readOnlyRootFS")
    service = next(o for o in render_set("dev") if o["kind"] == "Service")
    service["spec"]["portz"] = service["spec"]["ports"]
    _rejected(service, "portz")
