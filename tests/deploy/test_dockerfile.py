"""services/Dockerfile and .dockerignore: structure, hadolint, checkov.

No Docker engine runs here: these tests read the Dockerfile (stages, user, entrypoint, labels,
environment) and lint it with the real tools; test_image.py repeats its build steps.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.deploy.build_stages import DOCKERFILE, REPO_ROOT, Stage, read_stages, stage
from tests.deploy.policy import run_checkov

#: A base image pinned by tag and by digest: python:<3.11.x>-slim-bookworm@sha256:<64 hex>.
_PINNED_BASE = re.compile(r"^python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}$")
#: The GPU variant's lock: ``--build-arg REQUIREMENTS=services/requirements-gpu.txt``.
GPU_LOCK = "services/requirements-gpu.txt"
_OCI_LABELS = ("title", "description", "version", "revision", "source", "licenses")


def _env(stage_: Stage) -> dict[str, str]:
    """The ``ENV KEY=VALUE ...`` settings of a stage (later ones win)."""
    env: dict[str, str] = {}
    for value in stage_.values("ENV"):
        for pair in shlex.split(value):
            key, sep, setting = pair.partition("=")
            assert sep, f"ENV {value!r}: use the KEY=VALUE form"
            env[key] = setting
    return env


def test_stages_build_wheels_then_a_runtime_from_them() -> None:
    stages = read_stages()
    assert [s.name for s in stages] == ["build", "radon-operator", "runtime"]
    build = stage("build")
    locked, wheel = build.values("RUN")
    # Every dependency from the hashed lock, nothing resolved at build time...
    assert "pip install --require-hashes --no-deps -r services/requirements.txt" in locked
    # ...then galpipe's own wheel, built with the locked setuptools, installed without its deps.
    assert "pip wheel --no-deps --no-build-isolation --wheel-dir /wheels ." in wheel
    assert "pip install --no-deps --no-index /wheels/galpipe-" in wheel
    # Core dependencies only: no extra ([local], [sim], [dev], [deploy]) in any install.
    for run in (locked, wheel):
        assert "[" not in run, f"the image installs an extra: {run}"
    # The lock it installs is the REQUIREMENTS build argument, the CPU lock unless it is set.
    assert build.args()["REQUIREMENTS"] == "services/requirements.txt"
    assert "${REQUIREMENTS} services/requirements.txt" in build.values("COPY")
    # The runtime stage copies from the other stages only, never from the build context.
    runtime = stage("runtime")
    copies = runtime.values("COPY")
    assert copies
    assert all(c.startswith("--from=") for c in copies), copies
    assert not any(s.values("ADD") for s in stages), "ADD fetches or unpacks implicitly; use COPY"


def test_every_pip_install_is_hash_checked_or_offline() -> None:
    """No stage lets pip resolve or download a package that the lock did not pin by hash."""
    installs = [
        command
        for stage_ in read_stages()
        for run in stage_.values("RUN")
        for command in run.split("&&")
        if re.search(r"\bpip (?:install|wheel)\b", command)
    ]
    assert len(installs) >= 4, installs
    for command in installs:
        assert "--no-deps" in command, f"pip may add unpinned dependencies: {command}"
        # A build of the local tree without isolation downloads no build backend either.
        offline = "--no-index" in command or (
            "pip wheel" in command and "--no-build-isolation" in command
        )
        assert "--require-hashes" in command or offline, f"pip may download: {command}"


def test_base_image_is_slim_python_pinned_by_tag_and_digest() -> None:
    stages = read_stages()
    images = {s.image for s in stages}
    assert len(images) == 1, f"every stage should use the one pinned base: {images}"
    (image,) = images
    assert _PINNED_BASE.match(image), image
    # The operator is built natively on the build machine; everything else per target platform.
    platforms = {s.name: s.platform for s in stages}
    assert platforms == {"build": None, "radon-operator": "$BUILDPLATFORM", "runtime": None}


def test_runtime_runs_galpipe_as_a_numeric_non_root_user() -> None:
    runtime = stage("runtime")
    users = runtime.values("USER")
    assert users, "the runtime stage sets no USER (it would run as root)"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), f"USER {users[-1]}: numeric, so runAsNonRoot can check it"
    assert gid.isdigit(), f"USER {users[-1]}: give the group numerically too"
    assert int(uid) != 0
    assert int(gid) != 0
    last_user_line = max(i.line for i in runtime.instructions if i.keyword == "USER")
    assert not [i for i in runtime.instructions if i.keyword == "RUN" and i.line > last_user_line]
    (entrypoint,) = runtime.values("ENTRYPOINT")
    assert json.loads(entrypoint) == ["galpipe"], "exec form, so galpipe gets SIGTERM as PID 1"


def test_runtime_writes_only_under_tmp() -> None:
    """Read-only root: home, temp and caches on the /tmp volume; no bytecode writes."""
    env = _env(stage("runtime"))
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    for key in ("HOME", "TMPDIR", "XDG_CACHE_HOME"):
        assert env[key].startswith("/tmp"), f"{key}={env[key]} is not on the writable /tmp"
    # The baked operator is read, never written, for the default configuration.
    assert env["GALPIPE_RADON_CACHE_DIR"] == "/opt/galpipe/radon-cache"
    assert env["PATH"].startswith("/opt/galpipe/venv/bin:")
    operator_copy = [c for c in stage("runtime").values("COPY") if "radon-operator" in c]
    assert operator_copy == ["--from=radon-operator /radon-cache /opt/galpipe/radon-cache"]
    assert _env(stage("radon-operator"))["GALPIPE_RADON_CACHE_DIR"] == "/radon-cache"


def test_oci_labels_take_version_and_revision_from_build_args() -> None:
    runtime = stage("runtime")
    labels = dict(
        pair.split("=", 1) for value in runtime.values("LABEL") for pair in shlex.split(value)
    )
    for name in _OCI_LABELS:
        assert labels.get(f"org.opencontainers.image.{name}"), f"missing OCI label {name}"
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert labels["org.opencontainers.image.revision"] == "${REVISION}"
    args = {value.split("=", 1)[0] for value in runtime.values("ARG")}
    assert {"VERSION", "REVISION", "SOURCE"} <= args


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` out of the context: the last matching pattern decides.

    A pattern matches the path itself or one of its parent directories; ``**/`` matches any
    number of directories (the subset of Docker's rules that .dockerignore uses).
    """
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for raw in patterns:
        negated = raw.startswith("!")
        pattern = raw[1:] if negated else raw
        pattern = pattern.rstrip("/")
        suffixes = {"/".join(parts[i:n]) for n in range(1, len(parts) + 1) for i in range(n)}
        if pattern.startswith("**/"):
            matched = any(fnmatch.fnmatchcase(s, pattern[3:]) for s in suffixes)
        else:
            matched = any(fnmatch.fnmatchcase(c, pattern) for c in candidates)
        if matched:
            ignored = not negated
    return ignored


def test_dockerignore_sends_only_what_builds_the_wheel() -> None:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    # Everything the build stage copies from the context is in it...
    build = stage("build")
    sources = [
        word
        for value in build.values("COPY")
        for word in shlex.split(build.expand(value))[:-1]
        if not word.startswith("--")
    ]
    assert sources, "the build stage copies nothing from the context"
    for source in sources:
        sample = source if (REPO_ROOT / source).is_file() else f"{source}/cli.py"
        assert not _dockerignored(sample, patterns), f"{sample} is left out of the context"
    # The GPU variant's lock (--build-arg REQUIREMENTS=...) is in the context too.
    assert (REPO_ROOT / GPU_LOCK).is_file()
    assert not _dockerignored(GPU_LOCK, patterns), f"{GPU_LOCK} is left out of the context"
    # ...and nothing else: environments, git, tests, infrastructure, caches.
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        ".tools/checkov/bin/checkov",
        "tests/conftest.py",
        "terraform/envs/dev/backend.hcl",
        "galpipe-demo/report.md",
        "services/galpipe/__pycache__/cli.cpython-311.pyc",
        "services/Dockerfile",
    ):
        assert _dockerignored(path, patterns), f"{path} would be sent to the builder"


def test_hadolint_is_clean(require_tool: Callable[[str], str]) -> None:
    hadolint = require_tool("hadolint")
    proc = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == ""


def test_checkov_dockerfile_passes_with_justified_skips(
    require_tool: Callable[[str], str],
) -> None:
    report = run_checkov(
        require_tool("checkov"), "dockerfile", "--file", str(DOCKERFILE.relative_to(REPO_ROOT))
    )
    assert not report.failed, report.describe(report.failed)
    assert report.passed, "checkov ran no Dockerfile check"
    assert not report.unjustified_skips(), report.describe(report.unjustified_skips())
    # The one skip: HEALTHCHECK (Kubernetes probes instead), with its reason inline.
    assert {c["check_id"] for c in report.skipped} == {"CKV_DOCKER_2"}


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        ("services/galpipe/cli.py", False),
        ("services/galpipe/__pycache__/cli.cpython-311.pyc", True),
        ("tests/conftest.py", True),
        ("pyproject.toml", False),
    ],
)
def test_dockerignore_reader_follows_last_match(path: str, ignored: bool) -> None:
    patterns = ["*", "!pyproject.toml", "!services/galpipe/", "**/__pycache__"]
    assert _dockerignored(path, patterns) is ignored


def test_dockerfile_reader_joins_continuations(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "FROM a AS one\nRUN echo 1 \\\n    # a comment inside\n && echo 2\n"
        "FROM --platform=$BUILDPLATFORM b AS two\nUSER 1:1\n"
    )
    one, two = read_stages(dockerfile)
    assert one.values("RUN") == ["echo 1  && echo 2"]
    assert (two.name, two.image, two.platform) == ("two", "b", "$BUILDPLATFORM")


def test_dockerfile_reader_expands_build_arguments_at_their_defaults(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "FROM a AS one\nARG LOCK=x.txt\nARG BARE\nCOPY ${LOCK} ${BARE} ${NONE} /d\n"
    )
    (one,) = read_stages(dockerfile)
    assert one.args() == {"LOCK": "x.txt", "BARE": ""}
    assert one.expand(one.values("COPY")[0]) == "x.txt  ${NONE} /d"
