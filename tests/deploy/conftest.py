"""Fixtures for the deployment checks: locating the offline tools they run.

The tools come from `make install` (the `deploy` extra in `.venv`, checkov in `.tools/checkov`)
or from the machine (terraform, promtool, prometheus). A test whose tool is missing is skipped
with a reason that names the tool and how to get it, never silently passed.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Where `make install` puts tools that do not live in the project's own environment.
_TOOL_DIRS = (Path(sys.executable).parent, REPO_ROOT / ".tools" / "checkov" / "bin")

#: How each tool gets onto the machine, for the skip reason.
_HOW_TO_GET = {
    "checkov": "`make install` (its own venv in .tools/checkov)",
    "terraform": "the machine image (/usr/local/bin/terraform)",
    "kubectl": "the machine image (/usr/bin/kubectl; preinstalled on GitHub's ubuntu runners)",
    "promtool": "Debian's `prometheus` package (.ci/run installs it)",
    "prometheus": "Debian's `prometheus` package (.ci/run installs it)",
}


def find_tool(name: str) -> str | None:
    """The path of executable ``name``: the project's environments first, then ``PATH``."""
    for directory in _TOOL_DIRS:
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


@pytest.fixture(scope="session")
def require_tool() -> Callable[[str], str]:
    """Return a function that gives a tool's path or skips the test naming what is missing."""

    def require(name: str) -> str:
        path = find_tool(name)
        if path is None:
            how = _HOW_TO_GET.get(name, "the `deploy` extra (`make install`)")
            pytest.skip(f"{name} is not installed; it comes from {how}")
        return path

    return require
