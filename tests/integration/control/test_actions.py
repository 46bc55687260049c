"""The operator actions against a real PostgreSQL and the recording, schema-validating fake
Kubernetes API: the exact request bodies sent, the audit rows written and the Events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from psycopg_pool import ConnectionPool

from galpipe.control.actions import ControlActionError, ControlActions
from galpipe.control.kube import (
    KEDA_PAUSED_REPLICAS,
    RESTARTED_AT,
    VERB_OF,
    VERBS,
    Identity,
    KubeError,
)
from galpipe.control.overview import (
    HELD_AT,
    HELD_BY,
    PIN_REASON,
    PINNED_AT,
    PINNED_BY,
    PINNED_FROM,
    PIPELINES,
)
from galpipe.db.audit import AuditRecord
from galpipe.db.queue import TaskQueue
from galpipe.errors import InputError, ServiceError
from tests.integration.control.cluster import CHART_IMAGE, NAMESPACE, seeded_objects
from tests.kube_fake import FakeKube, helm_release_object
from tests.probes import is_paused

ALICE = Identity(user="alice", groups=("galpipe-operators", "system:authenticated"))
#: The injected clock: every annotation and Event time derives from it.
NOW = 1_900_000_000.0
STAMP = datetime.fromtimestamp(NOW, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
PINNED_IMAGE = "ghcr.io/galpipe/galpipe:141-0abc123"
DEPLOYMENT = ("apps/v1", "Deployment")
SCALED_OBJECT = ("keda.sh/v1alpha1", "ScaledObject")
HELM_RELEASE = ("helm.toolkit.fluxcd.io/v2", "HelmRelease")


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    fake = FakeKube(seeded_objects(), namespace=NAMESPACE)
    yield fake
    # Whatever a test asserts, no request the API server would reject was sent.
    assert fake.invalid_bodies == []


@pytest.fixture
def actions(pool: ConnectionPool, kube: FakeKube) -> ControlActions:
    return ControlActions(
        pool,
        kube,
        namespace=NAMESPACE,
        release="galpipe",
        helm_release="galpipe",
        clock=lambda: NOW,
    )


def _audit_rows(pool: ConnectionPool) -> list[tuple]:
    with pool.connection() as conn:
        return conn.execute(
            "SELECT user_name, groups, action, pipeline, target, reason, before, after, result, "
            "error FROM audit_log ORDER BY id"
        ).fetchall()


def _event(reason: str, note: str, action: str, *, kind: str = "Normal", name: str) -> dict:
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"generateName": f"{name}.", "namespace": NAMESPACE},
        "eventTime": datetime.fromtimestamp(NOW, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "reportingController": "galpipe.io/control",
        "reportingInstance": "galpipe-control",
        "action": action,
        "reason": reason,
        "type": kind,
        "regarding": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
            "namespace": NAMESPACE,
        },
        "note": note,
    }


def test_every_verb_is_a_verb_of_the_api_group() -> None:
    assert set(VERB_OF.values()) <= set(VERBS)
    assert {"pause", "resume", "hold", "release_hold", "restart", "pin", "unpin"} <= set(VERB_OF)
    for method in VERB_OF:
        assert callable(getattr(ControlActions, method))


def test_the_pipelines_are_the_workers_pipelines() -> None:
    """Every worker pipeline galpipe has, in the order of the database layer's list."""
    from galpipe.pipelines.fetch import FetchPipeline
    from galpipe.pipelines.morphology import MorphologyPipeline
    from galpipe.pipelines.photoz import PhotozPipeline
    from galpipe.pipelines.radon import RadonPipeline

    workers = (FetchPipeline, RadonPipeline, MorphologyPipeline, PhotozPipeline)
    assert tuple(p.name for p in workers) == PIPELINES


def test_every_pipeline_can_be_paused_and_resumed(
    actions: ControlActions, pool: ConnectionPool
) -> None:
    """The pipelines the default chart does not deploy are still acted on in the database."""
    for name in ("morphology", "photoz"):
        actions.pause(ALICE, name, "model retraining")
        assert is_paused(pool, name)
        assert next(p for p in actions.overview().pipelines if p.pipeline == name).paused
        actions.resume(ALICE, name, "model published")
        assert not is_paused(pool, name)


def test_pause_and_resume_set_the_flag_audit_and_announce(
    actions: ControlActions, kube: FakeKube, pool: ConnectionPool
) -> None:
    result = actions.pause(ALICE, "fetch", "  survey maintenance ")
    assert is_paused(pool, "fetch")
    assert (result.action, result.result, result.reason) == ("pause", "ok", "survey maintenance")
    assert result.before == {"paused": False, "reason": None}
    assert result.after == {"paused": True, "reason": "survey maintenance"}
    actions.resume(ALICE, "fetch", "maintenance over")
    assert not is_paused(pool, "fetch")

    assert _audit_rows(pool) == [
        (
            "alice",
            ["galpipe-operators", "system:authenticated"],
            "pause",
            "fetch",
            {"pipeline_control": "fetch"},
            "survey maintenance",
            {"paused": False, "reason": None},
            {"paused": True, "reason": "survey maintenance"},
            "ok",
            None,
        ),
        (
            "alice",
            ["galpipe-operators", "system:authenticated"],
            "resume",
            "fetch",
            {"pipeline_control": "fetch"},
            "maintenance over",
            {"paused": True, "reason": "survey maintenance"},
            {"paused": False, "reason": None},
            "ok",
            None,
        ),
    ]
    assert [r.body for r in kube.calls("create", "Event")] == [
        _event(
            "GalpipePaused",
            "pause of fetch by alice; reason: survey maintenance",
            "pause",
            name="galpipe-fetch",
        ),
        _event(
            "GalpipeResumed",
            "resume of fetch by alice; reason: maintenance over",
            "resume",
            name="galpipe-fetch",
        ),
    ]
    assert kube.patches == []


def test_hold_and_release_patch_the_scaled_object(
    actions: ControlActions, kube: FakeKube, pool: ConnectionPool
) -> None:
    held = actions.hold(ALICE, "radon", 2, "load test of the database")
    released = actions.release_hold(ALICE, "radon", "load test over")

    assert [(p.kind, p.name, p.body) for p in kube.patches] == [
        (
            "ScaledObject",
            "galpipe-radon",
            {
                "metadata": {
                    "annotations": {
                        KEDA_PAUSED_REPLICAS: "2",
                        HELD_BY: "alice",
                        HELD_AT: STAMP,
                    }
                }
            },
        ),
        (
            "ScaledObject",
            "galpipe-radon",
            {
                "metadata": {
                    "annotations": {KEDA_PAUSED_REPLICAS: None, HELD_BY: None, HELD_AT: None}
                }
            },
        ),
    ]
    assert held.target == {"scaled_object": "galpipe-radon", "replicas": 2}
    assert held.before == {"paused_replicas": None, "held_by": None, "held_at": None}
    assert held.after == {"paused_replicas": "2", "held_by": "alice", "held_at": STAMP}
    assert released.after == held.before
    stored = kube.object(*SCALED_OBJECT, "galpipe-radon")
    assert not stored["metadata"].get("annotations")
    assert [r[2] for r in _audit_rows(pool)] == ["hold", "release_hold"]
    assert [e["reason"] for e in kube.events] == ["GalpipeHeld", "GalpipeHoldReleased"]


@pytest.mark.parametrize("replicas", [-1, True, 1.5, "2"])
def test_a_bad_replica_count_is_refused_before_anything(
    actions: ControlActions, kube: FakeKube, pool: ConnectionPool, replicas
) -> None:
    with pytest.raises(InputError, match="replicas"):
        actions.hold(ALICE, "radon", replicas, "why")
    assert kube.requests == []
    assert _audit_rows(pool) == []


def test_restart_sets_the_pod_template_annotation(
    actions: ControlActions, kube: FakeKube, pool: ConnectionPool
) -> None:
    result = actions.restart(ALICE, "fetch", "stuck connections")
    (patch,) = kube.patches
    assert (patch.kind, patch.name, patch.body) == (
        "Deployment",
        "galpipe-fetch",
        {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: STAMP}}}}},
    )
    assert (result.before, result.after) == ({"restarted_at": None}, {"restarted_at": STAMP})
    stored = kube.object(*DEPLOYMENT, "galpipe-fetch")
    assert stored["spec"]["template"]["metadata"]["annotations"] == {RESTARTED_AT: STAMP}
    # The rest of the template is untouched.
    assert stored["spec"]["template"]["spec"]["containers"][0]["image"] == CHART_IMAGE


def test_pin_suspends_flux_first_then_sets_the_image(
    actions: ControlActions, kube: FakeKube, pool: ConnectionPool
) -> None:
    deployment_before = kube.object(*DEPLOYMENT, "galpipe-fetch")
    result = actions.pin(ALICE, "fetch", PINNED_IMAGE, "141 measured wrong angles")

    helm_patch, deployment_patch = kube.patches
    assert (helm_patch.kind, helm_patch.name, helm_patch.body) == (
        "HelmRelease",
        "galpipe",
        {"spec": {"suspend": True}},
    )
    containers = deployment_before["spec"]["template"]["spec"]["containers"]
    containers[0]["image"] = PINNED_IMAGE
    assert (deployment_patch.kind, deployment_patch.name, deployment_patch.body) == (
        "Deployment",
        "galpipe-fetch",
        {
            "metadata": {
                "annotations": {
                    PINNED_BY: "alice",
                    PINNED_AT: STAMP,
                    PIN_REASON: "141 measured wrong angles",
                    PINNED_FROM: CHART_IMAGE,
                },
                "resourceVersion": "41",
            },
            "spec": {"template": {"spec": {"containers": containers}}},
        },
    )
    stored = kube.object(*DEPLOYMENT, "galpipe-fetch")
    # Only the image changed in the pod template: env, probes, resources are as rendered.
    expected = dict(deployment_before["spec"]["template"])
    expected["spec"] = {**expected["spec"], "containers": containers}
    assert stored["spec"]["template"] == expected
    assert kube.object(*HELM_RELEASE, "galpipe")["spec"]["suspend"] is True
    assert result.before["image"] == CHART_IMAGE
    assert result.after["image"] == PINNED_IMAGE
    assert result.after["helm_release_suspended"] is True

    (pin,) = [o for o in actions.overrides() if o.kind == "pin"]
    assert (pin.pipeline, pin.user, pin.reason, pin.value) == (
        "fetch",
        "alice",
        "141 measured wrong angles",
        PINNED_IMAGE,
    )
    assert pin.since == datetime.fromtimestamp(NOW, UTC)
    overview = actions.overview()
    assert overview.helm_release_suspended is True
    fetch = next(p for p in overview.pipelines if p.pipeline == "fetch")
    assert (fetch.image, fetch.image_wanted, fetch.pinned) == (PINNED_IMAGE, CHART_IMAGE, True)


def test_unpin_hands_the_release_back_to_git(
    actions: ControlActions, kube: FakeKube, pool: ConnectionPool
) -> None:
    actions.pin(ALICE, "fetch", PINNED_IMAGE, "bad release")
    n = len(kube.patches)
    result = actions.unpin(ALICE, "fetch", "fixed in 143")
    helm_patch, deployment_patch = kube.patches[n:]
    assert (helm_patch.kind, helm_patch.body) == (
        "HelmRelease",
        {
            "spec": {"suspend": False},
            "metadata": {
                "annotations": {
                    "reconcile.fluxcd.io/requestedAt": STAMP,
                    "reconcile.fluxcd.io/forceAt": STAMP,
                }
            },
        },
    )
    assert (deployment_patch.kind, deployment_patch.body) == (
        "Deployment",
        {
            "metadata": {
                "annotations": {
                    PINNED_BY: None,
                    PINNED_AT: None,
                    PIN_REASON: None,
                    PINNED_FROM: None,
                }
            }
        },
    )
    assert kube.object(*HELM_RELEASE, "galpipe")["spec"]["suspend"] is False
    assert result.target["still_pinned"] == []
    assert result.after["helm_release_suspended"] is False
    assert [o for o in actions.overrides() if o.kind == "pin"] == []
    assert [r[2] for r in _audit_rows(pool)] == ["pin", "unpin"]


def test_unpin_while_another_pin_stays_restores_the_image_by_hand(
    actions: ControlActions, kube: FakeKube
) -> None:
    actions.pin(ALICE, "fetch", PINNED_IMAGE, "bad release")
    actions.pin(ALICE, "radon", PINNED_IMAGE, "bad release")
    # The release was suspended once; the second pin found it suspended.
    assert [p.body for p in kube.patches if p.kind == "HelmRelease"] == [
        {"spec": {"suspend": True}}
    ]
    result = actions.unpin(ALICE, "fetch", "fetch is fine with 143")
    assert result.target["still_pinned"] == ["radon"]
    assert kube.patches[-1].kind == "Deployment"
    assert kube.object(*HELM_RELEASE, "galpipe")["spec"]["suspend"] is True
    fetch = kube.object(*DEPLOYMENT, "galpipe-fetch")
    assert fetch["spec"]["template"]["spec"]["containers"][0]["image"] == CHART_IMAGE
    assert PINNED_BY not in (fetch["metadata"].get("annotations") or {})
    assert [(o.pipeline, o.kind) for o in actions.overrides()] == [("radon", "pin")]


def test_a_failed_pin_is_audited_undone_and_raised(
    actions: ControlActions, kube: FakeKube, pool: ConnectionPool
) -> None:
    original_patch = kube.patch

    def patch_failing_deployments(api_version, kind, namespace, name, body):
        if kind == "Deployment":
            raise KubeError(409, "the object has been modified")
        return original_patch(api_version, kind, namespace, name, body)

    kube.patch = patch_failing_deployments  # type: ignore[method-assign]
    with pytest.raises(ControlActionError, match="pin of pipeline 'fetch' failed") as caught:
        actions.pin(ALICE, "fetch", PINNED_IMAGE, "bad release")
    assert isinstance(caught.value, ServiceError)
    assert caught.value.status == 409
    # The suspension this pin made was undone: Git keeps control.
    assert kube.object(*HELM_RELEASE, "galpipe")["spec"]["suspend"] is False
    ((user, _, action, pipeline, target, reason, before, after, result, error),) = _audit_rows(pool)
    assert (user, action, pipeline, reason, result) == (
        "alice",
        "pin",
        "fetch",
        "bad release",
        "failed",
    )
    assert before["image"] == CHART_IMAGE
    assert after is None
    assert "409" in error
    assert "modified" in error
    assert target["image"] == PINNED_IMAGE
    (event,) = kube.events
    assert (event["type"], event["reason"]) == ("Warning", "GalpipePinFailed")


def test_a_failed_event_write_is_not_fatal(
    actions: ControlActions, kube: FakeKube, pool: ConnectionPool, caplog
) -> None:
    kube.errors["create_event"] = KubeError(403, "events is forbidden")
    result = actions.restart(ALICE, "radon", "new database credentials")
    assert result.result == "ok"
    assert [r[8] for r in _audit_rows(pool)] == ["ok"]
    assert "could not write the Event" in caplog.text


@pytest.mark.parametrize(
    ("pipeline", "reason", "match"),
    [
        ("fetch", "", "reason"),
        ("fetch", "  \t", "reason"),
        ("monitor", "why", "pipeline 'monitor'"),
    ],
)
def test_no_reason_or_unknown_pipeline_is_refused_before_anything(
    actions: ControlActions, kube: FakeKube, pool: ConnectionPool, pipeline, reason, match
) -> None:
    for act in (
        lambda: actions.pause(ALICE, pipeline, reason),
        lambda: actions.hold(ALICE, pipeline, 1, reason),
        lambda: actions.restart(ALICE, pipeline, reason),
        lambda: actions.pin(ALICE, pipeline, PINNED_IMAGE, reason),
        lambda: actions.unpin(ALICE, pipeline, reason),
        lambda: actions.retry(ALICE, pipeline, reason, dry_run=True),
    ):
        with pytest.raises(InputError, match=match):
            act()
    assert kube.requests == []
    assert _audit_rows(pool) == []


def test_retry_counts_first_then_queues_and_audits_both(
    actions: ControlActions, queue: TaskQueue, add_galaxies, pool: ConnectionPool
) -> None:
    queue.enqueue("fetch", add_galaxies(3))
    queue.claim_batch("fetch", 3, 60, "w")
    queue.fail(None, "fetch", "w", {1: "HTTP 503", 2: "HTTP 503", 3: "bad FITS"})

    counted = actions.retry(ALICE, "fetch", "survey back", error_contains="503", dry_run=True)
    assert (counted.result, counted.count, counted.after) == ("dry_run", 2, None)
    done = actions.retry(ALICE, "fetch", "survey back", error_contains="503", dry_run=False)
    assert (done.result, done.count, done.after) == ("ok", 2, {"requeued": 2})

    rows = _audit_rows(pool)
    assert [(r[2], r[8], r[4]) for r in rows] == [
        ("retry", "dry_run", {"tasks": "failed", "error_contains": "503", "count": 2}),
        ("retry", "ok", {"tasks": "failed", "error_contains": "503", "count": 2}),
    ]
    assert rows[1][6] == {"failed_matching": 2}


def test_requeue_is_for_the_measured_pipeline_only(
    actions: ControlActions, queue: TaskQueue, add_galaxies, pool: ConnectionPool
) -> None:
    with pytest.raises(InputError, match="pipeline 'fetch'"):
        actions.requeue(ALICE, "fetch", "new version", algo_version="v2", dry_run=True)
    with pytest.raises(InputError, match="algo_version"):
        actions.requeue(ALICE, "radon", "new version", algo_version="", dry_run=True)

    ids = add_galaxies(3)
    queue.enqueue("radon", ids)
    queue.claim_batch("radon", 3, 60, "w")
    queue.complete(None, "radon", "w", ids)
    counted = actions.requeue(
        ALICE, "radon", "new masking", algo_version="v2", source_ids=[1, 2], dry_run=True
    )
    assert (counted.result, counted.count) == ("dry_run", 2)
    done = actions.requeue(ALICE, "radon", "new masking", algo_version="v2", dry_run=False)
    assert (done.result, done.count) == ("ok", 3)
    assert [(r[8], r[4]["source_ids"]) for r in _audit_rows(pool)] == [
        ("dry_run", [1, 2]),
        ("ok", None),
    ]


def test_overview_joins_the_queue_and_the_workload(
    actions: ControlActions, queue: TaskQueue, add_galaxies, kube: FakeKube
) -> None:
    queue.enqueue("fetch", add_galaxies(4))
    actions.pause(ALICE, "fetch", "survey maintenance")
    actions.hold(ALICE, "radon", 0, "database upgrade")
    n = len(kube.requests)
    overview = actions.overview()
    # One list per kind and one get of the HelmRelease, whatever the number of pipelines.
    assert [(r.verb, r.kind) for r in kube.requests[n:]] == [
        ("list", "Deployment"),
        ("list", "ScaledObject"),
        ("list", "Pod"),
        ("get", "HelmRelease"),
    ]
    assert {r.label_selector for r in kube.requests[n : n + 3]} == {
        "app.kubernetes.io/instance=galpipe"
    }

    assert [p.pipeline for p in overview.pipelines] == list(PIPELINES)
    fetch, radon, *undeployed = overview.pipelines
    assert fetch.counts["queued"] == 4
    assert (fetch.paused, fetch.pause_reason) == (True, "survey maintenance")
    assert (fetch.replicas_desired, fetch.replicas_ready, fetch.hold_replicas) == (2, 1, None)
    assert [(p.name, p.ready, p.restarts) for p in fetch.pods] == [
        ("galpipe-fetch-a", True, 0),
        ("galpipe-fetch-b", False, 3),
    ]
    assert (fetch.image, fetch.image_wanted, fetch.pinned) == (CHART_IMAGE, CHART_IMAGE, False)
    assert radon.hold_replicas == 0
    assert [p.name for p in radon.pods] == ["galpipe-radon-a"]
    # Not deployed by the default chart: the queue is shown, the workload is unknown.
    for other in undeployed:
        assert sum(other.counts.values()) == 0
        assert (other.replicas_desired, other.image, other.pods) == (None, None, ())
    assert overview.helm_release_suspended is False
    assert overview.kube_error is None
    assert [(o.pipeline, o.kind, o.user, o.reason, o.value) for o in overview.overrides] == [
        ("fetch", "pause", "alice", "survey maintenance", None),
        ("radon", "hold", "alice", "database upgrade", "0"),
    ]
    encoded = json.loads(json.dumps(overview.to_json()))
    assert encoded["pipelines"]["fetch"]["pods"][1]["restarts"] == 3
    assert encoded["overrides"][1]["since"] == datetime.fromtimestamp(NOW, UTC).isoformat()


def _sharing_actions(pool: ConnectionPool, kube: FakeKube, now: list[float]) -> ControlActions:
    """Actions whose overview is shared for 2 s of the injected monotonic clock ``now[0]``."""
    return ControlActions(
        pool,
        kube,
        namespace=NAMESPACE,
        release="galpipe",
        helm_release="galpipe",
        clock=lambda: NOW,
        overview_ttl_s=2.0,
        overview_stale_s=2.0,  # no stale window here: tests/unit/control/test_snapshot.py
        monotonic=lambda: now[0],
    )


def test_one_overview_serves_every_caller_until_it_expires_or_an_action_runs(
    pool: ConnectionPool, kube: FakeKube, queue: TaskQueue, add_galaxies
) -> None:
    now = [0.0]
    actions = _sharing_actions(pool, kube, now)
    queue.enqueue("fetch", add_galaxies(3))
    first = actions.overview()
    reads = len(kube.requests)
    now[0] = 1.9
    assert actions.overview() is first  # shared: no new reads
    assert len(kube.requests) == reads

    actions.pause(ALICE, "fetch", "survey maintenance")
    after_action = actions.overview()  # the action forgot it: read again
    assert after_action is not first
    assert after_action.pipelines[0].paused is True

    now[0] = 4.0
    queue.enqueue("fetch", add_galaxies(2, start=100))
    assert actions.overview().pipelines[0].counts["queued"] == 5  # expired: read again


def test_a_pause_reuses_the_shared_counts_and_a_retry_recounts(
    pool: ConnectionPool, kube: FakeKube, queue: TaskQueue, add_galaxies
) -> None:
    actions = _sharing_actions(pool, kube, [0.0])
    queue.enqueue("fetch", add_galaxies(3))
    queue.claim_batch("fetch", 3, 60, "w")
    queue.fail(None, "fetch", "w", {1: "HTTP 503", 2: "HTTP 503", 3: "bad FITS"})
    first = actions.overview()
    assert first.pipelines[0].counts["failed"] == 3
    assert first.counts_taken_at is not None

    queue.enqueue("fetch", add_galaxies(1, start=100))  # not yet counted
    actions.pause(ALICE, "fetch", "survey maintenance")
    paused = actions.overview()
    assert paused.pipelines[0].paused is True  # the pause is shown at once ...
    assert paused.counts_taken_at == first.counts_taken_at  # ... without a recount
    assert paused.pipelines[0].counts["queued"] == 0
    assert paused.to_json()["counts_taken_at"] == first.counts_taken_at.isoformat()

    actions.retry(ALICE, "fetch", "survey back", error_contains="503", dry_run=False)
    retried = actions.overview()  # the retry moved tasks: counted again
    assert retried.pipelines[0].counts == {
        "queued": 3,
        "running": 0,
        "done": 0,
        "failed": 1,
        "skipped": 0,
    }
    assert retried.counts_taken_at is not None
    assert retried.counts_taken_at > first.counts_taken_at


def test_overview_names_the_image_git_wants_from_the_helm_release(
    actions: ControlActions, kube: FakeKube
) -> None:
    release = helm_release_object("galpipe", NAMESPACE)
    release["spec"]["values"] = {"image": {"tag": "143-1234abc"}}
    kube.add(release)
    fetch = actions.overview().pipelines[0]
    assert fetch.image_wanted == "ghcr.io/galpipe/galpipe:143-1234abc"


def test_overview_without_kubernetes_still_shows_the_queue(
    actions: ControlActions, kube: FakeKube, queue: TaskQueue, add_galaxies
) -> None:
    queue.enqueue("radon", add_galaxies(2))
    kube.errors["list"] = KubeError(0, "connection refused")
    overview = actions.overview()
    assert overview.pipelines[1].counts["queued"] == 2
    assert overview.pipelines[1].replicas_desired is None
    assert overview.kube_error is not None
    assert "connection refused" in overview.kube_error


def test_audit_reads_back_filtered(actions: ControlActions) -> None:
    actions.pause(ALICE, "fetch", "one")
    actions.restart(Identity(user="bob"), "radon", "two")
    records = actions.audit(user="bob")
    assert [(r.user, r.action, r.pipeline) for r in records] == [("bob", "restart", "radon")]
    assert isinstance(records[0], AuditRecord)
    assert [r.action for r in actions.audit(limit=1)] == ["restart"]
    assert records[0].to_json()["reason"] == "two"
