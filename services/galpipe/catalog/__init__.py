"""Catalog ingest: read a galaxy catalogue, check every row, store the good ones in bulk.

The steps of ``galpipe ingest FILE`` and :func:`ingest_catalog`, and the decisions worth
knowing (valid ids, duplicates, re-ingest, extra columns, units), are described in
:mod:`galpipe.catalog.ingest`. One module per job:

- :mod:`~galpipe.catalog.validate` — row validation of ids and coordinates (pure numpy).
- :mod:`~galpipe.catalog.read` — reading the file, finding the columns, units → degrees.
- :mod:`~galpipe.catalog.extras` — the kept columns as JSON for ``galaxies.extra``.
- :mod:`~galpipe.catalog.report` — the CSV report of rejected rows.
- :mod:`~galpipe.catalog.ingest` — storing in chunks, queuing fetch tasks, the summary.
- :mod:`~galpipe.catalog.cli` — ``galpipe ingest`` and ``galpipe export``.
"""

from galpipe.catalog.cli import format_summary, ingest_cli, parse_keep
from galpipe.catalog.ingest import (
    DEFAULT_CHUNK_ROWS,
    FETCH_PIPELINE,
    IngestSummary,
    default_catalog_name,
    ingest_catalog,
    store_catalog,
)
from galpipe.catalog.read import (
    FORMAT_ALIASES,
    GAIA_GALAXY_CANDIDATES_COLUMNS,
    GAIA_HINT,
    LoadedCatalog,
    load_catalog,
    read_table,
    resolve_format,
)
from galpipe.catalog.report import (
    REPORT_HEADER,
    REPORT_SUFFIX,
    Rejection,
    default_report_path,
    write_report,
)
from galpipe.catalog.validate import CatalogError, RowValidation, validate_rows

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "FETCH_PIPELINE",
    "FORMAT_ALIASES",
    "GAIA_GALAXY_CANDIDATES_COLUMNS",
    "GAIA_HINT",
    "REPORT_HEADER",
    "REPORT_SUFFIX",
    "CatalogError",
    "IngestSummary",
    "LoadedCatalog",
    "Rejection",
    "RowValidation",
    "default_catalog_name",
    "default_report_path",
    "format_summary",
    "ingest_catalog",
    "ingest_cli",
    "load_catalog",
    "parse_keep",
    "read_table",
    "resolve_format",
    "store_catalog",
    "validate_rows",
    "write_report",
]
