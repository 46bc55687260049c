"""Running checkov offline and reading its JSON report, for the policy tests.

checkov lives in its own environment (``.tools/checkov``); the tests find it with
``require_tool("checkov")`` and pass its path here. ``--skip-download`` keeps it offline (without
it, checkov tries to fetch guidelines from its vendor's API and prints a traceback).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class CheckovReport:
    """The checks of one checkov framework: each a dict as in checkov's JSON output."""

    framework: str
    passed: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    skipped: list[dict[str, Any]]

    def scanned_files(self) -> set[str]:
        """Repository-relative paths of every file that at least one check looked at."""
        return {
            check["file_path"].lstrip("/") for check in [*self.passed, *self.failed, *self.skipped]
        }

    def describe(self, checks: list[dict[str, Any]]) -> str:
        """One line per check: id, file:lines, name; for assertion messages."""
        return "\n".join(
            f"{c['check_id']} {c['file_path']}:{c['file_line_range']} {c['check_name']}"
            for c in checks
        )

    def unjustified_skips(self) -> list[dict[str, Any]]:
        """Skipped checks whose inline ``checkov:skip=ID:reason`` gives no reason."""
        return [
            c for c in self.skipped if not (c["check_result"].get("suppress_comment") or "").strip()
        ]


def run_checkov(checkov: str, framework: str, *args: str, timeout_s: float = 120) -> CheckovReport:
    """Run ``checkov --framework FRAMEWORK ARGS`` in the repository root and parse its report.

    Parameters
    ----------
    checkov : str
        Path of the checkov executable.
    framework : str
        One checkov framework, e.g. ``dockerfile`` or ``github_actions``.
    *args : str
        What to scan, e.g. ``"-f", "services/Dockerfile"`` or ``"-d", "."``.
    timeout_s : float
        Seconds before the run is abandoned.
    """
    proc = subprocess.run(
        [checkov, "--framework", framework, "--skip-download", "--output", "json", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    try:
        document = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(
            f"checkov --framework {framework} {' '.join(args)} printed no JSON report "
            f"(exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        ) from None
    # One framework gives one report object; nothing to scan gives a bare summary.
    reports = document if isinstance(document, list) else [document]
    results = [r["results"] for r in reports if r.get("check_type") == framework]
    if not results:
        raise AssertionError(f"checkov --framework {framework} {' '.join(args)} scanned nothing")
    return CheckovReport(
        framework,
        passed=[c for r in results for c in r["passed_checks"]],
        failed=[c for r in results for c in r["failed_checks"]],
        skipped=[c for r in results for c in r["skipped_checks"]],
    )
