"""The control API over HTTP: authentication by TokenReview, authorisation by
SubjectAccessReview (through the recording fake), console sessions, CSRF and login throttling.

The actions are a recording stand-in here: what matters is who reaches them, with which
identity, and who does not.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.cookies import SimpleCookie
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from galpipe.control.app import API_PREFIX, create_app
from galpipe.control.auth import Authenticator, Authorizer
from galpipe.control.kube import Identity
from galpipe.control.sessions import CSRF_HEADER, SESSION_COOKIE, LoginThrottle, SessionSigner
from galpipe.errors import InputError
from tests.kube_fake import FakeKube, Request

NAMESPACE = "galpipe"
HOST = "control.example"
ORIGIN = f"https://{HOST}"
OPERATOR_TOKEN = "op-" + secrets.token_urlsafe(24)
VIEWER_TOKEN = "view-" + secrets.token_urlsafe(24)
OPERATOR = Identity("oscar", ("galpipe-operators", "system:authenticated"), uid="u-oscar")
VIEWER = Identity("vera", ("galpipe-viewers", "system:authenticated"), uid="u-vera")
SESSION_KEY = secrets.token_urlsafe(32)


@dataclass(frozen=True)
class FakeResult:
    action: str
    pipeline: str
    user: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "pipeline": self.pipeline, "user": self.user, **self.detail}


@dataclass
class FakeActions:
    """Records each call with the identity it was given."""

    calls: list[tuple[str, Identity, str, dict[str, Any]]] = field(default_factory=list)

    def _do(self, action: str, identity: Identity, pipeline: str, **kw: Any) -> FakeResult:
        if pipeline not in ("fetch", "radon"):
            raise InputError(f"pipeline {pipeline!r}: unknown (fetch, radon)")
        self.calls.append((action, identity, pipeline, kw))
        return FakeResult(action, pipeline, identity.user, {"reason": kw.get("reason")})

    def overview(self) -> dict[str, Any]:
        return {"pipelines": [{"name": "fetch"}, {"name": "radon"}], "overrides": []}

    def pause(self, identity: Identity, pipeline: str, reason: str) -> FakeResult:
        return self._do("pause", identity, pipeline, reason=reason)

    def resume(self, identity: Identity, pipeline: str, reason: str) -> FakeResult:
        return self._do("resume", identity, pipeline, reason=reason)

    def hold(self, identity: Identity, pipeline: str, replicas: int, reason: str) -> FakeResult:
        return self._do("hold", identity, pipeline, replicas=replicas, reason=reason)

    def release_hold(self, identity: Identity, pipeline: str, reason: str) -> FakeResult:
        return self._do("release_hold", identity, pipeline, reason=reason)

    def restart(self, identity: Identity, pipeline: str, reason: str) -> FakeResult:
        return self._do("restart", identity, pipeline, reason=reason)

    def pin(self, identity: Identity, pipeline: str, image: str, reason: str) -> FakeResult:
        return self._do("pin", identity, pipeline, image=image, reason=reason)

    def unpin(self, identity: Identity, pipeline: str, reason: str) -> FakeResult:
        return self._do("unpin", identity, pipeline, reason=reason)

    def retry(self, identity: Identity, pipeline: str, reason: str, **kw: Any) -> FakeResult:
        return self._do("retry", identity, pipeline, reason=reason, **kw)

    def requeue(self, identity: Identity, pipeline: str, reason: str, **kw: Any) -> FakeResult:
        return self._do("requeue", identity, pipeline, reason=reason, **kw)

    def audit(self, **filters: Any) -> list[dict[str, Any]]:
        self.calls.append(("audit", Identity(""), "", filters))
        return [{"user": "oscar", "action": "pause"}]


@dataclass
class Stack:
    client: TestClient
    kube: FakeKube
    actions: FakeActions
    clock: list[float]


@pytest.fixture
def stack(caplog: pytest.LogCaptureFixture) -> Iterator[Stack]:
    caplog.set_level(logging.DEBUG)
    kube = FakeKube(
        tokens={OPERATOR_TOKEN: OPERATOR, VIEWER_TOKEN: VIEWER},
        grants={"galpipe-operators": ["*"], "galpipe-viewers": ["get", "list"]},
        namespace=NAMESPACE,
    )
    clock = [1000.0]
    actions = FakeActions()
    app = create_app(
        actions,
        Authenticator(kube, ttl_s=10, clock=lambda: clock[0]),
        Authorizer(kube, NAMESPACE, ttl_s=10, clock=lambda: clock[0]),
        SessionSigner(SESSION_KEY),
        login_throttle=LoginThrottle(burst=3, refill_per_s=0.01, clock=lambda: clock[0]),
    )
    with TestClient(app, base_url=ORIGIN) as client:
        yield Stack(client, kube, actions, clock)
    # Whatever a test did, no token reached a log record.
    for token in (OPERATOR_TOKEN, VIEWER_TOKEN):
        assert token not in caplog.text
    assert kube.invalid_bodies == []


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def verb_of(review: Request) -> str:
    assert review.body is not None
    verb: str = review.body["spec"]["resourceAttributes"]["verb"]
    return verb


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def login(stack: Stack, token: str) -> dict[str, Any]:
    response = stack.client.post(
        f"{API_PREFIX}/session", json={"token": token}, headers={"Origin": ORIGIN}
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


# -- authentication -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/overview", "/audit", "/whoami"], ids=["overview", "audit", "whoami"]
)
def test_anonymous_requests_are_401(stack: Stack, path: str) -> None:
    response = stack.client.get(API_PREFIX + path)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert stack.kube.requests == []


def test_anonymous_pause_is_401_and_reaches_nothing(stack: Stack) -> None:
    response = stack.client.post(f"{API_PREFIX}/pipelines/fetch/pause", json={"reason": "x"})
    assert response.status_code == 401
    assert stack.actions.calls == []


def test_a_token_the_review_rejects_is_401(stack: Stack) -> None:
    bad = "forged-" + secrets.token_urlsafe(16)
    response = stack.client.get(f"{API_PREFIX}/overview", headers=bearer(bad))
    assert response.status_code == 401
    assert bad not in response.text
    (review,) = stack.kube.token_reviews
    assert review.body is not None
    assert review.body["spec"]["token"] == bad
    assert stack.kube.access_reviews == []


def test_not_a_bearer_header_is_401(stack: Stack) -> None:
    response = stack.client.get(
        f"{API_PREFIX}/overview", headers={"Authorization": f"Basic {OPERATOR_TOKEN}"}
    )
    assert response.status_code == 401
    assert stack.kube.requests == []


def test_an_api_server_outage_fails_closed_with_503(stack: Stack) -> None:
    from galpipe.control.kube import KubeError

    stack.kube.errors["create_token_review"] = KubeError(503, "unavailable")
    response = stack.client.get(f"{API_PREFIX}/overview", headers=bearer(OPERATOR_TOKEN))
    assert response.status_code == 503
    assert stack.actions.calls == []


# -- authorisation ------------------------------------------------------------------------------


def test_a_viewer_reads_the_overview_and_is_refused_a_pause(stack: Stack) -> None:
    overview = stack.client.get(f"{API_PREFIX}/overview", headers=bearer(VIEWER_TOKEN))
    assert overview.status_code == 200
    assert [p["name"] for p in overview.json()["pipelines"]] == ["fetch", "radon"]
    denied_before = sample(
        "galpipe_control_actions_total",
        {"action": "pause", "pipeline": "fetch", "result": "denied"},
    )
    pause = stack.client.post(
        f"{API_PREFIX}/pipelines/fetch/pause",
        json={"reason": "trying"},
        headers=bearer(VIEWER_TOKEN),
    )
    assert pause.status_code == 403
    assert "vera may not pause pipelines.galpipe.io" in pause.json()["detail"]
    assert stack.actions.calls == []
    verbs = [verb_of(r) for r in stack.kube.access_reviews]
    assert verbs == ["get", "pause"]
    assert {r.namespace for r in stack.kube.access_reviews} == {NAMESPACE}
    assert (
        sample(
            "galpipe_control_actions_total",
            {"action": "pause", "pipeline": "fetch", "result": "denied"},
        )
        == denied_before + 1
    )


def test_an_operator_pause_reaches_the_actions_with_the_reviewed_identity(stack: Stack) -> None:
    response = stack.client.post(
        f"{API_PREFIX}/pipelines/fetch/pause",
        json={"reason": "survey maintenance"},
        headers=bearer(OPERATOR_TOKEN),
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "action": "pause",
        "pipeline": "fetch",
        "user": "oscar",
        "reason": "survey maintenance",
    }
    ((action, identity, pipeline, kw),) = stack.actions.calls
    assert (action, pipeline, kw) == ("pause", "fetch", {"reason": "survey maintenance"})
    assert identity == OPERATOR
    (review,) = stack.kube.access_reviews
    assert review.body is not None
    assert review.body["spec"]["user"] == "oscar"
    assert review.body["spec"]["groups"] == ["galpipe-operators", "system:authenticated"]
    assert review.body["spec"]["resourceAttributes"]["verb"] == "pause"


@pytest.mark.parametrize(
    ("path", "body", "verb", "action"),
    [
        ("resume", {}, "pause", "resume"),
        ("hold", {"replicas": 2}, "scale", "hold"),
        ("release-hold", {}, "scale", "release_hold"),
        ("restart", {}, "restart", "restart"),
        ("pin", {"image": "galpipe:141-abc"}, "rollback", "pin"),
        ("unpin", {}, "rollback", "unpin"),
        ("retry", {"error_contains": "timeout", "dry_run": False}, "retry", "retry"),
        ("requeue", {"algo_version": "2.0"}, "requeue", "requeue"),
    ],
)
def test_each_action_is_authorised_by_its_verb(
    stack: Stack, path: str, body: dict[str, Any], verb: str, action: str
) -> None:
    pipeline = "radon"
    response = stack.client.post(
        f"{API_PREFIX}/pipelines/{pipeline}/{path}",
        json={"reason": "because", **body},
        headers=bearer(OPERATOR_TOKEN),
    )
    assert response.status_code == 200, response.text
    (review,) = stack.kube.access_reviews
    assert verb_of(review) == verb
    ((called, _, _, kw),) = stack.actions.calls
    assert called == action
    assert kw["reason"] == "because"
    denied = stack.client.post(
        f"{API_PREFIX}/pipelines/{pipeline}/{path}",
        json={"reason": "because", **body},
        headers=bearer(VIEWER_TOKEN),
    )
    assert denied.status_code == 403
    assert len(stack.actions.calls) == 1


def test_retry_and_requeue_default_to_a_dry_run(stack: Stack) -> None:
    for path, extra in (("retry", {}), ("requeue", {"algo_version": "2.0"})):
        response = stack.client.post(
            f"{API_PREFIX}/pipelines/radon/{path}",
            json={"reason": "count first", **extra},
            headers=bearer(OPERATOR_TOKEN),
        )
        assert response.status_code == 200
    assert [kw["dry_run"] for _, _, _, kw in stack.actions.calls] == [True, True]


@pytest.mark.parametrize(
    "body", [{}, {"reason": ""}, {"reason": "ok", "extra": 1}], ids=["none", "empty", "unknown"]
)
def test_a_reason_is_required_and_unknown_fields_are_refused(
    stack: Stack, body: dict[str, Any]
) -> None:
    response = stack.client.post(
        f"{API_PREFIX}/pipelines/fetch/pause", json=body, headers=bearer(OPERATOR_TOKEN)
    )
    assert response.status_code == 422
    assert stack.actions.calls == []


def test_an_unknown_pipeline_is_400_after_authorisation(stack: Stack) -> None:
    response = stack.client.post(
        f"{API_PREFIX}/pipelines/nope/pause", json={"reason": "x"}, headers=bearer(OPERATOR_TOKEN)
    )
    assert response.status_code == 400
    assert "nope" in response.json()["detail"]


def test_audit_passes_its_filters(stack: Stack) -> None:
    response = stack.client.get(
        f"{API_PREFIX}/audit",
        params={"user": "oscar", "pipeline": "fetch", "since": "2030-01-01T00:00:00Z", "limit": 5},
        headers=bearer(VIEWER_TOKEN),
    )
    assert response.status_code == 200
    ((_, _, _, filters),) = stack.actions.calls
    assert filters["user"] == "oscar"
    assert filters["pipeline"] == "fetch"
    assert filters["limit"] == 5
    assert isinstance(filters["since"], datetime)
    (review,) = stack.kube.access_reviews
    assert verb_of(review) == "list"


# -- review caching -----------------------------------------------------------------------------


def test_identical_requests_within_the_ttl_reuse_both_reviews(stack: Stack) -> None:
    cached_before = sample(
        "galpipe_control_reviews_total",
        {"review": "access", "outcome": "allowed", "cached": "true"},
    )
    for _ in range(3):
        response = stack.client.get(f"{API_PREFIX}/overview", headers=bearer(OPERATOR_TOKEN))
        assert response.status_code == 200
    assert len(stack.kube.token_reviews) == 1
    assert len(stack.kube.access_reviews) == 1
    assert (
        sample(
            "galpipe_control_reviews_total",
            {"review": "access", "outcome": "allowed", "cached": "true"},
        )
        == cached_before + 2
    )
    stack.clock[0] += 11  # past the TTL: the cluster is asked again
    stack.client.get(f"{API_PREFIX}/overview", headers=bearer(OPERATOR_TOKEN))
    assert len(stack.kube.token_reviews) == 2
    assert len(stack.kube.access_reviews) == 2


def test_a_different_verb_is_a_new_review(stack: Stack) -> None:
    stack.client.get(f"{API_PREFIX}/overview", headers=bearer(OPERATOR_TOKEN))
    stack.client.get(f"{API_PREFIX}/audit", headers=bearer(OPERATOR_TOKEN))
    assert len(stack.kube.token_reviews) == 1
    assert len(stack.kube.access_reviews) == 2


# -- console sessions ---------------------------------------------------------------------------


def test_login_sets_a_strict_http_only_secure_cookie_without_the_token(stack: Stack) -> None:
    response = stack.client.post(
        f"{API_PREFIX}/session", json={"token": OPERATOR_TOKEN}, headers={"Origin": ORIGIN}
    )
    assert response.status_code == 200
    header = response.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")}
    assert {"httponly", "secure", "path", "samesite"} <= attributes
    assert "samesite=strict" in header.lower()
    assert "path=/" in header.lower()
    assert OPERATOR_TOKEN not in header
    assert OPERATOR_TOKEN not in response.text
    cookie = SimpleCookie()
    cookie.load(header)
    assert SESSION_COOKIE in cookie
    answer = response.json()
    assert answer["user"] == "oscar"
    assert answer["csrf_token"]
    whoami = stack.client.get(f"{API_PREFIX}/whoami")
    assert whoami.json()["via"] == "session"
    assert whoami.json()["csrf_token"] == answer["csrf_token"]


def test_a_session_reads_without_csrf_and_changes_with_it(stack: Stack) -> None:
    csrf = login(stack, OPERATOR_TOKEN)["csrf_token"]
    assert stack.client.get(f"{API_PREFIX}/overview").status_code == 200
    response = stack.client.post(
        f"{API_PREFIX}/pipelines/fetch/pause",
        json={"reason": "from the console"},
        headers={CSRF_HEADER: csrf, "Origin": ORIGIN},
    )
    assert response.status_code == 200, response.text
    ((_, identity, _, _),) = stack.actions.calls
    assert identity == OPERATOR
    # After login, only SubjectAccessReviews: the session stands in for the token.
    assert len(stack.kube.token_reviews) == 1


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": ORIGIN},
        {"Origin": ORIGIN, CSRF_HEADER: "not-the-token"},
        {CSRF_HEADER: "REPLACED"},
    ],
    ids=["no-csrf-header", "wrong-csrf-header", "no-origin"],
)
def test_a_cookie_post_without_the_right_csrf_proof_is_403(
    stack: Stack, headers: dict[str, str]
) -> None:
    csrf = login(stack, OPERATOR_TOKEN)["csrf_token"]
    headers = {k: (csrf if v == "REPLACED" else v) for k, v in headers.items()}
    response = stack.client.post(
        f"{API_PREFIX}/pipelines/fetch/pause", json={"reason": "x"}, headers=headers
    )
    assert response.status_code == 403
    assert stack.actions.calls == []


def test_a_cross_site_origin_is_403_even_with_the_csrf_token(stack: Stack) -> None:
    csrf = login(stack, OPERATOR_TOKEN)["csrf_token"]
    for headers in (
        {"Origin": "https://evil.example", CSRF_HEADER: csrf},
        {"Referer": "https://evil.example/page", CSRF_HEADER: csrf},
    ):
        response = stack.client.post(
            f"{API_PREFIX}/pipelines/fetch/pause", json={"reason": "x"}, headers=headers
        )
        assert response.status_code == 403
        assert "cross-site" in response.json()["detail"]
    assert stack.actions.calls == []


def test_a_cross_site_login_is_403(stack: Stack) -> None:
    response = stack.client.post(
        f"{API_PREFIX}/session",
        json={"token": OPERATOR_TOKEN},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    assert "set-cookie" not in response.headers
    assert stack.kube.token_reviews == []


def test_bearer_calls_need_no_csrf(stack: Stack) -> None:
    for headers in ({}, {"Origin": ORIGIN}):  # a script; the console's own page
        response = stack.client.post(
            f"{API_PREFIX}/pipelines/fetch/resume",
            json={"reason": "script"},
            headers={**bearer(OPERATOR_TOKEN), **headers},
        )
        assert response.status_code == 200
    assert len(stack.actions.calls) == 2


def test_a_cross_site_bearer_change_is_403(stack: Stack) -> None:
    # Behind an OIDC proxy the proxy adds the bearer to every request the browser sends it,
    # a post from another site's page included.
    for headers in ({"Origin": "https://evil.example"}, {"Referer": "https://evil.example/"}):
        response = stack.client.post(
            f"{API_PREFIX}/pipelines/fetch/pause",
            json={"reason": "x"},
            headers={**bearer(OPERATOR_TOKEN), **headers},
        )
        assert response.status_code == 403
        assert "cross-site" in response.json()["detail"]
    assert stack.actions.calls == []
    assert stack.kube.token_reviews == []


def test_a_forged_or_expired_cookie_is_401(stack: Stack) -> None:
    other = SessionSigner("another key that is long enough to sign cookies")
    forged, _ = other.issue(OPERATOR)
    stack.client.cookies.set(SESSION_COOKIE, forged, domain=HOST)
    assert stack.client.get(f"{API_PREFIX}/whoami").status_code == 401
    expired_signer = SessionSigner(SESSION_KEY, lifetime_s=-1)
    expired, _ = expired_signer.issue(OPERATOR)
    stack.client.cookies.set(SESSION_COOKIE, expired, domain=HOST)
    assert stack.client.get(f"{API_PREFIX}/whoami").status_code == 401


def test_logout_clears_the_cookie(stack: Stack) -> None:
    csrf = login(stack, VIEWER_TOKEN)["csrf_token"]
    response = stack.client.delete(
        f"{API_PREFIX}/session", headers={CSRF_HEADER: csrf, "Origin": ORIGIN}
    )
    assert response.status_code == 204
    assert SESSION_COOKIE in response.headers["set-cookie"]
    assert stack.client.get(f"{API_PREFIX}/whoami").status_code == 401


def test_repeated_failed_logins_are_throttled_and_counted(stack: Stack) -> None:
    before = sample("galpipe_control_login_failures_total")
    statuses = []
    for attempt in range(5):
        response = stack.client.post(
            f"{API_PREFIX}/session",
            json={"token": f"guess-{attempt}"},
            headers={"Origin": ORIGIN},
        )
        statuses.append(response.status_code)
    assert statuses == [401, 401, 401, 429, 429]
    assert int(response.headers["Retry-After"]) >= 1
    assert sample("galpipe_control_login_failures_total") == before + 5
    # Throttled attempts are refused before any review: three guesses reached the cluster.
    assert len(stack.kube.token_reviews) == 3
    # Even the right token waits until the bucket refills.
    response = stack.client.post(
        f"{API_PREFIX}/session", json={"token": OPERATOR_TOKEN}, headers={"Origin": ORIGIN}
    )
    assert response.status_code == 429
    stack.clock[0] += 200  # two tokens back at 0.01 per second
    login(stack, OPERATOR_TOKEN)


def test_a_token_in_a_malformed_login_is_not_echoed(stack: Stack) -> None:
    response = stack.client.post(
        f"{API_PREFIX}/session",
        json={"token": OPERATOR_TOKEN, "extra": OPERATOR_TOKEN},
        headers={"Origin": ORIGIN},
    )
    assert response.status_code == 422
    assert OPERATOR_TOKEN not in response.text


def test_no_token_in_any_response(stack: Stack) -> None:
    texts = []
    for token in (OPERATOR_TOKEN, VIEWER_TOKEN):
        texts.append(stack.client.get(f"{API_PREFIX}/whoami", headers=bearer(token)).text)
        texts.append(
            stack.client.post(
                f"{API_PREFIX}/pipelines/fetch/pause",
                json={"reason": "x"},
                headers=bearer(token),
            ).text
        )
        texts.append(login(stack, token).__repr__())
    for text in texts:
        assert OPERATOR_TOKEN not in text
        assert VIEWER_TOKEN not in text


def test_openapi_is_published_with_every_endpoint(stack: Stack) -> None:
    schema = stack.client.get(f"{API_PREFIX}/openapi.json").json()
    paths = set(schema["paths"])
    for action in (
        "pause",
        "resume",
        "hold",
        "release-hold",
        "restart",
        "pin",
        "unpin",
        "retry",
        "requeue",
    ):
        assert f"{API_PREFIX}/pipelines/{{name}}/{action}" in paths
    assert {f"{API_PREFIX}/overview", f"{API_PREFIX}/audit", f"{API_PREFIX}/session"} <= paths
    pin = schema["components"]["schemas"]["PinBody"]
    assert set(pin["required"]) == {"reason", "image"}
