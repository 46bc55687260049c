"""``galpipe ingest``: parse its options, load and store the file, print the summary."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

import psycopg

from galpipe.catalog.ingest import IngestSummary, store_catalog
from galpipe.catalog.read import load_catalog
from galpipe.catalog.validate import CatalogError
from galpipe.settings import Settings


def parse_keep(raw: str | None) -> list[str] | None:
    """``--keep a,b`` as a list; None (option absent) keeps every column; ``""`` keeps none."""
    if raw is None:
        return None
    return [name.strip() for name in raw.split(",") if name.strip()]


def format_summary(summary: IngestSummary, path: Path) -> str:
    """The lines ``galpipe ingest`` prints."""
    lines = [
        f"{path}:",
        f"  read               {summary.read:>12,}",
        f"  ingested           {summary.ingested:>12,}",
        f"  already present    {summary.already_present:>12,}",
        f"  rejected           {summary.rejected:>12,}",
        f"  fetch tasks queued {summary.fetch_queued:>12,}",
    ]
    if summary.report_path is not None:
        lines.append(
            f"{summary.rejected:,} row(s) rejected: see {summary.report_path} "
            "for each row number and reason"
        )
    return "\n".join(lines)


def ingest_cli(args: argparse.Namespace, settings: Settings) -> int:
    """``galpipe ingest``: 0 when the file was ingested (even with rejected rows), 1 if not.

    A missing ``GALPIPE_DATABASE_URL`` raises :class:`~galpipe.settings.SettingsError` before
    the file is read (the CLI exits 2).
    """
    from galpipe.db.connection import pool_from_settings

    settings.require("database_url")
    path = Path(args.file)
    progress = not args.no_progress and sys.stderr.isatty()
    try:
        status = _reading_status(progress, path)
        with status:
            catalog = load_catalog(
                path,
                format=args.format,
                id_col=args.id_col,
                ra_col=args.ra_col,
                dec_col=args.dec_col,
                keep=parse_keep(args.keep),
            )
        with pool_from_settings(settings) as pool:
            summary = store_catalog(
                pool,
                catalog,
                catalog_name=args.catalog_name,
                report_path=args.report,
                progress=progress,
            )
    except CatalogError as exc:
        print(f"galpipe ingest: {exc}", file=sys.stderr)
        return 1
    except psycopg.Error as exc:
        print(f"galpipe ingest: {path}: database error: {exc}", file=sys.stderr)
        return 1
    print(format_summary(summary, path))
    return 0


def _reading_status(enabled: bool, path: Path) -> contextlib.AbstractContextManager[Any]:
    """A spinner while astropy reads the whole file (it reports no progress of its own)."""
    if not enabled:
        return contextlib.nullcontext()
    from rich.console import Console

    return Console(stderr=True).status(f"reading {path.name} …")
