"""Fixtures for the deployment checks: locating the offline tools they run (see tests/tools.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.tools import require_tool as _require_tool

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def require_tool() -> Callable[[str], str]:
    """Return a function that gives a tool's path or skips the test naming what is missing."""
    return _require_tool
