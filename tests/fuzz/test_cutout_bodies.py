"""Cutout answer bodies that are not cutouts: classified (retryable or permanent, with a reason)
before anything is stored; over HTTP, a gzip bomb is refused without inflating it."""

from __future__ import annotations

import functools
import gzip
import random
import threading
import tracemalloc
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg_pool import ConnectionPool

from galpipe.db.breaker import BreakerPolicy, CircuitBreaker
from galpipe.db.queue import Task
from galpipe.db.ratelimit import RateLimitPolicy, TokenBucket
from galpipe.pipelines.base import Done
from galpipe.pipelines.fetch import FetchPipeline
from galpipe.storage import LocalObjectStore
from galpipe.survey.cutout import CutoutFormatError, parse_cutout
from galpipe.survey.legacysurvey import CutoutRequest, LegacySurveyClient, Permanent
from tests.fuzz.generators import (
    CUTOUT_BANDS,
    CUTOUT_CENTER,
    CUTOUT_PIXSCALE,
    CUTOUT_SIZE,
    CutoutCase,
    _set_card,
    cutout_case,
    gzip_bomb,
    valid_cutout_body,
)
from tests.fuzz.oracles import judge_fetch_result, try_cutout

#: What the bomb inflates to, bytes: 256 MiB from about 256 kB of gzip.
BOMB_INFLATED = 256 << 20
#: Most memory the client may allocate while refusing the bomb, bytes.
BOMB_MEMORY_LIMIT = 32 << 20


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=20_000))
def test_random_bytes_are_never_a_cutout(body: bytes) -> None:
    verdict = try_cutout(CutoutCase("random bytes", body))
    assert verdict.handled, verdict.detail


@settings(max_examples=200, deadline=None)
@given(st.randoms(use_true_random=False))
def test_generated_bodies_are_classified(rng: random.Random) -> None:
    case = cutout_case(rng)
    verdict = try_cutout(case)
    assert verdict.handled, f"{case.name}: {verdict.detail}"


#: Bytes of the good body up to the end of its pixels: what follows is the padding to a FITS
#: block, which a server may leave out (the parser does not need it).
DATA_END = len(valid_cutout_body()) - (-(4 * len(CUTOUT_BANDS) * CUTOUT_SIZE**2) % 2880)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, DATA_END - 1))
def test_every_truncation_is_retryable(length: int) -> None:
    verdict = try_cutout(CutoutCase(f"first {length} bytes", valid_cutout_body()[:length]))
    assert verdict.handled, verdict.detail
    assert verdict.detail.startswith("Retryable"), verdict.detail


@pytest.mark.parametrize(
    ("key", "value", "problem", "named"),
    [
        ("SIMPLE", "F", "not_fits", "SIMPLE"),  # was parsed as a cutout
        ("NAXIS1", "1000000000", "truncated", "1000000000"),  # no 640 GB read or allocated
        ("NAXIS2", "-40", "not_fits", "NAXIS"),
        ("NAXIS", "1000", "not_fits", "NAXIS"),
        ("BITPIX", "16", "wrong_type", "BITPIX"),
        ("BSCALE", "0", "not_fits", "BSCALE"),
    ],
)
def test_absurd_header_values_are_named(key: str, value: str, problem: str, named: str) -> None:
    body = _set_card(valid_cutout_body(), key, value)
    with pytest.raises(CutoutFormatError) as caught:
        parse_cutout(body, bands=CUTOUT_BANDS, size=CUTOUT_SIZE)
    assert caught.value.problem == problem
    assert named in str(caught.value)


# -- over HTTP ---------------------------------------------------------------------------------


class _BodyServer(ThreadingHTTPServer):
    daemon_threads = True
    body: bytes = b""
    headers: Mapping[str, str] = MappingProxyType({})


class _BodyHandler(BaseHTTPRequestHandler):
    """Answers every GET with the server's current body and headers, as a cutout service would."""

    protocol_version = "HTTP/1.1"
    server: _BodyServer

    def do_GET(self) -> None:
        body = self.server.body
        try:
            self.send_response(200)
            self.send_header("Content-Type", "image/fits")
            self.send_header("Content-Length", str(len(body)))
            for name, value in self.server.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True  # the client stopped reading: a refused bomb

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def body_server() -> Iterator[_BodyServer]:
    server = _BodyServer(("127.0.0.1", 0), _BodyHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _client(server: _BodyServer) -> LegacySurveyClient:
    request = CutoutRequest(
        base_url=f"http://127.0.0.1:{server.server_address[1]}",
        bands=CUTOUT_BANDS,
        size=CUTOUT_SIZE,
        pixscale=CUTOUT_PIXSCALE,
    )
    return LegacySurveyClient(request, read_timeout=5.0)


@functools.cache
def _bomb() -> bytes:
    return gzip_bomb(BOMB_INFLATED)


def test_a_gzip_bomb_is_refused_without_inflating_it(body_server: _BodyServer) -> None:
    body_server.body, body_server.headers = _bomb(), {"Content-Encoding": "gzip"}
    with _client(body_server) as client:
        tracemalloc.start()
        try:
            result = client.fetch(*CUTOUT_CENTER)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert isinstance(result, Permanent), result
    assert result.kind == "too_large", result
    assert peak < BOMB_MEMORY_LIMIT, f"{peak} bytes allocated to refuse a {BOMB_INFLATED}-byte bomb"


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False), st.booleans())
def test_bad_bodies_over_http_are_classified(
    body_server: _BodyServer, rng: random.Random, gzipped: bool
) -> None:
    case = cutout_case(rng)
    body_server.body = gzip.compress(case.body, compresslevel=1) if gzipped else case.body
    body_server.headers = {"Content-Encoding": "gzip"} if gzipped else {}
    with _client(body_server) as client:
        verdict = judge_fetch_result(case, client.fetch(*CUTOUT_CENTER))
    assert verdict.handled, f"{case.name}: {verdict.detail}"


def test_the_fetch_pipeline_stores_nothing_of_a_bad_body(
    body_server: _BodyServer, pool: ConnectionPool, tmp_path: Path
) -> None:
    ra, dec = CUTOUT_CENTER
    with pool.connection() as conn:
        conn.execute(
            "INSERT INTO galaxies (source_id, ra, dec, catalog) VALUES (1, %s, %s, 'fuzz')",
            (ra, dec),
        )
    store = LocalObjectStore(tmp_path / "objects")
    pipeline = FetchPipeline(
        pool=pool,
        client=_client(body_server),
        store=store,
        bucket=TokenBucket(pool, "fetch", RateLimitPolicy(rate=1000.0, burst=1000.0)),
        breaker=CircuitBreaker(pool, "fetch", BreakerPolicy(failures=10_000, failure_ratio=1.0)),
        owner="fuzz",
        threads=1,
    )
    rng = random.Random(7)
    try:
        pipeline.bucket.configure()
        for attempt in range(1, 40):
            case = cutout_case(rng)
            if case.usable is not False:
                continue
            body_server.body, body_server.headers = case.body, {}
            (outcome,) = pipeline.process([Task("fetch", 1, attempt % 5, attempt)])
            assert not isinstance(outcome, Done), f"{case.name} was fetched: {outcome}"
            assert not any(p.is_file() for p in (tmp_path / "objects").rglob("*")), case.name
    finally:
        pipeline.close()
        pipeline.client.close()
