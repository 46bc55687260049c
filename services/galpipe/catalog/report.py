"""The report of rejected rows: one CSV line per data row that was not stored, and why."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from galpipe.catalog.validate import CatalogError

REPORT_SUFFIX = ".rejected.csv"
REPORT_HEADER = ("row", "source_id", "reason", "ra", "dec")


@dataclass(frozen=True)
class Rejection:
    """One line of the report: a data row (1-based), raw values as read, and why."""

    row: int
    source_id: str
    reason: str
    ra: str
    dec: str


def default_report_path(path: Path) -> Path:
    """``<file>.rejected.csv`` next to the input file."""
    return path.with_name(path.name + REPORT_SUFFIX)


def prepare_report(catalog_path: Path, report_path: Path) -> None:
    """Fail early if the report cannot be written; remove a stale one from an earlier run."""
    if report_path.resolve() == catalog_path.resolve():
        raise CatalogError(f"{catalog_path}: the report would overwrite the catalogue itself")
    parent = report_path.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise CatalogError(f"{report_path}: cannot write the report there; pass --report PATH")
    try:
        report_path.unlink(missing_ok=True)
    except OSError as exc:
        raise CatalogError(f"{report_path}: cannot remove the stale report: {exc}") from None


def write_report(path: Path, rejections: Sequence[Rejection]) -> None:
    """Write ``rejections`` as CSV (header ``row,source_id,reason,ra,dec``), atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(REPORT_HEADER)
        writer.writerows((r.row, r.source_id, r.reason, r.ra, r.dec) for r in rejections)
    os.replace(tmp, path)
