"""The ``galpipe`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from galpipe.catalog.export import add_export_command
from galpipe.ops.status import add_status_command
from galpipe.runtime.logs import configure_logging
from galpipe.settings import Settings, SettingsError
from galpipe.synthetic.cli import add_sky_commands
from galpipe.validation.cli import add_validate_parser

log = logging.getLogger("galpipe")

# Exit codes: 0 success, 1 the command failed, 2 bad usage or configuration.
EXIT_FAILED = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """A command could not do its job; the message says why, for the operator."""


def _cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from galpipe.db.migrate import migrate

    applied = migrate(settings.require("database_url"))
    print(f"applied {len(applied)} migration(s)" + (f": {applied}" if applied else ""))
    return 0


def _cmd_pause(args: argparse.Namespace, settings: Settings) -> int:
    from galpipe.db.connection import pool_from_settings
    from galpipe.db.queue import TaskQueue

    with pool_from_settings(settings) as pool:
        queue = TaskQueue(pool)
        if args.command == "pause":
            queue.pause(args.pipeline, args.reason)
            print(f"paused {args.pipeline}: workers stop claiming after their current batch")
        else:
            queue.resume(args.pipeline)
            print(f"resumed {args.pipeline}")
    return 0


def _cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from galpipe.catalog import ingest_cli

    return ingest_cli(args, settings)


def _cmd_fetch(args: argparse.Namespace, settings: Settings) -> int:
    from galpipe.pipelines.fetch import build_fetch_pipeline
    from galpipe.pipelines.worker import run_from_settings

    run_from_settings(settings, build_fetch_pipeline)
    return 0


def _cmd_radon(args: argparse.Namespace, settings: Settings) -> int:
    from galpipe.pipelines.radon import build_radon_pipeline
    from galpipe.pipelines.worker import run_from_settings

    run_from_settings(settings, build_radon_pipeline)
    return 0


def _cmd_monitor(args: argparse.Namespace, settings: Settings) -> int:
    from galpipe.ops.monitor import run_from_settings

    run_from_settings(settings)
    return 0


def _first_given(*values: int | None) -> int:
    """The first value that is not None (a flag given as 0 counts as given)."""
    return next(v for v in values if v is not None)


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from rich.console import Console

    from galpipe.demo.run import DemoError, DemoOptions, print_summary, run_demo

    console = Console()
    try:
        options = DemoOptions(
            n=args.n,
            out=Path(args.out),
            fetch_workers=_first_given(args.fetch_workers, args.workers, 2),
            radon_workers=_first_given(args.radon_workers, args.workers, 1),
            seed=args.seed,
            catalog=Path(args.catalog) if args.catalog else None,
            database_url=args.database_url,
            object_store=args.object_store,
            s3_endpoint_url=args.s3_endpoint_url,
            cutout_url=args.cutout_url,
            fetch_rate=args.fetch_rate,
            timeout_s=args.timeout,
            progress=not args.no_progress,
        )
        result = run_demo(options, console)
    except DemoError as exc:
        raise CommandError(str(exc)) from None
    except KeyboardInterrupt:
        print("galpipe demo: interrupted; workers, sky and database stopped", file=sys.stderr)
        return 130
    print_summary(result, console)
    return 0 if result.ok else EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="galpipe",
        description="Position angles of galaxies from Radon transforms of survey cutouts.",
        epilog="Configuration comes from GALPIPE_* environment variables (see the README).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("migrate", help="apply database migrations (safe from many pods at once)")
    p.set_defaults(handler=_cmd_migrate)

    p = sub.add_parser("ingest", help="ingest a galaxy catalogue and queue fetch tasks")
    p.add_argument("file", help="catalogue file: CSV, ECSV, FITS or VOTable")
    p.add_argument(
        "--format",
        help="astropy.table format name (csv, ascii.ecsv, fits, votable); "
        "guessed from the file name when omitted",
    )
    p.add_argument("--id-col", default="source_id", help="column of integer galaxy ids")
    p.add_argument("--ra-col", default="ra", help="column of right ascension in degrees")
    p.add_argument("--dec-col", default="dec", help="column of declination in degrees")
    p.add_argument(
        "--keep",
        default=None,
        help="comma-separated extra columns to store with each galaxy "
        "(default: every other column)",
    )
    p.add_argument("--catalog-name", default=None, help="name recorded with each galaxy")
    p.add_argument(
        "--report",
        default=None,
        help="where to write rejected rows (CSV); default FILE.rejected.csv",
    )
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.set_defaults(handler=_cmd_ingest)

    for name, text in (("pause", "stop workers of a pipeline claiming"), ("resume", "undo pause")):
        p = sub.add_parser(name, help=text)
        p.add_argument("pipeline", help="pipeline name, e.g. fetch or radon")
        if name == "pause":
            p.add_argument("--reason", default="paused by operator", help="shown in status")
        p.set_defaults(handler=_cmd_pause)

    p = sub.add_parser(
        "fetch", help="run a fetch worker: cutouts from the survey into the object store"
    )
    p.set_defaults(handler=_cmd_fetch)

    p = sub.add_parser("radon", help="run a radon worker: position angles of fetched cutouts")
    p.set_defaults(handler=_cmd_radon)

    p = sub.add_parser(
        "monitor",
        help="export the database-derived gauges (queues, breakers, rate limits) on /metrics",
    )
    p.set_defaults(handler=_cmd_monitor)

    add_sky_commands(sub)
    add_export_command(sub)
    add_status_command(sub)
    add_validate_parser(sub)

    p = sub.add_parser(
        "demo",
        help="run the whole system on this machine (embedded stack)",
        description="Embedded PostgreSQL, a local object store and the synthetic sky (its "
        "rate limit lifted) on 127.0.0.1; fetch and radon worker processes; a report in --out.",
    )
    p.add_argument("--n", type=int, default=1000, help="synthetic galaxies (default 1000)")
    p.add_argument("--out", default="galpipe-demo", help="output directory (default galpipe-demo)")
    p.add_argument("--workers", type=int, default=None, help="worker processes per pipeline")
    p.add_argument("--fetch-workers", type=int, default=None, help="fetch processes (default 2)")
    p.add_argument("--radon-workers", type=int, default=None, help="radon processes (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seeds the synthetic catalogue")
    p.add_argument("--catalog", default=None, help="use this `galpipe sky catalog` ECSV instead")
    p.add_argument("--database-url", default=None, help="a real PostgreSQL instead of embedded")
    p.add_argument(
        "--object-store",
        default=None,
        help="s3://bucket/prefix or file:///dir (default OUT/objects)",
    )
    p.add_argument("--s3-endpoint-url", default=None, help="S3-compatible endpoint (MinIO, moto)")
    p.add_argument(
        "--cutout-url", default=None, help="a cutout service instead of the synthetic sky"
    )
    p.add_argument(
        "--fetch-rate",
        type=float,
        default=None,
        help="shared requests/s (default 1000 with the demo's sky, else GALPIPE_FETCH_RATE_LIMIT)",
    )
    p.add_argument("--timeout", type=float, default=900.0, help="give up after this many s")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of a live table")
    p.set_defaults(handler=_cmd_demo)
    return parser


Handler = Callable[[argparse.Namespace, Settings], int]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"galpipe: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_format, settings.log_level)
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except SettingsError as exc:
        print(f"galpipe: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CommandError as exc:
        print(f"galpipe {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
