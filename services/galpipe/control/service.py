"""``galpipe control`` as a :class:`~galpipe.runtime.service.Service`: uvicorn serving the app.

uvicorn listens on ``GALPIPE_CONTROL_PORT`` (API and console) while the common runtime's health
server answers ``/healthz``, ``/readyz`` and ``/metrics`` on ``GALPIPE_METRICS_PORT``. The runtime
owns the signals: SIGTERM calls :meth:`ControlService.request_stop`, which sets uvicorn's
``should_exit``, so uvicorn stops accepting, finishes the requests in flight and returns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

import uvicorn
from prometheus_client.core import Metric

from galpipe.errors import ServiceError
from galpipe.runtime import metrics

if TYPE_CHECKING:
    from fastapi import FastAPI

    from galpipe.control.actions import ControlActions
    from galpipe.settings import Settings

__all__ = ["ControlService", "OverrideCollector", "run_from_settings"]

log = logging.getLogger(__name__)

#: Seconds uvicorn gives requests in flight after SIGTERM (below the pod's grace period).
GRACEFUL_SHUTDOWN_S = 20
#: Seconds a readiness ping waits for a database connection.
PING_TIMEOUT_S = 2.0


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: :func:`galpipe.runtime.service.serve` has them."""

    def capture_signals(self) -> AbstractContextManager[None]:  # type: ignore[override]
        return nullcontext()


class ControlService:
    """The control plane's HTTP server as a runtime Service.

    Parameters
    ----------
    app
        The ASGI app (:func:`galpipe.control.app.create_app`).
    ping
        Raises unless the database answers now (``/readyz``).
    host, port
        Where the API listens.
    """

    def __init__(
        self, app: FastAPI, ping: Callable[[], None], *, host: str = "0.0.0.0", port: int = 8080
    ) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,  # the process's logging (text or JSON) handles uvicorn's loggers
            lifespan="off",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            server_header=False,
        )
        self.server = _Server(config)
        self._ping = ping
        self._stopping = threading.Event()

    def run(self) -> None:
        """Serve until :meth:`request_stop`.

        Raises
        ------
        ServiceError
            uvicorn could not start (the port is taken, say).
        """
        try:
            self.server.run()
        except SystemExit as exc:  # uvicorn exits when it cannot bind
            raise ServiceError(
                f"the control API could not listen on port {self.server.config.port}"
            ) from exc
        if not self.server.started and not self._stopping.is_set():
            raise ServiceError(f"the control API did not start on port {self.server.config.port}")

    def request_stop(self) -> None:
        """Ask uvicorn to finish the requests in flight and return. Signal-handler safe."""
        self._stopping.set()
        self.server.should_exit = True

    def liveness(self) -> tuple[bool, str]:
        """Alive unless uvicorn was forced to exit."""
        if self.server.force_exit:
            return False, "forced to exit"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        """Ready while uvicorn listens and the database answers."""
        if self._stopping.is_set():
            return False, "stopping"
        if not self.server.started:
            return False, "starting"
        try:
            self._ping()
        except Exception as exc:  # any failure of the ping means "not ready", with its reason
            return False, f"database unreachable: {str(exc).strip() or repr(exc)}"
        return True, "ok"


class OverrideCollector:
    """Exports ``galpipe_control_override_active_since_timestamp_seconds`` at scrape time.

    One series per active override (pause, hold, pin) with the Unix time it began, read from
    :meth:`ControlActions.overrides`; an override whose start is unknown is exported with the
    time it was first seen, so the alert on its age still fires.
    """

    def __init__(
        self, actions: ControlActions, *, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.actions = actions
        self._wall_clock = wall_clock
        self._first_seen: dict[tuple[str, str], float] = {}

    def collect(self) -> Iterator[Metric]:
        """The gauge family (empty when the overrides cannot be read: no stale values)."""
        try:
            overrides = self.actions.overrides()
        except Exception as exc:  # a scrape must not fail; the log says why it is empty
            log.warning("could not read the overrides for /metrics: %s", exc)
            return
        samples: dict[tuple[str, ...], float] = {}
        seen = set()
        for override in overrides:
            key = (override.pipeline, override.kind)
            seen.add(key)
            if override.since is not None:
                samples[key] = override.since.timestamp()
            else:
                samples[key] = self._first_seen.setdefault(key, self._wall_clock())
        for key in set(self._first_seen) - seen:
            del self._first_seen[key]
        yield metrics.CONTROL_OVERRIDE_ACTIVE_SINCE.family(samples)


def run_from_settings(settings: Settings) -> None:
    """Run ``galpipe control`` as configured by ``GALPIPE_*`` until SIGTERM."""
    from galpipe.control.actions import ControlActions
    from galpipe.control.app import create_app
    from galpipe.control.auth import Authenticator, Authorizer
    from galpipe.control.kube import production_kube_client
    from galpipe.control.sessions import SessionSigner
    from galpipe.db import monitor as db
    from galpipe.runtime.database import pool_from_settings
    from galpipe.runtime.service import serve

    session_key = settings.require("control_session_key")
    namespace = settings.control_namespace_or_pod()
    kube = production_kube_client()
    with pool_from_settings(settings, role="control") as pool:
        actions = ControlActions(
            pool,
            kube,
            namespace=namespace,
            release=settings.control_release,
            helm_release=settings.control_helm_release_name,
        )
        ttl = settings.control_review_ttl_seconds
        app = create_app(
            actions,
            Authenticator(kube, ttl_s=ttl),
            Authorizer(kube, namespace, ttl_s=ttl),
            SessionSigner(session_key),
        )

        def ping() -> None:
            with pool.connection(timeout=PING_TIMEOUT_S) as conn:
                db.ping(conn)

        service = ControlService(app, ping, port=settings.control_port)
        log.info(
            "control plane",
            extra={"namespace": namespace, "release": settings.control_release},
        )
        serve(service, port=settings.metrics_port, collectors=[OverrideCollector(actions)])
