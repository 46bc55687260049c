"""The structure of scripts/e2e-kind.sh that cannot run here (no Docker): what it makes the real
API server of a kind cluster check.

It installs the CRDs of every custom resource the repository renders (Flux's from Flux's
install manifest; the others from the k8s/platform charts that install CRDs), dry-runs every
object of every environment server-side with strict field validation, and stands in for Flux
with dev's own chart source and HelmRelease rather than a hand-written one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.chart_render import REPO_ROOT, render_set

SCRIPT = (REPO_ROOT / "scripts" / "e2e-kind.sh").read_text()
K8S = REPO_ROOT / "k8s"
#: API group → the k8s/platform HelmRelease whose chart brings its CRDs.
CRDS_FROM_PLATFORM = {
    "keda.sh": "keda",
    "monitoring.coreos.com": "kube-prometheus-stack",
    "external-secrets.io": "external-secrets",
    "policy.sigstore.dev": "policy-controller",
}


def _objects(directory: Path) -> list[dict[str, Any]]:
    return [
        d
        for f in sorted(directory.rglob("*.yaml"))
        if f.name != "kustomization.yaml"
        for d in yaml.safe_load_all(f.read_text())
        if d
    ]


def test_every_environment_is_dry_run_strictly() -> None:
    listed = re.search(r"^ENVIRONMENTS=\((?P<envs>[^)]*)\)$", SCRIPT, re.M)
    assert listed, "e2e-kind.sh: no ENVIRONMENTS=(...)"
    assert set(listed["envs"].split()) == {p.name for p in (K8S / "envs").iterdir()}
    dry_run = re.search(r"kubectl apply [^\n]*\\\n[^\n]*--dry-run=server[^\n]*", SCRIPT)
    assert dry_run, "no server-side dry run"
    assert "--validate=strict" in dry_run[0], "the dry run is not strict"
    assert re.search(r"^check_every_object_is_accepted$", SCRIPT, re.M), "the check is not run"
    # What the dry run covers: each cluster's Flux objects, its Kustomizations' paths (with
    # Flux's variable substitution) and the chart with the environment's HelmRelease values.
    pieces = ('"${cluster}"/*.yaml', 'kubectl kustomize "${path}"', "envsubst", "helm template")
    for piece in pieces:
        assert piece in SCRIPT, piece


def test_the_crds_of_every_custom_resource_rendered_are_installed() -> None:
    objects = [*render_set("dev"), *render_set("prod"), *_objects(K8S)]
    groups = {o["apiVersion"].split("/")[0] for o in objects if "." in o["apiVersion"]}
    custom = {g for g in groups if not g.endswith(".k8s.io") and g != "kustomize.config.k8s.io"}
    flux = {g for g in custom if g.endswith(".toolkit.fluxcd.io")}
    assert 'yq \'select(.kind == "CustomResourceDefinition")\' > "${WORK}/flux-crds.yaml"' in SCRIPT
    missing = custom - flux - set(CRDS_FROM_PLATFORM)
    assert not missing, f"e2e-kind.sh installs no CRD of {sorted(missing)}"
    platform = {
        o["metadata"]["name"]: o for o in _objects(K8S / "platform") if o["kind"] == "HelmRelease"
    }
    for group in custom - flux:
        release = platform[CRDS_FROM_PLATFORM[group]]
        # install_platform_crds takes every release that installs its CRDs.
        assert release["spec"].get("install", {}).get("crds"), (group, release["metadata"])
    assert "install_platform_crds keda" in SCRIPT  # KEDA itself runs (the control API needs it)


def test_the_stand_in_helm_release_is_devs_own() -> None:
    """Not a hand-written HelmRelease of a chart repository the environments no longer use."""
    assert "kind: HelmRelease" not in SCRIPT
    assert "HelmRepository, name: galpipe-charts" not in SCRIPT
    assert "-f k8s/envs/dev/chart-source.yaml -f k8s/envs/dev/galpipe.yaml" in SCRIPT
    release = next(
        o
        for o in _objects(K8S / "envs" / "dev")
        if o["kind"] == "HelmRelease" and o["metadata"]["name"] == "galpipe"
    )
    assert release["metadata"]["namespace"] == "galpipe"
    assert release["spec"]["chartRef"]["kind"] == "OCIRepository"
