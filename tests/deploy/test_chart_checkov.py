"""checkov's Kubernetes policies on the rendered chart: every failure is a justified skip.

checkov runs once per session over the default, dev, prod, KEDA-off, digest and morphology-on-GPU
renders (one file each). A failed check passes the test only if ``SKIPS`` lists it for that kind
of object, with the reason next to it; a skip that no longer matches any failure fails too, so
the list stays true.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.chart_render import render_set
from tests.deploy.policy import run_checkov

RENDERED_SETS = ("default", "dev", "prod", "keda-off", "s3-endpoint-and-digest", "morphology-gpu")

#: check id → (kinds it may fail on, why that is accepted).
SKIPS: dict[str, tuple[frozenset[str], str]] = {
    # galpipe's one settings object reads GALPIPE_DATABASE_URL from the environment (12-factor,
    # like every other setting); the value comes from a Secret by secretKeyRef, so it is never
    # in the manifest, and KEDA reads the same Secret key.
    "CKV_K8S_35": (frozenset({"Deployment", "Job"}), "database URL from a Secret env ref"),
    # Image tags are immutable (ECR IMMUTABLE tag mutability, terraform/modules/registry) and
    # orderable (`<run>-<sha>`), which Flux's image automation needs to pick the newest; a
    # digest can still be pinned with image.digest (the s3-endpoint-and-digest set passes).
    "CKV_K8S_43": (frozenset({"Deployment", "Job"}), "immutable, orderable tags"),
}


@pytest.fixture(scope="session")
def checkov_failures(
    require_tool: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[dict[str, Any]]]:
    """checkov's failed checks on each rendered set, by set name."""
    checkov = require_tool("checkov")
    directory: Path = tmp_path_factory.mktemp("rendered")
    for value_set in RENDERED_SETS:
        (directory / f"{value_set}.yaml").write_text(yaml.safe_dump_all(render_set(value_set)))
    report = run_checkov(checkov, "kubernetes", "--directory", str(directory), "--compact")
    assert len(report.passed) > 100  # it really checked the objects
    assert report.skipped == []  # every skip is in SKIPS, none inline
    failures: dict[str, list[dict[str, Any]]] = {s: [] for s in RENDERED_SETS}
    for failed in report.failed:
        failures[Path(failed["file_path"]).stem].append(failed)
    return failures


def _kind(failed: dict[str, Any]) -> str:
    return str(failed["resource"]).split(".")[0]


@pytest.mark.parametrize("value_set", RENDERED_SETS)
def test_checkov_finds_only_justified_failures(
    checkov_failures: dict[str, list[dict[str, Any]]], value_set: str
) -> None:
    unexpected = [
        f"{f['check_id']} {f['check_name']} on {f['resource']}"
        for f in checkov_failures[value_set]
        if _kind(f) not in SKIPS.get(f["check_id"], (frozenset(), ""))[0]
    ]
    assert unexpected == []


def test_every_skip_is_still_needed(checkov_failures: dict[str, list[dict[str, Any]]]) -> None:
    used = {f["check_id"] for fs in checkov_failures.values() for f in fs}
    assert set(SKIPS) <= used, f"skips that match no failure: {set(SKIPS) - used}"


def test_a_pinned_digest_passes_the_digest_check(
    checkov_failures: dict[str, list[dict[str, Any]]],
) -> None:
    ids = {f["check_id"] for f in checkov_failures["s3-endpoint-and-digest"]}
    assert "CKV_K8S_43" not in ids
