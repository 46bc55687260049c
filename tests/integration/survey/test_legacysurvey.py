"""The cutout client against a real HTTP server on 127.0.0.1 that gives canned answers.

The server is a stdlib ``ThreadingHTTPServer``; the first path segment picks the behaviour
(``http://127.0.0.1:PORT/<scenario>`` is the client's base URL, so the request path is
``/<scenario>/viewer/fits-cutout``). It records every request it receives, which is how the
tests see that the client sends one request per fetch (no hidden retries).
"""

from __future__ import annotations

import email.utils
import gzip
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from galpipe.survey.legacysurvey import (
    CutoutRequest,
    FetchResult,
    LegacySurveyClient,
    NoCoverage,
    Permanent,
    Retryable,
    Success,
    make_session,
)
from tests.unit.survey.test_legacysurvey import make_cutout_fits

RA, DEC = 210.80225, 54.34894
TIMEOUT_S = 0.5
HANG_S = 5.0


@dataclass
class Seen:
    scenario: str
    query: dict[str, list[str]]


@dataclass
class CannedServer:
    base: str
    seen: list[Seen] = field(default_factory=list)

    def count(self, scenario: str) -> int:
        return sum(1 for s in self.seen if s.scenario == scenario)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    seen: list[Seen]
    release: threading.Event


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        scenario = url.path.split("/")[1]
        query = parse_qs(url.query)
        self.server.seen.append(Seen(scenario, query))
        getattr(self, "_" + scenario.replace("-", "_"))(query)

    # --- helpers

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    @staticmethod
    def _fits(query: dict[str, list[str]], blank: str = "") -> bytes:
        return make_cutout_fits(
            float(query["ra"][0]),
            float(query["dec"][0]),
            bands=query["bands"][0],
            size=int(query["size"][0]),
            pixscale=float(query["pixscale"][0]),
            blank=blank,
        )

    # --- scenarios

    def _fits_ok(self, query: dict[str, list[str]]) -> None:
        self._send(200, self._fits(query), {"Content-Type": "image/fits"})

    def _north(self, query: dict[str, list[str]]) -> None:
        self._send(200, self._fits(query, blank="i"), {"Content-Type": "image/fits"})

    def _blank(self, query: dict[str, list[str]]) -> None:
        self._send(200, self._fits(query, blank="griz"), {"Content-Type": "image/fits"})

    def _gzip(self, query: dict[str, list[str]]) -> None:
        body = gzip.compress(self._fits(query))
        self._send(200, body, {"Content-Type": "image/fits", "Content-Encoding": "gzip"})

    def _throttle(self, query: dict[str, list[str]]) -> None:
        self._send(429, b"Too Many Requests", {"Retry-After": "7"})

    def _throttle_date(self, query: dict[str, list[str]]) -> None:
        when = email.utils.formatdate(time.time() + 120, usegmt=True)
        self._send(429, b"", {"Retry-After": when})

    def _unavailable(self, query: dict[str, list[str]]) -> None:
        self._send(503, b"<h1>Service Unavailable</h1>", {"Retry-After": "30"})

    def _error500(self, query: dict[str, list[str]]) -> None:
        self._send(500, b"<h1>Server Error (500)</h1>", {"Content-Type": "text/html"})

    def _notfound(self, query: dict[str, list[str]]) -> None:
        self._send(404, b"<h1>Not Found</h1>", {"Content-Type": "text/html"})

    def _nolayer(self, query: dict[str, list[str]]) -> None:
        self._send(200, b"no such layer", {"Content-Type": "text/html; charset=utf-8"})

    def _textpage(self, query: dict[str, list[str]]) -> None:
        self._send(200, b"<html>Down for maintenance</html>", {"Content-Type": "text/html"})

    def _truncated(self, query: dict[str, list[str]]) -> None:
        body = self._fits(query)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.close_connection = True  # hang up with half the announced bytes sent

    def _truncated_noclen(self, query: dict[str, list[str]]) -> None:
        body = self._fits(query)
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.close_connection = True  # no Content-Length: the body ends where the socket does

    def _hang(self, query: dict[str, list[str]]) -> None:
        self.server.release.wait(HANG_S)
        self.close_connection = True

    def _hang_body(self, query: dict[str, list[str]]) -> None:
        body = self._fits(query)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:1000])
        self.wfile.flush()
        self.server.release.wait(HANG_S)
        self.close_connection = True

    def _huge(self, query: dict[str, list[str]]) -> None:
        chunk = b"SIMPLE  =" + b" " * (65536 - 9)
        total = 40 * len(chunk)
        self.send_response(200)
        self.send_header("Content-Length", str(total))
        self.end_headers()
        try:
            for _ in range(40):
                self.wfile.write(chunk)
        except OSError:
            pass  # the client stops reading once the body is too large
        self.close_connection = True

    def _slow_ok(self, query: dict[str, list[str]]) -> None:
        time.sleep(0.05)
        self._fits_ok(query)


@pytest.fixture(scope="module")
def server() -> Iterator[CannedServer]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.seen = []
    httpd.release = threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    host, port = httpd.server_address[:2]
    canned = CannedServer(f"http://{host}:{port}")
    canned.seen = httpd.seen
    try:
        yield canned
    finally:
        httpd.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def client_for(base: str, read_timeout: float = TIMEOUT_S, **kwargs: object) -> LegacySurveyClient:
    return LegacySurveyClient(
        CutoutRequest(base_url=base),
        session_factory=lambda: make_session(trust_env=False),
        connect_timeout=TIMEOUT_S,
        read_timeout=read_timeout,
        **kwargs,  # type: ignore[arg-type]
    )


def fetch(server: CannedServer, scenario: str, **kwargs: object) -> FetchResult:
    with client_for(f"{server.base}/{scenario}", **kwargs) as client:
        return client.fetch(RA, DEC)


# ---------------------------------------------------------------------------------------------


def test_fits_answer_is_success_with_the_bytes_as_received(server: CannedServer) -> None:
    result = fetch(server, "fits-ok")
    assert isinstance(result, Success)
    assert result.missing_bands == ()
    assert result.cutout.data.shape == (4, 40, 40)
    expected = make_cutout_fits(RA, DEC)
    assert result.raw_bytes == expected
    query = next(s.query for s in reversed(server.seen) if s.scenario == "fits-ok")
    assert query == {
        "ra": [repr(RA)],
        "dec": [repr(DEC)],
        "layer": ["ls-dr10"],
        "pixscale": ["0.262"],
        "bands": ["griz"],
        "size": ["40"],
    }


def test_blank_i_plane_over_http_is_success_missing_i(server: CannedServer) -> None:
    result = fetch(server, "north")
    assert isinstance(result, Success)
    assert result.missing_bands == ("i",)


def test_all_blank_over_http_is_no_coverage(server: CannedServer) -> None:
    assert isinstance(fetch(server, "blank"), NoCoverage)


def test_gzip_content_encoding_is_decoded(server: CannedServer) -> None:
    result = fetch(server, "gzip")
    assert isinstance(result, Success)
    assert result.raw_bytes == make_cutout_fits(RA, DEC)


@pytest.mark.parametrize(
    ("scenario", "kind", "retry_after", "words"),
    [
        ("throttle", "throttled", 7.0, "HTTP 429"),
        ("unavailable", "server_error", 30.0, "HTTP 503"),
        ("error500", "http_500", None, "HTTP 500"),
        ("textpage", "not_fits", None, "Down for maintenance"),
    ],
)
def test_retryable_statuses_are_sent_once_and_classified(
    server: CannedServer, scenario: str, kind: str, retry_after: float | None, words: str
) -> None:
    before = server.count(scenario)
    result = fetch(server, scenario)
    assert isinstance(result, Retryable)
    assert (result.kind, result.retry_after_s) == (kind, retry_after)
    assert words in result.reason
    assert server.count(scenario) == before + 1  # no hidden retry inside requests/urllib3


def test_retry_after_http_date(server: CannedServer) -> None:
    result = fetch(server, "throttle-date")
    assert isinstance(result, Retryable)
    assert result.retry_after_s is not None
    assert 115.0 <= result.retry_after_s <= 120.0


@pytest.mark.parametrize(
    ("scenario", "kind"), [("notfound", "http_4xx"), ("nolayer", "unknown_layer")]
)
def test_permanent_answers(server: CannedServer, scenario: str, kind: str) -> None:
    result = fetch(server, scenario)
    assert isinstance(result, Permanent)
    assert result.kind == kind


@pytest.mark.parametrize("scenario", ["truncated", "truncated-noclen"])
def test_truncated_body_is_retryable(server: CannedServer, scenario: str) -> None:
    # The hang-up, not a timeout, is under test: on a loaded machine the server's thread may
    # close the socket later than the short timeout of the other tests.
    result = fetch(server, scenario, read_timeout=10.0)
    assert isinstance(result, Retryable)
    assert result.kind == "truncated"
    assert "truncated" in result.reason


@pytest.mark.parametrize("scenario", ["hang", "hang-body"])
def test_read_timeout_is_retryable_and_quick(server: CannedServer, scenario: str) -> None:
    started = time.monotonic()
    result = fetch(server, scenario)
    elapsed = time.monotonic() - started
    assert isinstance(result, Retryable)
    assert result.kind == "timeout"
    assert "read timeout" in result.reason
    assert "0.5 s" in result.reason
    assert elapsed < 3 * TIMEOUT_S


def test_oversized_body_is_permanent_and_not_read_to_the_end() -> None:
    # A private server: the huge answer must not tie up the shared one.
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.seen, httpd.release = [], threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = httpd.server_address[:2]
        client = LegacySurveyClient(
            CutoutRequest(base_url=f"http://{host}:{port}/huge", size=4),
            session_factory=lambda: make_session(trust_env=False),
            connect_timeout=TIMEOUT_S,
            read_timeout=TIMEOUT_S,
        )
        with client:
            result = client.fetch(RA, DEC)
        assert isinstance(result, Permanent)
        assert result.kind == "too_large"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_connection_refused_is_retryable_connection_error() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    calls: list[tuple[str, float, int]] = []
    client = client_for(f"http://127.0.0.1:{port}", observer=lambda *args: calls.append(args))
    with client:
        result = client.fetch(RA, DEC)
    assert isinstance(result, Retryable)
    assert result.kind == "connection"
    assert "refused" in result.reason.lower()
    assert [c[0] for c in calls] == ["connection"]


def test_observer_sees_status_class_latency_and_bytes(server: CannedServer) -> None:
    calls: list[tuple[str, float, int]] = []

    def observe(label: str, latency_s: float, nbytes: int) -> None:
        calls.append((label, latency_s, nbytes))

    expected_bytes = len(make_cutout_fits(RA, DEC))
    for scenario in ["slow-ok", "throttle", "error500", "hang"]:
        fetch(server, scenario, observer=observe)
    assert [c[0] for c in calls] == ["2xx", "429", "5xx", "timeout"]
    assert calls[0][2] == expected_bytes
    assert calls[0][1] >= 0.05
    assert calls[1][2] == len(b"Too Many Requests")
    assert calls[3][1] >= TIMEOUT_S


def test_observer_errors_do_not_break_fetching(server: CannedServer) -> None:
    def broken(label: str, latency_s: float, nbytes: int) -> None:
        raise RuntimeError("metrics backend down")

    assert isinstance(fetch(server, "fits-ok", observer=broken), Success)


def test_threads_share_a_client_with_one_session_each(server: CannedServer) -> None:
    made: list[requests.Session] = []
    lock = threading.Lock()

    def factory() -> requests.Session:
        session = make_session(trust_env=False)
        with lock:
            made.append(session)
        return session

    client = LegacySurveyClient(
        CutoutRequest(base_url=f"{server.base}/slow-ok"),
        session_factory=factory,
        connect_timeout=TIMEOUT_S,
        read_timeout=TIMEOUT_S,
    )
    with client, ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda i: client.fetch(RA, DEC + i * 1e-3), range(16)))
    assert all(isinstance(r, Success) for r in results)
    assert 1 <= len(made) <= 4
    assert len({id(s) for s in made}) == len(made)
