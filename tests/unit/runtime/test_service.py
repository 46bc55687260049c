"""serve(): signals reach request_stop, probes answer the service's checks, teardown in order."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Metric
from prometheus_client.core import GaugeMetricFamily

from galpipe.runtime.service import Service, serve


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


class FakeService:
    """Runs until stopped; while running it performs ``during_run(self)``, and it records the
    probes' answers it sees after the stop request (the health server must still be up)."""

    def __init__(self, port: int = 0, result: str = "finished") -> None:
        self.port = port
        self.result = result
        self.stop = threading.Event()
        self.running = threading.Event()
        self.alive = (True, "ok")
        self.stop_requests = 0
        self.seen_while_draining: tuple[int, str] | None = None

    def run(self) -> str:
        self.running.set()
        # In short waits, as a worker polls: a signal that arrives just before a blocking wait
        # starts has its Python handler run only when that wait ends.
        deadline = time.monotonic() + 10
        while not self.stop.wait(0.05):
            assert time.monotonic() < deadline, "never stopped"
        if self.port:
            self.seen_while_draining = _get(f"http://127.0.0.1:{self.port}/readyz")
        return self.result

    def request_stop(self) -> None:
        self.stop_requests += 1
        self.stop.set()

    def liveness(self) -> tuple[bool, str]:
        return self.alive

    def readiness(self) -> tuple[bool, str]:
        if self.stop.is_set():
            return False, "stopping"
        return True, "ready to serve"


class OneGauge:
    """A collector with one gauge, like the monitor's."""

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("fake_service_gauge", "A gauge of the fake service.", value=7)


def _serve_in_thread(
    service: FakeService, **kwargs: object
) -> tuple[threading.Thread, dict[str, object]]:
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["result"] = serve(service, host="127.0.0.1", port=service.port, **kwargs)  # type: ignore[arg-type]
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert service.running.wait(10)
    return thread, outcome


def test_the_fake_service_is_a_service() -> None:
    service: Service[str] = FakeService()
    assert service.readiness() == (True, "ready to serve")


def test_probes_answer_the_service_checks_and_metrics_the_registry() -> None:
    registry = CollectorRegistry()
    service = FakeService(port=_free_port())
    thread, outcome = _serve_in_thread(service, registry=registry, collectors=[OneGauge()])
    base = f"http://127.0.0.1:{service.port}"
    try:
        assert _get(base + "/readyz") == (200, "ready to serve\n")
        assert _get(base + "/healthz") == (200, "ok\n")
        service.alive = (False, "no progress for 99 s")
        assert _get(base + "/healthz") == (503, "no progress for 99 s\n")
        status, body = _get(base + "/metrics")
        assert status == 200
        assert "fake_service_gauge 7.0" in body
        assert _get(base + "/nope")[0] == 404
    finally:
        service.request_stop()
        thread.join(10)
    assert outcome == {"result": "finished"}
    # The health server answered until run() returned: the draining service said "not ready".
    assert service.seen_while_draining == (503, "stopping\n")
    # Then it stopped, and the collector left the registry.
    with pytest.raises(urllib.error.URLError, match="Connection refused"):
        _get(base + "/healthz")
    assert registry.get_sample_value("fake_service_gauge") is None


def test_port_zero_serves_no_probes() -> None:
    registry = CollectorRegistry()
    service = FakeService(port=0)
    thread, outcome = _serve_in_thread(service, registry=registry, collectors=[OneGauge()])
    try:
        assert registry.get_sample_value("fake_service_gauge") == 7.0
    finally:
        service.request_stop()
        thread.join(10)
    assert outcome == {"result": "finished"}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signals_request_a_stop_and_the_old_handlers_come_back(signum: int) -> None:
    """In the main thread, as a process runs it; the signal comes from another thread."""
    before = signal.getsignal(signum)
    service = FakeService()
    seen_during_run: list[object] = []

    def send_signal_when_running() -> None:
        assert service.running.wait(10)
        seen_during_run.append(signal.getsignal(signum))
        os.kill(os.getpid(), signum)

    sender = threading.Thread(target=send_signal_when_running, daemon=True)
    sender.start()
    assert serve(service, port=0) == "finished"
    sender.join(10)
    assert service.stop_requests == 1
    assert seen_during_run[0] is not before
    assert signal.getsignal(signum) is before


def test_a_failing_run_still_tears_everything_down() -> None:
    registry = CollectorRegistry()
    port = _free_port()
    before = signal.getsignal(signal.SIGTERM)

    class Crashing(FakeService):
        def run(self) -> str:
            assert _get(f"http://127.0.0.1:{port}/readyz")[0] == 200
            raise RuntimeError("the service broke")

    with pytest.raises(RuntimeError, match="the service broke"):
        serve(
            Crashing(port), host="127.0.0.1", port=port, registry=registry, collectors=[OneGauge()]
        )
    with pytest.raises(urllib.error.URLError, match="Connection refused"):
        _get(f"http://127.0.0.1:{port}/healthz")
    assert registry.get_sample_value("fake_service_gauge") is None
    assert signal.getsignal(signal.SIGTERM) is before


def test_served_from_another_thread_it_leaves_signals_alone() -> None:
    before = signal.getsignal(signal.SIGTERM)
    service = FakeService()
    thread, outcome = _serve_in_thread(service)
    try:
        assert signal.getsignal(signal.SIGTERM) is before
    finally:
        service.request_stop()
        thread.join(10)
    assert outcome == {"result": "finished"}
