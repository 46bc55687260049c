"""Option parsing of ``galpipe ingest`` (``galpipe.catalog.cli``)."""

from __future__ import annotations

from galpipe.catalog.cli import parse_keep


def test_parse_keep() -> None:
    assert parse_keep(None) is None
    assert parse_keep("") == []
    assert parse_keep(" posangle_sersic, ellipticity_sersic ,") == [
        "posangle_sersic",
        "ellipticity_sersic",
    ]
