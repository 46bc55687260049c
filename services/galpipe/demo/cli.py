"""``galpipe demo``: the whole system on this machine, with a report.

Only argparse is imported here; the demo's code loads when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from galpipe.errors import CommandError

if TYPE_CHECKING:
    from galpipe.demo.run import DemoResult
    from galpipe.settings import Settings

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``demo`` to ``subparsers``."""
    p = subparsers.add_parser(
        "demo",
        help="run the whole system on this machine (embedded stack)",
        description="Embedded PostgreSQL, a local object store and the synthetic sky (its "
        "rate limit lifted) on 127.0.0.1; fetch worker processes and those of --pipelines; "
        "a report in --out.",
    )
    p.add_argument("--n", type=int, default=1000, help="synthetic galaxies (default 1000)")
    p.add_argument("--out", default="galpipe-demo", help="output directory (default galpipe-demo)")
    p.add_argument(
        "--pipelines",
        default="radon",
        help="what measures the fetched cutouts: radon, morphology or radon,morphology "
        "(default radon; fetch always runs)",
    )
    p.add_argument("--workers", type=int, default=None, help="worker processes per pipeline")
    p.add_argument("--fetch-workers", type=int, default=None, help="fetch processes (default 2)")
    p.add_argument("--radon-workers", type=int, default=None, help="radon processes (default 1)")
    p.add_argument(
        "--morphology-workers", type=int, default=None, help="morphology processes (default 1)"
    )
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


def _first_given(*values: int | None) -> int:
    """The first value that is not None (a flag given as 0 counts as given)."""
    return next(v for v in values if v is not None)


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> None:
    """Run the demo and print its summary; CommandError when it did not finish cleanly.

    Options the demo refuses, and a step of the stack that cannot start, raise
    :class:`~galpipe.demo.DemoError` (a CommandError) before any summary.
    """
    from rich.console import Console

    from galpipe.demo.report import print_summary
    from galpipe.demo.run import DemoOptions, parse_pipelines, run_demo

    console = Console()
    options = DemoOptions(
        n=args.n,
        out=Path(args.out),
        pipelines=parse_pipelines(args.pipelines),
        fetch_workers=_first_given(args.fetch_workers, args.workers, 2),
        radon_workers=_first_given(args.radon_workers, args.workers, 1),
        morphology_workers=_first_given(args.morphology_workers, args.workers, 1),
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
    print_summary(result, console)
    if not result.ok:
        raise CommandError(_unfinished_reason(result))


def _unfinished_reason(result: DemoResult) -> str:
    """Why a demo run that returned is not a success, for the line after its summary."""
    reasons = [] if result.all_terminal else ["not every task reached a terminal state"]
    reasons += result.problems
    return "; ".join(reasons) + f" (report: {result.files.get('report', result.out / 'report.md')})"
