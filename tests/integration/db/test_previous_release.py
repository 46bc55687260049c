"""Expand/contract: the previous release's worker runs on the current schema.

The previous release is the code as it was just before the newest migration file was added,
taken from git history at test time (``git archive``): the commit before the one that added the
file, or the checked-out commit while the file is not committed yet. Its own worker loop, queue
and result writes run in a child process whose ``PYTHONPATH`` is that tree, against a database
migrated by the current code, as the app role; the tasks it claims must all end done, with
their downstream tasks and result rows. A clone without that history (shallow) skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
from io import BytesIO
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from galpipe.db.migrate import load_migrations
from tests.tools import REPO_ROOT

MIGRATIONS = Path("services/galpipe/db/migrations")
TASKS = 20

#: Run by the previous release's interpreter path: its Worker, TaskQueue and record_cutouts,
#: through a stand-in fetch stage that stores one cutout row per task.
_OLD_WORKER = textwrap.dedent(
    """
    import sys
    import galpipe
    from galpipe.db.connection import open_pool
    from galpipe.db.cutouts import CutoutRecord, record_cutouts
    from galpipe.db.queue import TaskQueue
    from galpipe.pipelines.base import Done
    from galpipe.pipelines.worker import Worker

    url, tree = sys.argv[1], sys.argv[2]
    if not galpipe.__file__.startswith(tree):
        sys.exit(f"imported galpipe from {galpipe.__file__}, not from {tree}")

    class StandInFetch:
        # downstream: read by a release before pipeline_routes; later ones ignore it.
        name, batch_size, downstream = "fetch", 4, "radon"

        def process(self, tasks):
            return [Done(t.source_id) for t in tasks]

        def store(self, conn, done):
            record_cutouts(conn, [
                CutoutRecord(d.source_id, "dr10", "griz", "", 40, 0.262, "south",
                             f"old/{d.source_id}", "0" * 64, 1)
                for d in done
            ])

    with open_pool(url, max_size=2) as pool:
        worker = Worker(StandInFetch(), TaskQueue(pool), owner="previous-release")
        stats = worker.run(stop_when_idle=True)
    print(stats.claimed, stats.outcomes.get("done", 0))
    """
)


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO_ROOT), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def _previous_release() -> str:
    """The commit before the newest migration file, or HEAD while that file is uncommitted."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: the previous release comes from git history")
    try:
        inside = _git("rev-parse", "--is-inside-work-tree")
    except subprocess.CalledProcessError:
        inside = "false"
    if inside != "true":
        pytest.skip("not a git checkout: the previous release comes from git history")
    newest = MIGRATIONS / load_migrations()[-1].filename
    added = _git("log", "--diff-filter=A", "--format=%H", "--", str(newest)).splitlines()
    if not added:
        # Not committed yet: the checked-out commit is the code without it.
        return _git("rev-parse", "HEAD")
    try:
        return _git("rev-parse", "--verify", f"{added[-1]}^")
    except subprocess.CalledProcessError:
        shallow = _git("rev-parse", "--is-shallow-repository") == "true"
        pytest.skip(
            f"the commit before {newest.name} was added is not in this clone"
            + (" (a shallow clone: fetch with full history, fetch-depth: 0)" if shallow else "")
        )


def _export(commit: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", "--format=tar", commit, "services/galpipe"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "services"


def test_the_previous_release_worker_completes_tasks_on_the_current_schema(
    database_url: str, tmp_path: Path
) -> None:
    commit = _previous_release()
    tree = _export(commit, tmp_path / "previous")
    old_versions = {
        int(p.name[:4]) for p in (tree / "galpipe/db/migrations").glob("[0-9][0-9][0-9][0-9]_*.sql")
    }
    current = load_migrations()
    assert {m.version for m in current} > old_versions, "no migration is newer than that release"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO galaxies (source_id, ra, dec, catalog) "
            "SELECT g, g * 0.1, 1.0, 'previous' FROM generate_series(1, %s) g",
            (TASKS,),
        )
        conn.execute(
            "INSERT INTO tasks (pipeline, source_id) "
            "SELECT 'fetch', g FROM generate_series(1, %s) g",
            (TASKS,),
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GALPIPE_")}
    env["PYTHONPATH"] = str(tree)
    # The app role of the current schema, as the previous chart's pods would connect after a
    # rollback that keeps the new credentials.
    url = make_conninfo(database_url, user="galpipe_app")
    run = subprocess.run(
        [sys.executable, "-c", _OLD_WORKER, url, str(tree)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, f"previous release {commit[:12]} failed:\n{run.stderr}"
    claimed, done = map(int, run.stdout.split())
    assert (claimed, done) == (TASKS, TASKS)
    with psycopg.connect(database_url) as conn:
        states = conn.execute(
            "SELECT pipeline, state::text, count(*) FROM tasks GROUP BY 1, 2 ORDER BY 1"
        ).fetchall()
        (cutouts,) = conn.execute("SELECT count(*) FROM cutouts").fetchone() or (0,)
    assert states == [("fetch", "done", TASKS), ("radon", "queued", TASKS)]
    assert cutouts == TASKS
