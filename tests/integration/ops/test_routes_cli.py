"""``galpipe routes``: list, add (with its backfill) and remove, each change in the audit log."""

from __future__ import annotations

import getpass

import psycopg
import pytest

import galpipe.cli
from galpipe.cli import main
from galpipe.db.audit import query_audit
from galpipe.db.queue import TaskQueue


@pytest.fixture(autouse=True)
def _test_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """main's logging set-up is the process's; the test run keeps its own."""
    monkeypatch.setattr(galpipe.cli, "configure_logging", lambda *_: None)


def test_routes_are_listed_added_with_backfill_and_removed(
    database_url: str,
    queue: TaskQueue,
    add_galaxies,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("GALPIPE_DATABASE_URL", database_url)
    ids = add_galaxies(4)
    queue.enqueue("fetch", ids)
    queue.claim_batch("fetch", 3, 60, "w")
    queue.complete(None, "fetch", "w", ids[:3])

    assert main(["routes"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("fetch -> radon  (since ")

    assert main(["routes", "add", "fetch", "morphology", "--reason", "morphology goes live"]) == 0
    assert (
        capsys.readouterr().out.strip() == "route fetch -> morphology; queued 3 morphology task(s)"
    )
    assert main(["routes"]) == 0
    listed = [line.split("  ")[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == ["fetch -> morphology", "fetch -> radon"]

    assert main(["routes", "remove", "fetch", "morphology"]) == 0
    assert capsys.readouterr().out.strip() == "removed route fetch -> morphology"

    with psycopg.connect(database_url) as conn:
        (removed, added) = query_audit(conn, user=getpass.getuser())
        (morphology,) = conn.execute(
            "SELECT count(*) FROM tasks WHERE pipeline = 'morphology'"
        ).fetchone() or (0,)
    assert morphology == 3  # removing the route keeps its tasks
    assert (added.action, added.reason, added.pipeline) == (
        "route_add",
        "morphology goes live",
        "morphology",
    )
    assert added.target == {"upstream": "fetch", "downstream": "morphology", "queued": 3}
    assert added.before == [["fetch", "radon"]]
    assert added.after == [["fetch", "morphology"], ["fetch", "radon"]]
    assert (removed.action, removed.before, removed.after) == (
        "route_remove",
        added.after,
        added.before,
    )


def test_an_unknown_pipeline_fails_naming_it_and_changes_nothing(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GALPIPE_DATABASE_URL", database_url)
    assert main(["routes", "add", "fetch", "morphologie"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("galpipe routes: route fetch -> morphologie: unknown pipeline")
    assert "'morphologie'" in err
    with psycopg.connect(database_url) as conn:
        assert query_audit(conn) == []
        assert conn.execute("SELECT upstream, downstream FROM pipeline_routes").fetchall() == [
            ("fetch", "radon")
        ]
