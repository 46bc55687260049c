"""The demo's child processes: the synthetic sky and the workers of the pipelines it runs.

Each is a ``galpipe`` command in a process of its own, writing to a log file, and configured as
in a cluster: the workers only by ``GALPIPE_*`` variables (:func:`worker_environment`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

from galpipe.demo import DemoError
from galpipe.synthetic.server import read_ready_file

#: The ``galpipe`` command line of each pipeline's worker.
WORKER_COMMANDS: dict[str, tuple[str, ...]] = {
    "fetch": ("fetch",),
    "radon": ("radon",),
    "morphology": ("morphology", "worker"),
}
#: The pipelines the demo can run, in the order their tasks flow: fetch always runs; each
#: other one measures fetched cutouts (a route ``fetch -> p`` queues its tasks).
PIPELINES = tuple(WORKER_COMMANDS)
#: What the demo runs when not told otherwise.
DEFAULT_PIPELINES = ("fetch", "radon")
#: Seconds a stopping process gets to finish its work before it is killed.
STOP_GRACE_S = 10.0
# How often a starting sky's ready file is looked for (seconds).
_READY_POLL_S = 0.1


class ChildProcess:
    """A ``galpipe`` child process whose output goes to a log file.

    It runs in a session of its own, so a Ctrl-C at the terminal reaches only the demo, which
    then stops its children in order (workers first, then the sky).
    """

    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str]
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._terminated = False
        self._log: IO[str] | None = open(log_path, "w", encoding="utf-8")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "galpipe.cli", *argv],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
        )

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self) -> None:
        """Send SIGTERM once: a second one could land after Python restored the default
        handler during shutdown and kill a worker that was exiting cleanly."""
        if self.alive and not self._terminated:
            self._terminated = True
            self.process.send_signal(signal.SIGTERM)

    def stop(self, grace_s: float = STOP_GRACE_S) -> int:
        """SIGTERM, wait up to ``grace_s``, then SIGKILL; returns the exit code."""
        self.terminate()
        try:
            code = self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            # SIGABRT first: with PYTHONFAULTHANDLER set, the child writes every thread's
            # stack to its log, which says where it hung.
            self.process.send_signal(signal.SIGABRT)
            try:
                code = self.process.wait(5.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                code = self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return code


class SkyProcess(ChildProcess):
    """``galpipe sky serve`` as a child process; it says where it listens in a ready file.

    The server writes ``ready_file`` (:func:`galpipe.synthetic.server.write_ready_file`) once
    it listens; a file left by an earlier run is removed first, so only this server's counts.
    """

    def __init__(
        self, argv: Sequence[str], log_path: Path, env: Mapping[str, str], ready_file: Path
    ) -> None:
        ready_file.unlink(missing_ok=True)
        self.ready_file = ready_file
        super().__init__("sky", [*argv, "--ready-file", str(ready_file)], log_path, env)

    def wait_until_ready(self, timeout_s: float) -> str:
        """The sky's base URL once it listens.

        Raises
        ------
        DemoError
            If the sky exits first, or is not listening after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while (url := read_ready_file(self.ready_file)) is None:
            code = self.process.poll()
            if code is not None:
                raise DemoError(f"sky exited with {code} before it listened; see {self.log_path}")
            if time.monotonic() > deadline:
                raise DemoError(f"sky not listening after {timeout_s:.0f} s; see {self.log_path}")
            time.sleep(_READY_POLL_S)
        return url


def start_sky(
    catalog_path: Path,
    log_dir: Path,
    *,
    cache_size: int,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> SkyProcess:
    """``galpipe sky serve`` on a free loopback port, rate limit lifted, catalogue pre-rendered.

    Parameters
    ----------
    catalog_path
        The synthetic catalogue (ECSV) it serves.
    log_dir
        Where ``sky.log`` and ``sky.ready.json`` go.
    cache_size
        Cutouts the sky keeps in memory; the whole catalogue's keeps every answer in memory.
    extra_args
        More ``sky serve`` options, e.g. fault injection (``--error-ratio 0.05``).
    env
        The child's environment (default: this process's).
    """
    argv = [
        *("sky", "serve", "--catalog", str(catalog_path)),
        *("--host", "127.0.0.1", "--port", "0", "--rate", "0", "--prerender"),
        *("--cache-size", str(cache_size)),
        *extra_args,
    ]
    return SkyProcess(
        argv, log_dir / "sky.log", os.environ if env is None else env, log_dir / "sky.ready.json"
    )


def start_workers(
    env: Mapping[str, str], counts: Mapping[str, int], log_dir: Path
) -> dict[str, list[ChildProcess]]:
    """``counts[p]`` worker processes of each pipeline ``p`` (:data:`WORKER_COMMANDS`), in the
    order of ``counts``, each with its own lease owner name."""
    return {
        pipeline: [
            ChildProcess(
                f"{pipeline}-{i}",
                list(WORKER_COMMANDS[pipeline]),
                log_dir / f"{pipeline}-{i}.log",
                {**env, "GALPIPE_WORKER_ID": f"demo-{pipeline}-{i}-{os.getpid()}"},
            )
            for i in range(1, n + 1)
        ]
        for pipeline, n in counts.items()
    }


def stop_all(children: Sequence[ChildProcess], grace_s: float = STOP_GRACE_S) -> dict[str, int]:
    """Signal every child at once, then collect each (SIGKILL after ``grace_s``)."""
    for child in children:
        child.terminate()
    return {child.name: child.stop(grace_s) for child in children}


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C in the demo, so that both clean up the children."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def worker_environment(
    base: Mapping[str, str],
    *,
    database_url: str,
    object_store: str,
    cutout_url: str,
    fetch_rate: float,
    radon_cache_dir: Path,
    s3_endpoint_url: str | None = None,
    morphology_model: str | None = None,
) -> dict[str, str]:
    """``base`` with the ``GALPIPE_*`` variables that point a worker at the demo's stack.

    ``morphology_model`` is the registered model version the morphology workers run, on the
    CPU (the demo's machine need not have a GPU). Retries are quick (1, 2, 4 s) and idle
    polling short so that a small run is not spent waiting; the health server is off
    (``GALPIPE_METRICS_PORT=0``) as many workers share the machine.
    """
    env = dict(base)
    env.update(
        {
            "GALPIPE_DATABASE_URL": database_url,
            "GALPIPE_OBJECT_STORE": object_store,
            "GALPIPE_CUTOUT_BASE_URL": cutout_url,
            "GALPIPE_FETCH_RATE_LIMIT": f"{fetch_rate:g}",
            "GALPIPE_FETCH_RATE_BURST": f"{max(1.0, min(fetch_rate, 100.0)):g}",
            "GALPIPE_FETCH_THREADS": "8",
            "GALPIPE_DB_POOL_SIZE": "10",
            "GALPIPE_RADON_CACHE_DIR": str(radon_cache_dir),
            "GALPIPE_RETRY_DELAYS": "1,2,4",
            "GALPIPE_LEASE_SECONDS": "60",
            "GALPIPE_POLL_MIN_SECONDS": "0.1",
            "GALPIPE_POLL_MAX_SECONDS": "0.5",
            "GALPIPE_METRICS_PORT": "0",
            "GALPIPE_LOG_LEVEL": "info",
            "PYTHONFAULTHANDLER": "1",
        }
    )
    if s3_endpoint_url:
        env["GALPIPE_S3_ENDPOINT_URL"] = s3_endpoint_url
    if morphology_model:
        env["GALPIPE_MORPHOLOGY_MODEL"] = morphology_model
        env["GALPIPE_MORPHOLOGY_DEVICE"] = "cpu"
    return env
