"""Observability that outlives its pods, and Flux failures that reach people (k8s/platform)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.deploy.test_gitops import (
    ENVS,
    _by_kind,
    _platform_as_flux_applies_it,
    _what_a_cluster_gets,
)


def _stack(env: str) -> dict[str, Any]:
    releases = _by_kind(_platform_as_flux_applies_it(env), "HelmRelease")
    values: dict[str, Any] = releases[("monitoring", "kube-prometheus-stack")]["spec"]["values"]
    return values


def _gibibytes(quantity: str) -> float:
    match = re.fullmatch(r"(?P<n>\d+)(?P<unit>Gi|GB)", quantity)
    assert match, quantity
    return int(match["n"]) * (1.0 if match["unit"] == "Gi" else 1e9 / 2**30)


@pytest.mark.parametrize("env", ENVS)
def test_prometheus_and_alertmanager_keep_their_data_on_volumes(env: str) -> None:
    values = _stack(env)
    classes = _by_kind(_platform_as_flux_applies_it(env), "StorageClass")
    (storage_class,) = classes.values()
    assert storage_class["provisioner"] == "ebs.csi.aws.com"  # the EKS add-on Terraform installs
    assert storage_class["parameters"]["encrypted"] == "true"
    assert storage_class["volumeBindingMode"] == "WaitForFirstConsumer"  # the pod's zone
    spec = values["prometheus"]["prometheusSpec"]
    claims = {
        "prometheus": spec["storageSpec"]["volumeClaimTemplate"]["spec"],
        "alertmanager": values["alertmanager"]["alertmanagerSpec"]["storage"][
            "volumeClaimTemplate"
        ]["spec"],
    }
    for name, claim in claims.items():
        assert claim["storageClassName"] == storage_class["metadata"]["name"], name
        assert claim["accessModes"] == ["ReadWriteOnce"], name
    # Retention is explicit, by age and by size, and the size bound fits the volume.
    assert re.fullmatch(r"\d+d", spec["retention"])
    volume = _gibibytes(claims["prometheus"]["resources"]["requests"]["storage"])
    assert _gibibytes(spec["retentionSize"]) < 0.95 * volume


@pytest.mark.parametrize("env", ENVS)
def test_grafana_admin_comes_from_a_secret(env: str) -> None:
    grafana = _stack(env)["grafana"]
    assert "adminPassword" not in grafana
    admin = grafana["admin"]
    assert admin["existingSecret"]
    assert {admin["userKey"], admin["passwordKey"]} == {"admin-user", "admin-password"}


@pytest.mark.parametrize("env", ENVS)
def test_flux_reports_failures_of_everything_it_reconciles(env: str) -> None:
    objects = _what_a_cluster_gets(env)
    platform = _platform_as_flux_applies_it(env)
    providers = _by_kind(platform, "Provider")
    (alert,) = _by_kind(platform, "Alert").values()
    spec = alert["spec"]
    provider = providers[(alert["metadata"]["namespace"], spec["providerRef"]["name"])]["spec"]
    # The address is a Secret's, never Git's.
    assert "address" not in provider
    assert provider["secretRef"]["name"]
    assert spec["eventSeverity"] == "error"
    assert spec["eventMetadata"]["cluster"] == f"galpipe-{env}"
    namespace = alert["metadata"]["namespace"]
    watched = {
        (source["kind"], source.get("namespace", namespace))
        for source in spec["eventSources"]
        if source["name"] == "*"
    }
    for kind in ("Kustomization", "HelmRelease", "GitRepository", "HelmRepository"):
        for obj_namespace, _ in _by_kind(objects, kind):
            assert (kind, obj_namespace) in watched, f"{kind} in {obj_namespace} is not watched"
