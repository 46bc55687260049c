"""The ingest summary and default catalog name (``galpipe.catalog.ingest``), no database."""

from __future__ import annotations

from pathlib import Path

import pytest

from galpipe.catalog.ingest import IngestSummary, default_catalog_name


def test_ingest_summary_must_reconcile() -> None:
    IngestSummary(10, 6, 3, 1, 6, Path("r.csv"))
    with pytest.raises(ValueError, match="do not reconcile"):
        IngestSummary(10, 6, 3, 0, 6, None)
    with pytest.raises(ValueError, match="need a report"):
        IngestSummary(10, 6, 3, 1, 6, None)


def test_default_catalog_name() -> None:
    assert default_catalog_name(Path("/d/gaia_dr3.fits.gz")) == "gaia_dr3"
    assert default_catalog_name(Path("cat.csv")) == "cat"
