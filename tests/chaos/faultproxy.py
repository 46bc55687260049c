"""HTTP reverse proxies on loopback whose faults a chaos schedule switches while traffic flows.

The chaos run puts one in front of the S3 server and one in front of the cutout service, so the
workers' real clients (botocore's retries, the fetch pipeline's breaker and error taxonomy) meet
real failures on the wire. The proxies run in a process of their own (:class:`ProxyHost`), off
the chaos driver's interpreter lock, and take their orders through a pipe.

What a proxy can do to the requests it relays (:class:`Fault`, one at a time per proxy):

- ``pass``: relay unchanged;
- ``down``: stop listening (new connections are refused) and drop every request that arrives
  on a connection already open, unanswered;
- ``slow``: relay after ``delay_s`` seconds;
- ``status``: answer ``statuses`` in turn instead of relaying: for S3 each with the error
  document S3 sends (``500 InternalError``, ``503 ServiceUnavailable``, ``503 SlowDown``);
- ``truncate``: relay, but cut a successful body in half (the short length announced);
- ``html200``: answer 200 with an HTML error page, as a misconfigured gateway does;
- ``wrong_shape``: relay a FITS body with its image cropped to another shape;
- ``nan_plane``: relay a FITS body with its first plane all NaN.

``ratio`` is the fraction of requests the fault hits (seeded: the same run draws the same).
"""

from __future__ import annotations

import contextlib
import http.client
import io
import multiprocessing
import random
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

import numpy as np

__all__ = ["MODES", "Fault", "ProxyHost"]

MODES = (
    "pass",
    "down",
    "slow",
    "status",
    "truncate",
    "html200",
    "wrong_shape",
    "nan_plane",
)

# Headers that describe one hop, not the message (RFC 9110 section 7.6.1), and the length,
# which the proxy sets itself.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
}

_S3_ERRORS = {
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("ServiceUnavailable", "Please reduce your request rate."),
    # S3's throttling answer: 503 with its own code; botocore retries it as throttling.
    5030: ("SlowDown", "Please reduce your request rate."),
}

_HTML_ERROR_PAGE = (
    b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    b"<body><h1>Bad Gateway</h1><p>The upstream server is unavailable.</p></body></html>"
)


@dataclass(frozen=True)
class Fault:
    """What a proxy does to the requests it relays (see the module's docstring).

    Attributes
    ----------
    mode
        One of :data:`MODES`.
    ratio
        Fraction of requests hit, in [0, 1].
    delay_s
        The delay of ``slow``, seconds.
    statuses
        The answers of ``status``, in turn; ``5030`` is S3's ``503 SlowDown``.
    """

    mode: str = "pass"
    ratio: float = 1.0
    delay_s: float = 0.0
    statuses: tuple[int, ...] = (503,)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"fault mode {self.mode!r}: expected one of {', '.join(MODES)}")
        if not 0.0 <= self.ratio <= 1.0:
            raise ValueError(f"fault ratio {self.ratio}: must lie in [0, 1]")


def _reshaped_fits(body: bytes, *, nan_plane: bool) -> bytes:
    """The FITS file with its first image cropped to another shape, or its first plane NaN."""
    from astropy.io import fits

    with fits.open(io.BytesIO(body)) as hdul:
        hdu = next(h for h in hdul if h.data is not None and h.data.ndim >= 2)
        data = np.array(hdu.data, dtype=np.float32)
        if nan_plane:
            if data.ndim == 2:
                data[:] = np.nan
            else:
                data[0] = np.nan
        else:
            data = data[..., : max(1, data.shape[-2] // 2), :]
        out = fits.HDUList([fits.PrimaryHDU(data=data, header=hdul[0].header)])
        buffer = io.BytesIO()
        out.writeto(buffer, output_verify="silentfix")
    return buffer.getvalue()


@dataclass
class _Proxy:
    name: str
    upstream: tuple[str, int]
    s3: bool
    seed: int
    fault: Fault = field(default_factory=Fault)
    hits: Counter[str] = field(default_factory=Counter)
    relayed: int = 0
    status_turn: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    rng: random.Random = field(init=False)
    server: ThreadingHTTPServer | None = None
    port: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def draw(self) -> tuple[Fault, int]:
        """This request's fault (``pass`` when the ratio spares it) and its status turn."""
        with self.lock:
            fault = self.fault
            if fault.mode == "pass" or self.rng.random() >= fault.ratio:
                self.relayed += 1
                return Fault(), 0
            self.hits[fault.mode] += 1
            self.status_turn += 1
            return fault, self.status_turn


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _answer(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _upstream(self) -> http.client.HTTPConnection:
        local = self.server.local
        conn: http.client.HTTPConnection | None = getattr(local, "conn", None)
        if conn is None:
            host, port = self.server.proxy.upstream
            conn = http.client.HTTPConnection(host, port, timeout=120)
            local.conn = conn
        return conn

    def _relay(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        if self.command not in ("GET", "HEAD") or body:
            headers["Content-Length"] = str(len(body))
        for attempt in (1, 2):  # a kept-alive upstream connection may have been closed
            conn = self._upstream()
            try:
                conn.request(self.command, self.path, body=body or None, headers=headers)
                response = conn.getresponse()
                data = response.read()
                return response.status, response.getheaders(), data
            except (http.client.HTTPException, OSError):
                conn.close()
                self.server.local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _handle(self) -> None:
        proxy = self.server.proxy
        try:
            body = self._body()
        except (OSError, ValueError):
            self.close_connection = True
            return
        fault, turn = proxy.draw()
        if fault.mode == "down":
            self.close_connection = True  # dropped, unanswered
            return
        if fault.mode == "status":
            status = fault.statuses[(turn - 1) % len(fault.statuses)]
            self._error(status)
            return
        if fault.mode == "html200":
            self._answer(200, {"Content-Type": "text/html; charset=utf-8"}, _HTML_ERROR_PAGE)
            return
        if fault.mode == "slow":
            time.sleep(fault.delay_s)
        try:
            status, headers, data = self._relay(body)
        except (http.client.HTTPException, OSError):
            self._answer(502, {"Content-Type": "text/plain"}, b"upstream unreachable")
            return
        if status == 200 and self.command == "GET" and data:
            if fault.mode == "truncate":
                data = data[: len(data) // 2]
            elif fault.mode in ("wrong_shape", "nan_plane"):
                # Not a FITS body (a JSON listing, say): relayed as is.
                with contextlib.suppress(Exception):
                    data = _reshaped_fits(data, nan_plane=fault.mode == "nan_plane")
        self._answer(status, dict(headers), data)

    def _error(self, status: int) -> None:
        if self.server.proxy.s3:
            code, message = _S3_ERRORS[status]
            document = (
                '<?xml version="1.0" encoding="UTF-8"?>'
                f"<Error><Code>{code}</Code><Message>{message}</Message>"
                "<RequestId>chaos</RequestId></Error>"
            ).encode()
            self._answer(
                503 if status == 5030 else status, {"Content-Type": "application/xml"}, document
            )
        else:
            self._answer(status, {"Content-Type": "text/plain"}, b"injected error\n")

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle  # noqa: N815 - the base's names


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], proxy: _Proxy) -> None:
        self.proxy = proxy
        self.local = threading.local()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up mid-answer (a killed worker, a timeout) is part of the run.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _listen(proxy: _Proxy) -> None:
    server = _ProxyServer(("127.0.0.1", proxy.port), proxy)
    proxy.server = server
    proxy.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, name=f"proxy-{proxy.name}", daemon=True).start()


def _set_fault(proxy: _Proxy, fault: Fault) -> None:
    was_down = proxy.fault.mode == "down"
    with proxy.lock:
        proxy.fault = fault
    if fault.mode == "down" and not was_down and proxy.server is not None:
        proxy.server.shutdown()
        proxy.server.server_close()  # new connections are refused
        proxy.server = None
    elif fault.mode != "down" and was_down:
        for _ in range(50):  # the port may linger a moment after the close
            try:
                _listen(proxy)
                break
            except OSError:
                time.sleep(0.1)


def _serve(upstreams: dict[str, str], seed: int, control: Connection) -> None:
    proxies: dict[str, _Proxy] = {}
    for i, (name, url) in enumerate(sorted(upstreams.items())):
        parts = urlsplit(url)
        assert parts.hostname, url
        assert parts.port, url
        proxy = _Proxy(name, (parts.hostname, parts.port), s3=name == "s3", seed=seed + i)
        _listen(proxy)
        proxies[name] = proxy
    control.send({name: p.port for name, p in proxies.items()})
    while True:
        message = control.recv()
        if message[0] == "set":
            _, name, fields = message
            _set_fault(proxies[name], Fault(**fields))
            control.send("ok")
        elif message[0] == "counts":
            control.send({n: {"relayed": p.relayed, **dict(p.hits)} for n, p in proxies.items()})
        elif message[0] == "stop":
            for proxy in proxies.values():
                if proxy.server is not None:
                    proxy.server.shutdown()
                    proxy.server.server_close()
            control.send("stopped")
            return


class ProxyHost:
    """Fault proxies in a process of their own: one per upstream, switched through a pipe.

    Parameters
    ----------
    upstreams
        ``{name: base URL}``; the proxy named ``s3`` answers injected errors as S3 does.
    seed
        Seeds which requests a partial fault hits.
    """

    def __init__(self, upstreams: Mapping[str, str], *, seed: int = 0) -> None:
        context = multiprocessing.get_context("spawn")
        self._control, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(dict(upstreams), seed, child), name="chaos-proxies", daemon=True
        )
        self._process.start()
        if not self._control.poll(60):
            raise RuntimeError("the fault proxies did not start within 60 s")
        ports: dict[str, int] = self._control.recv()
        self.urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        self._lock = threading.Lock()

    def set(self, name: str, fault: Fault) -> None:
        """Switch proxy ``name`` to ``fault`` (``Fault()``: relay unchanged)."""
        with self._lock:
            self._control.send(("set", name, asdict(fault)))
            self._control.recv()

    def counts(self) -> dict[str, dict[str, int]]:
        """Per proxy: requests relayed unharmed, and requests hit by each mode."""
        with self._lock:
            self._control.send(("counts",))
            return self._control.recv()  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop every proxy and the process."""
        with self._lock:
            if self._process.is_alive():
                self._control.send(("stop",))
                self._control.poll(10)
            self._process.join(10)
            if self._process.is_alive():
                self._process.kill()

    def __enter__(self) -> ProxyHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_refused(url: str, timeout_s: float = 5.0) -> bool:
    """Whether connecting to ``url`` is refused within ``timeout_s`` (the proxy is down)."""
    parts = urlsplit(url)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((parts.hostname, parts.port), timeout=1):
                pass
        except ConnectionRefusedError:
            return True
        time.sleep(0.05)
    return False
