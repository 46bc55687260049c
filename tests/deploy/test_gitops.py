"""The Flux tree in k8s/: valid objects, resolvable references, pinned versions, image automation.

No cluster runs here, so what Flux would do is checked piece by piece: every object validates
(Flux and core schemas), every kustomization lists exactly the files of its directory, every
reference names an object that exists, the platform charts are pinned, each cluster substitutes
every variable of k8s/platform with values that agree with Terraform (the Cluster Autoscaler's
cluster, region and IRSA role), Flux's ECR readers get the IRSA roles Terraform creates, every
environment pulls from dev's one registry, each environment's HelmRelease renders the chart as
Flux would, and the image policy orders CI's tags the way the setter marker in dev expects while
prod stays pinned.
"""

from __future__ import annotations

import json
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
#: Flux controllers that terraform/modules/platform/main.tf gives an ECR reader role
#: (`<env>-ecr-<key>`) in every environment.
REGISTRY_READER = re.compile(
    r'(?P<key>[\w-]+)\s*=\s*\{\s*namespace\s*=\s*"flux-system",\s*'
    r'service_account\s*=\s*"(?P<service_account>[\w-]+)"\s*\}'
)
ROLE_ARN = "eks.amazonaws.com/role-arn"
#: A variable of Flux's post-build substitution: ``${name}`` (``${name:=default}`` would let a
#: cluster that forgot the value run with the default, so the name part must be the whole).
FLUX_VARIABLE = re.compile(r"\$\{(?P<name>[^}]*)\}")
FLUX_VARIABLE_NAME = re.compile(r"^[_a-zA-Z][_a-zA-Z0-9]*$")
TERRAFORM_ENVS = REPO_ROOT / "terraform" / "envs"


def _terraform_default(variables_tf: Path, name: str) -> str:
    """The string default of variable ``name`` in a variables.tf (it precedes any ``}``)."""
    match = re.search(
        rf'^variable "{name}" {{[^}}]*?^  default\s*=\s*"(?P<value>[^"]*)"',
        variables_tf.read_text(),
        re.MULTILINE,
    )
    assert match, f"{variables_tf}: no string default for {name}"
    return match["value"]


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
    assert {name for _, name in releases} == {
        "keda",
        "cluster-autoscaler",
        "kube-prometheus-stack",
        "galpipe",
    }
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
    # The chart of Cluster Autoscaler 1.33 (see the comment in cluster-autoscaler.yaml).
    assert platform["cluster-autoscaler"] == "9.51.0"


def _platform_substitutions(env: str) -> dict[str, str]:
    (platform,) = [
        k
        for k in _by_kind(_objects(K8S / "clusters" / env), "Kustomization").values()
        if k["spec"]["path"] == "./k8s/platform"
    ]
    substitute: dict[str, str] = platform["spec"]["postBuild"]["substitute"]
    return substitute


def _platform_as_flux_applies_it(env: str) -> list[dict[str, Any]]:
    """k8s/platform after ``env``'s post-build substitution.

    Flux substitutes in the built objects (kustomize drops comments), so the objects are
    serialised, substituted and parsed back; a variable without a value fails here rather than
    becoming an empty string on the cluster.
    """
    variables = _platform_substitutions(env)
    substituted = []
    for obj in _objects(K8S / "platform"):
        text = FLUX_VARIABLE.sub(lambda m: variables[m["name"]], json.dumps(obj))
        assert "$" not in text, f"{env}: {obj['kind']}/{obj['metadata']['name']} keeps a '$'"
        substituted.append(json.loads(text))
    return substituted


def test_every_platform_variable_is_substituted_by_every_cluster() -> None:
    used = {
        m["name"]
        for obj in _objects(K8S / "platform")
        for m in FLUX_VARIABLE.finditer(json.dumps(obj))
    }
    assert used >= {"cluster_name", "aws_region", "cluster_autoscaler_role_arn"}
    for name in used:
        assert FLUX_VARIABLE_NAME.match(name), f"${{{name}}} is not a plain Flux variable"
    for env in ENVS:
        substitute = _platform_substitutions(env)
        # Exactly the variables k8s/platform uses: none missing, none left over from a removal.
        assert set(substitute) == used, env
        assert all(isinstance(v, str) and v for v in substitute.values()), env
        for obj in _platform_as_flux_applies_it(env):
            validate_object(obj)


def _cluster_autoscaler(env: str) -> dict[str, Any]:
    releases = _by_kind(_platform_as_flux_applies_it(env), "HelmRelease")
    return releases[("kube-system", "cluster-autoscaler")]


@pytest.mark.parametrize("env", ENVS)
def test_cluster_autoscaler_manages_the_cluster_terraform_builds(env: str) -> None:
    """Cluster, region and IRSA role as terraform/envs/<env> names them, for the trusted SA."""
    release = _cluster_autoscaler(env)
    values = release["spec"]["values"]
    env_variables = TERRAFORM_ENVS / env / "variables.tf"
    cluster = _terraform_default(env_variables, "name")
    assert values["autoDiscovery"]["clusterName"] == cluster
    assert values["awsRegion"] == _terraform_default(env_variables, "region")

    # The ServiceAccount the role trusts (modules/platform's cluster_autoscaler_service_account).
    platform_tf = (REPO_ROOT / "terraform" / "modules" / "platform" / "variables.tf").read_text()
    trusted = re.search(
        r'variable "cluster_autoscaler_service_account" \{.*?default = \{\s*'
        r'namespace = "(?P<namespace>[^"]+)"\s*name\s*= "(?P<name>[^"]+)"',
        platform_tf,
        re.DOTALL,
    )
    assert trusted, "modules/platform: no cluster_autoscaler_service_account default"
    account = values["rbac"]["serviceAccount"]
    assert release["metadata"]["namespace"] == trusted["namespace"]
    assert account["create"] is True
    assert account["name"] == trusted["name"]
    # `<name>-cluster-autoscaler` (modules/iam) in the environment's account, the one its
    # pipelines' roles in values-<env>.yaml name.
    chart_values = yaml.safe_load((CHART_DIR / f"values-{env}.yaml").read_text())
    aws_account = chart_values["pipelines"]["fetch"]["serviceAccount"]["roleArn"].split(":")[4]
    assert account["annotations"][ROLE_ARN] == (
        f"arn:aws:iam::{aws_account}:role/{cluster}-cluster-autoscaler"
    )


@pytest.mark.parametrize("env", ENVS)
def test_cluster_autoscaler_matches_the_kubernetes_minor(env: str) -> None:
    """The autoscaler is built per Kubernetes minor: its image follows the cluster's version."""
    values = _cluster_autoscaler(env)["spec"]["values"]
    minor = _terraform_default(TERRAFORM_ENVS / env / "variables.tf", "kubernetes_version")
    assert re.fullmatch(rf"v{re.escape(minor)}\.\d+", values["image"]["tag"]), (
        f"{env} runs Kubernetes {minor}, the autoscaler {values['image']['tag']}"
    )


def test_cluster_autoscaler_scales_down_safely_and_is_watched() -> None:
    values = _by_kind(_objects(K8S / "platform"), "HelmRelease")[
        ("kube-system", "cluster-autoscaler")
    ]["spec"]["values"]
    args = values["extraArgs"]
    assert args["expander"] == "least-waste"
    assert args["balance-similar-node-groups"] is True
    # Longer than KEDA's cooldown: a pipeline pausing between chunks keeps its nodes.
    chart_defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    cooldowns = {p["autoscaling"]["cooldownPeriod"] for p in chart_defaults["pipelines"].values()}
    assert _seconds(args["scale-down-unneeded-time"]) > max(cooldowns)
    assert _seconds(args["scale-down-delay-after-add"]) >= 60
    # On the on-demand group it never scales to zero; evictable, so it never pins a node.
    assert values["nodeSelector"] == {"galpipe.io/node-group": "general"}
    assert values["podDisruptionBudget"] == {"maxUnavailable": 1}
    assert values["replicaCount"] == 1
    assert values["resources"]["requests"]["memory"] == values["resources"]["limits"]["memory"]
    assert values["containerSecurityContext"]["readOnlyRootFilesystem"] is True
    assert values["securityContext"]["runAsNonRoot"] is True
    # kube-prometheus-stack (k8s/platform) selects every ServiceMonitor in every namespace.
    assert values["serviceMonitor"]["enabled"] is True
    kube_prometheus = _by_kind(_objects(K8S / "platform"), "HelmRelease")[
        ("monitoring", "kube-prometheus-stack")
    ]["spec"]["values"]["prometheus"]["prometheusSpec"]
    assert kube_prometheus["serviceMonitorSelectorNilUsesHelmValues"] is False


def _seconds(duration: str) -> int:
    """Seconds of a Go duration of whole minutes or seconds (``10m``, ``30s``)."""
    match = re.fullmatch(r"(?P<value>\d+)(?P<unit>[ms])", duration)
    assert match, f"unexpected duration {duration!r}"
    return int(match["value"]) * (60 if match["unit"] == "m" else 1)


def test_prod_runs_the_chart_version_in_the_repository() -> None:
    prod = _by_kind(_objects(K8S / "envs" / "prod"), "HelmRelease")[("galpipe", "galpipe")]
    chart_version = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["version"]
    assert prod["spec"]["chart"]["spec"]["version"] == chart_version


@pytest.mark.parametrize("env", ENVS)
def test_flux_controllers_that_read_ecr_get_their_irsa_roles(
    env: str, require_tool: Callable[[str], str], tmp_path: Path
) -> None:
    """kustomize applies flux-system's patches to the ServiceAccounts that bootstrap writes."""
    main_tf = (REPO_ROOT / "terraform" / "modules" / "platform" / "main.tf").read_text()
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
