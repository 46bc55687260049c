"""The report of rejected rows (``galpipe.catalog.report``)."""

from __future__ import annotations

from pathlib import Path

from galpipe.catalog.report import default_report_path


def test_default_report_path() -> None:
    assert default_report_path(Path("/d/gaia.fits")) == Path("/d/gaia.fits.rejected.csv")
