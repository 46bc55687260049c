"""Reader names for catalogue files (``galpipe.catalog.read``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from galpipe.catalog.read import resolve_format
from galpipe.catalog.validate import CatalogError


@pytest.mark.parametrize(
    ("name", "given", "reader"),
    [
        ("a.csv", None, "ascii.csv"),
        ("a.ECSV", None, "ascii.ecsv"),
        ("a.fits.gz", None, "fits"),
        ("a.vot", None, "votable"),
        ("a.dat", None, None),
        ("a.dat", "CSV", "ascii.csv"),
        ("a.dat", "ascii.basic", "ascii.basic"),
    ],
)
def test_resolve_format(name: str, given: str | None, reader: str | None) -> None:
    assert resolve_format(Path(name), given) == reader


def test_resolve_unknown_format() -> None:
    with pytest.raises(CatalogError, match=r"a\.csv: unknown format 'parquett'"):
        resolve_format(Path("a.csv"), "parquett")
