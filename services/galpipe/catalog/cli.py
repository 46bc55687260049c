"""``galpipe ingest`` and ``galpipe export``: the catalogue in and the results catalogue out."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

import psycopg

from galpipe.catalog.dataset_export import (
    DATASET_FORMAT,
    DEFAULT_HEALPIX_ORDER,
    MAX_HEALPIX_ORDER,
    check_healpix_order,
    export_dataset,
)
from galpipe.catalog.export import (
    BAND_SELECTIONS,
    FORMATS,
    LATEST_MODEL,
    ExportError,
    export_results,
    format_for,
)
from galpipe.catalog.ingest import IngestSummary, store_catalog
from galpipe.catalog.read import load_catalog
from galpipe.db.results import SELECTIONS
from galpipe.errors import ServiceError, reraise_as
from galpipe.settings import Settings

__all__ = ["format_summary", "ingest_cli", "parse_keep", "register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``ingest`` and ``export`` to ``subparsers``."""
    _register_ingest(subparsers)
    _register_export(subparsers)


def _register_ingest(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("ingest", help="ingest a galaxy catalogue and queue fetch tasks")
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
    p.set_defaults(handler=ingest_cli)


def _register_export(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "export",
        help="write the results catalogue (FITS, ECSV, Parquet or a Parquet dataset) with units",
    )
    p.add_argument(
        "out",
        help=f"file to write, the suffix picking the format unless --format; with --format "
        f"{DATASET_FORMAT}, a new (or empty) directory",
    )
    p.add_argument(
        "--format",
        default=None,
        help=f"one of {', '.join([*FORMATS, DATASET_FORMAT])} (default: from the suffix of "
        f"OUT); {DATASET_FORMAT} writes a Hive-partitioned dataset, one directory per "
        "HEALPix tile, streaming in bounded memory",
    )
    p.add_argument(
        "--healpix-order",
        type=int,
        default=None,
        metavar="K",
        help=f"with --format {DATASET_FORMAT}: HEALPix order of the tiles, 0 to "
        f"{MAX_HEALPIX_ORDER} (12 * 4**K tiles, NESTED; default {DEFAULT_HEALPIX_ORDER})",
    )
    p.add_argument(
        "--algo-version",
        default=None,
        help="measurements of this algo_version (default: the most recently measured)",
    )
    p.add_argument(
        "--state",
        default="transformed",
        choices=SELECTIONS,
        help="transformed: galaxies with results (default); all: every galaxy with its state",
    )
    p.add_argument(
        "--bands",
        default="combined",
        choices=BAND_SELECTIONS,
        help="combined: the combined measurement (default); all: also pa_g, pa_err_g, ...",
    )
    p.add_argument(
        "--morphology-model",
        default=None,
        metavar=f"VERSION|{LATEST_MODEL}",
        help="add this morphology model's predictions (morph_class, morph_class_probability, "
        f"gz2_class1_1 ...): a registered 64-hex version, or {LATEST_MODEL} for the newest "
        "registered one with predictions (default: no morphology columns)",
    )
    p.set_defaults(handler=_cmd_export)


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


def ingest_cli(args: argparse.Namespace, settings: Settings) -> None:
    """``galpipe ingest``: load the file, store its good rows, print the summary.

    A file with rejected rows is ingested all the same (the summary names the report of them).

    Raises
    ------
    SettingsError
        ``GALPIPE_DATABASE_URL`` is not set; raised before the file is read.
    CatalogError
        The file cannot be read or lacks the columns; the message names the file.
    ServiceError
        The database failed.
    """
    from galpipe.runtime.database import pool_from_settings

    settings.require("database_url")
    path = Path(args.file)
    progress = not args.no_progress and sys.stderr.isatty()
    with _reading_status(progress, path):
        catalog = load_catalog(
            path,
            format=args.format,
            id_col=args.id_col,
            ra_col=args.ra_col,
            dec_col=args.dec_col,
            keep=parse_keep(args.keep),
        )
    database_errors = reraise_as(ServiceError, psycopg.Error, context=f"{path}: database error")
    with database_errors, pool_from_settings(settings) as pool:
        summary = store_catalog(
            pool,
            catalog,
            catalog_name=args.catalog_name,
            report_path=args.report,
            progress=progress,
        )
    print(format_summary(summary, path))


def _cmd_export(args: argparse.Namespace, settings: Settings) -> None:
    """``galpipe export``: raises ExportError (an InputError) for an export that cannot be made."""
    from galpipe.runtime.database import database_errors, pool_from_settings

    out = Path(args.out)
    if args.format is not None and args.format.lower() == DATASET_FORMAT:
        _export_dataset(args, settings)
        return
    if args.format is not None and args.format.lower() not in FORMATS:
        raise ExportError(
            f"unknown format {args.format!r} (--format): expected one of "
            f"{', '.join([*FORMATS, DATASET_FORMAT])}"
        )
    if args.healpix_order is not None:
        raise ExportError(f"--healpix-order applies only to --format {DATASET_FORMAT}")
    fmt = format_for(out, args.format)  # before connecting: a typo fails fast
    with database_errors(), pool_from_settings(settings) as pool:
        summary = export_results(
            pool,
            out,
            fmt=fmt,
            algo_version=args.algo_version,
            selection=args.state,
            bands=args.bands,
            morphology_model=args.morphology_model,
        )
    model = summary.morphology_model
    model = "" if model is None else f", morphology model {model}"
    print(
        f"wrote {summary.rows} galaxies x {summary.columns} columns "
        f"(algo_version {summary.algo_version}{model}) to {summary.path} as {summary.format}"
    )


def _export_dataset(args: argparse.Namespace, settings: Settings) -> None:
    """``galpipe export --format parquet-dataset OUT_DIR``."""
    from galpipe.runtime.database import database_errors, pool_from_settings

    order = DEFAULT_HEALPIX_ORDER if args.healpix_order is None else args.healpix_order
    check_healpix_order(order)  # before connecting: a typo fails fast
    with database_errors(), pool_from_settings(settings) as pool:
        summary = export_dataset(
            pool,
            Path(args.out),
            algo_version=args.algo_version,
            selection=args.state,
            bands=args.bands,
            morphology_model=args.morphology_model,
            healpix_order=order,
        )
    model = summary.morphology_model
    model = "" if model is None else f", morphology model {model}"
    print(
        f"wrote {summary.rows} galaxies x {summary.columns} columns "
        f"(algo_version {summary.algo_version}{model}) to {summary.path} as {DATASET_FORMAT}: "
        f"{summary.tiles} tiles of healpix order {summary.healpix_order}"
    )


def _reading_status(enabled: bool, path: Path) -> contextlib.AbstractContextManager[Any]:
    """A spinner while astropy reads the whole file (it reports no progress of its own)."""
    if not enabled:
        return contextlib.nullcontext()
    from rich.console import Console

    return Console(stderr=True).status(f"reading {path.name} …")
