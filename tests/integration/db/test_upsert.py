"""The statement that writes result rows: insert, or replace the row of the same key."""

from __future__ import annotations

import pytest

from galpipe.db.upsert import replace_rows_statement


def test_every_non_key_column_is_replaced_and_the_stamp_renewed() -> None:
    text = replace_rows_statement("results", ["id", "version", "a", "b"], ["id", "version"], "at")
    assert text.as_string(None) == (
        'INSERT INTO "results" ("id", "version", "a", "b") VALUES (%s, %s, %s, %s) '
        'ON CONFLICT ("id", "version") DO UPDATE SET "a" = EXCLUDED."a", '
        '"b" = EXCLUDED."b", "at" = now()'
    )


def test_the_key_must_lead_the_columns() -> None:
    with pytest.raises(ValueError, match="must lead"):
        replace_rows_statement("results", ["a", "id"], ["id"], "at")
