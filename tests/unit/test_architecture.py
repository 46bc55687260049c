"""The architecture's import contracts (``[tool.importlinter]`` in pyproject.toml) hold, and bite.

``lint-imports`` runs on the package as it is, and on a copy into which one forbidden import per
contract is written: each copy must fail, naming the broken contract.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = REPO_ROOT / "services" / "galpipe"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _contracts() -> dict[str, dict[str, object]]:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c for c in config["contracts"]}


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` over the package under ``root/services`` with the repository's contracts."""
    env = {**os.environ, "PYTHONPATH": str(root / "services")}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_package_keeps_every_contract() -> None:
    result = _lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(_contracts())} kept, 0 broken" in result.stdout


#: For each contract, a module of the package and an import that breaks that contract.
BREAKS = {
    "science-is-pure": ("science/sky.py", "import galpipe.settings"),
    "db-is-sql-only": ("db/queue.py", "import galpipe.runtime.metrics"),
    "storage-knows-no-db": ("storage/__init__.py", "import galpipe.db.queue"),
    "layers": ("pipelines/base.py", "import galpipe.ops.status"),
}


def test_every_contract_has_a_break_below() -> None:
    assert set(BREAKS) == set(_contracts())


@pytest.mark.parametrize("contract_id", sorted(BREAKS))
def test_a_forbidden_import_breaks_its_contract(tmp_path: Path, contract_id: str) -> None:
    shutil.copytree(PACKAGE, tmp_path / "services" / "galpipe")
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    module, statement = BREAKS[contract_id]
    target = tmp_path / "services" / "galpipe" / module
    target.write_text(target.read_text() + f"\n{statement}  # noqa\n")

    result = _lint_imports(tmp_path)

    assert result.returncode != 0, result.stdout
    name = str(_contracts()[contract_id]["name"])
    assert f"{name} BROKEN" in result.stdout, result.stdout
    assert "0 broken" not in result.stdout
