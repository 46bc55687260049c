"""The machine's tools that tests run, found in one way and, when missing, skipped in one way.

Tools come from `make install`: the `deploy` extra in `.venv`, checkov in `.tools/checkov`, and
Debian's packages (`scripts/system-packages.sh`, which installs them as root). A test whose tool
is missing is skipped with a reason that starts with :data:`MISSING_TOOL` and names how to get
the tool; the session's summary lists those skips together with that command.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Every skip for a missing tool starts with this, so the session summary can find them.
MISSING_TOOL = "missing tool"

#: Where `make install` puts tools that do not live in the project's own environment.
_TOOL_DIRS = (Path(sys.executable).parent, REPO_ROOT / ".tools" / "checkov" / "bin")

_SYSTEM_PACKAGES = "`sudo make system-packages`"

#: How each tool gets onto the machine, for the skip reason.
HOW_TO_GET = {
    "checkov": "`make install` (its own venv in .tools/checkov)",
    "terraform": "the machine image (/usr/local/bin/terraform and its provider mirror)",
    "kubectl": f"Debian's `kubectl` package: {_SYSTEM_PACKAGES}",
    "promtool": f"Debian's `prometheus` package: {_SYSTEM_PACKAGES}",
    "prometheus": f"Debian's `prometheus` package: {_SYSTEM_PACKAGES}",
    "amtool": f"Debian's `prometheus-alertmanager` package: {_SYSTEM_PACKAGES}",
    "fitsverify": f"Debian's `fitsverify` package: {_SYSTEM_PACKAGES}",
    "chromium": f"Debian's `chromium` package: {_SYSTEM_PACKAGES}",
}


def find_tool(name: str) -> str | None:
    """The path of executable ``name``: the project's environments first, then ``PATH``."""
    for directory in _TOOL_DIRS:
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


def require_tool(name: str) -> str:
    """The path of tool ``name``, or skip the calling test naming the tool and how to get it."""
    path = find_tool(name)
    if path is None:
        how = HOW_TO_GET.get(name, "the `deploy` extra (`make install`)")
        pytest.skip(f"{MISSING_TOOL}: {name}; it comes from {how}")
    return path
