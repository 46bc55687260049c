"""Terraform under terraform/: formatting, offline validation, checkov, and a real apply.

- ``terraform fmt -check -recursive`` over the whole tree;
- ``init -backend=false -lockfile=readonly`` from the provider mirror (no registry, no internet)
  and ``validate`` for every root configuration (envs/dev, envs/prod, bootstrap): the provider
  on this machine must match the committed ``.terraform.lock.hcl``, which must also carry the
  hashes of the other platforms people and CI run (``terraform providers lock -platform=...``);
- checkov's Terraform checks: no failure, and every skip carries its reason inline;
- modules/eks refuses a GPU node group it cannot run (no GPU instance type, bad sizes or disk);
- ``terraform apply`` of envs/dev against moto's server on 127.0.0.1, then ``terraform destroy``:
  both succeed, the outputs are well formed, and what moto holds in between is what the modules
  promise (least-privilege IRSA policies, among them the Cluster Autoscaler's, which may change
  only the node groups of its own cluster; a private encrypted bucket, an encrypted private
  database with its CloudWatch alarms paging the given SNS topic, an immutable scanned
  registry).

The apply runs in a copy of terraform/ with a generated ``moto_override.tf`` (local state, the
provider's endpoints on moto) and ``-var enable_eks_addons=false``: moto does not implement the
EKS add-on API. It uses a fresh moto account whose IAM knows the AWS managed policies
(AmazonEKSClusterPolicy …), so it shares no state with other tests of the session.
Most of its minutes are the provider's fixed waits (RDS polls only after 60 s, S3 lifecycle
and KMS propagation checks), not moto.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.deploy.policy import REPO_ROOT, run_checkov

TERRAFORM_DIR = REPO_ROOT / "terraform"
#: The filesystem mirror of the hashicorp/aws provider on the machine image.
PROVIDER_MIRROR = Path("/opt/tf-plugins")
#: The modules of docs/deploy-aws.md (modules/kms is their shared key building block).
MODULES = ("network", "eks", "database", "storage", "iam", "registry")
#: Every root configuration: each is initialised and validated on its own.
ROOTS = ("envs/dev", "envs/prod", "bootstrap")
#: Services whose endpoints the apply sends to moto (every API the dev env calls).
MOTO_SERVICES = (
    "cloudwatch",
    "ec2",
    "ecr",
    "eks",
    "iam",
    "kms",
    "logs",
    "rds",
    "s3",
    "secretsmanager",
    "sts",
)
#: The moto account of the apply, and its region (the env's default).
ACCOUNT_ID = "210987654321"
REGION = "eu-west-1"
#: The SNS topic the apply gives the database's alarms (moto does not check that it exists).
PAGER_TOPIC = f"arn:aws:sns:{REGION}:{ACCOUNT_ID}:galpipe-pager"
#: The platforms whose provider hashes every lock file carries: CI's and developers' machines.
LOCK_PLATFORMS = ("linux_amd64", "darwin_arm64")
#: Seconds allowed for one terraform command.
COMMAND_TIMEOUT_S = 280


def _require_mirror() -> None:
    provider = PROVIDER_MIRROR / "registry.terraform.io" / "hashicorp" / "aws"
    if not provider.is_dir():
        pytest.skip(
            f"no hashicorp/aws provider mirror at {provider} (the machine image provides it; "
            "terraform cannot download providers offline)"
        )


@pytest.fixture(scope="module")
def terraform(require_tool: Callable[[str], str]) -> str:
    """Path of the terraform binary; skips when it or the provider mirror is missing."""
    path = require_tool("terraform")
    _require_mirror()
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of terraform/ without local state, so the tests never write into the repository.

    The committed lock files stay: every init below installs exactly the locked provider.
    """
    copy = tmp_path_factory.mktemp("terraform") / "terraform"
    shutil.copytree(
        TERRAFORM_DIR,
        copy,
        ignore=shutil.ignore_patterns(".terraform", "*.tfstate*", "backend.hcl", "*_override.tf"),
    )
    return copy


@pytest.fixture(scope="module")
def terraform_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of every terraform command: providers from the mirror only, no prompts."""
    config = tmp_path_factory.mktemp("terraform-cli") / "terraformrc"
    config.write_text(
        "provider_installation {\n"
        f'  filesystem_mirror {{\n    path = "{PROVIDER_MIRROR}"\n  }}\n'
        "}\n"
    )
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("TF_", "AWS_")) and name != "CHECKPOINT_DISABLE"
    }
    env.update(
        TF_CLI_CONFIG_FILE=str(config),
        TF_IN_AUTOMATION="1",
        TF_INPUT="0",
        CHECKPOINT_DISABLE="1",  # no version check against checkpoint-api.hashicorp.com
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    return env


def _run(
    terraform: str, root: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """Run ``terraform -chdir=ROOT ARGS``; fail the test with its output if it fails."""
    proc = subprocess.run(
        [terraform, f"-chdir={root}", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, (
        f"terraform {' '.join(args)} in {root.name} failed (exit {proc.returncode}):\n"
        f"{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    )
    return proc


# -- static checks ----------------------------------------------------------------------------


def test_fmt_check_recursive(terraform: str, terraform_env: dict[str, str]) -> None:
    proc = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(TERRAFORM_DIR)],
        env=terraform_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"terraform fmt would change:\n{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("root", ROOTS)
def test_offline_init_and_validate(
    root: str, terraform: str, terraform_env: dict[str, str], workspace: Path
) -> None:
    directory = workspace / root
    # readonly: the mirror's provider must match the committed lock, which init must not change.
    _run(terraform, directory, terraform_env, "init", "-backend=false", "-lockfile=readonly")
    proc = _run(terraform, directory, terraform_env, "validate", "-json", "-no-color")
    report = json.loads(proc.stdout)
    assert report["valid"], json.dumps(report["diagnostics"], indent=2)
    assert report["warning_count"] == 0, json.dumps(report["diagnostics"], indent=2)


def _lock_hashes(root: str) -> tuple[str, list[str]]:
    """The locked hashicorp/aws version and its hashes in ``root``'s .terraform.lock.hcl."""
    lock = TERRAFORM_DIR / root / ".terraform.lock.hcl"
    assert lock.is_file(), f"terraform/{root}: no committed .terraform.lock.hcl"
    block = re.search(
        r'provider "registry\.terraform\.io/hashicorp/aws" \{(?P<body>.*?)\n\}',
        lock.read_text(),
        re.DOTALL,
    )
    assert block, f"terraform/{root}: the lock file does not lock hashicorp/aws"
    version = re.search(r'^\s*version\s*=\s*"(?P<v>[^"]+)"', block["body"], re.MULTILINE)
    assert version, f"terraform/{root}: no locked version"
    return version["v"], re.findall(r'"((?:h1|zh):[^"]+)"', block["body"])


@pytest.mark.parametrize("root", ROOTS)
def test_every_root_commits_a_multi_platform_lock_file(root: str) -> None:
    """One h1 hash per platform of LOCK_PLATFORMS, and the registry's zip hashes of them all."""
    version, hashes = _lock_hashes(root)
    assert re.fullmatch(r"5\.\d+\.\d+", version), version  # versions.tf: >= 5.60, < 6.0
    h1 = [h for h in hashes if h.startswith("h1:")]
    zh = [h for h in hashes if h.startswith("zh:")]
    assert len(h1) >= len(LOCK_PLATFORMS), f"terraform/{root}: {len(h1)} platform hashes"
    # The registry signs a zip hash for each of its ~14 platform packages.
    assert len(zh) >= 10, f"terraform/{root}: only {len(zh)} zip hashes"
    assert all(re.fullmatch(r"zh:[0-9a-f]{64}", h) for h in zh)
    # Every root locks the same provider: one upgrade moves them together.
    assert _lock_hashes(ROOTS[0]) == (version, hashes)


def _variable_blocks(path: Path) -> dict[str, str]:
    """Name → text of each ``variable`` block of a variables.tf (blocks run to the next one)."""
    blocks = re.split(r'^variable "', path.read_text(), flags=re.MULTILINE)[1:]
    return {block.split('"', 1)[0]: block for block in blocks}


def test_every_module_has_the_standard_files() -> None:
    modules = {p.name for p in (TERRAFORM_DIR / "modules").iterdir() if p.is_dir()}
    assert modules >= set(MODULES)
    for module in modules:
        for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf"):
            assert (TERRAFORM_DIR / "modules" / module / name).is_file(), f"{module}: no {name}"


@pytest.mark.parametrize(
    "variables",
    sorted(TERRAFORM_DIR.glob("*/**/variables.tf")),
    ids=lambda path: str(path.parent.relative_to(TERRAFORM_DIR)),
)
def test_every_variable_is_described_and_validated(variables: Path) -> None:
    blocks = _variable_blocks(variables)
    assert blocks, f"{variables}: declares no variables"
    for name, block in blocks.items():
        assert re.search(r"^  description\s*=", block, re.MULTILINE), f"{name}: no description"
        # A bool's type is its whole domain; every other variable states its rule.
        if not re.search(r"^  type\s*=\s*bool$", block, re.MULTILINE):
            assert "validation {" in block, f"{variables.parent.name}: {name} is not validated"


def test_checkov_passes_with_justified_skips(require_tool: Callable[[str], str]) -> None:
    report = run_checkov(require_tool("checkov"), "terraform", "--directory", "terraform")
    assert not report.failed, report.describe(report.failed)
    assert not report.unjustified_skips(), report.describe(report.unjustified_skips())
    scanned = report.scanned_files()
    for module in MODULES:
        assert any(path.endswith(f"modules/{module}/main.tf") for path in scanned), (
            f"checkov did not scan modules/{module}"
        )


# -- the optional GPU node group's input rules --------------------------------------------------

#: A root that calls modules/eks with one GPU node group (HCL after ``gpu_node_group =``).
_GPU_ROOT = """module "eks" {{
  source             = "../modules/eks"
  name               = "galpipe-gpu"
  vpc_id             = "vpc-0123456789abcdef0"
  subnet_ids         = ["subnet-0a", "subnet-0b"]
  general_node_group = {{
    instance_types = ["m6i.large"], min_size = 1, max_size = 2, desired_size = 1
  }}
  gpu_node_group     = {group}
}}
"""


@pytest.fixture(scope="module")
def gpu_root(terraform: str, terraform_env: dict[str, str], workspace: Path) -> Path:
    """A root beside the modules in the workspace, initialised once from the provider mirror."""
    root = workspace / "gpu-check"
    root.mkdir()
    (root / "main.tf").write_text(_GPU_ROOT.format(group="null"))
    _run(terraform, root, terraform_env, "init", "-backend=false", "-no-color")
    return root


@pytest.mark.parametrize(
    ("group", "problem"),
    [
        ("null", None),
        ('{ instance_types = ["g5.xlarge"], min_size = 0, max_size = 2, desired_size = 0 }', None),
        (
            '{ instance_types = ["g6.2xlarge", "p4d.24xlarge"], min_size = 1, max_size = 4,'
            ' desired_size = 1, disk_size_gib = 200, capacity_type = "SPOT" }',
            None,
        ),
        (
            '{ instance_types = ["m6i.large"], min_size = 0, max_size = 2, desired_size = 0 }',
            "GPU instance types belong to the NVIDIA g or p families",
        ),
        (
            "{ instance_types = [], min_size = 0, max_size = 2, desired_size = 0 }",
            "The GPU node group needs instance types",
        ),
        (
            '{ instance_types = ["g5.xlarge"], min_size = 3, max_size = 2, desired_size = 2 }',
            "0 <= min_size <= desired_size <= max_size",
        ),
        (
            '{ instance_types = ["g5.xlarge"], min_size = 0, max_size = 2, desired_size = 0,'
            ' capacity_type = "CAPACITY_BLOCK" }',
            "capacity_type ON_DEMAND or SPOT",
        ),
        (
            '{ instance_types = ["g5.xlarge"], min_size = 0, max_size = 2, desired_size = 0,'
            " disk_size_gib = 20 }",
            "disk_size_gib must be 50 to 1000",
        ),
    ],
)
def test_gpu_node_group_is_validated(
    group: str, problem: str | None, terraform: str, terraform_env: dict[str, str], gpu_root: Path
) -> None:
    (gpu_root / "main.tf").write_text(_GPU_ROOT.format(group=group))
    proc = subprocess.run(
        [terraform, f"-chdir={gpu_root}", "validate", "-json", "-no-color"],
        env=terraform_env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    report = json.loads(proc.stdout)
    found = " ".join(d["summary"] + ": " + d.get("detail", "") for d in report["diagnostics"])
    if problem is None:
        assert report["valid"], found
    else:
        assert not report["valid"], f"{group} was accepted"
        assert "Invalid value for variable" in found
        assert problem in " ".join(found.split()), found


# -- apply and destroy against moto -------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """One moto server on 127.0.0.1 for this module, on a port the kernel picked."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@dataclass(frozen=True)
class MotoAccount:
    """Credentials of an IAM user in a fresh moto account, and a boto3 session using them."""

    endpoint: str
    access_key_id: str
    secret_access_key: str

    def client(self, service: str) -> Any:
        session = boto3.session.Session(
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=REGION,
        )
        return session.client(service, endpoint_url=self.endpoint)


@pytest.fixture(scope="module")
def moto_account(moto_endpoint: str) -> MotoAccount:
    """An account of its own: moto maps a request to the account that issued its access key.

    Its IAM is created while moto loads the AWS managed policies (the env attaches
    AmazonEKSClusterPolicy and others); moto reads that switch from the environment when it
    creates an account's IAM, so setting it here affects no other account of the session.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
        iam = boto3.client(
            "iam",
            endpoint_url=moto_endpoint,
            region_name="us-east-1",
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
        )

        def to_account(request: Any, **_: Any) -> None:
            request.headers["x-moto-account-id"] = ACCOUNT_ID

        iam.meta.events.register("before-send.iam.*", to_account)
        iam.create_user(UserName="terraform")
        key = iam.create_access_key(UserName="terraform")["AccessKey"]
    return MotoAccount(moto_endpoint, key["AccessKeyId"], key["SecretAccessKey"])


def _moto_override(account: MotoAccount, state_path: Path) -> str:
    """HCL that merges into envs/dev: local state, and the provider talking to moto only."""
    endpoints = "\n".join(f'    {s} = "{account.endpoint}"' for s in MOTO_SERVICES)
    return f"""# Generated by tests/deploy/test_terraform.py: envs/dev against moto on loopback.
terraform {{
  backend "local" {{
    path = "{state_path}"
  }}
}}

provider "aws" {{
  access_key              = "{account.access_key_id}"
  secret_key              = "{account.secret_access_key}"
  skip_metadata_api_check = true
  s3_use_path_style       = true

  endpoints {{
{endpoints}
  }}
}}
"""


@dataclass
class AppliedEnv:
    """envs/dev applied to moto: where it lives, its outputs and how long the apply took."""

    directory: Path
    outputs: dict[str, Any]
    apply_seconds: float
    destroyed: bool = False


#: moto does not implement the EKS add-on API (CreateAddon), so the add-ons stay off here.
#: Thirty concurrent operations: the graph is wide (80 resources) and moto answers at once.
_APPLY_FLAGS = (
    "-auto-approve",
    "-no-color",
    "-parallelism=30",
    "-var",
    "enable_eks_addons=false",
    "-var",
    f'alarm_sns_topic_arns=["{PAGER_TOPIC}"]',
)


@pytest.fixture(scope="module")
def applied_dev(
    terraform: str, terraform_env: dict[str, str], workspace: Path, moto_account: MotoAccount
) -> Iterator[AppliedEnv]:
    """envs/dev applied to moto once for the module; destroyed at the end if a test did not."""
    directory = workspace / "envs" / "dev"
    (directory / "moto_override.tf").write_text(
        _moto_override(moto_account, directory / "terraform.tfstate")
    )
    _run(terraform, directory, terraform_env, "init", "-no-color")
    started = time.monotonic()
    _run(terraform, directory, terraform_env, "apply", *_APPLY_FLAGS)
    apply_seconds = time.monotonic() - started
    proc = _run(terraform, directory, terraform_env, "output", "-json", "-no-color")
    outputs = {name: entry["value"] for name, entry in json.loads(proc.stdout).items()}
    applied = AppliedEnv(directory, outputs, apply_seconds)
    yield applied
    if not applied.destroyed:
        _destroy(terraform, terraform_env, directory)


def _destroy(terraform: str, env: dict[str, str], directory: Path) -> None:
    # The state is fresh from the apply: no refresh needed.
    _run(terraform, directory, env, "destroy", "-refresh=false", *_APPLY_FLAGS)


@pytest.mark.slow
def test_apply_outputs_are_well_formed(applied_dev: AppliedEnv) -> None:
    out = applied_dev.outputs
    print(f"terraform apply of envs/dev against moto: {applied_dev.apply_seconds:.0f} s")
    bucket = f"galpipe-dev-cutouts-{ACCOUNT_ID}"
    assert out["region"] == REGION
    assert out["cluster_name"] == "galpipe-dev"
    assert re.fullmatch(r"https://[\w.-]+\.eks\.amazonaws\.com/?", out["cluster_endpoint"])
    assert re.fullmatch(
        r"galpipe-dev\.\w+\.eu-west-1\.rds\.amazonaws\.com", out["database_address"]
    )
    assert out["database_port"] == 5432
    assert out["database_name"] == "galpipe"
    assert re.fullmatch(
        rf"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:rds!db-[\w-]+",
        out["database_secret_arn"],
    )
    assert out["bucket_name"] == bucket
    assert out["object_store_url"] == f"s3://{bucket}/galpipe"
    assert out["image_repository_url"] == (
        f"{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com/galpipe-dev/galpipe"
    )
    roles = out["pipeline_role_arns"]
    assert roles == {
        p: f"arn:aws:iam::{ACCOUNT_ID}:role/galpipe-dev-{p}" for p in ("fetch", "radon")
    }
    assert out["chart_repository_url"] == (
        f"oci://{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com/galpipe-dev/charts"
    )
    assert out["flux_role_arns"] == {
        reader: f"arn:aws:iam::{ACCOUNT_ID}:role/galpipe-dev-ecr-{reader}"
        for reader in ("flux-source", "flux-images")
    }
    assert out["external_secrets_role_arn"] == (
        f"arn:aws:iam::{ACCOUNT_ID}:role/galpipe-dev-database-secret-reader"
    )
    # k8s/clusters/dev/platform.yaml substitutes it as cluster_autoscaler_role_arn.
    assert out["cluster_autoscaler_role_arn"] == (
        f"arn:aws:iam::{ACCOUNT_ID}:role/galpipe-dev-cluster-autoscaler"
    )
    # The chart's values, in the chart's own shape.
    assert out["chart_values"] == {
        "image": {"repository": out["image_repository_url"]},
        "objectStore": {"url": out["object_store_url"]},
        "pipelines": {p: {"serviceAccount": {"roleArn": arn}} for p, arn in roles.items()},
    }


def _role_policy(iam: Any, role: str) -> list[dict[str, Any]]:
    (name,) = iam.list_role_policies(RoleName=role)["PolicyNames"]
    document = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
    if isinstance(document, str):
        document = json.loads(document)
    return list(document["Statement"])


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else sorted(value)


@pytest.mark.slow
def test_irsa_roles_grant_each_pipeline_only_its_object_actions(
    applied_dev: AppliedEnv, moto_account: MotoAccount
) -> None:
    iam = moto_account.client("iam")
    objects = f"arn:aws:s3:::{applied_dev.outputs['bucket_name']}/galpipe/cutouts/*"
    expected = {"fetch": ["s3:GetObject", "s3:PutObject"], "radon": ["s3:GetObject"]}
    kms = {"fetch": ["kms:Decrypt", "kms:GenerateDataKey"], "radon": ["kms:Decrypt"]}
    for pipeline, actions in expected.items():
        role = f"galpipe-dev-{pipeline}"
        trust = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
        (statement,) = trust["Statement"]
        assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
        conditions = statement["Condition"]["StringEquals"]
        subjects = [v for k, v in conditions.items() if k.endswith(":sub")]
        assert subjects == [f"system:serviceaccount:galpipe:galpipe-{pipeline}"]

        object_statement, key_statement = _role_policy(iam, role)
        assert _as_list(object_statement["Action"]) == actions
        assert _as_list(object_statement["Resource"]) == [objects]
        assert _as_list(key_statement["Action"]) == kms[pipeline]
        assert key_statement["Condition"]["StringEquals"]["kms:ViaService"] == (
            f"s3.{REGION}.amazonaws.com"
        )


@pytest.mark.slow
def test_cluster_autoscaler_may_change_only_its_own_clusters_node_groups(
    applied_dev: AppliedEnv, moto_account: MotoAccount
) -> None:
    """Trusted by kube-system/cluster-autoscaler alone; writes only to groups EKS tags as ours."""
    iam = moto_account.client("iam")
    cluster = applied_dev.outputs["cluster_name"]
    role = iam.get_role(RoleName=f"{cluster}-cluster-autoscaler")["Role"]
    assert role["Arn"] == applied_dev.outputs["cluster_autoscaler_role_arn"]
    (provider,) = iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Effect"] == "Allow"
    assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert trust["Principal"] == {"Federated": provider["Arn"]}
    issuer = provider["Arn"].split(":oidc-provider/", 1)[1]
    assert trust["Condition"] == {
        "StringEquals": {
            f"{issuer}:sub": "system:serviceaccount:kube-system:cluster-autoscaler",
            f"{issuer}:aud": "sts.amazonaws.com",
        }
    }

    statements = {s["Sid"]: s for s in _role_policy(iam, f"{cluster}-cluster-autoscaler")}
    assert set(statements) == {
        "DiscoverNodeGroups",
        "DescribeOwnManagedNodeGroups",
        "ScaleOwnNodeGroups",
    }
    assert all(s["Effect"] == "Allow" for s in statements.values())
    # Everything granted on any resource only reads.
    discover = statements["DiscoverNodeGroups"]
    assert _as_list(discover["Resource"]) == ["*"]
    assert "Condition" not in discover
    for action in _as_list(discover["Action"]):
        service, verb = action.split(":")
        assert service in ("autoscaling", "ec2"), action
        assert verb.startswith(("Describe", "Get")), action
    describe = statements["DescribeOwnManagedNodeGroups"]
    assert _as_list(describe["Action"]) == ["eks:DescribeNodegroup"]
    assert _as_list(describe["Resource"]) == [
        f"arn:aws:eks:{REGION}:{ACCOUNT_ID}:nodegroup/{cluster}/*"
    ]
    # The two actions that change capacity: this account and region, and only on groups that
    # carry the ownership tag EKS puts on this cluster's managed node groups.
    scale = statements["ScaleOwnNodeGroups"]
    assert _as_list(scale["Action"]) == [
        "autoscaling:SetDesiredCapacity",
        "autoscaling:TerminateInstanceInAutoScalingGroup",
    ]
    assert _as_list(scale["Resource"]) == [
        f"arn:aws:autoscaling:{REGION}:{ACCOUNT_ID}:autoScalingGroup:*:autoScalingGroupName/*"
    ]
    assert scale["Condition"] == {
        "StringEquals": {f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster}": "owned"}
    }


@pytest.mark.slow
def test_bucket_is_private_encrypted_versioned_and_tls_only(
    applied_dev: AppliedEnv, moto_account: MotoAccount
) -> None:
    s3 = moto_account.client("s3")
    bucket = applied_dev.outputs["bucket_name"]
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values())
    assert len(block) == 4
    (rule,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    denials = [s for s in policy["Statement"] if s["Effect"] == "Deny"]
    assert any(s["Condition"].get("Bool") == {"aws:SecureTransport": "false"} for s in denials)
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    classes = [t["StorageClass"] for r in rules for t in r.get("Transitions", [])]
    assert classes == ["STANDARD_IA", "GLACIER_IR"]


@pytest.mark.slow
def test_database_and_registry_are_locked_down(
    applied_dev: AppliedEnv, moto_account: MotoAccount
) -> None:
    (db,) = moto_account.client("rds").describe_db_instances(DBInstanceIdentifier="galpipe-dev")[
        "DBInstances"
    ]
    assert db["Engine"] == "postgres"
    assert db["EngineVersion"].startswith("16")
    assert db["StorageEncrypted"]
    assert db["KmsKeyId"].startswith(f"arn:aws:kms:{REGION}:")
    assert not db["PubliclyAccessible"]
    assert db["BackupRetentionPeriod"] == 7  # point-in-time recovery over a week
    assert db["MasterUserSecret"]["SecretArn"] == applied_dev.outputs["database_secret_arn"]

    alarms = {
        a["MetricName"]: a
        for a in moto_account.client("cloudwatch").describe_alarms(AlarmNamePrefix="galpipe-dev-")[
            "MetricAlarms"
        ]
    }
    assert set(alarms) == {
        "CPUUtilization",
        "FreeStorageSpace",
        "FreeableMemory",
        "DatabaseConnections",
        "MaximumUsedTransactionIDs",
    }
    for alarm in alarms.values():
        assert alarm["Namespace"] == "AWS/RDS"
        assert alarm["Dimensions"] == [{"Name": "DBInstanceIdentifier", "Value": "galpipe-dev"}]
        assert alarm["AlarmActions"] == alarm["OKActions"] == [PAGER_TOPIC]
        assert alarm["EvaluationPeriods"] * alarm["Period"] >= 300

    # alarm_connections_percent of max_connections, both at their defaults in dev.
    def default(module: str, name: str) -> int:
        block = _variable_blocks(TERRAFORM_DIR / "modules" / module / "variables.tf")[name]
        match = re.search(r"^  default\s*=\s*(\d+)$", block, re.MULTILINE)
        assert match, f"modules/{module}: no numeric default for {name}"
        return int(match[1])

    connections = default("platform", "database_max_connections")
    percent = default("database", "alarm_connections_percent")
    assert alarms["DatabaseConnections"]["Threshold"] == connections * percent // 100
    assert alarms["DatabaseConnections"]["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarms["FreeStorageSpace"]["ComparisonOperator"] == "LessThanThreshold"

    repositories = moto_account.client("ecr").describe_repositories()["repositories"]
    assert {r["repositoryName"] for r in repositories} == {
        "galpipe-dev/galpipe",
        "galpipe-dev/charts/galpipe",
    }
    for repository in repositories:
        assert repository["imageTagMutability"] == "IMMUTABLE"
        assert repository["imageScanningConfiguration"]["scanOnPush"]
        assert repository["encryptionConfiguration"]["encryptionType"] == "KMS"


@pytest.mark.slow
def test_destroy_removes_everything(
    applied_dev: AppliedEnv,
    terraform: str,
    terraform_env: dict[str, str],
    moto_account: MotoAccount,
) -> None:
    started = time.monotonic()
    _destroy(terraform, terraform_env, applied_dev.directory)
    applied_dev.destroyed = True
    print(f"terraform destroy of envs/dev against moto: {time.monotonic() - started:.0f} s")
    state = _run(terraform, applied_dev.directory, terraform_env, "state", "list", "-no-color")
    assert state.stdout.strip() == ""
    assert moto_account.client("eks").list_clusters()["clusters"] == []
    buckets = moto_account.client("s3").list_buckets()["Buckets"]
    assert applied_dev.outputs["bucket_name"] not in {b["Name"] for b in buckets}
    assert moto_account.client("rds").describe_db_instances()["DBInstances"] == []


# -- bootstrap: the workflows' roles ------------------------------------------------------------

#: The GitHub environments of both envs, as one account holding both would be bootstrapped.
_GITHUB_ENVIRONMENTS = {"dev": "infra-dev", "prod": "infra-prod"}


@pytest.fixture(scope="module")
def applied_bootstrap(
    terraform: str, terraform_env: dict[str, str], workspace: Path, moto_account: MotoAccount
) -> Path:
    """terraform/bootstrap applied to moto (its state local, as bootstrap keeps it)."""
    directory = workspace / "bootstrap"
    (directory / "moto_override.tf").write_text(
        _moto_override(moto_account, directory / "terraform.tfstate")
    )
    environments = ",".join(f'{env}="{name}"' for env, name in _GITHUB_ENVIRONMENTS.items())
    _run(terraform, directory, terraform_env, "init", "-no-color")
    _run(
        terraform,
        directory,
        terraform_env,
        "apply",
        "-auto-approve",
        "-no-color",
        "-parallelism=30",
        "-var",
        "github_repository=galpipe/galpipe",
        "-var",
        f"github_environments={{{environments}}}",
    )
    return directory


def _policy_actions(statements: list[dict[str, Any]]) -> set[str]:
    return {action for s in statements for action in _as_list(s["Action"])}


@pytest.mark.slow
def test_bootstrap_plan_roles_read_and_apply_roles_write_the_state(
    applied_bootstrap: Path, moto_account: MotoAccount
) -> None:
    """Per environment: a read-only plan role (no state write, no lock) and an apply role."""
    iam = moto_account.client("iam")
    roles = {r["RoleName"] for r in iam.list_roles()["Roles"]}
    for env, environment in _GITHUB_ENVIRONMENTS.items():
        for kind, subject in (("plan", f"{environment}-plan"), ("apply", environment)):
            role = f"galpipe-github-{kind}-{env}"
            assert role in roles, role
            trust = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
            (statement,) = trust["Statement"]
            subjects = [
                v for k, v in statement["Condition"]["StringEquals"].items() if k.endswith(":sub")
            ]
            assert subjects == [f"repo:galpipe/galpipe:environment:{subject}"], role
        plan = f"galpipe-github-plan-{env}"
        assert _policy_actions(_role_policy(iam, plan)) == {
            "s3:GetObject",
            "s3:ListBucket",
            "kms:Decrypt",
        }
        attached = iam.list_attached_role_policies(RoleName=plan)["AttachedPolicies"]
        assert [p["PolicyName"] for p in attached] == ["ReadOnlyAccess"]
        apply_actions = _policy_actions(_role_policy(iam, f"galpipe-github-apply-{env}"))
        assert {"s3:PutObject", "s3:DeleteObject", "kms:GenerateDataKey"} <= apply_actions
    # No DynamoDB lock table: the backends lock with a file next to the state.
    assert "galpipe-github-plan" not in roles
    apply_dev = _policy_actions(_role_policy(iam, "galpipe-github-apply-dev"))
    assert not [action for action in apply_dev if action.startswith("dynamodb:")]
