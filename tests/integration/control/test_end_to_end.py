"""The control plane end to end: ``galpipe ctl`` → the HTTP app served by uvicorn → the real
TokenReview/SubjectAccessReview clients and :class:`ControlActions` → PostgreSQL and the
recording, schema-validating fake Kubernetes API seeded with the chart's own render.

The grants are the chart's ``galpipe-operator`` and ``galpipe-viewer`` Roles, and every patch
must be one the chart's ``galpipe-control`` Role allows: what passes here is what the chart's
RBAC lets through in a cluster.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from psycopg_pool import ConnectionPool

import galpipe.cli
from galpipe.cli import main
from galpipe.control.actions import ControlActions
from galpipe.control.app import create_app
from galpipe.control.auth import Authenticator, Authorizer
from galpipe.control.kube import (
    API_GROUP,
    KEDA_PAUSED_REPLICAS,
    PIPELINES_RESOURCE,
    RESTARTED_AT,
    Identity,
    resource_plural,
)
from galpipe.control.sessions import SessionSigner
from galpipe.db.queue import TaskQueue
from tests.asgi_server import serve_app
from tests.deploy.chart_render import render_set
from tests.kube_fake import FakeKube, helm_release_object
from tests.probes import counts_now, is_paused

NAMESPACE = "galpipe"
NOW = 1_900_000_000.0
STAMP = datetime.fromtimestamp(NOW, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
PINNED_IMAGE = "ghcr.io/galpipe/galpipe:141-0abc123"
OPERATOR_TOKEN = "op-" + secrets.token_urlsafe(24)
VIEWER_TOKEN = "view-" + secrets.token_urlsafe(24)
OPERATOR = Identity("oscar", ("galpipe-operators", "system:authenticated"), uid="u-oscar")
VIEWER = Identity("vera", ("galpipe-viewers", "system:authenticated"), uid="u-vera")
GROUPS = ["galpipe-operators", "system:authenticated"]


@pytest.fixture(scope="module")
def chart() -> list[dict[str, Any]]:
    return render_set("default")


def _role(chart: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(o for o in chart if o["kind"] == "Role" and o["metadata"]["name"] == name)


def _pipeline_verbs(role: dict[str, Any]) -> set[str]:
    return {
        verb
        for rule in role["rules"]
        if API_GROUP in rule["apiGroups"] and PIPELINES_RESOURCE in rule["resources"]
        for verb in rule["verbs"]
    }


@dataclass
class Stack:
    url: str
    kube: FakeKube
    pool: ConnectionPool
    chart: list[dict[str, Any]]
    kubeconfig: Path
    viewer_token_file: Path


@pytest.fixture
def stack(
    pool: ConnectionPool,
    chart: list[dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Stack]:
    monkeypatch.setattr(galpipe.cli, "configure_logging", lambda *_: None)
    monkeypatch.delenv("GALPIPE_CONTROL_URL", raising=False)
    workloads = [o for o in chart if o["kind"] in ("Deployment", "ScaledObject")]
    kube = FakeKube(
        [*workloads, helm_release_object("galpipe", NAMESPACE)],
        tokens={OPERATOR_TOKEN: OPERATOR, VIEWER_TOKEN: VIEWER},
        # The groups are bound to the chart's Roles: the verbs the cluster would grant.
        grants={
            "galpipe-operators": _pipeline_verbs(_role(chart, "galpipe-operator")),
            "galpipe-viewers": _pipeline_verbs(_role(chart, "galpipe-viewer")),
        },
        namespace=NAMESPACE,
    )
    actions = ControlActions(
        pool,
        kube,
        namespace=NAMESPACE,
        release="galpipe",
        helm_release="galpipe",
        clock=lambda: NOW,
    )
    app = create_app(
        actions,
        Authenticator(kube),
        Authorizer(kube, NAMESPACE),
        SessionSigner(secrets.token_urlsafe(32)),
    )
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "ops",
                "contexts": [{"name": "ops", "context": {"cluster": "c", "user": "oscar"}}],
                "users": [{"name": "oscar", "user": {"token": OPERATOR_TOKEN}}],
            }
        )
    )
    (tmp_path / "viewer.token").write_text(VIEWER_TOKEN)
    with serve_app(app) as url:
        yield Stack(url, kube, pool, chart, kubeconfig, tmp_path / "viewer.token")
    assert kube.invalid_bodies == []


def ctl(
    stack: Stack, capsys: pytest.CaptureFixture[str], *argv: str, viewer: bool = False
) -> tuple[int, Any, str]:
    """Run ``galpipe ctl --json ARGV``: the exit status, the parsed output and stderr."""
    credentials = (
        ["--token-file", str(stack.viewer_token_file)]
        if viewer
        else ["--kubeconfig", str(stack.kubeconfig)]
    )
    status = main(["ctl", "--server", stack.url, *credentials, "--json", *argv])
    out, err = capsys.readouterr()
    for token in (OPERATOR_TOKEN, VIEWER_TOKEN):
        assert token not in out
        assert token not in err
    return status, json.loads(out) if out.strip() else None, err


def _audit_rows(pool: ConnectionPool) -> list[tuple[Any, ...]]:
    with pool.connection() as conn:
        return conn.execute(
            "SELECT user_name, groups, action, pipeline, reason, result FROM audit_log ORDER BY id"
        ).fetchall()


def _allowed_patch(chart: list[dict[str, Any]], api_version: str, kind: str, name: str) -> bool:
    """Whether the chart's ``galpipe-control`` Role lets the service patch this object."""
    group = api_version.rpartition("/")[0]
    return any(
        group in rule["apiGroups"]
        and resource_plural(kind) in rule["resources"]
        and "patch" in rule["verbs"]
        and name in rule.get("resourceNames", [name])
        for rule in _role(chart, "galpipe-control")["rules"]
    )


def test_an_operator_session_end_to_end(
    stack: Stack,
    capsys: pytest.CaptureFixture[str],
    add_galaxies: Any,
) -> None:
    queue = TaskQueue(stack.pool)
    ids = add_galaxies(6)
    queue.enqueue("fetch", ids)

    # Pause: the flag workers honour is set, and a worker claims nothing.
    status, paused, _ = ctl(stack, capsys, "pause", "fetch", "--reason", "survey maintenance")
    assert status == 0
    assert (paused["action"], paused["result"], paused["user"]) == ("pause", "ok", "oscar")
    assert is_paused(stack.pool, "fetch")
    assert queue.claim_batch("fetch", 10, 60.0, "w1") == []
    status, _, _ = ctl(stack, capsys, "resume", "fetch", "--reason", "maintenance over")
    assert status == 0
    claimed = queue.claim_batch("fetch", 3, 60.0, "w1")
    assert len(claimed) == 3
    queue.fail(None, "fetch", "w1", {t.source_id: "cutout timeout" for t in claimed})

    # Hold at 2: KEDA's paused-replicas annotation on the ScaledObject.
    status, held, _ = ctl(stack, capsys, "hold", "fetch", "2", "--reason", "load test")
    assert status == 0
    assert held["after"]["paused_replicas"] == "2"
    scaled = stack.kube.object("keda.sh/v1alpha1", "ScaledObject", "galpipe-fetch")
    assert scaled["metadata"]["annotations"][KEDA_PAUSED_REPLICAS] == "2"

    # Restart: the pod template's restartedAt.
    assert ctl(stack, capsys, "restart", "fetch", "--reason", "stuck connections")[0] == 0
    deployment = stack.kube.object("apps/v1", "Deployment", "galpipe-fetch")
    assert deployment["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT] == STAMP

    # Pin, then unpin: Flux is suspended before the image changes and resumed after.
    n = len(stack.kube.patches)
    status, pinned, _ = ctl(stack, capsys, "pin", "fetch", PINNED_IMAGE, "--reason", "bad release")
    assert status == 0
    helm_patch, image_patch = stack.kube.patches[n:]
    assert (helm_patch.kind, helm_patch.body) == ("HelmRelease", {"spec": {"suspend": True}})
    assert image_patch.kind == "Deployment"
    assert (pinned["before"]["image"], pinned["after"]["image"]) == (
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        PINNED_IMAGE,
    )
    status, overview, _ = ctl(stack, capsys, "overview")
    assert overview["helm_release_suspended"] is True
    assert overview["pipelines"]["fetch"]["image"] == PINNED_IMAGE
    assert {o["kind"] for o in overview["overrides"]} == {"hold", "pin"}
    n = len(stack.kube.patches)
    assert ctl(stack, capsys, "unpin", "fetch", "--reason", "fixed in 142")[0] == 0
    helm_patch = stack.kube.patches[n]
    assert helm_patch.kind == "HelmRelease"
    assert helm_patch.body is not None
    assert helm_patch.body["spec"] == {"suspend": False}
    assert (
        stack.kube.object("helm.toolkit.fluxcd.io/v2", "HelmRelease", "galpipe")["spec"]["suspend"]
        is False
    )

    # Retry as a dry run: counted, nothing changed.
    before = counts_now(stack.pool)
    status, retry, _ = ctl(
        stack, capsys, "retry", "fetch", "--error-contains", "TIMEOUT", "--reason", "flaky"
    )
    assert status == 0
    assert retry["applied"] is None
    assert (retry["dry_run"]["result"], retry["dry_run"]["count"]) == ("dry_run", 3)
    assert counts_now(stack.pool) == before

    # Every change is audited with the TokenReview's user and groups, and announced.
    actions = ["pause", "resume", "hold", "restart", "pin", "unpin", "retry"]
    assert [(r[0], r[1], r[2], r[3]) for r in _audit_rows(stack.pool)] == [
        ("oscar", GROUPS, a, "fetch") for a in actions
    ]
    assert [r[5] for r in _audit_rows(stack.pool)] == ["ok"] * 6 + ["dry_run"]
    assert [e["action"] for e in stack.kube.events] == actions
    # Every patch is one the chart's RBAC grants the control ServiceAccount.
    for patch in stack.kube.patches:
        assert _allowed_patch(stack.chart, patch.api_version, patch.kind, patch.name), patch

    # The audit log through ctl, filtered, newest first.
    status, records, _ = ctl(stack, capsys, "audit", "--user", "oscar", "--action", "pin")
    assert status == 0
    assert [(r["action"], r["reason"], r["groups"]) for r in records] == [
        ("pin", "bad release", GROUPS)
    ]
    status, records, _ = ctl(stack, capsys, "audit", "--pipeline", "fetch", "--limit", "3")
    assert [r["action"] for r in records] == ["retry", "unpin", "pin"]


def test_a_viewer_reads_but_may_not_pause(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    status, overview, _ = ctl(stack, capsys, "overview", viewer=True)
    assert status == 0
    # Every pipeline galpipe knows; those the default chart does not deploy have no workload.
    assert set(overview["pipelines"]) == {"fetch", "radon", "morphology", "photoz"}
    for name in ("morphology", "photoz"):
        assert overview["pipelines"][name]["replicas_desired"] is None
        assert overview["pipelines"][name]["pods"] == []
    status, _, err = ctl(stack, capsys, "pause", "fetch", "--reason", "mine now", viewer=True)
    assert status == 1
    assert "you may not pause fetch in galpipe" in err
    assert not is_paused(stack.pool, "fetch")
    assert _audit_rows(stack.pool) == []
    assert stack.kube.events == []
    # The denial came from the cluster's review of the viewer, not from a guess.
    (denied,) = [
        r
        for r in stack.kube.access_reviews
        if r.body is not None and r.body["spec"]["resourceAttributes"]["verb"] == "pause"
    ]
    assert denied.body is not None
    assert (denied.body["spec"]["user"], denied.body["spec"]["groups"]) == (
        "vera",
        ["galpipe-viewers", "system:authenticated"],
    )
