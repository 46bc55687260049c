"""The GitHub Actions workflows, their config and the repository's shell scripts.

The real linters (zizmor offline, actionlint with shellcheck, checkov, yamllint, shellcheck) and
the properties we require that no linter checks: actions pinned by commit SHA with their
version, least-privilege permissions, OIDC instead of keys, the image tag that Flux orders.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.policy import REPO_ROOT, run_checkov

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.yml"))
SCRIPTS = REPO_ROOT / "scripts"

#: `owner/repo[/path]@<40 hex> # vX.Y.Z`: the form that Dependabot keeps up to date.
_PINNED_USES = re.compile(
    r"^\s*(?:-\s+)?uses:\s+[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+\s*$"
)
_OIDC_ACTION = "aws-actions/configure-aws-credentials"


def _load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), f"{path}: not a mapping"
    # YAML 1.1 reads the key `on` as true.
    if True in document:
        document["on"] = document.pop(True)
    return document


def _steps(workflow: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(job id, step) for every step of every job."""
    for job_id, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, step


def _step_using(workflow: dict[str, Any], action: str) -> dict[str, Any]:
    (step,) = [s for _, s in _steps(workflow) if s.get("uses", "").startswith(f"{action}@")]
    return step


@pytest.fixture(scope="module")
def workflows() -> dict[str, dict[str, Any]]:
    assert {p.name for p in WORKFLOW_FILES} >= {"ci.yml", "release.yml", "infra.yml"}
    return {p.name: _load(p) for p in WORKFLOW_FILES}


# -- linters --------------------------------------------------------------------------------


def test_zizmor_offline_is_clean(require_tool: Callable[[str], str]) -> None:
    """The workflows and the Dependabot config (zizmor audits both)."""
    proc = subprocess.run(
        [
            require_tool("zizmor"),
            "--offline",
            "--no-progress",
            "--format",
            "plain",
            str(WORKFLOWS.parent),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No findings" in proc.stdout, proc.stdout


def test_actionlint_is_clean(require_tool: Callable[[str], str]) -> None:
    """actionlint, with shellcheck on every `run:` block (and no pyflakes: no Python blocks)."""
    proc = subprocess.run(
        [
            require_tool("actionlint"),
            "-no-color",
            "-shellcheck",
            require_tool("shellcheck"),
            "-pyflakes=",
            *map(str, WORKFLOW_FILES),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_checkov_github_actions_passes_with_justified_skips(
    require_tool: Callable[[str], str],
) -> None:
    report = run_checkov(
        require_tool("checkov"),
        "github_actions",
        "--directory",
        ".",
        "--skip-path",
        ".venv",
        "--skip-path",
        ".tools",
    )
    assert not report.failed, report.describe(report.failed)
    assert not report.unjustified_skips(), report.describe(report.unjustified_skips())
    # checkov silently skips a workflow its schema rejects: every one must have been scanned.
    expected = {str(p.relative_to(REPO_ROOT)) for p in WORKFLOW_FILES}
    assert expected <= report.scanned_files(), expected - report.scanned_files()


def test_yamllint_is_clean(require_tool: Callable[[str], str]) -> None:
    proc = subprocess.run(
        [require_tool("yamllint"), "--strict", "-f", "parsable", ".github", ".yamllint.yaml"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_shell_script_passes_shellcheck(require_tool: Callable[[str], str]) -> None:
    proc = subprocess.run(
        [str(SCRIPTS / "shellcheck-all.sh")],
        env={**os.environ, "SHELLCHECK": require_tool("shellcheck")},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checked = set(re.findall(r"^shellcheck: (\S+)$", proc.stdout, re.M))
    # Found by shebang: .ci/run has no extension; every scripts/*.sh is there too.
    expected = {".ci/run"} | {f"scripts/{p.name}" for p in SCRIPTS.glob("*.sh")}
    assert expected <= checked, f"not checked: {sorted(expected - checked)}"


# -- what we require of the workflows -------------------------------------------------------


def test_every_action_is_pinned_by_commit_sha_with_its_version() -> None:
    unpinned = [
        f"{path.name}:{number}: {line.strip()}"
        for path in WORKFLOW_FILES
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.match(r"^\s*(?:-\s+)?uses:", line)
        and not line.split("uses:", 1)[1].strip().startswith("./")
        and not _PINNED_USES.match(line)
    ]
    assert not unpinned, "\n".join(unpinned)


def test_permissions_are_least_privilege(workflows: dict[str, dict[str, Any]]) -> None:
    """contents: read at the top; a job adds only id-token: write, and only to use OIDC."""
    for name, workflow in workflows.items():
        assert workflow.get("permissions") == {"contents": "read"}, name
        for job_id, job in workflow["jobs"].items():
            granted = job.get("permissions", {})
            writes = {scope for scope, level in granted.items() if level == "write"}
            uses_oidc = any(
                s.get("uses", "").startswith(f"{_OIDC_ACTION}@") for s in job.get("steps", [])
            )
            assert writes <= {"id-token"}, f"{name} {job_id}: writes {writes}"
            assert ("id-token" in writes) == uses_oidc, f"{name} {job_id}: id-token without OIDC"


def test_checkouts_keep_no_credentials(workflows: dict[str, dict[str, Any]]) -> None:
    for name, workflow in workflows.items():
        for job_id, step in _steps(workflow):
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step.get("with", {}).get("persist-credentials") is False, (
                    f"{name} {job_id}: checkout leaves the token in .git/config"
                )


def test_no_expression_is_interpolated_into_a_script(
    workflows: dict[str, dict[str, Any]],
) -> None:
    """`${{ }}` in `run:` is template injection; values reach scripts through `env:`."""
    for name, workflow in workflows.items():
        for job_id, step in _steps(workflow):
            assert "${{" not in step.get("run", ""), f"{name} {job_id}: {step.get('name')}"


def test_aws_access_is_oidc_only(workflows: dict[str, dict[str, Any]]) -> None:
    for name, workflow in workflows.items():
        text = (WORKFLOWS / name).read_text()
        assert "aws-access-key-id" not in text, name
        assert "aws-secret-access-key" not in text, name
        for _, step in _steps(workflow):
            if step.get("uses", "").startswith(f"{_OIDC_ACTION}@"):
                assert step["with"]["role-to-assume"].startswith("${{ vars."), name


def test_ci_runs_every_check_and_builds_without_pushing(
    workflows: dict[str, dict[str, Any]],
) -> None:
    ci = workflows["ci.yml"]
    assert set(ci["on"]) == {"pull_request", "push"}
    runs = "\n".join(s.get("run", "") for _, s in _steps(ci))
    for command in (
        "make lint",
        "make test",
        "helm lint",
        "terraform fmt -check",
        "validate",
        "checkov",
        "zizmor --offline",
        "actionlint",
        "hadolint",
        "shellcheck-all.sh",
        "yamllint",
    ):
        assert command in runs, f"ci.yml does not run {command}"
    build = _step_using(ci, "docker/build-push-action")["with"]
    assert build["push"] is False
    assert build["file"] == "services/Dockerfile"


def test_ci_runs_the_kind_end_to_end_script(workflows: dict[str, dict[str, Any]]) -> None:
    """GitHub's runners have Docker: CI runs scripts/e2e-kind.sh there, bounded in time."""
    job = workflows["ci.yml"]["jobs"]["e2e-kind"]
    assert job["runs-on"] == "ubuntu-latest"
    assert 0 < job["timeout-minutes"] <= 60
    assert [s["run"] for s in job["steps"] if "run" in s] == ["scripts/e2e-kind.sh"]
    script = (SCRIPTS / "e2e-kind.sh").read_text()
    assert script.splitlines()[0] == "#!/usr/bin/env bash"
    assert "set -euo pipefail" in script
    assert os.access(SCRIPTS / "e2e-kind.sh", os.X_OK)
    for step in ("kind create cluster", "kedacore/keda", "docker build", "kind load"):
        assert step in script, step
    for action in ("pause", "hold", "restart", "pin", "unpin"):
        assert f"/pipelines/fetch/{action}" in script, action
    assert "/audit" in script


def test_release_pushes_a_multi_arch_attested_image(workflows: dict[str, dict[str, Any]]) -> None:
    release = workflows["release.yml"]
    assert release["on"]["push"]["branches"] == ["main"]
    assert release["concurrency"]["cancel-in-progress"] is False
    _step_using(release, "docker/setup-qemu-action")
    _step_using(release, "docker/setup-buildx-action")
    _step_using(release, "aws-actions/amazon-ecr-login")
    build = _step_using(release, "docker/build-push-action")["with"]
    assert set(build["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["push"] is True
    assert build["sbom"] is True
    assert build["provenance"] == "mode=max"
    assert build["file"] == "services/Dockerfile"
    assert build["tags"].endswith(":${{ steps.tag.outputs.tag }}")
    # No build cache: one shared with pull requests could poison a release.
    assert "cache-from" not in build
    assert "cache-to" not in build


def _release_tag(run_number: int, sha: str, tmp_path: Path) -> str:
    """The image tag release.yml's tag step computes, by running that step's script."""
    (step,) = [s for _, s in _steps(_load(WORKFLOWS / "release.yml")) if s.get("id") == "tag"]
    output = tmp_path / f"output-{run_number}"
    env = {
        "PATH": os.environ["PATH"],
        "GITHUB_RUN_NUMBER": str(run_number),
        "GITHUB_SHA": sha,
        "GITHUB_OUTPUT": str(output),
    }
    subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", step["run"]], env=env, check=True, timeout=30
    )
    (line,) = output.read_text().splitlines()
    key, _, tag = line.partition("=")
    assert key == "tag"
    return tag


def _image_policies() -> list[dict[str, Any]]:
    policies = []
    for path in sorted((REPO_ROOT / "k8s").rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and document.get("kind") == "ImagePolicy":
                policies.append(document)
    return policies


def test_release_tags_are_ordered_by_flux_image_policy(tmp_path: Path) -> None:
    """Tags `<run number>-<short sha>` pass the ImagePolicy's filter and sort by run number."""
    tag_9 = _release_tag(9, "3f9c2ab" + "0" * 33, tmp_path)
    tag_10 = _release_tag(10, "a1b2c3d" + "f" * 33, tmp_path)
    assert (tag_9, tag_10) == ("9-3f9c2ab", "10-a1b2c3d")
    assert sorted([tag_10, tag_9]) == [tag_10, tag_9], "lexical order would pick the older tag"

    policies = _image_policies()
    if not policies:
        pytest.skip("no Flux ImagePolicy under k8s/ to order the tags")
    for policy in policies:
        spec = policy["spec"]
        pattern = re.compile(spec["filterTags"]["pattern"])
        group = spec["filterTags"]["extract"].lstrip("$")
        assert spec["policy"]["numerical"]["order"] == "asc", policy["metadata"]["name"]
        extracted = []
        for tag in (tag_9, tag_10):
            match = pattern.match(tag)
            assert match, f"ImagePolicy {policy['metadata']['name']} filters out {tag}"
            extracted.append(int(match[group]))
        assert extracted == [9, 10]
        assert pattern.match("latest") is None


def test_infra_plans_on_pull_requests_and_applies_behind_environments(
    workflows: dict[str, dict[str, Any]],
) -> None:
    infra = workflows["infra.yml"]
    assert "terraform/**" in infra["on"]["pull_request"]["paths"]
    assert infra["on"]["push"]["branches"] == ["main"]
    assert infra["concurrency"]["cancel-in-progress"] is False
    plan, apply = infra["jobs"]["plan"], infra["jobs"]["apply"]
    assert "pull_request" in plan["if"]
    assert "environment" not in plan
    assert "push" in apply["if"]
    assert apply["environment"] == "infra-${{ matrix.env }}"
    assert apply["strategy"]["matrix"]["env"] == ["dev", "prod"]
    assert apply["strategy"]["max-parallel"] == 1
    assert any("apply" in s.get("run", "") for s in apply["steps"])


def test_terraform_init_script_names_missing_variables(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "AWS_"))}
    proc = subprocess.run(
        [str(SCRIPTS / "terraform-init.sh"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode == 2
    for name in ("TF_STATE_BUCKET", "TF_LOCK_TABLE", "TF_STATE_KMS_KEY", "AWS_REGION"):
        assert name in proc.stderr
