"""One way to run a long-lived galpipe process: the :class:`Service` protocol and :func:`serve`.

Every process that runs until Kubernetes (or Ctrl-C) stops it — a pipeline worker, the monitor,
the synthetic sky — is a :class:`Service`, and :func:`serve` gives it the same surroundings:

1. SIGTERM and SIGINT call :meth:`Service.request_stop` (nothing else: the service decides how
   to finish, e.g. a worker completes the batch in hand);
2. its Prometheus collectors, if any, join the registry;
3. the health server answers ``/healthz`` with :meth:`Service.liveness`, ``/readyz`` with
   :meth:`Service.readiness` and ``/metrics`` with the registry, unless the port is 0;
4. :meth:`Service.run` blocks until the service has stopped;
5. teardown runs in the reverse order: the health server stops only after ``run`` returned (so
   probes see a draining service answer "not ready" rather than no answer), then the
   collectors leave the registry, then the previous signal handlers come back.

What the service holds (a database pool, a pipeline's clients) is closed by whoever opened it,
after :func:`serve` returns.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from types import FrameType
from typing import Protocol, TypeVar

from prometheus_client import REGISTRY
from prometheus_client.registry import Collector, CollectorRegistry

from galpipe.runtime.health import HealthServer

log = logging.getLogger(__name__)

Result_co = TypeVar("Result_co", covariant=True)
Result = TypeVar("Result")

#: Kubernetes stops a pod with SIGTERM; a terminal stops a process with SIGINT (Ctrl-C).
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)


class Service(Protocol[Result_co]):
    """A long-running process body that :func:`serve` can run, probe and stop."""

    def run(self) -> Result_co:
        """Do the work; block until stopped (or done) and return what the run produced."""
        ...

    def request_stop(self) -> None:
        """Ask :meth:`run` to finish and return. Called from a signal handler: only set a flag
        or an event here, never block."""
        ...

    def liveness(self) -> tuple[bool, str]:
        """``/healthz``: is the process making progress (restart it if not)? ``(ok, detail)``."""
        ...

    def readiness(self) -> tuple[bool, str]:
        """``/readyz``: can it do its work now? ``(ok, detail)``."""
        ...


def serve(
    service: Service[Result],
    *,
    port: int,
    host: str = "0.0.0.0",
    collectors: Sequence[Collector] = (),
    registry: CollectorRegistry = REGISTRY,
    stop_signals: Sequence[signal.Signals] = STOP_SIGNALS,
) -> Result:
    """Run ``service`` until it stops, with signal handlers and the health server around it.

    Parameters
    ----------
    service
        What to run.
    port
        Port of the ``/healthz``, ``/readyz`` and ``/metrics`` server; 0 runs none (what
        ``GALPIPE_METRICS_PORT=0`` asks for, e.g. for many local processes on one machine).
    host
        Address the health server listens on.
    collectors
        Prometheus collectors registered in ``registry`` while the service runs (e.g. the
        monitor, which computes its families at scrape time).
    registry
        The registry ``/metrics`` serves.
    stop_signals
        Signals that call :meth:`Service.request_stop`. Python delivers signals to the main
        thread only, so a service served from another thread gets no handlers.

    Returns
    -------
    Result
        What :meth:`Service.run` returned (a worker's statistics, say).
    """
    with ExitStack() as teardown:  # unwinds in reverse: health server, collectors, signals
        if threading.current_thread() is threading.main_thread():
            teardown.callback(_install_stop_handlers(service, stop_signals))
        for collector in collectors:
            registry.register(collector)
            teardown.callback(registry.unregister, collector)
        if port:
            health = HealthServer(
                service.liveness, service.readiness, host=host, port=port, registry=registry
            )
            health.start()
            teardown.callback(health.stop)
            log.info("health server listening", extra={"host": host, "port": health.port})
        return service.run()


def _install_stop_handlers(
    service: Service[object], stop_signals: Sequence[signal.Signals]
) -> Callable[[], None]:
    """Point ``stop_signals`` at ``service.request_stop``; return what puts the old ones back."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s received; stopping", signal.Signals(signum).name)
        service.request_stop()

    previous = {signum: signal.signal(signum, on_signal) for signum in stop_signals}

    def restore() -> None:
        for signum, handler in previous.items():
            # None: the handler was not set from Python; the default is the closest we can do.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    return restore
