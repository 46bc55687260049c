"""The Flux tree in k8s/: valid objects, resolvable references, pinned versions, image automation.

No cluster runs here, so what Flux would do is checked piece by piece: every object validates
(Flux and core schemas), every kustomization lists exactly the files of its directory, every
reference names an object that exists, the platform charts are pinned, Flux's ECR readers get
the IRSA roles Terraform creates, every environment pulls from dev's one registry, each
environment's HelmRelease renders the chart as Flux would, and the image policy orders CI's tags
the way the setter marker in dev expects while prod stays pinned.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.chart_render import (
    CHART_DIR,
    REPO_ROOT,
    merge_values,
    render,
    validate_object,
)

K8S = REPO_ROOT / "k8s"
ENVS = ("dev", "prod")
SEMVER = re.compile(r"^\d+\.\d+\.\d+$")
MARKER = re.compile(r'#\s*\{"\$imagepolicy":\s*"(?P<ref>[^"]+)"\}')
#: `flux-source = { namespace = "flux-system", service_account = "source-controller" }`: the
#: Flux controllers that terraform/envs/<env>/main.tf gives an ECR reader role (`<env>-ecr-<key>`).
REGISTRY_READER = re.compile(
    r'(?P<key>[\w-]+)\s*=\s*\{\s*namespace\s*=\s*"flux-system",\s*'
    r'service_account\s*=\s*"(?P<service_account>[\w-]+)"\s*\}'
)
ROLE_ARN = "eks.amazonaws.com/role-arn"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _objects(directory: Path) -> list[dict[str, Any]]:
    return [
        d
        for f in sorted(directory.rglob("*.yaml"))
        if f.name != "kustomization.yaml"
        for d in _documents(f)
    ]


def _by_kind(objects: list[dict[str, Any]], kind: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
        for o in objects
        if o["kind"] == kind
    }


def _what_a_cluster_gets(env: str) -> list[dict[str, Any]]:
    """Every object Flux applies for ``env``: its cluster directory and what that points at."""
    objects = _objects(K8S / "clusters" / env)
    for kustomization in _by_kind(objects, "Kustomization").values():
        objects += _objects(REPO_ROOT / kustomization["spec"]["path"])
    return objects


def test_yamllint_is_clean(require_tool: Callable[[str], str]) -> None:
    """The GitOps tree and the chart's own YAML, under the repository's yamllint rules."""
    files = sorted(K8S.rglob("*.yaml"))
    assert len(files) >= 15
    chart_yaml = [CHART_DIR / "Chart.yaml", *sorted(CHART_DIR.glob("values*.yaml"))]
    run = subprocess.run(
        [
            require_tool("yamllint"),
            "--strict",
            "-c",
            str(REPO_ROOT / ".yamllint.yaml"),
            "-f",
            "parsable",
            *map(str, files + chart_yaml),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout


def test_every_object_validates_against_its_schema() -> None:
    objects = [
        d
        for f in sorted(K8S.rglob("*.yaml"))
        if f.name != "kustomization.yaml"
        for d in _documents(f)
    ]
    kinds = {o["kind"] for o in objects}
    assert {
        "GitRepository",
        "Kustomization",
        "HelmRepository",
        "HelmRelease",
        "ImageRepository",
        "ImagePolicy",
        "ImageUpdateAutomation",
        "Namespace",
    } <= kinds
    for obj in objects:
        validate_object(obj)


def test_each_kustomization_lists_exactly_its_files() -> None:
    for kustomization in K8S.rglob("kustomization.yaml"):
        listed = set(yaml.safe_load(kustomization.read_text())["resources"])
        present = {f.name for f in kustomization.parent.glob("*.yaml")} - {"kustomization.yaml"}
        assert listed == present, kustomization


@pytest.mark.parametrize("env", ENVS)
def test_flux_kustomizations_resolve(env: str) -> None:
    objects = _what_a_cluster_gets(env)
    sources = _by_kind(objects, "GitRepository")
    kustomizations = _by_kind(objects, "Kustomization")
    assert {name for _, name in kustomizations} == {"platform", "galpipe"}
    for (namespace, name), k in kustomizations.items():
        spec = k["spec"]
        assert (REPO_ROOT / spec["path"]).is_dir(), f"{name}: {spec['path']} does not exist"
        assert spec["prune"] is True
        assert (namespace, spec["sourceRef"]["name"]) in sources, name
        for dependency in spec.get("dependsOn", []):
            assert (namespace, dependency["name"]) in kustomizations, name
    galpipe = kustomizations[("flux-system", "galpipe")]["spec"]
    assert galpipe["path"] == f"./k8s/envs/{env}"
    assert galpipe["dependsOn"] == [{"name": "platform"}]  # CRDs of KEDA and the operator first
    (git,) = sources.values()
    assert git["spec"]["ref"] == {"branch": "main"}


@pytest.mark.parametrize("env", ENVS)
def test_helm_releases_come_from_defined_sources_at_pinned_versions(env: str) -> None:
    objects = _what_a_cluster_gets(env)
    repositories = _by_kind(objects, "HelmRepository")
    releases = _by_kind(objects, "HelmRelease")
    assert {name for _, name in releases} == {"keda", "kube-prometheus-stack", "galpipe"}
    for (_, name), release in releases.items():
        chart = release["spec"]["chart"]["spec"]
        ref = chart["sourceRef"]
        assert ref["kind"] == "HelmRepository"
        assert (ref["namespace"], ref["name"]) in repositories, name
        if name != "galpipe" or env == "prod":
            assert SEMVER.match(chart["version"]), f"{env} {name}: {chart['version']} not pinned"
    platform = {name: r["spec"]["chart"]["spec"]["version"] for (_, name), r in releases.items()}
    # The API versions the chart is validated against (cloudcoil KEDA 2.16, operator 0.80).
    assert platform["keda"].startswith("2.16.")
    assert platform["kube-prometheus-stack"].startswith("69.")


def test_prod_runs_the_chart_version_in_the_repository() -> None:
    prod = _by_kind(_objects(K8S / "envs" / "prod"), "HelmRelease")[("galpipe", "galpipe")]
    chart_version = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["version"]
    assert prod["spec"]["chart"]["spec"]["version"] == chart_version


@pytest.mark.parametrize("env", ENVS)
def test_flux_controllers_that_read_ecr_get_their_irsa_roles(
    env: str, require_tool: Callable[[str], str], tmp_path: Path
) -> None:
    """kustomize applies flux-system's patches to the ServiceAccounts that bootstrap writes."""
    main_tf = (REPO_ROOT / "terraform" / "envs" / env / "main.tf").read_text()
    role_keys = {m["service_account"]: m["key"] for m in REGISTRY_READER.finditer(main_tf)}
    assert set(role_keys) == {"source-controller", "image-reflector-controller"}
    build = tmp_path / "flux-system"
    shutil.copytree(K8S / "clusters" / env / "flux-system", build)
    # Stand-in for the gotk-components.yaml that `flux bootstrap` writes: the controllers'
    # ServiceAccounts, and one that must stay untouched.
    accounts = [*role_keys, "helm-controller"]
    (build / "gotk-components.yaml").write_text(
        yaml.safe_dump_all(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {
                    "name": name,
                    "namespace": "flux-system",
                    "labels": {"app.kubernetes.io/component": name},
                },
            }
            for name in accounts
        )
    )
    run = subprocess.run(
        [require_tool("kubectl"), "kustomize", str(build)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    built = {d["metadata"]["name"]: d for d in yaml.safe_load_all(run.stdout) if d}
    assert set(built) == set(accounts)
    for obj in built.values():
        validate_object(obj)
    assert "annotations" not in built["helm-controller"]["metadata"]
    # The pipelines' roles in values-<env>.yaml name the environment's account.
    values = yaml.safe_load((CHART_DIR / f"values-{env}.yaml").read_text())
    account = values["pipelines"]["fetch"]["serviceAccount"]["roleArn"].split(":")[4]
    for service_account, key in role_keys.items():
        metadata = built[service_account]["metadata"]
        assert metadata["annotations"][ROLE_ARN] == (
            f"arn:aws:iam::{account}:role/galpipe-{env}-ecr-{key}"
        )
        assert metadata["labels"] == {"app.kubernetes.io/component": service_account}


def test_every_environment_pulls_from_the_one_registry_of_dev() -> None:
    """Prod installs the chart and runs the image that dev did, from terraform/envs/dev's ECR."""
    chart_urls = {
        env: _by_kind(_objects(K8S / "envs" / env), "HelmRepository")[
            ("flux-system", "galpipe-charts")
        ]["spec"]["url"]
        for env in ENVS
    }
    images = {
        env: yaml.safe_load((CHART_DIR / f"values-{env}.yaml").read_text())["image"]["repository"]
        for env in ENVS
    }
    registry, _, repository = images["dev"].partition("/")
    assert re.fullmatch(r"\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com", registry), registry
    assert repository == "galpipe-dev/galpipe"
    assert images["prod"] == images["dev"]
    assert chart_urls["prod"] == chart_urls["dev"] == f"oci://{registry}/galpipe-dev/charts"


def _helm_release(env: str) -> dict[str, Any]:
    return _by_kind(_objects(K8S / "envs" / env), "HelmRelease")[("galpipe", "galpipe")]


@pytest.mark.parametrize("env", ENVS)
def test_helm_release_renders_the_chart_as_flux_would(env: str) -> None:
    """valuesFiles (from the packaged chart, in order) then the release's inline values."""
    release = _helm_release(env)["spec"]
    assert release["releaseName"] == "galpipe"  # the IRSA trust names galpipe-<pipeline>
    values: dict[str, Any] = {}
    for name in release["chart"]["spec"]["valuesFiles"]:
        values = merge_values(values, yaml.safe_load((CHART_DIR / name).read_text()))
    values = merge_values(values, release["values"])
    objects = render(values)
    for obj in objects:
        validate_object(obj)
    images = {
        c["image"]
        for o in objects
        if o["kind"] in ("Deployment", "Job")
        for c in o["spec"]["template"]["spec"]["containers"]
    }
    expected = f"{values['image']['repository']}:{release['values']['image']['tag']}"
    assert images == {expected}
    roles = [
        o["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        for o in objects
        if o["kind"] == "ServiceAccount"
        and o["metadata"]["name"] in ("galpipe-fetch", "galpipe-radon")
    ]
    assert len(roles) == 2
    assert all(f"galpipe-{env}-" in r for r in roles)


def _image_automation() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    objects = _objects(K8S / "envs" / "dev")
    (repository,) = _by_kind(objects, "ImageRepository").values()
    (policy,) = _by_kind(objects, "ImagePolicy").values()
    (automation,) = _by_kind(objects, "ImageUpdateAutomation").values()
    return repository, policy, automation


def _latest(policy: dict[str, Any], tags: list[str]) -> str:
    """What the image-reflector-controller picks: filter, extract, order numerically."""
    spec = policy["spec"]
    pattern = re.compile(spec["filterTags"]["pattern"])  # RE2's (?P<name>) is Python's too
    extract = spec["filterTags"]["extract"]
    assert spec["policy"] == {"numerical": {"order": "asc"}}
    candidates = {}
    for tag in tags:
        match = pattern.match(tag)
        if match:  # Go's Expand: $name or ${name} is that group's text
            value = re.sub(r"\$\{?(\w+)\}?", lambda g, m=match: m.group(g[1]), extract)
            candidates[tag] = float(value)
    return max(candidates, key=lambda t: candidates[t])


def test_image_policy_picks_the_highest_ci_run() -> None:
    _, policy, _ = _image_automation()
    tags = [
        "99-aaaaaaa",
        "142-3f9c2ab",
        "1000-0123abc",
        "latest",
        "142-3f9c2ab-dirty",
        "v0.1.0",
        "pr-12",
        "1001-XYZ1234",
        "9999",
        "sha-3f9c2ab",
    ]
    # Numerical, not lexical: 1000 beats 142 and 99; non-CI tags never qualify.
    assert _latest(policy, tags) == "1000-0123abc"
    assert _latest(policy, ["7-0000000", "10-fffffff"]) == "10-fffffff"


def test_image_automation_writes_only_into_dev() -> None:
    repository, policy, automation = _image_automation()
    values_dev = yaml.safe_load((CHART_DIR / "values-dev.yaml").read_text())
    assert repository["spec"]["image"] == values_dev["image"]["repository"]
    assert policy["spec"]["imageRepositoryRef"]["name"] == repository["metadata"]["name"]
    spec = automation["spec"]
    assert spec["update"] == {"path": "./k8s/envs/dev", "strategy": "Setters"}
    assert spec["git"]["push"]["branch"] == spec["git"]["checkout"]["ref"]["branch"] == "main"
    # The bot's commit must not start another image build (which would push another tag).
    assert "[skip ci]" in spec["git"]["commit"]["messageTemplate"]
    git = _by_kind(_objects(K8S / "clusters" / "dev"), "GitRepository")
    assert ("flux-system", spec["sourceRef"]["name"]) in git

    # The setter marker sits on the tag line and names this policy's `namespace:name:tag`.
    text = (K8S / "envs" / "dev" / "galpipe.yaml").read_text()
    markers = [(line, m["ref"]) for line in text.splitlines() if (m := MARKER.search(line))]
    policy_ref = f"{policy['metadata']['namespace']}:{policy['metadata']['name']}"
    assert markers == [(markers[0][0], f"{policy_ref}:tag")]
    assert markers[0][0].strip().startswith("tag:")
    assert _latest(policy, [_helm_release("dev")["spec"]["values"]["image"]["tag"]])


def test_prod_is_pinned_and_never_automated() -> None:
    prod = K8S / "envs" / "prod"
    for path in prod.rglob("*"):
        if path.is_file():
            assert "$imagepolicy" not in path.read_text(), path
    kinds = {o["kind"] for o in _objects(prod)} | {
        o["kind"] for o in _objects(K8S / "clusters" / "prod")
    }
    assert not kinds & {"ImageRepository", "ImagePolicy", "ImageUpdateAutomation"}
    _, policy, _ = _image_automation()
    # A tag CI could have built, so a promotion PR copies it from dev verbatim.
    assert _latest(policy, [_helm_release("prod")["spec"]["values"]["image"]["tag"]])
