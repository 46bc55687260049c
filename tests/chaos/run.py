"""The chaos run: the whole stack on loopback, faults injected on a seeded schedule, then a check.

What runs, each as in production and each in a process of its own:

- an embedded PostgreSQL server (restarted in ``fast`` and ``immediate`` shutdown modes);
- moto's S3 server, behind a fault proxy (:mod:`tests.chaos.faultproxy`);
- the synthetic sky (the cutout service), behind a second fault proxy;
- ``galpipe fetch`` and ``galpipe radon`` workers configured only by ``GALPIPE_*`` variables,
  supervised like a Deployment's pods (a worker that exits is started again), plus one fetch
  worker whose wall clock runs an hour ahead (``tests/chaos/clock_ahead``): leases must be
  judged by the database's clock.

Two phases. **Clean**: a first set of galaxies flows with no fault, which gives the throughput
without faults. **Faulted**: the rest flows while two schedules run, both drawn from the seed:
the spells (one at a time: the object store down, slow, answering 500/503/SlowDown; the cutout
service down, slow, truncating, answering HTML with 200, FITS of the wrong shape or with a NaN
plane; PostgreSQL restarts; a spell of ``pg_terminate_backend`` of every worker session) and
the signals (SIGKILL of random workers at random moments — mid-claim, mid-write or mid-commit is
where the moment falls, not chosen —, and SIGTERM during a batch). After the last fault the run
waits until every galaxy is in a final state, stops the workers and reconciles everything with
:func:`galpipe.ops.check.run_check` over every stored object.

A full disk is the one fault not injected on the wire: the run stores cutouts in S3, where a
disk cannot fill; the local store's behaviour on ENOSPC has a test of its own.

Figures: galaxies, faults by kind, lost (galaxies with neither a result nor a stated reason),
doubled (more than one combined row per version, or more than one task per pipeline), corrupt
objects, seconds to drain after the last fault, and throughput in each phase.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import psycopg

from galpipe.demo.processes import ChildProcess, start_sky, worker_environment
from tests.chaos.disk_full import run_disk_full_lane
from tests.chaos.faultproxy import Fault, ProxyHost
from tests.chaos.measure import lost_and_doubled, wait_drained

__all__ = ["FAULT_KINDS", "ChaosOptions", "ChaosResult", "run_chaos"]

#: Every kind of fault the run injects, each at least once.
FAULT_KINDS = (
    "worker_sigkill",
    "worker_sigterm",
    "postgres_restart_fast",
    "postgres_restart_immediate",
    "postgres_terminate_backends",
    "store_down",
    "store_slow",
    "store_errors",
    "sky_down",
    "sky_slow",
    "sky_truncated",
    "sky_html200",
    "sky_wrong_shape",
    "sky_nan_plane",
    "clock_ahead",
    "disk_full",
)

#: Dummy credentials: moto accepts anything.
_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "chaos",
    "AWS_SECRET_ACCESS_KEY": "chaos-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
#: A ``sitecustomize`` that puts a worker's wall clock ahead (that file says why not libfaketime).
_CLOCK_AHEAD = Path(__file__).resolve().parent / "clock_ahead"
_BUCKET = "galpipe-chaos"


@dataclass(frozen=True)
class ChaosOptions:
    """How big, how fast and how hard the run is.

    Attributes
    ----------
    out
        Directory of the logs and the catalogue.
    clean_galaxies, faulted_galaxies
        Galaxies of each phase.
    disk_full_galaxies
        Galaxies of the disk-full lane (:mod:`tests.chaos.disk_full`).
    fetch_workers, radon_workers
        Worker processes per pipeline (the clock-ahead worker comes on top).
    fetch_rate
        Cutout requests per second the fetch workers share (the global token bucket); by
        default the faulted galaxies are spread over 1.4 times the fault schedule, so that
        work flows through every fault.
    outage_s
        How long the object store and the cutout service are down, seconds.
    spell_s
        How long each other timed fault lasts, seconds.
    gap_s
        Quiet seconds between two spells.
    kills
        SIGKILLs of random workers over the schedule (SIGTERMs: a third of that, at least 1).
    lease_s
        The workers' lease: a killed worker's batch returns to the queue after it.
    retry_delays
        The workers' retry delays (``GALPIPE_RETRY_DELAYS``).
    drain_timeout_s
        Longest wait for every galaxy to reach a final state after the last fault.
    clock_ahead_s
        How far ahead the wall clock of one extra fetch worker runs, seconds.
    seed
        Seeds the catalogue, the schedules and the proxies' draws.
    """

    out: Path
    clean_galaxies: int = 1_000
    faulted_galaxies: int = 20_000
    disk_full_galaxies: int = 300
    fetch_workers: int = 2
    radon_workers: int = 2
    fetch_rate: float | None = None
    outage_s: float = 20.0
    spell_s: float = 8.0
    gap_s: float = 3.0
    kills: int = 6
    lease_s: float = 15.0
    retry_delays: str = "2,8,30"
    drain_timeout_s: float = 600.0
    clock_ahead_s: float = 3600.0
    seed: int = 0

    @classmethod
    def short(cls, out: Path, *, seed: int = 0) -> ChaosOptions:
        """Every fault once in about 100 s: the test suite's run and ``bench/chaos.py --quick``."""
        return cls(
            out=out,
            clean_galaxies=100,
            faulted_galaxies=1_200,
            disk_full_galaxies=200,
            outage_s=4.0,
            spell_s=2.0,
            gap_s=0.5,
            kills=3,
            lease_s=10.0,
            retry_delays="1,4,10",
            drain_timeout_s=300.0,
            seed=seed,
        )


@dataclass
class ChaosResult:
    """What the run measured (see the module's docstring)."""

    galaxies: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    doubled: int = 0
    corrupt: int = 0
    drain_s: float = float("nan")
    clean_per_s: float = float("nan")
    faulted_per_s: float = float("nan")
    final_states: dict[str, dict[str, int]] = field(default_factory=dict)
    breaches: list[str] = field(default_factory=list)
    objects_verified: int = 0
    restarts: int = 0
    breaker: dict[str, Any] = field(default_factory=dict)
    proxies: dict[str, dict[str, int]] = field(default_factory=dict)
    unfelt: list[str] = field(default_factory=list)
    disk_full: dict[str, Any] = field(default_factory=dict)
    fetch_rate: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No galaxy lost or doubled, no object corrupt, and the check found no breach."""
        return self.lost == 0 and self.doubled == 0 and self.corrupt == 0 and not self.breaches


# -- the stack ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not listening on port {port} after {timeout_s:.0f} s")


class Database:
    """The embedded PostgreSQL server, with restarts in a chosen shutdown mode."""

    def __init__(self, home: Path) -> None:
        from galpipe.db.embedded import start_embedded_postgres

        self.server = start_embedded_postgres(home / "pgdata")
        self.url = str(self.server.get_uri())

    def connect(self) -> psycopg.Connection[Any]:
        """A short-lived autocommit connection (the driver holds none across faults)."""
        return psycopg.connect(self.url, autocommit=True, connect_timeout=10)

    def restart(self, mode: str) -> None:
        """Stop the server in ``mode`` (``fast`` or ``immediate``) and start it again."""
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

        server = self.server
        pg_ctl(["-w", "-m", mode, "stop"], pgdata=server.pgdata, user=server.system_user)
        server.ensure_postgres_running()

    def terminate_backends(self) -> int:
        """``pg_terminate_backend`` of every other client session; how many were ended."""
        with self.connect() as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND backend_type = 'client backend'"
            ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.server.cleanup()


class Fleet:
    """The worker processes, restarted when they exit, as a Deployment's pods are."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.members: dict[str, tuple[str, dict[str, str], ChildProcess]] = {}
        self.restarts = 0
        self.generation: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._supervising = threading.Event()

    def start(self, name: str, pipeline: str, extra_env: dict[str, str] | None = None) -> None:
        env = {**self.env, **(extra_env or {})}
        with self._lock:
            self.generation[name] += 1
            env["GALPIPE_WORKER_ID"] = f"chaos-{name}-{self.generation[name]}"
            log = self.log_dir / f"{name}.{self.generation[name]}.log"
            self.members[name] = (pipeline, env, ChildProcess(name, [pipeline], log, env))

    def names(self, pipeline: str | None = None) -> list[str]:
        with self._lock:
            return sorted(n for n, (p, _, _) in self.members.items() if pipeline in (None, p))

    def signal(self, name: str, signum: int) -> None:
        with self._lock:
            _, _, child = self.members[name]
        if child.alive:
            child.process.send_signal(signum)

    def supervise(self, stop: threading.Event) -> None:
        """Start again every worker that exited, until ``stop`` is set."""
        while not stop.wait(0.5):
            with self._lock:
                dead = [(n, p, e) for n, (p, e, c) in self.members.items() if not c.alive]
            for name, pipeline, env in dead:
                self.restarts += 1
                with self._lock:
                    self.generation[name] += 1
                    log = self.log_dir / f"{name}.{self.generation[name]}.log"
                    env = {**env, "GALPIPE_WORKER_ID": f"chaos-{name}-{self.generation[name]}"}
                    self.members[name] = (pipeline, env, ChildProcess(name, [pipeline], log, env))

    def stop_all(self) -> None:
        with self._lock:
            children = [c for _, _, c in self.members.values()]
        for child in children:
            child.terminate()
        for child in children:
            child.stop()


# -- the schedules -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Spell:
    """A fault with a duration (``0``: instantaneous) on one part of the stack."""

    kind: str
    duration_s: float


def spell_schedule(options: ChaosOptions, rng: random.Random) -> list[Spell]:
    """Every timed fault once, in a seeded order."""
    spells = [
        Spell("store_down", options.outage_s),
        Spell("sky_down", options.outage_s),
        Spell("postgres_restart_fast", 0.0),
        Spell("postgres_restart_immediate", 0.0),
        *(
            Spell(kind, options.spell_s)
            for kind in (
                "postgres_terminate_backends",
                "store_slow",
                "store_errors",
                "sky_slow",
                "sky_truncated",
                "sky_html200",
                "sky_wrong_shape",
                "sky_nan_plane",
            )
        ),
    ]
    rng.shuffle(spells)
    return spells


def schedule_length_s(spells: Sequence[Spell], gap_s: float) -> float:
    """Seconds from the first spell's start to the last one's end (restarts take ~2 s)."""
    return sum(max(s.duration_s, 2.0) + gap_s for s in spells)


#: What each wire fault does, on which proxy. A ``down`` proxy refuses connections, which it
#: cannot count: those spells are felt when requests were in flight or the breaker opened.
_PROXY_FAULTS: dict[str, tuple[str, Callable[[ChaosOptions], Fault]]] = {
    "store_down": ("s3", lambda o: Fault("down")),
    "store_slow": ("s3", lambda o: Fault("slow", delay_s=1.5)),
    "store_errors": ("s3", lambda o: Fault("status", ratio=0.5, statuses=(500, 503, 5030))),
    "sky_down": ("sky", lambda o: Fault("down")),
    "sky_slow": ("sky", lambda o: Fault("slow", delay_s=1.5)),
    "sky_truncated": ("sky", lambda o: Fault("truncate", ratio=0.3)),
    "sky_html200": ("sky", lambda o: Fault("html200", ratio=0.3)),
    "sky_wrong_shape": ("sky", lambda o: Fault("wrong_shape", ratio=0.3)),
    "sky_nan_plane": ("sky", lambda o: Fault("nan_plane", ratio=0.3)),
}


class Injector:
    """Runs the spells and the signals; records what it did and when the last fault ended."""

    def __init__(
        self,
        options: ChaosOptions,
        database: Database,
        proxies: ProxyHost,
        fleet: Fleet,
        rng: random.Random,
    ) -> None:
        self.options = options
        self.database = database
        self.proxies = proxies
        self.fleet = fleet
        self.rng = rng
        self.faults: Counter[str] = Counter()
        self.notes: list[str] = []
        self.last_fault_end = 0.0

    def _spell(self, spell: Spell) -> None:
        kind = spell.kind
        if kind in _PROXY_FAULTS:
            name, make = _PROXY_FAULTS[kind]
            fault = make(self.options)
            hits_before = self.proxies.counts()[name].get(fault.mode, 0)
            self.proxies.set(name, fault)
            time.sleep(spell.duration_s)
            # A spell that met no request (the workers were backing off after the previous
            # one, or the breaker was open) lasts on, up to 10 s more, until one.
            deadline = time.monotonic() + max(3 * spell.duration_s, 10.0)
            while fault.mode != "down" and time.monotonic() < deadline:
                if self.proxies.counts()[name].get(fault.mode, 0) > hits_before:
                    break
                time.sleep(0.2)
            self.proxies.set(name, Fault())
        elif kind == "postgres_restart_fast":
            self.database.restart("fast")
        elif kind == "postgres_restart_immediate":
            self.database.restart("immediate")
        elif kind == "postgres_terminate_backends":
            ended = 0
            deadline = time.monotonic() + spell.duration_s
            while time.monotonic() < deadline:
                with contextlib.suppress(psycopg.Error):
                    ended += self.database.terminate_backends()
                time.sleep(0.5)
            self.notes.append(f"pg_terminate_backend ended {ended} sessions")
        else:  # pragma: no cover - the schedule names only the kinds above
            raise ValueError(kind)
        self.faults[kind] += 1
        self.last_fault_end = time.monotonic()

    def run_spells(self, spells: Sequence[Spell]) -> None:
        for spell in spells:
            self._spell(spell)
            time.sleep(self.options.gap_s)

    def run_signals(self, window_s: float) -> None:
        """SIGKILLs and SIGTERMs of random workers at seeded moments within ``window_s``."""
        kills = self.options.kills
        terms = max(1, kills // 3)
        events = [("worker_sigkill", signal.SIGKILL)] * kills + [
            ("worker_sigterm", signal.SIGTERM)
        ] * terms
        moments = sorted(self.rng.uniform(0.0, window_s) for _ in events)
        self.rng.shuffle(events)
        started = time.monotonic()
        for moment, (kind, signum) in zip(moments, events, strict=True):
            time.sleep(max(0.0, started + moment - time.monotonic()))
            name = self.rng.choice(self.fleet.names())
            self.fleet.signal(name, signum)
            self.faults[kind] += 1
            self.last_fault_end = max(self.last_fault_end, time.monotonic())


class BreakerWatch:
    """Samples the fetch breaker's state and counts its transitions (open, half-open, closed)."""

    def __init__(self, database: Database, period_s: float = 0.2) -> None:
        self.database = database
        self.period_s = period_s
        self.transitions: Counter[str] = Counter()
        self.last: str | None = None

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.period_s):
            try:
                with self.database.connect() as conn:
                    row = conn.execute(
                        "SELECT state::text FROM breakers WHERE name = 'fetch'"
                    ).fetchone()
            except psycopg.Error:
                continue  # the database is restarting
            state = row[0] if row else "closed"
            if self.last is not None and state != self.last:
                self.transitions[state] += 1
            self.last = state


# -- the run ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _moto_server(log_dir: Path) -> Iterator[str]:
    port = _free_port()
    with open(log_dir / "moto.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **_AWS_ENV},
            start_new_session=True,
        )
        try:
            _wait_listening(port, 60, "moto")
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def _write_catalogues(options: ChaosOptions) -> tuple[Path, dict[str, list[int]]]:
    """The sky's whole catalogue, and one file per part (clean, faulted, lane) with its ids."""
    from galpipe.synthetic.catalog import make_truths, truth_table

    sizes = {
        "clean": options.clean_galaxies,
        "faulted": options.faulted_galaxies,
        "lane": options.disk_full_galaxies,
    }
    table = truth_table(make_truths(sum(sizes.values()), seed=options.seed))
    everything = options.out / "catalog.ecsv"
    table.write(everything, format="ascii.ecsv", overwrite=True)
    ids: dict[str, list[int]] = {}
    start = 0
    for part, size in sizes.items():
        rows = table[start : start + size]
        rows.write(options.out / f"{part}.ecsv", format="ascii.ecsv", overwrite=True)
        ids[part] = [int(s) for s in rows["source_id"]]
        start += size
    return everything, ids


def _ingest(url: str, path: Path, name: str) -> None:
    from galpipe.catalog import ingest_catalog
    from galpipe.runtime.database import open_pool

    with contextlib.closing(open_pool(url, max_size=1)) as pool:
        summary = ingest_catalog(pool, path, keep=[], catalog_name=name)
    if summary.rejected:
        raise RuntimeError(f"the chaos catalogue {path} had {summary.rejected} rejected row(s)")


def run_chaos(options: ChaosOptions, log: Callable[[str], None] = print) -> ChaosResult:
    """Run the stack through both phases (module docstring) and reconcile it; see the figures."""
    import boto3

    from galpipe.db.migrate import migrate
    from galpipe.science.core import RadonConfig
    from galpipe.science.radon import RadonOperator, default_cache_dir

    result = ChaosResult()
    rng = random.Random(options.seed)
    log_dir = options.out / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        home = Path(tempfile.mkdtemp(prefix="galpipe-chaos-"))  # short: the socket lives here
        stack.callback(shutil.rmtree, home, ignore_errors=True)
        database = Database(home)
        stack.callback(database.close)
        migrate(database.url)
        catalog, parts = _write_catalogues(options)
        clean_ids, faulted_ids = parts["clean"], parts["faulted"]
        spells = spell_schedule(options, rng)
        window_s = schedule_length_s(spells, options.gap_s)
        result.fetch_rate = options.fetch_rate or len(faulted_ids) / (1.4 * window_s)
        result.galaxies = len(clean_ids) + len(faulted_ids) + len(parts["lane"])

        moto_url = stack.enter_context(_moto_server(log_dir))
        boto3.client(
            "s3",
            endpoint_url=moto_url,
            aws_access_key_id=_AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        ).create_bucket(Bucket=_BUCKET)
        sky = start_sky(catalog, log_dir, cache_size=2 * result.galaxies)
        stack.callback(sky.stop)
        sky_url = sky.wait_until_ready(timeout_s=120 + 0.05 * result.galaxies)
        proxies = stack.enter_context(
            ProxyHost({"s3": moto_url, "sky": sky_url}, seed=options.seed)
        )

        config = RadonConfig()
        cache_dir = Path(os.environ.get("GALPIPE_RADON_CACHE_DIR") or default_cache_dir())
        RadonOperator.load_or_build(config.size, config.angles, config.order, cache_dir=cache_dir)
        env = worker_environment(
            {**os.environ, **_AWS_ENV},
            database_url=database.url,
            object_store=f"s3://{_BUCKET}/cutouts",
            cutout_url=proxies.urls["sky"],
            fetch_rate=result.fetch_rate,
            radon_cache_dir=cache_dir,
            s3_endpoint_url=proxies.urls["s3"],
        )
        env.update(
            {
                "GALPIPE_LEASE_SECONDS": f"{options.lease_s:g}",
                "GALPIPE_RETRY_DELAYS": options.retry_delays,
                "GALPIPE_BREAKER_COOLDOWN_SECONDS": "5",
                "GALPIPE_BREAKER_PROBE_TIMEOUT_SECONDS": "10",
                "GALPIPE_CUTOUT_READ_TIMEOUT_SECONDS": "10",
                "GALPIPE_DB_POOL_SIZE": "4",
            }
        )
        fleet = Fleet(env, log_dir)
        stack.callback(fleet.stop_all)
        for i in range(1, options.fetch_workers + 1):
            fleet.start(f"fetch-{i}", "fetch")
        for i in range(1, options.radon_workers + 1):
            fleet.start(f"radon-{i}", "radon")
        stop_supervising = threading.Event()
        supervisor = threading.Thread(target=fleet.supervise, args=(stop_supervising,))
        supervisor.start()
        stack.callback(supervisor.join)
        stack.callback(stop_supervising.set)

        # Phase 1: no fault.
        started = time.monotonic()
        _ingest(database.url, options.out / "clean.ecsv", "chaos-clean")
        wait_drained(database.url, clean_ids, options.drain_timeout_s)
        result.clean_per_s = len(clean_ids) / (time.monotonic() - started)
        log(f"clean phase: {len(clean_ids):,} galaxies at {result.clean_per_s:.1f}/s")

        # Phase 2: the same flow, faults injected.
        fleet.start(
            "fetch-clock-ahead",
            "fetch",
            {
                "PYTHONPATH": os.pathsep.join(
                    [str(_CLOCK_AHEAD), *filter(None, [env.get("PYTHONPATH")])]
                ),
                "CHAOS_CLOCK_OFFSET_S": f"{options.clock_ahead_s:g}",
            },
        )
        result.faults["clock_ahead"] += 1
        injector = Injector(options, database, proxies, fleet, rng)
        log(
            f"faulted phase: {len(faulted_ids):,} galaxies; {len(spells)} spells over "
            f"~{window_s:.0f} s, {options.kills} SIGKILLs and SIGTERMs among them"
        )
        watch = BreakerWatch(database)
        threading.Thread(target=watch.run, args=(stop_supervising,), daemon=True).start()
        started = time.monotonic()
        _ingest(database.url, options.out / "faulted.ecsv", "chaos-faulted")
        signals = threading.Thread(target=injector.run_signals, args=(window_s,))
        signals.start()
        injector.run_spells(spells)
        signals.join()
        log(f"last fault at +{injector.last_fault_end - started:.0f} s; draining")
        wait_drained(database.url, faulted_ids, options.drain_timeout_s)
        result.drain_s = time.monotonic() - injector.last_fault_end
        result.faulted_per_s = len(faulted_ids) / (time.monotonic() - started)
        result.faults.update(injector.faults)
        result.notes += injector.notes
        stop_supervising.set()
        supervisor.join()
        result.breaker = {
            "opened": watch.transitions["open"],
            "probes": watch.transitions["half_open"],
            "closed": watch.transitions["closed"],
            "final": watch.last,
        }
        fleet.stop_all()
        result.restarts = fleet.restarts
        if parts["lane"]:
            lane = run_disk_full_lane(
                database.url,
                env,
                options.out / "lane.ecsv",
                parts["lane"],
                options.out,
                drain_timeout_s=options.drain_timeout_s,
            )
            result.faults["disk_full"] += 1
            result.disk_full = {
                "mode": lane.mode,
                "galaxies": lane.galaxies,
                "full_writes": lane.full_writes,
                "temp_files_left": lane.temp_files_left,
                "final_states": lane.final_states,
            }
            result.lost += lane.lost
            result.doubled += lane.doubled
            result.corrupt += lane.corrupt
            result.breaches += lane.breaches
            if lane.temp_files_left:
                result.breaches.append(f"{lane.temp_files_left} temporary file(s) left")
            if lane.full_writes == 0:
                result.unfelt.append("disk_full (no write met a full disk)")
        result.proxies = proxies.counts()
        result.unfelt = [
            kind
            for kind, (name, make) in _PROXY_FAULTS.items()
            if make(options).mode != "down"
            and result.proxies.get(name, {}).get(make(options).mode, 0) == 0
        ]
        if result.breaker.get("opened", 0) == 0:
            result.unfelt.append("sky_down (the fetch breaker never opened)")
        _reconcile(result, database, env, clean_ids + faulted_ids)
    return result


def _reconcile(
    result: ChaosResult, database: Database, env: dict[str, str], ids: list[int]
) -> None:
    """The losses by the run's own count, and every breach :func:`run_check` finds."""
    from galpipe.db.queue import task_counts
    from galpipe.ops.check import run_check
    from galpipe.runtime.database import open_pool
    from galpipe.settings import Settings
    from galpipe.storage import object_store_from_settings

    lost, doubled = lost_and_doubled(database.url, ids)
    result.lost += lost
    result.doubled += doubled
    settings = Settings.from_env(env)
    with contextlib.closing(open_pool(database.url, max_size=2)) as pool:
        with pool.connection() as conn:
            result.final_states = task_counts(conn, ids)
        # The store is read as the workers read it: through the S3 proxy, with their keys.
        with mock.patch.dict(os.environ, _AWS_ENV):
            store = object_store_from_settings(settings)
            report = run_check(pool, store, settings, sample=None)
    result.objects_verified = report.objects_verified
    result.breaches += [
        f"{b.kind}{f' ({b.pipeline})' if b.pipeline else ''}: {b.count}, e.g. "
        + ", ".join(b.examples)
        for b in report.breaches
    ]
    result.corrupt += sum(
        b.count for b in report.breaches if b.kind.startswith(("object_", "missing_object"))
    )
