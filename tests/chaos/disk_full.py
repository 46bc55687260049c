"""The chaos run's disk-full lane: the local object store runs out of space mid-flow.

The main run keeps cutouts in S3, where no disk fills; this lane runs a fetch and a radon worker
of their own against a database of their own (on the same server) with the local store, on a
small tmpfs mounted for it when the machine allows (root) — a real ENOSPC from the kernel —,
otherwise with ENOSPC injected at the store's ``fsync`` (``tests/chaos/disk_full``). The disk
fills (or is declared full) once part of the galaxies are stored, stays full a few seconds, then
grows; afterwards every galaxy must have a result or a stated reason, ``galpipe check`` must
pass over every object, and no temporary file may be left in the store.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from galpipe.demo.processes import ChildProcess
from tests.chaos.measure import lost_and_doubled, unfinished

__all__ = ["DiskFullResult", "run_disk_full_lane"]

_INJECTOR = Path(__file__).resolve().parent / "disk_full"
_DATABASE = "chaos_disk_full"
#: Bytes of one stored cutout (4 bands of 40 x 40 float32 and the header, in 2880-byte blocks).
_CUTOUT_BYTES = 28_800


@dataclass
class DiskFullResult:
    """What the lane measured."""

    mode: str = ""
    galaxies: int = 0
    lost: int = 0
    doubled: int = 0
    corrupt: int = 0
    breaches: list[str] = field(default_factory=list)
    temp_files_left: int = 0
    full_writes: int = 0  # galaxies seen with a write refused for lack of space
    final_states: dict[str, dict[str, int]] = field(default_factory=dict)


def _run(*argv: str) -> bool:
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def _stored(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM cutouts").fetchone()
    return int(row[0]) if row else 0


def _writes_refused(url: str) -> set[int]:
    """Galaxies whose last fetch attempt met the full disk (ENOSPC: "No space left")."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT source_id FROM tasks WHERE pipeline = 'fetch' "
            "AND last_error LIKE '%No space left%'"
        ).fetchall()
    return {int(r[0]) for r in rows}


def run_disk_full_lane(
    admin_url: str,
    base_env: dict[str, str],
    catalog: Path,
    ids: list[int],
    out: Path,
    *,
    full_s: float = 5.0,
    drain_timeout_s: float = 300.0,
) -> DiskFullResult:
    """Run the lane over the galaxies ``ids`` of ``catalog`` (see the module's docstring).

    Parameters
    ----------
    admin_url
        The chaos run's database server (the lane creates its database there).
    base_env
        The workers' environment (cutout service, retries, lease), pointed here at the lane's
        database and store.
    """
    from galpipe.catalog import ingest_catalog
    from galpipe.db.migrate import migrate
    from galpipe.db.queue import task_counts
    from galpipe.ops.check import run_check
    from galpipe.runtime.database import open_pool
    from galpipe.settings import Settings
    from galpipe.storage import open_object_store

    result = DiskFullResult(galaxies=len(ids))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {_DATABASE}")
        conn.execute(f"CREATE DATABASE {_DATABASE}")
    url = make_conninfo(admin_url, dbname=_DATABASE)
    migrate(url)
    store_dir = Path(tempfile.mkdtemp(prefix="galpipe-chaos-store-"))
    # Room for about 40 % of the cutouts: the disk fills mid-flow.
    room = max(64 * 1024, int(0.4 * len(ids) * _CUTOUT_BYTES))
    mounted = os.geteuid() == 0 and _run(
        "mount", "-t", "tmpfs", "-o", f"size={room}", "tmpfs", str(store_dir)
    )
    flag = out / "disk-full.flag"
    env = {
        **base_env,
        "GALPIPE_DATABASE_URL": url,
        "GALPIPE_OBJECT_STORE": store_dir.as_uri(),
    }
    env.pop("GALPIPE_S3_ENDPOINT_URL", None)
    if mounted:
        result.mode = f"tmpfs of {room:,} bytes (the kernel's ENOSPC)"
    else:
        result.mode = "ENOSPC injected at the store's fsync (no tmpfs: not root)"
        env["CHAOS_DISK_FULL_FLAG"] = str(flag)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(_INJECTOR), *filter(None, [env.get("PYTHONPATH")])]
        )
    workers = [
        ChildProcess(
            f"lane-{p}",
            [p],
            out / "logs" / f"lane-{p}.log",
            {**env, "GALPIPE_WORKER_ID": f"chaos-lane-{p}"},
        )
        for p in ("fetch", "radon")
    ]
    try:
        with contextlib.closing(open_pool(url, max_size=1)) as pool:
            ingest_catalog(pool, catalog, keep=[], catalog_name="chaos-disk-full")
        # Full once 40 % are stored: the tmpfs by itself, the injector on the flag.
        deadline = time.monotonic() + drain_timeout_s
        full_seen: set[int] = set()
        while time.monotonic() < deadline:
            full_seen |= _writes_refused(url)
            if full_seen or _stored(url) >= 0.4 * len(ids):
                break
            time.sleep(0.2)
        if not mounted:
            flag.touch()
        full_until = time.monotonic() + full_s
        while time.monotonic() < full_until:
            full_seen |= _writes_refused(url)
            time.sleep(0.2)
        if mounted:
            _run("mount", "-o", "remount,size=256m", str(store_dir))
        else:
            flag.unlink()
        while time.monotonic() < deadline:
            full_seen |= _writes_refused(url)
            if unfinished(url, ids) == 0:
                break
            time.sleep(0.5)
        result.full_writes = len(full_seen)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.stop()
    try:
        result.lost, result.doubled = lost_and_doubled(url, ids)
        settings = Settings.from_env(env)
        store = open_object_store(store_dir.as_uri())
        with contextlib.closing(open_pool(url, max_size=2)) as pool:
            with pool.connection() as conn:
                result.final_states = task_counts(conn, ids)
            report = run_check(pool, store, settings, sample=None)
        result.breaches = [f"disk-full lane: {b.kind}: {b.count}" for b in report.breaches]
        result.corrupt = sum(
            b.count for b in report.breaches if b.kind.startswith(("object_", "missing_object"))
        )
        result.temp_files_left = sum(1 for p in store_dir.rglob("*.tmp"))
    finally:
        if mounted:
            _run("umount", str(store_dir))
    return result
