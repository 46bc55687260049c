"""HTTP endpoints of every long-running process: ``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.registry import CollectorRegistry

log = logging.getLogger(__name__)

Check = Callable[[], tuple[bool, str]]


class HealthServer:
    """A small threaded HTTP server for Kubernetes probes and Prometheus scrapes.

    Parameters
    ----------
    liveness
        Answers ``/healthz``: is the process making progress? (restart it if not)
    readiness
        Answers ``/readyz``: can it do work now (database reachable)?
    host, port
        Where to listen; port 0 picks a free port (see :attr:`port`).
    registry
        What ``/metrics`` serves (the process-wide default registry unless told).
    """

    def __init__(
        self,
        liveness: Check,
        readiness: Check,
        *,
        host: str = "0.0.0.0",
        port: int = 9100,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        checks = {"/healthz": liveness, "/readyz": readiness}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                    return
                check = checks.get(path)
                if check is None:
                    self._send(404, b"not found\n", "text/plain")
                    return
                try:
                    ok, detail = check()
                except Exception as exc:  # a probe must answer, whatever broke
                    ok, detail = False, f"check raised {exc!r}"
                self._send(200 if ok else 503, (detail + "\n").encode(), "text/plain")

            def __getattr__(self, name: str) -> Any:
                # http.server answers a method without a do_<METHOD> with 501, a server
                # error; any method but GET is the client's mistake here: 405.
                if name.startswith("do_"):
                    return self._method_not_allowed
                raise AttributeError(name)

            def _method_not_allowed(self) -> None:
                body = f"method {self.command!r} not allowed; use GET\n".encode(errors="replace")
                self.send_response(405)
                self.send_header("Allow", "GET")
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("%s " + format, self.address_string(), *args)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health-server", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
