"""The production Kubernetes client against a local HTTP server playing the API server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from galpipe.control import kube as kube_module
from galpipe.control.kube import (
    HTTPKubeClient,
    Identity,
    KubeError,
    namespaced_path,
    production_kube_client,
    subject_access_review_body,
    token_review_body,
)
from galpipe.errors import ConfigurationError


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: object


@dataclass
class FakeAPIServer:
    """Answers each request with the next scripted (status, body), else 200 and the echo."""

    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    script: list[tuple[int, object]] = field(default_factory=list)


@pytest.fixture
def api_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAPIServer]:
    state = FakeAPIServer()
    # No waiting between retries in these tests.
    monkeypatch.setattr(kube_module, "RETRY_BACKOFF_FACTOR", 0.0)

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            state.seen.append(Seen(self.command, self.path, dict(self.headers.items()), body))
            status, answer = state.script.pop(0) if state.script else (200, body or {})
            data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def do_PATCH(self) -> None:
            self._answer()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def service_account(tmp_path: Path) -> Path:
    (tmp_path / "token").write_text("first-token\n")
    (tmp_path / "ca.crt").write_text("not used over http\n")
    return tmp_path


def _client(api_server: FakeAPIServer, service_account: Path) -> HTTPKubeClient:
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api_server.port)}
    return production_kube_client(
        environ=env,
        service_account_dir=service_account,
        scheme="http",
        verify=False,
    )


def test_reviews_are_posted_with_the_bearer_token_re_read_each_time(
    api_server: FakeAPIServer, service_account: Path
) -> None:
    client = _client(api_server, service_account)
    client.create_token_review(token_review_body("someone-elses-token"))
    (service_account / "token").write_text("rotated-token\n")
    body = subject_access_review_body(Identity("alice"), "pause", "galpipe")
    assert client.create_subject_access_review(body) == body
    first, second = api_server.seen
    assert (first.method, first.path) == ("POST", "/apis/authentication.k8s.io/v1/tokenreviews")
    assert first.headers["Authorization"] == "Bearer first-token"
    assert first.body == token_review_body("someone-elses-token")
    assert second.path == "/apis/authorization.k8s.io/v1/subjectaccessreviews"
    assert second.headers["Authorization"] == "Bearer rotated-token"


def test_object_paths_and_merge_patch_content_type(
    api_server: FakeAPIServer, service_account: Path
) -> None:
    client = _client(api_server, service_account)
    api_server.script = [
        (200, {"kind": "Deployment"}),
        (200, {"items": [{"metadata": {"name": "p"}}]}),
        (200, {"metadata": {"name": "galpipe-fetch"}}),
        (201, {"metadata": {"name": "e1"}}),
    ]
    client.get("apps/v1", "Deployment", "galpipe", "galpipe-fetch")
    pods = client.list("v1", "Pod", "galpipe", "app.kubernetes.io/component=fetch")
    client.patch("keda.sh/v1alpha1", "ScaledObject", "galpipe", "galpipe-fetch", {"a": 1})
    client.create_event("galpipe", {"kind": "Event"})
    assert pods == [{"metadata": {"name": "p"}, "apiVersion": "v1", "kind": "Pod"}]
    assert [(s.method, s.path) for s in api_server.seen] == [
        ("GET", "/apis/apps/v1/namespaces/galpipe/deployments/galpipe-fetch"),
        ("GET", "/api/v1/namespaces/galpipe/pods?labelSelector=" + SELECTOR_QUOTED),
        ("PATCH", "/apis/keda.sh/v1alpha1/namespaces/galpipe/scaledobjects/galpipe-fetch"),
        ("POST", "/apis/events.k8s.io/v1/namespaces/galpipe/events"),
    ]
    assert api_server.seen[2].headers["Content-Type"] == "application/merge-patch+json"


SELECTOR_QUOTED = "app.kubernetes.io%2Fcomponent%3Dfetch"


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_transient_statuses_are_retried(
    api_server: FakeAPIServer, service_account: Path, status: int
) -> None:
    client = _client(api_server, service_account)
    api_server.script = [(status, {"message": "busy"}), (status, {}), (200, {"ok": True})]
    assert client.get("apps/v1", "Deployment", "galpipe", "x") == {"ok": True}
    assert len(api_server.seen) == 3


def test_retries_are_bounded(api_server: FakeAPIServer, service_account: Path) -> None:
    client = _client(api_server, service_account)
    api_server.script = [(503, {"message": "down"})] * 10
    with pytest.raises(KubeError) as raised:
        client.patch("apps/v1", "Deployment", "galpipe", "x", {})
    assert raised.value.status == 503
    assert len(api_server.seen) == 1 + kube_module.MAX_RETRIES


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 500])
def test_other_errors_raise_at_once_with_the_status_message(
    api_server: FakeAPIServer, service_account: Path, status: int
) -> None:
    client = _client(api_server, service_account)
    api_server.script = [(status, {"kind": "Status", "message": "deployments.apps is forbidden"})]
    with pytest.raises(KubeError, match="forbidden") as raised:
        client.get("apps/v1", "Deployment", "galpipe", "x")
    assert raised.value.status == status
    assert len(api_server.seen) == 1
    assert "first-token" not in str(raised.value)


def test_unreachable_server_is_a_kube_error_with_status_zero(
    service_account: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kube_module, "RETRY_BACKOFF_FACTOR", 0.0)
    client = HTTPKubeClient(
        "http://127.0.0.1:9", service_account / "token", verify=False
    )  # the discard port: nothing listens
    with pytest.raises(KubeError) as raised:
        client.get("apps/v1", "Deployment", "galpipe", "x")
    assert raised.value.status == 0


def test_outside_a_pod_the_factory_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="KUBERNETES_SERVICE_HOST"):
        production_kube_client(environ={}, service_account_dir=tmp_path)
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(ConfigurationError, match="token"):
        production_kube_client(environ=env, service_account_dir=tmp_path)


def test_in_cluster_defaults_are_https_with_the_mounted_ca(service_account: Path) -> None:
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    client = production_kube_client(environ=env, service_account_dir=service_account)
    assert client.base_url == "https://[fd00::1]:443"
    assert client.verify == str(service_account / "ca.crt")


def test_paths_of_kinds() -> None:
    assert namespaced_path("helm.toolkit.fluxcd.io/v2", "HelmRelease", "ns", "r") == (
        "/apis/helm.toolkit.fluxcd.io/v2/namespaces/ns/helmreleases/r"
    )
    assert namespaced_path("networking.k8s.io/v1", "NetworkPolicy", "ns") == (
        "/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies"
    )
