"""The operator's commands: ``galpipe migrate``, ``pause``, ``resume``, ``routes``, ``status``,
``monitor`` and ``check``.

Only argparse is imported here; the database code loads when a command runs.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from galpipe.errors import CommandError

if TYPE_CHECKING:
    from galpipe.settings import Settings

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``migrate``, ``pause``, ``resume``, ``routes``, ``status``, ``monitor`` and ``check``."""
    p = subparsers.add_parser(
        "migrate", help="apply database migrations (safe from many pods at once)"
    )
    p.set_defaults(handler=_cmd_migrate)

    p = subparsers.add_parser("pause", help="stop workers of a pipeline claiming")
    p.add_argument("pipeline", help="pipeline name, e.g. fetch or radon")
    p.add_argument("--reason", default="paused by operator", help="shown in status")
    p.set_defaults(handler=_cmd_pause)

    p = subparsers.add_parser("resume", help="undo pause")
    p.add_argument("pipeline", help="pipeline name, e.g. fetch or radon")
    p.set_defaults(handler=_cmd_resume)

    p = subparsers.add_parser(
        "routes",
        help="list, add or remove the routes that queue a pipeline's tasks after another's",
        description="A route UPSTREAM -> DOWNSTREAM makes every done UPSTREAM task queue a "
        "DOWNSTREAM task for the same galaxy. Adding one also queues the galaxies already done; "
        "removing one keeps the tasks it queued. Changes are recorded in the audit log.",
    )
    p.set_defaults(handler=_cmd_routes, change=None)
    changes = p.add_subparsers(dest="change", metavar="{add,remove}")
    for change, help_text in (
        ("add", "add a route and queue the galaxies whose UPSTREAM task is already done"),
        ("remove", "remove a route; the tasks it queued stay"),
    ):
        c = changes.add_parser(change, help=help_text)
        c.add_argument("upstream", help="pipeline whose done tasks queue the next, e.g. fetch")
        c.add_argument("downstream", help="pipeline whose tasks they queue, e.g. morphology")
        c.add_argument(
            "--reason", default=f"route {change} from the command line", help="for the audit log"
        )

    p = subparsers.add_parser(
        "status", help="queues, rates, pauses, breakers and rate limits, as tables or JSON"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.set_defaults(handler=_cmd_status)

    p = subparsers.add_parser(
        "monitor",
        help="export the database-derived gauges (queues, breakers, rate limits) on /metrics",
    )
    p.set_defaults(handler=_cmd_monitor)

    p = subparsers.add_parser(
        "check",
        help="reconcile tasks, results and stored objects; exit 1 on any breach",
        description="Check that every galaxy has its tasks and exactly one result or a stated "
        "reason, and that stored cutouts match their rows (docs/runbook.md, galpipe check).",
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "--sample",
        type=_positive_int,
        default=_DEFAULT_SAMPLE,
        metavar="N",
        help=f"verify a uniform random sample of N stored objects (default {_DEFAULT_SAMPLE})",
    )
    scope.add_argument(
        "--all",
        dest="sample",
        action="store_const",
        const=None,
        help="verify every stored object (hours at 10^7 objects)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.set_defaults(handler=_cmd_check)


#: Objects ``galpipe check`` verifies when given neither ``--sample`` nor ``--all``: a
#: corruption of one object in a thousand shows in such a sample with a probability of 63 %.
_DEFAULT_SAMPLE = 1000


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer")
    return value


def _cmd_migrate(args: argparse.Namespace, settings: Settings) -> None:
    from galpipe.db.migrate import migrate
    from galpipe.runtime.database import conninfo_from_settings, database_errors

    conninfo = conninfo_from_settings(settings)
    with database_errors():
        applied = migrate(conninfo)
    print(f"applied {len(applied)} migration(s)" + (f": {applied}" if applied else ""))


def _cmd_pause(args: argparse.Namespace, settings: Settings) -> None:
    from galpipe.db.queue import TaskQueue
    from galpipe.runtime.database import database_errors, pool_from_settings

    with database_errors(), pool_from_settings(settings) as pool:
        TaskQueue(pool).pause(args.pipeline, args.reason)
    print(f"paused {args.pipeline}: workers stop claiming after their current batch")


def _cmd_resume(args: argparse.Namespace, settings: Settings) -> None:
    from galpipe.db.queue import TaskQueue
    from galpipe.runtime.database import database_errors, pool_from_settings

    with database_errors(), pool_from_settings(settings) as pool:
        TaskQueue(pool).resume(args.pipeline)
    print(f"resumed {args.pipeline}")


def _cmd_routes(args: argparse.Namespace, settings: Settings) -> None:
    import getpass

    from galpipe.db.audit import AuditRecord, record_action
    from galpipe.db.routes import add_route, remove_route, routes
    from galpipe.runtime.database import database_errors, pool_from_settings

    with database_errors(), pool_from_settings(settings) as pool, pool.connection() as conn:
        if args.change is None:
            listed = routes(conn)
            for route in listed:
                since = f"{route.created_at:%Y-%m-%d}"
                print(f"{route.upstream} -> {route.downstream}  (since {since})")
            if not listed:
                print("no routes: done tasks queue nothing")
            return
        edge = f"{args.upstream} -> {args.downstream}"
        target: dict[str, object] = {"upstream": args.upstream, "downstream": args.downstream}
        with conn.transaction():
            before = [[r.upstream, r.downstream] for r in routes(conn)]
            if args.change == "add":
                target["queued"] = queued = add_route(conn, args.upstream, args.downstream)
                outcome = f"route {edge}; queued {queued} {args.downstream} task(s)"
            else:
                existed = remove_route(conn, args.upstream, args.downstream)
                outcome = f"removed route {edge}" if existed else f"no route {edge} to remove"
            # The operator here is the local account: no cluster TokenReview names a CLI user.
            record_action(
                conn,
                AuditRecord(
                    user=getpass.getuser(),
                    action=f"route_{args.change}",
                    reason=args.reason,
                    result="ok",
                    pipeline=args.downstream,
                    target=target,
                    before=before,
                    after=[[r.upstream, r.downstream] for r in routes(conn)],
                ),
            )
    print(outcome)


def _cmd_status(args: argparse.Namespace, settings: Settings) -> None:
    from rich.console import Console

    from galpipe.ops.status import collect_status, render_status
    from galpipe.runtime.database import database_errors, pool_from_settings

    with database_errors(), pool_from_settings(settings) as pool:
        status = collect_status(pool, settings)
    if args.json:
        print(json.dumps(status.to_json(), indent=2))
    else:
        render_status(status, Console())


def _cmd_monitor(args: argparse.Namespace, settings: Settings) -> None:
    from galpipe.ops.monitor import run_from_settings

    run_from_settings(settings)


def _cmd_check(args: argparse.Namespace, settings: Settings) -> None:
    from rich.console import Console

    from galpipe.ops.check import render_check, run_check
    from galpipe.runtime.database import database_errors, pool_from_settings
    from galpipe.storage import object_store_from_settings

    store = object_store_from_settings(settings)
    with database_errors(), pool_from_settings(settings) as pool:
        report = run_check(pool, store, settings, sample=args.sample)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        render_check(report, Console())
    if not report.ok:
        raise CommandError(report.failure_message())
