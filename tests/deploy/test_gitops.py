"""The Flux tree in k8s/: valid objects, resolvable references, pinned versions, image automation.

No cluster runs here, so what Flux would do is checked piece by piece: every object validates
(Flux and core schemas), every kustomization lists exactly the files of its directory, every
reference names an object that exists, the platform charts are pinned, each cluster's platform
is k8s/platform through its own overlay (k8s/envs/<env>/platform, built with kustomize; prod's
pins the upstream charts, so a bump reaches dev first), each cluster substitutes every variable
of k8s/platform with values that agree with Terraform (the Cluster Autoscaler's cluster, region
and IRSA role), Flux's ECR readers get the IRSA roles Terraform creates, every environment pulls
from dev's one registry and verifies the chart's keyless cosign signature, each environment's
HelmRelease (its values outside the chart package) renders the chart version it pins as Flux
would, dev takes every new chart while prod may lag, and the image policy orders CI's tags the
way the setter marker in dev expects while prod stays pinned by digest.
"""

from __future__ import annotations

import atexit
import functools
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.deploy.chart_render import (
    CHART_DIR,
    REPO_ROOT,
    environment_values,
    objects_of,
    render_templates,
    validate_object,
)
from tests.tools import require_tool

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


@functools.cache
def _kustomize_build(directory: Path) -> tuple[dict[str, Any], ...]:
    """What ``kubectl kustomize DIRECTORY`` builds: what a Flux Kustomization of that path gets."""
    run = subprocess.run(
        [require_tool("kubectl"), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert run.returncode == 0, f"kustomize {directory}: {run.stderr}"
    return tuple(d for d in yaml.safe_load_all(run.stdout) if d)


def _what_a_cluster_gets(env: str) -> list[dict[str, Any]]:
    """Every object Flux applies for ``env``: its cluster directory and what that points at."""
    objects = _objects(K8S / "clusters" / env)
    for kustomization in _by_kind(objects, "Kustomization").values():
        objects += _kustomize_build(REPO_ROOT / kustomization["spec"]["path"])
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
        "OCIRepository",
        "HelmRelease",
        "ImageRepository",
        "ImagePolicy",
        "ImageUpdateAutomation",
        "Namespace",
    } <= kinds
    for obj in objects:
        validate_object(obj)


def test_each_kustomization_lists_exactly_its_files() -> None:
    """Every YAML file next to it, and directories (bases) that exist."""
    for kustomization in K8S.rglob("kustomization.yaml"):
        resources = yaml.safe_load(kustomization.read_text())["resources"]
        listed = {r for r in resources if r.endswith(".yaml")}
        present = {f.name for f in kustomization.parent.glob("*.yaml")} - {"kustomization.yaml"}
        assert listed == present, kustomization
        for base in set(resources) - listed:
            assert (kustomization.parent / base / "kustomization.yaml").is_file(), (
                f"{kustomization}: {base} is not a kustomization"
            )


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
        "fluent-bit",
        "policy-controller",
        "external-secrets",
        "galpipe",
    }
    galpipe = releases.pop(("galpipe", "galpipe"))["spec"]
    # galpipe's chart comes from an OCIRepository, which verifies its signature.
    assert "chart" not in galpipe
    ref = galpipe["chartRef"]
    assert ref["kind"] == "OCIRepository"
    assert (ref["namespace"], ref["name"]) in _by_kind(objects, "OCIRepository")
    for (_, name), release in releases.items():
        chart = release["spec"]["chart"]["spec"]
        ref = chart["sourceRef"]
        assert ref["kind"] == "HelmRepository"
        assert (ref["namespace"], ref["name"]) in repositories, name
        assert SEMVER.match(chart["version"]), f"{env} {name}: {chart['version']} not pinned"
    platform = {name: r["spec"]["chart"]["spec"]["version"] for (_, name), r in releases.items()}
    # The API versions the chart is validated against (cloudcoil KEDA 2.16, operator 0.80).
    assert platform["keda"].startswith("2.16.")
    assert platform["kube-prometheus-stack"].startswith("69.")
    # The chart of Cluster Autoscaler 1.33 (see the comment in cluster-autoscaler.yaml).
    assert platform["cluster-autoscaler"] == "9.51.0"


def _platform_kustomization(env: str) -> dict[str, Any]:
    """The Flux Kustomization ``platform`` of ``env``'s cluster."""
    kustomizations = _by_kind(_objects(K8S / "clusters" / env), "Kustomization")
    return kustomizations[("flux-system", "platform")]


def _platform_substitutions(env: str) -> dict[str, str]:
    substitute: dict[str, str] = _platform_kustomization(env)["spec"]["postBuild"]["substitute"]
    return substitute


@pytest.mark.parametrize("env", ENVS)
def test_each_cluster_gets_the_shared_platform_through_its_own_overlay(env: str) -> None:
    """k8s/platform is the base; k8s/envs/<env>/platform is what the cluster's Flux applies."""
    path = _platform_kustomization(env)["spec"]["path"]
    assert path == f"./k8s/envs/{env}/platform"
    overlay = yaml.safe_load((REPO_ROOT / path / "kustomization.yaml").read_text())
    assert overlay["resources"] == ["../../../platform"]
    base = {(o["kind"], o["metadata"]["name"]) for o in _objects(K8S / "platform")}
    built = {(o["kind"], o["metadata"]["name"]) for o in _kustomize_build(REPO_ROOT / path)}
    assert built == base, f"{env}: the overlay adds or drops {built ^ base}"


def _platform_versions(k8s: Path, env: str) -> dict[str, str]:
    """Chart version of each platform HelmRelease of ``env``, built from the tree ``k8s``."""
    built = _kustomize_build(k8s / "envs" / env / "platform")
    return {
        o["metadata"]["name"]: o["spec"]["chart"]["spec"]["version"]
        for o in built
        if o["kind"] == "HelmRelease"
    }


def test_a_platform_upgrade_reaches_dev_while_prod_keeps_its_pins(tmp_path: Path) -> None:
    """Bump every chart of k8s/platform (in a copy): dev follows at once, prod does not."""
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    before = {env: _platform_versions(K8S, env) for env in ENVS}
    assert before["dev"] == before["prod"], "prod lags dev's platform; promote or explain"
    for release in (copy / "platform").glob("*.yaml"):
        text = release.read_text()
        for version in before["dev"].values():
            text = re.sub(rf"(\n\s+version: ){re.escape(version)}\n", r"\g<1>999.0.0\n", text)
        release.write_text(text)
    after = {env: _platform_versions(copy, env) for env in ENVS}
    assert set(after["dev"].values()) == {"999.0.0"}, after["dev"]
    assert after["prod"] == before["prod"], "a platform change reached prod unreviewed"


def _platform_as_flux_applies_it(env: str) -> list[dict[str, Any]]:
    """k8s/platform after ``env``'s post-build substitution.

    Flux substitutes in the built objects (kustomize drops comments), so the objects are
    serialised, substituted and parsed back; a variable without a value fails here rather than
    becoming an empty string on the cluster.
    """
    variables = _platform_substitutions(env)
    substituted = []
    for obj in _kustomize_build(REPO_ROOT / _platform_kustomization(env)["spec"]["path"]):
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
    assert used >= {
        "cluster_name",
        "aws_region",
        "cluster_autoscaler_role_arn",
        "log_shipper_role_arn",
        "policy_controller_role_arn",
        "external_secrets_role_arn",
    }
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
    # pipelines' roles in k8s/envs/<env>/galpipe.yaml name.
    chart_values = environment_values(env)
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


def _chart_source(env: str) -> dict[str, Any]:
    """The OCIRepository ``galpipe-chart`` of ``env``: where its chart comes from, at what ref."""
    sources = _by_kind(_objects(K8S / "envs" / env), "OCIRepository")
    return sources[("flux-system", "galpipe-chart")]


def _chart_version() -> str:
    version: str = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["version"]
    return version


def _semver(version: str) -> tuple[int, ...]:
    assert SEMVER.match(version), version
    return tuple(int(part) for part in version.split("."))


def _admits(constraint: str, version: str) -> bool:
    """Whether a Flux semver range of ``>=`` / ``<`` bounds (``">=0.1.0 <1.0.0"``) admits it."""
    for bound in constraint.split():
        match = re.fullmatch(r"(>=|<)(\d+\.\d+\.\d+)", bound)
        assert match, f"unexpected bound {bound!r} in {constraint!r}"
        below = _semver(version) < _semver(match[2])
        if below == (match[1] == ">="):
            return False
    return True


def test_admits_reads_flux_ranges() -> None:
    assert _admits(">=0.1.0 <1.0.0", "0.10.3")
    assert not _admits(">=0.1.0 <1.0.0", "1.0.0")
    assert not _admits(">=0.2.0 <1.0.0", "0.1.9")


def test_dev_takes_every_new_chart_version() -> None:
    """dev's range admits the chart in the repository: a version bump reaches dev unreviewed."""
    ref = _chart_source("dev")["spec"]["ref"]
    assert set(ref) == {"semver"}
    assert _admits(ref["semver"], _chart_version())


def test_prod_pins_a_chart_version_and_may_lag_dev() -> None:
    """prod names one released version, never ahead of the repository; it need not be equal."""
    ref = _chart_source("prod")["spec"]["ref"]
    assert set(ref) == {"tag"}, "prod pins one chart version, no range"
    assert _semver(ref["tag"]) <= _semver(_chart_version())
    _chart_at_version(ref["tag"])  # a version the repository had, so one release.yml published


@functools.cache
def _chart_at_version(version: str) -> Path:
    """The chart as it was at ``version``: the working tree's, or the newest commit's with it.

    With the chart-version check in CI, every commit whose Chart.yaml says ``version`` packages
    the same chart, the one release.yml published under that version.
    """
    if _chart_version() == version:
        return CHART_DIR
    git = ["git", "-C", str(REPO_ROOT)]
    shallow = subprocess.run(
        [*git, "rev-parse", "--is-shallow-repository"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if shallow.returncode != 0 or shallow.stdout.strip() == "true":
        pytest.skip(f"chart {version} is in git history, which this checkout lacks (shallow clone)")
    log = subprocess.run(
        [*git, "log", "--format=%H", "--", "charts/galpipe", "grafana/dashboards"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert log, "no git history of charts/galpipe (a shallow clone?)"
    for commit in log:
        chart_yaml = subprocess.run(
            [*git, "show", f"{commit}:charts/galpipe/Chart.yaml"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if chart_yaml.returncode == 0 and yaml.safe_load(chart_yaml.stdout)["version"] == version:
            target = Path(tempfile.mkdtemp(prefix=f"galpipe-chart-{version}-"))
            atexit.register(shutil.rmtree, target, ignore_errors=True)
            archive = subprocess.run(
                [*git, "archive", commit, "charts/galpipe", "grafana/dashboards"],
                capture_output=True,
                check=True,
                timeout=60,
            ).stdout
            archive_path = target / "chart.tar"
            archive_path.write_bytes(archive)
            with tarfile.open(archive_path) as tar:
                tar.extractall(target, filter="tar")
            return target / "charts" / "galpipe"
    raise AssertionError(f"chart version {version} is in no commit of the repository")


def _chart_signer_identity() -> tuple[str, str]:
    """(issuer, subject) of the keyless signatures release.yml makes on main of this repository."""
    git = _by_kind(_objects(K8S / "clusters" / "dev"), "GitRepository")[("flux-system", "galpipe")]
    match = re.fullmatch(r"ssh://git@github\.com/(?P<repo>[\w.-]+/[\w.-]+)", git["spec"]["url"])
    assert match, git["spec"]["url"]
    workflow = REPO_ROOT / ".github" / "workflows" / "release.yml"
    assert "cosign sign --yes" in workflow.read_text()
    return (
        "https://token.actions.githubusercontent.com",
        f"https://github.com/{match['repo']}/.github/workflows/release.yml@refs/heads/main",
    )


@pytest.mark.parametrize("env", ENVS)
def test_every_environment_verifies_the_charts_keyless_signature(env: str) -> None:
    """source-controller accepts only a chart that release.yml on main signed (cosign)."""
    verify = _chart_source(env)["spec"]["verify"]
    assert verify["provider"] == "cosign"
    assert "secretRef" not in verify, "keyless: no public key, the OIDC identity instead"
    issuer, subject = _chart_signer_identity()
    (identity,) = verify["matchOIDCIdentity"]
    assert re.fullmatch(identity["issuer"], issuer)
    assert re.fullmatch(identity["subject"], subject)
    # Nobody else's signature: another workflow, another ref, another repository, a lookalike.
    for other in (
        subject.replace("release.yml", "ci.yml"),
        subject.replace("refs/heads/main", "refs/pull/7/merge"),
        subject.replace("refs/heads/main", "refs/heads/main-fork"),
        subject.replace("github.com/", "github.com/evil-"),
        subject.replace(".github/workflows/release.yml", ".github/workflows/releaseXyml"),
    ):
        assert not re.fullmatch(identity["subject"], other), other
    assert not re.fullmatch(identity["issuer"], "https://token.actions.githubusercontent.com.evil")
    layer = _chart_source(env)["spec"]["layerSelector"]
    assert layer == {
        "mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
        "operation": "copy",
    }


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
    # The pipelines' roles in k8s/envs/<env>/galpipe.yaml name the environment's account.
    values = environment_values(env)
    account = values["pipelines"]["fetch"]["serviceAccount"]["roleArn"].split(":")[4]
    for service_account, key in role_keys.items():
        metadata = built[service_account]["metadata"]
        assert metadata["annotations"][ROLE_ARN] == (
            f"arn:aws:iam::{account}:role/galpipe-{env}-ecr-{key}"
        )
        assert metadata["labels"] == {"app.kubernetes.io/component": service_account}


def test_every_environment_pulls_from_the_one_registry_of_dev() -> None:
    """Prod installs the chart and runs the image that dev did, from terraform/envs/dev's ECR."""
    chart_urls = {env: _chart_source(env)["spec"]["url"] for env in ENVS}
    images = {env: environment_values(env)["image"]["repository"] for env in ENVS}
    registry, _, repository = images["dev"].partition("/")
    assert re.fullmatch(r"\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com", registry), registry
    assert repository == "galpipe-dev/galpipe"
    assert images["prod"] == images["dev"]
    assert chart_urls["prod"] == chart_urls["dev"]
    assert chart_urls["dev"] == f"oci://{registry}/galpipe-dev/charts/galpipe"
    # release.yml pushes the chart to <registry>/$CHART_REPOSITORY/galpipe.
    release = (REPO_ROOT / ".github" / "workflows" / "release.yml").read_text()
    assert "CHART_REPOSITORY: galpipe-dev/charts\n" in release


def _helm_release(env: str) -> dict[str, Any]:
    return _by_kind(_objects(K8S / "envs" / env), "HelmRelease")[("galpipe", "galpipe")]


@pytest.mark.parametrize("env", ENVS)
def test_helm_release_renders_the_chart_as_flux_would(env: str) -> None:
    """The chart version the environment pins (dev: the repository's), with the release's values.

    No values file of the chart package is involved: the environment's values are the
    HelmRelease's own, and must be valid for the chart version that environment runs.
    """
    release = _helm_release(env)["spec"]
    assert release["releaseName"] == "galpipe"  # the IRSA trust names galpipe-<pipeline>
    assert "valuesFiles" not in json.dumps(release), "environment values belong in k8s/envs"
    ref = _chart_source(env)["spec"]["ref"]
    version = ref.get("tag", _chart_version())
    values = release["values"]
    with helm.Chart.load(_chart_at_version(version)) as chart:
        objects = objects_of(render_templates(values, chart))
    for obj in objects:
        validate_object(obj)
    images = {
        c["image"]
        for o in objects
        if o["kind"] in ("Deployment", "Job")
        for c in o["spec"]["template"]["spec"]["containers"]
    }
    image = values["image"]
    expected = f"{image['repository']}:{image['tag']}"
    if image.get("digest"):
        expected += f"@{image['digest']}"
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
    values_dev = environment_values("dev")
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
    image = _helm_release("prod")["spec"]["values"]["image"]
    # A tag CI could have built, so a promotion PR copies it from dev verbatim...
    assert _latest(policy, [image["tag"]])
    # ...and the digest, which is what prod runs: a tag names whatever was pushed under it.
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", image["digest"]), image.get("digest")
