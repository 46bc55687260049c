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


def _build_steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    """Every docker/build-push-action step, in order."""
    return [
        s for _, s in _steps(workflow) if s.get("uses", "").startswith("docker/build-push-action@")
    ]


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
        "check-chart-version.sh",
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


#: The gate of every release job: the CI run that triggered it succeeded, for a push to main of
#: this repository (never a pull request's run, a fork's, or a failed or cancelled one).
_GREEN_CI_OF_MAIN = (
    "github.event.workflow_run.conclusion",
    "github.event.workflow_run.event",
    "github.event.workflow_run.head_branch",
    "github.event.workflow_run.head_repository.full_name",
)


def _condition_holds(condition: str, context: dict[str, str]) -> bool:
    """Evaluate an ``a == 'b' && c == d`` job condition as GitHub does, for ``context``.

    Only conjunctions of equalities are understood; anything else fails the test, so a gate
    that grows an ``||`` (or any other escape) has to be looked at again here.
    """
    result = True
    for term in condition.split("&&"):
        match = re.fullmatch(r"\s*([\w.]+)\s*==\s*('[^']*'|[\w.]+)\s*", term)
        assert match, f"unexpected term in a release gate: {term!r}"
        left, right = match[1], match[2]
        value = right.strip("'") if right.startswith("'") else context[right]
        result = result and context[left] == value
    return result


def _ci_run(**overrides: str) -> dict[str, str]:
    """The context of a release triggered by a green CI run of a push to main, and overrides."""
    context = {
        "github.event.workflow_run.conclusion": "success",
        "github.event.workflow_run.event": "push",
        "github.event.workflow_run.head_branch": "main",
        "github.event.workflow_run.head_repository.full_name": "galpipe/galpipe",
        "github.repository": "galpipe/galpipe",
    }
    context.update(overrides)
    return context


def test_release_runs_only_after_green_ci_of_main(workflows: dict[str, dict[str, Any]]) -> None:
    """No trigger but CI's completion on main, and every job gated on its success."""
    release = workflows["release.yml"]
    # No push, no manual dispatch: either would release a commit that CI may not have passed.
    assert release["on"] == {
        "workflow_run": {"workflows": [workflows["ci.yml"]["name"]], "types": ["completed"]}
        | {"branches": ["main"]}
    }
    jobs = release["jobs"]
    gated = {
        job_id
        for job_id, job in jobs.items()
        if all(key in job.get("if", "") for key in _GREEN_CI_OF_MAIN)
        and _condition_holds(job["if"], _ci_run())
    }
    for job_id, job in jobs.items():
        needs = job.get("needs", [])
        needs = [needs] if isinstance(needs, str) else needs
        assert job_id in gated or set(needs) & gated, f"release.yml {job_id} is not gated on CI"
    for job_id in gated:
        condition = jobs[job_id]["if"]
        for key, refused in (
            ("github.event.workflow_run.conclusion", "failure"),
            ("github.event.workflow_run.conclusion", "cancelled"),
            ("github.event.workflow_run.event", "pull_request"),
            ("github.event.workflow_run.head_branch", "feature"),
            ("github.event.workflow_run.head_repository.full_name", "someone/fork"),
        ):
            assert not _condition_holds(condition, _ci_run(**{key: refused})), (
                f"release.yml {job_id} runs when {key} is {refused}"
            )


def test_release_ships_exactly_the_commit_ci_tested(workflows: dict[str, dict[str, Any]]) -> None:
    """Checkout, tag and image label name the CI run's head_sha, never main's newer head."""
    release = workflows["release.yml"]
    text = (WORKFLOWS / "release.yml").read_text()
    head_sha = "${{ github.event.workflow_run.head_sha }}"
    (checkout,) = [
        s for _, s in _steps(release) if s.get("uses", "").startswith("actions/checkout@")
    ]
    assert checkout["with"]["ref"] == head_sha
    for build in _build_steps(release):
        assert f"REVISION={head_sha}" in build["with"]["build-args"]
    # In a workflow_run, github.sha / GITHUB_SHA is main's head, not the tested commit.
    assert "github.sha" not in text
    assert "GITHUB_SHA" not in text


def test_release_signs_image_and_chart_with_cosign_keyless(
    workflows: dict[str, dict[str, Any]],
) -> None:
    release = workflows["release.yml"]
    _step_using(release, "sigstore/cosign-installer")
    runs = [s.get("run", "") for _, s in _steps(release)]
    signs = [line.strip() for run in runs for line in run.splitlines() if "cosign sign" in line]
    # By digest (a tag can move), keyless (no --key: the job's OIDC identity signs).
    assert signs == [
        'cosign sign --yes "${REGISTRY}/${CHART_REPOSITORY}/galpipe@${digest}"',
        'cosign sign --yes "${IMAGE}@${DIGEST}"',
        'cosign sign --yes "${IMAGE}@${DIGEST}"',
    ]
    # Each image by the digest of its own build: the multi-arch one, then the GPU variant.
    digests = [
        s["env"]["DIGEST"]
        for _, s in _steps(release)
        if 'cosign sign --yes "${IMAGE}@${DIGEST}"' in s.get("run", "")
    ]
    builds = [s["id"] for s in _build_steps(release)]
    assert digests == [f"${{{{ steps.{b}.outputs.digest }}}}" for b in builds]
    for job in release["jobs"].values():
        if any("cosign sign" in s.get("run", "") for s in job["steps"]):
            assert job["permissions"]["id-token"] == "write"


def test_release_pushes_a_multi_arch_attested_image(workflows: dict[str, dict[str, Any]]) -> None:
    release = workflows["release.yml"]
    assert release["concurrency"]["cancel-in-progress"] is False
    _step_using(release, "docker/setup-qemu-action")
    _step_using(release, "docker/setup-buildx-action")
    _step_using(release, "aws-actions/amazon-ecr-login")
    image, gpu = (s["with"] for s in _build_steps(release))
    build = image
    assert set(build["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["push"] is True
    assert build["sbom"] is True
    assert build["provenance"] == "mode=max"
    assert build["file"] == "services/Dockerfile"
    assert build["tags"].endswith(":${{ steps.tag.outputs.tag }}")
    # The GPU variant: the same Dockerfile with the GPU lock, amd64 only, tagged `<tag>-gpu`.
    assert gpu["platforms"] == "linux/amd64"
    assert gpu["file"] == build["file"]
    assert gpu["tags"] == f"{build['tags']}-gpu"
    assert "REQUIREMENTS=services/requirements-gpu.txt" in gpu["build-args"].splitlines()
    assert "REQUIREMENTS" not in build["build-args"]
    for step in (build, gpu):
        assert step["push"] is True
        assert step["sbom"] is True
        assert step["provenance"] == "mode=max"
        # No build cache: one shared with pull requests could poison a release.
        assert "cache-from" not in step
        assert "cache-to" not in step


def _git_commit(repository: Path, message: str) -> str:
    """Make a commit in ``repository`` (created if new); its SHA."""
    git = ["git", "-C", str(repository), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    if not (repository / ".git").exists():
        subprocess.run(["git", "init", "-q", str(repository)], check=True, timeout=30)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", message], check=True, timeout=30)
    return subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()


def _run_tag_step(
    run_number: int, head_sha: str, checkout: Path, output: Path
) -> subprocess.CompletedProcess[str]:
    """Run release.yml's tag step as the runner would, in the checkout ``checkout``."""
    (step,) = [s for _, s in _steps(_load(WORKFLOWS / "release.yml")) if s.get("id") == "tag"]
    env = {
        "PATH": os.environ["PATH"],
        "CI_RUN_NUMBER": str(run_number),
        "HEAD_SHA": head_sha,
        "GITHUB_OUTPUT": str(output),
    }
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", step["run"]],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def _release_tag(run_number: int, tmp_path: Path) -> tuple[str, str]:
    """(tag, sha): the image tag release.yml's tag step computes for a new commit."""
    sha = _git_commit(tmp_path / "checkout", f"run {run_number}")
    output = tmp_path / f"output-{run_number}"
    proc = _run_tag_step(run_number, sha, tmp_path / "checkout", output)
    assert proc.returncode == 0, proc.stderr
    (line,) = output.read_text().splitlines()
    key, _, tag = line.partition("=")
    assert key == "tag"
    return tag, sha


def test_release_refuses_a_checkout_that_is_not_the_tested_commit(tmp_path: Path) -> None:
    tested = _git_commit(tmp_path / "checkout", "tested")
    _git_commit(tmp_path / "checkout", "newer, untested")
    proc = _run_tag_step(7, tested, tmp_path / "checkout", tmp_path / "output")
    assert proc.returncode != 0
    assert tested in proc.stderr
    assert not (tmp_path / "output").exists()


def _image_policies() -> list[dict[str, Any]]:
    policies = []
    for path in sorted((REPO_ROOT / "k8s").rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and document.get("kind") == "ImagePolicy":
                policies.append(document)
    return policies


def test_release_tags_are_ordered_by_flux_image_policy(tmp_path: Path) -> None:
    """Tags `<CI run number>-<short sha>` pass the ImagePolicy's filter, sort by run number."""
    tag_9, sha_9 = _release_tag(9, tmp_path)
    tag_10, sha_10 = _release_tag(10, tmp_path)
    assert (tag_9, tag_10) == (f"9-{sha_9[:7]}", f"10-{sha_10[:7]}")
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


def test_infra_plans_everywhere_and_applies_only_the_approved_plan_file(
    workflows: dict[str, dict[str, Any]],
) -> None:
    """Plan → artifact → approval (environment) → apply of that very file; no second plan."""
    infra = workflows["infra.yml"]
    assert "terraform/**" in infra["on"]["pull_request"]["paths"]
    assert infra["on"]["push"]["branches"] == ["main"]
    assert infra["concurrency"]["cancel-in-progress"] is False
    plan, apply = infra["jobs"]["plan"], infra["jobs"]["apply"]
    assert plan["environment"] == "infra-${{ matrix.env }}-plan"
    assert plan["strategy"]["matrix"]["env"] == ["dev", "prod"]

    upload = _step_using({"jobs": {"plan": plan}}, "actions/upload-artifact")
    assert upload["if"] == "github.event_name == 'push'"
    assert upload["with"]["name"] == "tfplan-${{ matrix.env }}"
    assert upload["with"]["path"] == "${{ env.ENV_DIR }}/tfplan"
    assert upload["with"]["if-no-files-found"] == "error"

    assert apply["needs"] == "plan"
    assert apply["if"] == "github.event_name == 'push'"  # never on a schedule or a PR
    assert apply["environment"] == "infra-${{ matrix.env }}"  # required reviewers approve
    assert apply["strategy"]["matrix"]["env"] == ["dev", "prod"]
    assert apply["strategy"]["max-parallel"] == 1
    names = [s.get("uses", "").split("@")[0] or s.get("name") for s in apply["steps"]]
    download = _step_using({"jobs": {"apply": apply}}, "actions/download-artifact")
    assert download["with"] == {"name": upload["with"]["name"], "path": "${{ env.ENV_DIR }}"}
    # The artifact is in place before terraform runs; the job runs apply on it and no plan.
    assert names.index("actions/download-artifact") < names.index(
        "aws-actions/configure-aws-credentials"
    )
    commands = [
        line.strip()
        for s in apply["steps"]
        for line in s.get("run", "").splitlines()
        if line.strip().startswith("terraform ")
    ]
    assert commands == ['terraform -chdir="${ENV_DIR}" apply -lock-timeout=5m -no-color tfplan']
    assert not any(" plan" in s.get("run", "") for s in apply["steps"])


def test_infra_plan_role_is_read_only_and_drift_runs_nightly(
    workflows: dict[str, dict[str, Any]],
) -> None:
    infra = workflows["infra.yml"]
    (cron,) = infra["on"]["schedule"]
    assert re.fullmatch(r"\d+ \d+ \* \* \*", cron["cron"]), "drift runs once a day"
    # A drift run queues apart: one pending run per group, so it would displace a push's run.
    group = infra["concurrency"]["group"]
    assert "github.event_name == 'schedule'" in group, group
    assert "'drift'" in group, group
    plan = infra["jobs"]["plan"]
    (plan_step,) = [s for s in plan["steps"] if "terraform -chdir" in s.get("run", "")]
    # A read-only role cannot write the lock file next to the state.
    assert "plan -lock=false" in plan_step["run"]
    assert "-detailed-exitcode" in plan_step["run"]
    role = _step_using({"jobs": {"plan": plan}}, _OIDC_ACTION)["with"]["role-to-assume"]
    assert role == "${{ vars.AWS_PLAN_ROLE_ARN }}"  # the plan environment's own, per account


def _fake_terraform(tmp_path: Path, plan_status: int) -> Path:
    """A `terraform` on PATH whose plan exits ``plan_status`` and whose show prints a plan."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "terraform"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        'case " $* " in\n'
        f'  *" plan "*) echo planned; exit {plan_status} ;;\n'
        '  *" show "*) echo "  # aws_s3_bucket.cutouts will be updated in-place" ;;\n'
        "esac\n"
    )
    fake.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize(
    ("plan_status", "drift_check", "expected_exit"),
    [
        (0, "true", 0),  # nightly, nothing changed
        (2, "true", 2),  # nightly, drift: the run fails
        (2, "false", 0),  # a pull request's or main's plan with changes: expected
        (1, "false", 1),  # terraform failed
        (1, "true", 1),
    ],
)
def test_infra_plan_step_fails_on_drift_only_in_drift_runs(
    plan_status: int, drift_check: str, expected_exit: int, tmp_path: Path
) -> None:
    """The plan step's script, run with a stand-in terraform that reports each outcome."""
    plan = _load(WORKFLOWS / "infra.yml")["jobs"]["plan"]
    (step,) = [s for s in plan["steps"] if "terraform -chdir" in s.get("run", "")]
    summary = tmp_path / "step-summary"
    env = {
        "PATH": f"{_fake_terraform(tmp_path, plan_status)}{os.pathsep}{os.environ['PATH']}",
        "ENV_DIR": "terraform/envs/dev",
        "DRIFT_CHECK": drift_check,
        "RUNNER_TEMP": str(tmp_path),
        "GITHUB_STEP_SUMMARY": str(summary),
    }
    proc = subprocess.run(
        ["bash", "-e", "-c", step["run"]],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode == expected_exit, proc.stdout + proc.stderr
    if plan_status != 1:
        assert "aws_s3_bucket.cutouts" in summary.read_text()
    if expected_exit == 2:
        assert "::error title=Terraform drift in terraform/envs/dev::" in proc.stdout


def test_terraform_init_script_names_missing_variables(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "AWS_"))}
    (tmp_path / ".terraform.lock.hcl").write_text("")
    proc = subprocess.run(
        [str(SCRIPTS / "terraform-init.sh"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode == 2
    for name in ("TF_STATE_BUCKET", "TF_STATE_KMS_KEY", "AWS_REGION"):
        assert name in proc.stderr


def test_terraform_init_script_refuses_a_root_without_its_lock_file(tmp_path: Path) -> None:
    env = {**os.environ, "TF_STATE_BUCKET": "b", "TF_STATE_KMS_KEY": "k", "AWS_REGION": "r"}
    proc = subprocess.run(
        [str(SCRIPTS / "terraform-init.sh"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode == 2
    assert f"{tmp_path}/.terraform.lock.hcl is missing" in proc.stderr


# -- the chart-version check ----------------------------------------------------------------


def _chart_repository(tmp_path: Path, version: str) -> Path:
    """A git repository with a chart at ``version`` on its main branch."""
    repository = tmp_path / "repo"
    chart = repository / "charts" / "galpipe"
    chart.mkdir(parents=True)
    (chart / "Chart.yaml").write_text(f"apiVersion: v2\nname: galpipe\nversion: {version}\n")
    (chart / "values.yaml").write_text("replicas: 1\n")
    (repository / "README.md").write_text("galpipe\n")
    subprocess.run(["git", "init", "-q", "-b", "main", str(repository)], check=True, timeout=30)
    _git_add_and_commit(repository, "chart")
    subprocess.run(
        ["git", "-C", str(repository), "checkout", "-q", "-b", "change"], check=True, timeout=30
    )
    return repository


def _git_add_and_commit(repository: Path, message: str) -> None:
    git = ["git", "-C", str(repository), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "add", "-A"], check=True, timeout=30)
    subprocess.run([*git, "commit", "-q", "-m", message], check=True, timeout=30)


def _check_chart_version(repository: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPTS / "check-chart-version.sh"), "main"],
        cwd=repository,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("edit", "new_version", "passes"),
    [
        ("values.yaml", "0.1.0", False),  # the chart changed, its version did not
        ("values.yaml", "0.1.1", True),
        ("values.yaml", "0.0.9", False),  # a lower version is never published either
        ("values.yaml", "0.10.0", True),  # ordered as versions, not as text
        (None, "0.1.0", True),  # only the README changed
    ],
)
def test_chart_version_check_fails_a_chart_change_without_a_bump(
    edit: str | None, new_version: str, passes: bool, tmp_path: Path
) -> None:
    repository = _chart_repository(tmp_path, "0.1.0")
    chart = repository / "charts" / "galpipe"
    if edit:
        (chart / edit).write_text("replicas: 2\n")
    (repository / "README.md").write_text("galpipe, changed\n")
    text = (chart / "Chart.yaml").read_text()
    (chart / "Chart.yaml").write_text(text.replace("0.1.0", new_version))
    _git_add_and_commit(repository, "change")
    proc = _check_chart_version(repository)
    assert (proc.returncode == 0) == passes, proc.stdout + proc.stderr
    if not passes:
        assert "charts/galpipe/Chart.yaml" in proc.stderr


def test_ci_checks_the_chart_version_against_the_merge_base(
    workflows: dict[str, dict[str, Any]],
) -> None:
    job = workflows["ci.yml"]["jobs"]["chart-version"]
    assert _step_using({"jobs": {"c": job}}, "actions/checkout")["with"]["fetch-depth"] == 0
    (run,) = [s["run"] for s in job["steps"] if "run" in s]
    assert run == 'scripts/check-chart-version.sh "${BASE}"'
    assert "github.base_ref" in job["env"]["BASE"]


# -- governance: CODEOWNERS and Dependabot ---------------------------------------------------

CODEOWNERS = REPO_ROOT / ".github" / "CODEOWNERS"
DEPENDABOT = REPO_ROOT / ".github" / "dependabot.yml"


def _codeowners() -> list[tuple[str, list[str]]]:
    """(pattern, owners) of each rule of CODEOWNERS, in order."""
    rules = []
    for line in CODEOWNERS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            pattern, *owners = line.split()
            rules.append((pattern, owners))
    return rules


def _owners_of(path: str) -> list[str]:
    """The owners GitHub requests for ``path``: the last matching rule's (anchored patterns)."""
    owners: list[str] = []
    for pattern, rule_owners in _codeowners():
        if (
            pattern == "*"
            or (pattern.endswith("/") and f"/{path}".startswith(pattern))
            or f"/{path}" == pattern
        ):
            owners = rule_owners
    return owners


def test_codeowners_rules_name_existing_paths_and_teams() -> None:
    rules = _codeowners()
    assert rules[0] == ("*", rules[0][1]), "a catch-all rule first, so every path has an owner"
    for pattern, owners in rules:
        assert owners, f"CODEOWNERS {pattern}: no owner (that un-owns the path)"
        assert all(re.fullmatch(r"@[\w-]+(/[\w-]+)?", o) for o in owners), owners
        if pattern != "*":
            assert pattern.startswith("/"), f"{pattern}: anchor it at the repository root"
            assert (REPO_ROOT / pattern.strip("/")).exists(), f"CODEOWNERS {pattern}: no such path"


@pytest.mark.parametrize(
    ("path", "required"),
    [
        ("k8s/envs/prod/galpipe.yaml", {"@galpipe/sre", "@galpipe/platform"}),
        ("k8s/envs/prod/chart-source.yaml", {"@galpipe/sre"}),
        ("k8s/envs/prod/platform/kustomization.yaml", {"@galpipe/sre"}),
        ("terraform/envs/prod/main.tf", {"@galpipe/sre"}),
        ("terraform/modules/database/alarms.tf", {"@galpipe/platform"}),
        (".github/workflows/release.yml", {"@galpipe/platform"}),
        (".github/CODEOWNERS", {"@galpipe/sre"}),
        ("services/requirements.txt", {"@galpipe/platform"}),
        ("services/galpipe/cli.py", {"@galpipe/maintainers"}),
    ],
)
def test_codeowners_require_the_reviews_the_docs_promise(path: str, required: set[str]) -> None:
    assert (REPO_ROOT / path).exists(), path
    assert required <= set(_owners_of(path)), f"{path}: owners {_owners_of(path)}"


def test_dependabot_keeps_every_pin_current() -> None:
    config = yaml.safe_load(DEPENDABOT.read_text())
    assert config["version"] == 2
    updates = config["updates"]
    for update in updates:
        assert update["cooldown"]["default-days"] >= 7, update["package-ecosystem"]

    def directories(ecosystem: str) -> set[str]:
        (update,) = [u for u in updates if u["package-ecosystem"] == ecosystem]
        return set(update.get("directories", [update.get("directory")]))

    assert directories("github-actions") == {"/"}
    assert "/services" in directories("docker")
    assert (REPO_ROOT / "services" / "Dockerfile").is_file()
    assert "/services" in directories("pip")  # the hashed lock of the image
    assert (REPO_ROOT / "services" / "requirements.txt").is_file()
    # Every Terraform root with a lock file, and every module's provider constraints.
    terraform = directories("terraform")
    roots = {
        f"/{p.parent.relative_to(REPO_ROOT)}" for p in REPO_ROOT.glob("terraform/**/versions.tf")
    }
    for root in roots:
        covered = root in terraform or any(
            d.endswith("/*") and root.rsplit("/", 1)[0] == d[:-2] for d in terraform
        )
        assert covered, f"Dependabot does not update {root}"
    for lock in REPO_ROOT.glob("terraform/**/.terraform.lock.hcl"):
        if ".terraform/" not in str(lock):
            assert f"/{lock.parent.relative_to(REPO_ROOT)}" in terraform, lock
