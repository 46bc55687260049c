"""The platform's log shipper, image admission and database-secret sync, against Terraform.

- Fluent Bit ships every container's log to the CloudWatch group Terraform makes
  (``/aws/eks/<cluster>/containers``, its retention and key there), with the IRSA role that
  trusts its ServiceAccount and may write into that group only;
- Sigstore's policy-controller admits a pod of the galpipe namespace only with the keyless
  signature release.yml makes on main (the identity Flux requires of the chart);
- External Secrets Operator builds the chart's three database Secrets, in the keys the chart
  reads, from the roles' secrets Terraform creates, and reads them again often enough for a
  rotation to reach the pods.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pytest
import yaml

from tests.deploy.chart_render import CHART_DIR, environment_values
from tests.deploy.test_gitops import (
    ENVS,
    K8S,
    REPO_ROOT,
    TERRAFORM_ENVS,
    _by_kind,
    _chart_signer_identity,
    _objects,
    _platform_as_flux_applies_it,
    _terraform_default,
)

ROLE_ARN = "eks.amazonaws.com/role-arn"
TERRAFORM = REPO_ROOT / "terraform"


def _release(env: str, namespace: str, name: str) -> dict[str, Any]:
    releases = _by_kind(_platform_as_flux_applies_it(env), "HelmRelease")
    release: dict[str, Any] = releases[(namespace, name)]
    return release


def _trusted_service_account(variable: str) -> tuple[str, str]:
    """(namespace, name) default of a ServiceAccount variable of modules/platform."""
    text = (TERRAFORM / "modules" / "platform" / "variables.tf").read_text()
    match = re.search(
        rf'variable "{variable}" \{{.*?default = \{{\s*'
        r'namespace = "(?P<namespace>[^"]+)"\s*name\s*= "(?P<name>[^"]+)"',
        text,
        re.DOTALL,
    )
    assert match, f"modules/platform: no default for {variable}"
    return match["namespace"], match["name"]


def _account(env: str) -> str:
    role: str = environment_values(env)["pipelines"]["fetch"]["serviceAccount"]["roleArn"]
    return role.split(":")[4]


def _cluster(env: str) -> str:
    return _terraform_default(TERRAFORM_ENVS / env / "variables.tf", "name")


def _fluent_bit_sections(text: str) -> list[dict[str, str]]:
    """The ``[SECTION]`` blocks of a classic Fluent Bit configuration, keys lower-cased."""
    sections: list[dict[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            sections.append({"": line.strip("[]")})
            continue
        key, _, value = line.partition(" ")
        sections[-1][key.lower()] = value.strip()
    return sections


@pytest.mark.parametrize("env", ENVS)
def test_fluent_bit_ships_every_container_log_to_terraforms_group(env: str) -> None:
    release = _release(env, "logging", "fluent-bit")
    values = release["spec"]["values"]
    cluster = _cluster(env)
    assert values["kind"] == "DaemonSet"
    # Every node, the tainted spot group's included.
    assert {"operator": "Exists"} in values["tolerations"]
    config = values["config"]
    (tail,) = _fluent_bit_sections(config["inputs"])
    assert tail["name"] == "tail"
    assert tail["path"] == "/var/log/containers/*.log"
    assert tail["db"].startswith("/var/fluent-bit/")  # the position survives a restart
    (output,) = _fluent_bit_sections(config["outputs"])
    assert output["name"] == "cloudwatch_logs"
    assert fnmatch.fnmatch(f"{tail['tag'].rstrip('*')}var.log.containers.x.log", output["match"])
    assert output["log_group_name"] == f"/aws/eks/{cluster}/containers"
    assert output["region"] == _terraform_default(TERRAFORM_ENVS / env / "variables.tf", "region")
    # The group is Terraform's, with its retention; the role may not create one.
    assert output["auto_create_group"].lower() == "off"
    eks = (TERRAFORM / "modules" / "eks" / "main.tf").read_text()
    assert 'container_log_group_name = "/aws/eks/${var.name}/containers"' in eks
    assert "retention_in_days = var.container_log_retention_days" in eks

    namespace, name = _trusted_service_account("log_shipper_service_account")
    account = values["serviceAccount"]
    assert release["metadata"]["namespace"] == namespace
    assert account["create"] is True
    assert account["name"] == name
    # `<cluster>-log-shipper` (modules/iam) in the environment's account.
    assert account["annotations"][ROLE_ARN] == (
        f"arn:aws:iam::{_account(env)}:role/{cluster}-log-shipper"
    )


def test_log_shipper_role_writes_only_into_the_containers_group() -> None:
    iam = (TERRAFORM / "modules" / "iam" / "main.tf").read_text()
    policy = iam.split('data "aws_iam_policy_document" "log_shipper"', 1)[1].split("\n}\n", 1)[0]
    actions = set(re.findall(r'"(logs:\w+)"', policy))
    assert actions == {"logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"}
    resources = re.search(r"resources = \[(?P<list>[^\]]*)\]", policy)
    assert resources
    assert resources["list"] == (
        'var.log_shipper.log_group_arn, "${var.log_shipper.log_group_arn}:log-stream:*"'
    )


def _image_policy(env: str) -> dict[str, Any]:
    (policy,) = _by_kind(_objects(K8S / "envs" / env), "ClusterImagePolicy").values()
    return policy


def _glob(pattern: str, image: str) -> bool:
    """policy-controller's glob: ``*`` within a path segment, ``**`` across them."""
    regex = re.escape(pattern).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
    return re.fullmatch(regex, image) is not None


@pytest.mark.parametrize("env", ENVS)
def test_galpipe_images_are_admitted_only_with_the_release_signature(env: str) -> None:
    namespaces = _by_kind(_objects(K8S / "envs" / env), "Namespace")
    labels = namespaces[("", "galpipe")]["metadata"]["labels"]
    webhook = _release(env, "cosign-system", "policy-controller")["spec"]["values"]["webhook"]
    (selector,) = webhook["namespaceSelector"]["matchExpressions"]
    assert selector["operator"] == "In"
    assert labels[selector["key"]] in selector["values"]  # galpipe's namespace opts in
    assert webhook["failurePolicy"] == "Fail"
    assert webhook["configData"]["no-match-policy"] == "deny"
    assert webhook["replicaCount"] >= 2  # fails closed: one replica would block on a drain

    spec = _image_policy(env)["spec"]
    image = environment_values(env)["image"]
    (pattern,) = (entry["glob"] for entry in spec["images"])
    for reference in (
        f"{image['repository']}:{image['tag']}",
        f"{image['repository']}@sha256:{'0' * 64}",
        f"{image['repository']}:{image['tag']}@sha256:{'0' * 64}",
    ):
        assert _glob(pattern, reference), reference
    assert not _glob(pattern, "docker.io/library/busybox:latest")

    (authority,) = spec["authorities"]
    assert "key" not in authority, "keyless: the workflow's identity, no key"
    (identity,) = authority["keyless"]["identities"]
    issuer, subject = _chart_signer_identity()
    assert identity["issuer"] == issuer
    assert re.fullmatch(identity["subjectRegExp"], subject)
    for other in (
        subject.replace("release.yml", "ci.yml"),
        subject.replace("refs/heads/main", "refs/pull/7/merge"),
        subject.replace("refs/heads/main", "refs/heads/main-fork"),
        subject.replace("github.com/", "github.com/evil-"),
        subject.replace(".github/workflows/release.yml", ".github/workflows/releaseXyml"),
    ):
        assert not re.fullmatch(identity["subjectRegExp"], other), other
    assert authority["ctlog"]["url"].startswith("https://")


def _render(template: str, secret: dict[str, str]) -> str:
    """ESO's template (Go text/template with Sprig) for the forms used here."""

    def value(match: re.Match[str]) -> str:
        field, pipe = match["field"], match["pipe"]
        text = secret[field]
        if pipe == "urlquery":
            return quote(text, safe="")
        assert pipe is None, pipe
        return text

    return re.sub(r"\{\{ \.(?P<field>\w+)(?: \| (?P<pipe>\w+))? \}\}", value, template)


@pytest.mark.parametrize("env", ENVS)
def test_external_secrets_build_the_charts_database_secrets(env: str) -> None:
    objects = _objects(K8S / "envs" / env)
    chart = yaml.safe_load((CHART_DIR / "values.yaml").read_text())["database"]
    cluster = _cluster(env)
    (store,) = _by_kind(objects, "ClusterSecretStore").values()
    aws = store["spec"]["provider"]["aws"]
    assert aws["service"] == "SecretsManager"
    assert aws["region"] == _terraform_default(TERRAFORM_ENVS / env / "variables.tf", "region")
    assert "auth" not in aws  # the operator's own IRSA role
    assert store["spec"]["conditions"] == [{"namespaces": ["galpipe"]}]

    # Terraform names the roles' secrets `<name>/database/<role>` (modules/database).
    role_secrets = (TERRAFORM / "modules" / "database" / "role_secrets.tf").read_text()
    assert 'name        = "${var.name}/database/${each.key}"' in role_secrets
    # A secret as Terraform and the rotation function write it, with a password URLs mangle.
    secret = {
        "engine": "postgres",
        "host": f"{cluster}.abc.eu-west-1.rds.amazonaws.com",
        "port": "5432",
        "dbname": "galpipe",
        "username": "galpipe_app",
        "password": "p@ss/w:rd?#",
    }
    externals = _by_kind(objects, "ExternalSecret")
    assert {name for _, name in externals} == {
        chart[role]["existingSecret"] for role in ("app", "migrator", "scaler")
    }
    for role in ("app", "migrator", "scaler"):
        name = chart[role]["existingSecret"]
        spec = externals[("galpipe", name)]["spec"]
        assert spec["secretStoreRef"] == {
            "kind": "ClusterSecretStore",
            "name": store["metadata"]["name"],
        }
        (source,) = spec["dataFrom"]
        assert source == {"extract": {"key": f"{cluster}/database/{role}"}}
        # Read again within minutes of a rotation (Go durations of minutes or seconds here).
        interval = re.fullmatch(r"(?P<n>\d+)(?P<unit>[ms])", spec["refreshInterval"])
        assert interval
        assert int(interval["n"]) * (60 if interval["unit"] == "m" else 1) <= 600
        target = spec["target"]
        assert target["name"] == name
        data = {key: _render(text, secret) for key, text in target["template"]["data"].items()}
        if role == "scaler":
            assert set(data) == {chart["connectionKey"]}
            url = urlsplit(data[chart["connectionKey"]])
            assert unquote(url.password or "") == secret["password"]
        else:
            assert set(data) == {chart["urlKey"], chart["passwordKey"]}
            assert data[chart["passwordKey"]] == secret["password"]
            url = urlsplit(data[chart["urlKey"]])
            assert url.password is None, "the URL names the role, the password is a file"
        assert url.scheme == "postgresql"
        assert (url.username, url.hostname, url.port) == (
            secret["username"],
            secret["host"],
            int(secret["port"]),
        )
        assert url.path == f"/{secret['dbname']}"
        assert url.query == "sslmode=require"  # rds.force_ssl=1


@pytest.mark.parametrize("env", ENVS)
def test_external_secrets_operator_gets_the_role_that_reads_the_roles_secrets(env: str) -> None:
    release = _release(env, "external-secrets", "external-secrets")
    account = release["spec"]["values"]["serviceAccount"]
    block = (TERRAFORM_ENVS / env / "variables.tf").read_text()
    block = block.split('variable "external_secrets_service_account"', 1)[1].split("\n}\n", 1)[0]
    trusted = re.search(r'namespace = "(?P<namespace>[^"]+)"\s*name\s*= "(?P<name>[^"]+)"', block)
    assert trusted, "envs: no default for external_secrets_service_account"
    namespace, name = trusted["namespace"], trusted["name"]
    assert release["metadata"]["namespace"] == namespace
    assert account["name"] == name
    assert account["annotations"][ROLE_ARN] == (
        f"arn:aws:iam::{_account(env)}:role/{_cluster(env)}-database-secret-reader"
    )
    # That role reads the roles' secrets, never the master user's.
    platform = (TERRAFORM / "modules" / "platform" / "main.tf").read_text()
    assert "secret_arns     = values(module.database.role_secret_arns)" in platform
    assert "master_user_secret_arn" not in platform.split("database_secret_reader", 1)[1]
