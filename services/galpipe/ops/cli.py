"""The operator's commands: ``galpipe migrate``, ``pause``, ``resume``, ``status``, ``monitor``
and ``check``.

Only argparse is imported here; the database code loads when a command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from typing import TYPE_CHECKING

from galpipe.errors import CommandError, ServiceError, reraise_as

if TYPE_CHECKING:
    from galpipe.settings import Settings

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``migrate``, ``pause``, ``resume``, ``status``, ``monitor`` and ``check``."""
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


def _database_errors() -> contextlib.AbstractContextManager[None]:
    """Report a failure of the database (unreachable, refused, an SQL error) as a ServiceError."""
    import psycopg

    return reraise_as(ServiceError, psycopg.Error, context="database error")


def _cmd_migrate(args: argparse.Namespace, settings: Settings) -> None:
    from galpipe.db.migrate import migrate
    from galpipe.runtime.database import conninfo_from_settings

    conninfo = conninfo_from_settings(settings)
    with _database_errors():
        applied = migrate(conninfo)
    print(f"applied {len(applied)} migration(s)" + (f": {applied}" if applied else ""))


def _cmd_pause(args: argparse.Namespace, settings: Settings) -> None:
    from galpipe.db.queue import TaskQueue
    from galpipe.runtime.database import pool_from_settings

    with _database_errors(), pool_from_settings(settings) as pool:
        TaskQueue(pool).pause(args.pipeline, args.reason)
    print(f"paused {args.pipeline}: workers stop claiming after their current batch")


def _cmd_resume(args: argparse.Namespace, settings: Settings) -> None:
    from galpipe.db.queue import TaskQueue
    from galpipe.runtime.database import pool_from_settings

    with _database_errors(), pool_from_settings(settings) as pool:
        TaskQueue(pool).resume(args.pipeline)
    print(f"resumed {args.pipeline}")


def _cmd_status(args: argparse.Namespace, settings: Settings) -> None:
    from rich.console import Console

    from galpipe.ops.status import collect_status, render_status
    from galpipe.runtime.database import pool_from_settings

    with _database_errors(), pool_from_settings(settings) as pool:
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
    from galpipe.runtime.database import pool_from_settings
    from galpipe.storage import object_store_from_settings

    store = object_store_from_settings(settings)
    with _database_errors(), pool_from_settings(settings) as pool:
        report = run_check(pool, store, settings, sample=args.sample)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        render_check(report, Console())
    if not report.ok:
        raise CommandError(report.failure_message())
