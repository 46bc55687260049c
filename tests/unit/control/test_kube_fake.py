"""The recording fake of the Kubernetes API: it answers like the cluster and rejects what the API
server would reject, so the control plane's tests catch a misspelt field here."""

from __future__ import annotations

import pytest

from galpipe.control.kube import (
    KEDA_PAUSED_REPLICAS,
    RESTARTED_AT,
    Identity,
    KubeError,
    subject_access_review_body,
    token_review_body,
)
from tests.deploy.chart_render import render_set
from tests.kube_fake import (
    FakeKube,
    InvalidRequestBodyError,
    apply_merge_patch,
    helm_release_object,
)

NAMESPACE = "galpipe"
ALICE = Identity(user="alice", groups=("galpipe-operators", "system:authenticated"), uid="u-1")
VIEWER = Identity(user="victor", groups=("galpipe-viewers",))


@pytest.fixture(scope="module")
def chart_objects() -> list[dict]:
    """The chart's default render: the Deployments and ScaledObjects the control plane patches."""
    return [o for o in render_set("default") if o["kind"] in ("Deployment", "ScaledObject")]


@pytest.fixture
def kube(chart_objects: list[dict]) -> FakeKube:
    return FakeKube(
        [*chart_objects, helm_release_object("galpipe", NAMESPACE)],
        tokens={"alice-token": ALICE, "victor-token": VIEWER},
        grants={"galpipe-operators": ["*"], "galpipe-viewers": ["get", "list"]},
        namespace=NAMESPACE,
    )


def test_token_review_answers_from_the_table_and_is_recorded(kube: FakeKube) -> None:
    answer = kube.create_token_review(token_review_body("alice-token"))
    assert answer["status"]["authenticated"] is True
    assert answer["status"]["user"] == {
        "username": "alice",
        "groups": ["galpipe-operators", "system:authenticated"],
        "uid": "u-1",
    }
    unknown = kube.create_token_review(token_review_body("nobody"))
    assert unknown["status"]["authenticated"] is False
    assert [r.body["spec"]["token"] for r in kube.token_reviews if r.body] == [
        "alice-token",
        "nobody",
    ]


def test_subject_access_review_answers_from_the_grants(kube: FakeKube) -> None:
    def allowed(identity: Identity, verb: str) -> bool:
        body = subject_access_review_body(identity, verb, NAMESPACE)
        return bool(kube.create_subject_access_review(body)["status"]["allowed"])

    assert allowed(VIEWER, "get")
    assert not allowed(VIEWER, "pause")
    assert allowed(ALICE, "pause")
    assert allowed(ALICE, "rollback")
    assert [r.namespace for r in kube.access_reviews] == [NAMESPACE] * 4
    assert kube.invalid_bodies == []


def test_misspelt_subject_access_review_field_is_rejected(kube: FakeKube) -> None:
    body = subject_access_review_body(ALICE, "pause", NAMESPACE)
    body["spec"]["resourceAttributes"]["verbs"] = body["spec"]["resourceAttributes"].pop("verb")
    with pytest.raises(InvalidRequestBodyError, match="verbs"):
        kube.create_subject_access_review(body)
    assert len(kube.invalid_bodies) == 1


def test_misspelt_token_review_field_is_rejected(kube: FakeKube) -> None:
    body = token_review_body("alice-token")
    body["spec"]["tokens"] = body["spec"].pop("token")
    with pytest.raises(InvalidRequestBodyError, match="tokens"):
        kube.create_token_review(body)


def test_deployment_restart_patch_is_applied(kube: FakeKube) -> None:
    annotations = {RESTARTED_AT: "2030-01-01T00:00:00Z"}
    patch = {"spec": {"template": {"metadata": {"annotations": annotations}}}}
    result = kube.patch("apps/v1", "Deployment", NAMESPACE, "galpipe-fetch", patch)
    annotations = result["spec"]["template"]["metadata"]["annotations"]
    assert annotations[RESTARTED_AT] == "2030-01-01T00:00:00Z"
    stored = kube.object("apps/v1", "Deployment", "galpipe-fetch")
    assert stored["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT] == (
        "2030-01-01T00:00:00Z"
    )
    assert [(r.verb, r.name) for r in kube.patches] == [("patch", "galpipe-fetch")]


def test_misspelt_deployment_patch_is_rejected_and_not_applied(kube: FakeKube) -> None:
    before = kube.object("apps/v1", "Deployment", "galpipe-fetch")
    patch = {"spec": {"template": {"metadata": {"anotations": {RESTARTED_AT: "now"}}}}}
    with pytest.raises(InvalidRequestBodyError, match="anotations"):
        kube.patch("apps/v1", "Deployment", NAMESPACE, "galpipe-fetch", patch)
    assert kube.object("apps/v1", "Deployment", "galpipe-fetch") == before


def test_scaled_object_paused_replicas_annotation_set_and_removed(kube: FakeKube) -> None:
    held = {"metadata": {"annotations": {KEDA_PAUSED_REPLICAS: "2"}}}
    kube.patch("keda.sh/v1alpha1", "ScaledObject", NAMESPACE, "galpipe-radon", held)
    stored = kube.object("keda.sh/v1alpha1", "ScaledObject", "galpipe-radon")
    assert stored["metadata"]["annotations"][KEDA_PAUSED_REPLICAS] == "2"
    released = {"metadata": {"annotations": {KEDA_PAUSED_REPLICAS: None}}}
    kube.patch("keda.sh/v1alpha1", "ScaledObject", NAMESPACE, "galpipe-radon", released)
    stored = kube.object("keda.sh/v1alpha1", "ScaledObject", "galpipe-radon")
    assert KEDA_PAUSED_REPLICAS not in (stored["metadata"].get("annotations") or {})


@pytest.mark.parametrize(
    "patch",
    [
        {"metadata": {"annotation": {KEDA_PAUSED_REPLICAS: "2"}}},
        {"metdata": {"annotations": {KEDA_PAUSED_REPLICAS: "2"}}},
        # Annotation values are strings; a number is what a careless patch sends.
        {"metadata": {"annotations": {KEDA_PAUSED_REPLICAS: 2}}},
    ],
    ids=["annotation", "metdata", "integer-value"],
)
def test_bad_scaled_object_annotation_patch_is_rejected(kube: FakeKube, patch: dict) -> None:
    with pytest.raises(InvalidRequestBodyError):
        kube.patch("keda.sh/v1alpha1", "ScaledObject", NAMESPACE, "galpipe-radon", patch)
    assert len(kube.invalid_bodies) == 1


def test_helm_release_suspend_patch_is_applied(kube: FakeKube) -> None:
    suspend = {"spec": {"suspend": True}}
    kube.patch("helm.toolkit.fluxcd.io/v2", "HelmRelease", NAMESPACE, "galpipe", suspend)
    assert kube.object("helm.toolkit.fluxcd.io/v2", "HelmRelease", "galpipe")["spec"]["suspend"]


@pytest.mark.parametrize(
    "patch",
    [{"spec": {"suspended": True}}, {"spec": {"suspend": "yes please"}}, {"suspend": True}],
    ids=["suspended", "not-a-boolean", "top-level"],
)
def test_bad_helm_release_suspend_patch_is_rejected(kube: FakeKube, patch: dict) -> None:
    with pytest.raises(InvalidRequestBodyError):
        kube.patch("helm.toolkit.fluxcd.io/v2", "HelmRelease", NAMESPACE, "galpipe", patch)
    assert (
        "suspend" not in kube.object("helm.toolkit.fluxcd.io/v2", "HelmRelease", "galpipe")["spec"]
    )


def test_event_is_validated_and_kept(kube: FakeKube) -> None:
    event = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"generateName": "galpipe-fetch-"},
        "eventTime": "2030-01-01T00:00:00.000000Z",
        "reportingController": "galpipe.io/control",
        "reportingInstance": "galpipe-control",
        "action": "Pause",
        "reason": "Paused",
        "type": "Normal",
        "regarding": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "galpipe-fetch"},
        "note": "paused by alice: maintenance",
    }
    kept = kube.create_event(NAMESPACE, event)
    assert kept["metadata"]["name"].startswith("galpipe-fetch-")
    assert kube.events == [kept]
    event["notes"] = event.pop("note")
    with pytest.raises(InvalidRequestBodyError, match="notes"):
        kube.create_event(NAMESPACE, event)


def test_missing_object_is_a_404_and_injected_errors_raise(kube: FakeKube) -> None:
    with pytest.raises(KubeError) as missing:
        kube.get("apps/v1", "Deployment", NAMESPACE, "galpipe-nothing")
    assert missing.value.status == 404
    kube.errors["create_token_review"] = KubeError(503, "unavailable")
    with pytest.raises(KubeError):
        kube.create_token_review(token_review_body("alice-token"))


def test_list_filters_by_label_selector(kube: FakeKube) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "galpipe-fetch-abc",
            "labels": {
                "app.kubernetes.io/instance": "galpipe",
                "app.kubernetes.io/component": "fetch",
            },
        },
        "spec": {"containers": [{"name": "fetch", "image": "galpipe:1"}]},
    }
    kube.add(pod)
    selector = "app.kubernetes.io/instance=galpipe,app.kubernetes.io/component=fetch"
    assert [p["metadata"]["name"] for p in kube.list("v1", "Pod", NAMESPACE, selector)] == [
        "galpipe-fetch-abc"
    ]
    assert kube.list("v1", "Pod", NAMESPACE, "app.kubernetes.io/component=radon") == []


def test_apply_merge_patch_follows_rfc_7386() -> None:
    target = {"a": {"b": 1, "c": 2}, "l": [1, 2]}
    assert apply_merge_patch(target, {"a": {"b": None, "d": 3}, "l": [3]}) == {
        "a": {"c": 2, "d": 3},
        "l": [3],
    }
    assert target == {"a": {"b": 1, "c": 2}, "l": [1, 2]}
