"""The chaos run in a short seeded form: every fault kind once, then nothing lost, doubled or
corrupt, and ``galpipe check`` clean. ``bench/chaos.py`` runs the long form (≥ 20,000 galaxies).

Also the fault proxies on their own: each mode does to a request what it says.
"""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import requests
from astropy.io import fits

from tests.chaos.faultproxy import Fault, ProxyHost
from tests.chaos.run import FAULT_KINDS, ChaosOptions, run_chaos

pytestmark = pytest.mark.timeout(900)


def _fits_body() -> bytes:
    buffer = io.BytesIO()
    fits.PrimaryHDU(np.ones((4, 8, 8), dtype=np.float32)).writeto(buffer)
    return buffer.getvalue()


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body = _fits_body()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/fits")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def do_PUT(self) -> None:
        received = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(received)))
        self.end_headers()
        self.wfile.write(received)


@pytest.fixture(scope="module")
def proxies() -> Iterator[ProxyHost]:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{upstream.server_address[1]}"
    with ProxyHost({"s3": url, "sky": url}, seed=1) as host:
        yield host
    upstream.shutdown()


def test_the_proxy_relays_unchanged_by_default(proxies: ProxyHost) -> None:
    assert requests.get(proxies.urls["sky"] + "/x", timeout=10).content == _Upstream.body
    echoed = requests.put(proxies.urls["s3"] + "/b/k", data=b"payload", timeout=10)
    assert echoed.content == b"payload"


def test_status_answers_as_s3_does(proxies: ProxyHost) -> None:
    proxies.set("s3", Fault("status", statuses=(500, 503, 5030)))
    try:
        answers = [requests.get(proxies.urls["s3"] + "/b/k", timeout=10) for _ in range(3)]
    finally:
        proxies.set("s3", Fault())
    assert [a.status_code for a in answers] == [500, 503, 503]
    assert ["<Code>InternalError</Code>" in answers[0].text, "SlowDown" in answers[2].text] == [
        True,
        True,
    ]


def test_down_refuses_connections_and_comes_back(proxies: ProxyHost) -> None:
    port = int(proxies.urls["sky"].rsplit(":", 1)[1])
    proxies.set("sky", Fault("down"))
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        proxies.set("sky", Fault())
    assert requests.get(proxies.urls["sky"] + "/x", timeout=10).status_code == 200


@pytest.mark.parametrize("mode", ["truncate", "html200", "wrong_shape", "nan_plane"])
def test_bad_bodies(proxies: ProxyHost, mode: str) -> None:
    proxies.set("sky", Fault(mode))
    try:
        answer = requests.get(proxies.urls["sky"] + "/x", timeout=10)
    finally:
        proxies.set("sky", Fault())
    assert answer.status_code == 200
    if mode == "truncate":
        assert answer.content == _Upstream.body[: len(_Upstream.body) // 2]
    elif mode == "html200":
        assert answer.headers["Content-Type"].startswith("text/html")
    else:
        data = fits.getdata(io.BytesIO(answer.content))
        if mode == "wrong_shape":
            assert data.shape == (4, 4, 8)
        else:
            assert np.isnan(data[0]).all()
            assert np.isfinite(data[1:]).all()


def test_a_short_chaos_run_loses_and_doubles_nothing(tmp_path: Path) -> None:
    options = ChaosOptions.short(tmp_path, seed=7)
    result = run_chaos(options, log=lambda line: None)

    assert set(result.faults) == set(FAULT_KINDS)  # every kind injected ...
    assert result.unfelt == []  # ... and every one met traffic
    assert (result.lost, result.doubled, result.corrupt) == (0, 0, 0)
    assert result.breaches == []
    for pipeline in ("fetch", "radon"):
        assert result.final_states[pipeline]["queued"] == 0
        assert result.final_states[pipeline]["running"] == 0
    lane_galaxies = options.disk_full_galaxies
    assert sum(result.final_states["fetch"].values()) == result.galaxies - lane_galaxies
    fetched = result.final_states["fetch"]["done"]
    assert sum(result.final_states["radon"].values()) == fetched  # one radon task per cutout
    assert result.objects_verified == fetched
    assert result.breaker["final"] == "closed"
    assert result.restarts >= options.kills  # the supervisor brought every killed worker back
    lane = result.disk_full  # the local store's disk filled mid-flow, then grew
    assert lane["full_writes"] > 0
    assert lane["temp_files_left"] == 0
    assert sum(lane["final_states"]["fetch"].values()) == lane_galaxies
