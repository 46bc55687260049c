"""Malformed requests at the socket to every server the project opens: the runtime's health and
metrics server, the synthetic sky and the control API. Each answers 4xx (never 5xx, never a
hang) and still answers a good request afterwards."""

from __future__ import annotations

import random
from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.conninfo import make_conninfo

from galpipe.db.connection import open_pool
from tests.conftest import TEMPLATE_DB
from tests.fuzz.generators import HTTP_TARGETS, HttpCase, http_case
from tests.fuzz.oracles import FUZZ_TOKEN, HttpServers, http_servers, server_answers, try_http

FUZZ_DB = "galpipe_fuzz_http"


@pytest.fixture(scope="module")
def servers(pg_server: object) -> Iterator[HttpServers]:
    """The three servers for the module, the control API on a database of its own."""
    admin = pg_server.get_uri()  # type: ignore[attr-defined]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {FUZZ_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {FUZZ_DB} TEMPLATE {TEMPLATE_DB}")
    pool = open_pool(make_conninfo(admin, dbname=FUZZ_DB), max_size=4)
    try:
        with http_servers(pool) as running:
            yield running
            for target in HTTP_TARGETS:
                assert server_answers(running, target), f"{target} stopped answering"
    finally:
        pool.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {FUZZ_DB} WITH (FORCE)")


def _get(path: str, **headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


HAND_MADE = [
    # http.server answered any method without a do_<METHOD> with 501 (a server error).
    HttpCase("health", "PUT", b"PUT /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    HttpCase("sky", "PATCH", b"PATCH /admin/log HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    HttpCase("health", "HEAD", b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    # A subnormal rate made the sky's limiter overflow and the handler die without an answer.
    HttpCase(
        "sky",
        "rate 1e-320",
        b"POST /admin/rate?per_second=1e-320 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ),
    # A NUL in an audit filter reached PostgreSQL and came back as a 500.
    HttpCase(
        "control",
        "NUL in an audit filter",
        _get("/api/v1/audit?user=%00", Authorization=f"Bearer {FUZZ_TOKEN}"),
    ),
    HttpCase(
        "control",
        "NUL in a reason",
        (
            "POST /api/v1/pipelines/fetch/pause HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {FUZZ_TOKEN}\r\nContent-Type: application/json\r\n"
            'Connection: close\r\nContent-Length: 20\r\n\r\n{"reason": "a\\u0000"}'
        ).encode(),
    ),
    HttpCase("health", "HTTP/0.9 request line", b"GET /\r\n\r\n"),
    HttpCase("sky", "path traversal", _get("/viewer/../../../etc/passwd")),
    HttpCase("control", "path traversal", _get("/static/..%2f..%2f..%2fsettings.py")),
    HttpCase(
        "control",
        "huge limit",
        _get("/api/v1/audit?limit=1" + "0" * 40, Authorization=f"Bearer {FUZZ_TOKEN}"),
    ),
]


@pytest.mark.parametrize("case", HAND_MADE, ids=lambda case: f"{case.target}-{case.name}")
def test_hand_made_requests(servers: HttpServers, case: HttpCase) -> None:
    verdict = try_http(case, servers)
    assert verdict.handled, f"{case.name}: {verdict.detail}"


@pytest.mark.parametrize(
    ("target", "method", "allowed"),
    [("health", "PUT", "GET"), ("sky", "PUT", "GET, POST, DELETE")],
)
def test_another_method_is_405_with_allow(
    servers: HttpServers, target: str, method: str, allowed: str
) -> None:
    import socket

    with socket.create_connection(servers.addresses[target], timeout=5) as sock:
        sock.sendall(f"{method} /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.")
    assert b" 405 " in status_line
    assert f"Allow: {allowed}".encode() in answer


@pytest.mark.parametrize("target", HTTP_TARGETS)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rng=st.randoms(use_true_random=False))
def test_generated_requests(servers: HttpServers, target: str, rng: random.Random) -> None:
    case = http_case(rng, target)
    verdict = try_http(case, servers)
    assert verdict.handled, f"{case.name}: {verdict.detail}"
