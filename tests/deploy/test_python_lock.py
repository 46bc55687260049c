"""services/requirements.txt: the hashed lock of every Python package the image installs.

The lock is made by scripts/lock-requirements.sh (``uv pip compile --generate-hashes``) from
pyproject.toml's core dependencies and services/build-requirements.in; the Dockerfile installs it
with ``--require-hashes --no-deps`` (test_image.py installs it the same way and runs ``pip
check``). Here: the lock pins every runtime dependency of pyproject.toml at a version its
specifier admits, every pin carries hashes, the build backend is the one pyproject.toml names,
and nothing of the extras slips in.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.deploy.build_stages import REPO_ROOT

LOCK = REPO_ROOT / "services" / "requirements.txt"
#: The GPU image's lock (``scripts/lock-requirements.sh --gpu``, linux/amd64 only).
GPU_LOCK = REPO_ROOT / "services" / "requirements-gpu.txt"
GPU_INPUT = REPO_ROOT / "services" / "gpu-requirements.in"
BUILD_INPUT = REPO_ROOT / "services" / "build-requirements.in"
LOCK_SCRIPT = REPO_ROOT / "scripts" / "lock-requirements.sh"
#: The image's interpreter and platform (services/Dockerfile's base image), for markers.
IMAGE_ENVIRONMENT = {
    "python_version": "3.11",
    "python_full_version": "3.11.14",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


@dataclass(frozen=True)
class Pin:
    """One locked package: its version, environment marker and hashes."""

    name: str
    version: Version
    marker: Marker | None
    hashes: tuple[str, ...]


def _pins(lock: Path = LOCK) -> dict[str, Pin]:
    """The entries of ``lock`` that apply to the image, by canonical name."""
    text = re.sub(r"\\\n", " ", lock.read_text())  # join continuation lines
    pins: dict[str, Pin] = {}
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        words = shlex.split(line)
        hashes = tuple(w.split("=", 1)[1] for w in words if w.startswith("--hash="))
        requirement = Requirement(" ".join(w for w in words if not w.startswith("--hash=")))
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{lock.name}: {line} is not an exact pin"
        if requirement.marker and not requirement.marker.evaluate(IMAGE_ENVIRONMENT):
            continue
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"{lock.name}: {name} is pinned twice for the image"
        pins[name] = Pin(name, Version(specifier.version), requirement.marker, hashes)
    return pins


def _pyproject() -> dict[str, object]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def test_every_pin_carries_sha256_hashes() -> None:
    pins = _pins()
    assert len(pins) >= 20
    for pin in pins.values():
        assert pin.hashes, f"{pin.name} has no hash: --require-hashes would refuse the lock"
        for digest in pin.hashes:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{pin.name}: {digest}"


def test_lock_pins_every_runtime_dependency_within_its_specifier() -> None:
    pins = _pins()
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    for line in project["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"pyproject.toml needs {line}; {LOCK.name} does not pin it"
        assert requirement.specifier.contains(pins[name].version, prereleases=True), (
            f"{name}=={pins[name].version} is outside pyproject.toml's {line}"
        )
        # An extra pulls packages of its own (psycopg[binary] → psycopg-binary).
        for extra in requirement.extras:
            assert f"{name}-{extra}" in pins, f"{line}: {name}-{extra} is not locked"


def test_build_backend_is_locked_as_pyproject_names_it() -> None:
    build_system = _pyproject()["build-system"]
    assert isinstance(build_system, dict)
    inputs = [
        line.strip()
        for line in BUILD_INPUT.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert inputs == build_system["requires"], f"{BUILD_INPUT.name} != [build-system].requires"
    pins = _pins()
    for line in build_system["requires"]:
        requirement = Requirement(line)
        pin = pins[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(pin.version), f"{pin.name}=={pin.version}"


def test_no_optional_dependency_is_locked() -> None:
    """The image carries the core dependencies only (no local/sim/dev/deploy extras)."""
    pins = _pins()
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    core = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    for extra, requirements in project["optional-dependencies"].items():
        for line in requirements:
            name = canonicalize_name(Requirement(line).name)
            if name not in core:
                assert name not in pins, f"{name} of the [{extra}] extra is in the image lock"


def _script_invocations() -> dict[str, list[str]]:
    """The ``uv pip compile`` commands of the lock script, by the lock they write."""
    script = re.sub(r"\\\n\s*", " ", LOCK_SCRIPT.read_text())
    invocations = re.findall(r'"\$\{uv\}" (pip compile [^\n]*?) "\$@"', script)
    commands = [["uv", *shlex.split(invocation)] for invocation in invocations]
    return {command[command.index("--output-file") + 1]: command for command in commands}


@pytest.mark.parametrize("lock", [LOCK, GPU_LOCK], ids=["cpu", "gpu"])
def test_lock_records_the_command_of_the_lock_script(lock: Path) -> None:
    """The header names the command that made it: the script's, so a refresh redoes the same."""
    header = lock.read_text().splitlines()[:2]
    assert header[0].startswith("# This file was autogenerated by uv")
    recorded = shlex.split(header[1].lstrip("# "))
    assert recorded == _script_invocations()[str(lock.relative_to(REPO_ROOT))]
    assert "--generate-hashes" in recorded


def test_gpu_lock_swaps_onnxruntime_for_onnxruntime_gpu_with_its_cuda_libraries() -> None:
    cpu, gpu = _pins(LOCK), _pins(GPU_LOCK)
    assert "onnxruntime" in cpu
    assert "onnxruntime-gpu" not in cpu
    # Both distributions install the module `onnxruntime`: the GPU lock must hold one only.
    assert "onnxruntime" not in gpu
    inputs = {
        canonicalize_name(Requirement(r).name): Requirement(r)
        for r in GPU_INPUT.read_text().splitlines()
        if r and not r.startswith("#")
    }
    assert set(inputs) == {"onnxruntime-gpu", "torch"}
    wanted = inputs["onnxruntime-gpu"]
    assert wanted.specifier.contains(gpu["onnxruntime-gpu"].version)
    # The same lower bound as pyproject.toml's onnxruntime, whichever build is installed.
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    (core,) = [r for r in project["dependencies"] if Requirement(r).name == "onnxruntime"]
    assert Requirement(core).specifier == wanted.specifier
    # The CUDA runtime and cuDNN come from PyPI's nvidia-* wheels (the [cuda,cudnn] extras).
    assert {"cuda", "cudnn"} <= wanted.extras
    assert any(name.startswith("nvidia-cuda-runtime") for name in gpu), sorted(gpu)
    assert any(name.startswith("nvidia-cudnn") for name in gpu), sorted(gpu)
    assert not any(name.startswith("nvidia-") for name in cpu)


def test_gpu_lock_has_the_torch_of_the_radon_core_with_the_train_extra_bound() -> None:
    """The radon workers' GPU core (GALPIPE_RADON_DEVICE=cuda) imports torch: the GPU image
    has it, the CPU image does not, and its bound is the train extra's."""
    cpu, gpu = _pins(LOCK), _pins(GPU_LOCK)
    assert "torch" in gpu
    assert "torch" not in cpu
    (line,) = [r for r in GPU_INPUT.read_text().splitlines() if r.startswith("torch")]
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    (train,) = [
        r for r in project["optional-dependencies"]["train"] if Requirement(r).name == "torch"
    ]
    assert Requirement(line).specifier == Requirement(train).specifier
    assert Requirement(line).specifier.contains(gpu["torch"].version)


def test_gpu_lock_pins_every_shared_package_as_the_cpu_lock_does() -> None:
    cpu, gpu = _pins(LOCK), _pins(GPU_LOCK)
    assert set(cpu) - set(gpu) == {"onnxruntime"}
    for name in set(cpu) & set(gpu):
        assert gpu[name].version == cpu[name].version, (
            f"{name}: {GPU_LOCK.name} pins {gpu[name].version}, {LOCK.name} {cpu[name].version}"
        )
        assert set(gpu[name].hashes) == set(cpu[name].hashes), f"{name}: other files locked"


def test_every_gpu_pin_carries_sha256_hashes() -> None:
    pins = _pins(GPU_LOCK)
    for pin in pins.values():
        assert pin.hashes, f"{pin.name} has no hash: --require-hashes would refuse the lock"
        for digest in pin.hashes:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{pin.name}: {digest}"
