"""JSON logs: one parseable object a line, with the extra fields."""

from __future__ import annotations

import json
import logging

from galpipe.runtime.logs import JsonFormatter


def test_json_formatter_emits_one_object_with_extras() -> None:
    record = logging.makeLogRecord(
        {"name": "galpipe.pipelines.worker", "levelname": "INFO", "msg": "claimed %d", "args": (5,)}
    )
    record.pipeline = "fetch"
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert entry["message"] == "claimed 5"
    assert entry["level"] == "info"
    assert entry["pipeline"] == "fetch"
    assert "\n" not in line


def test_json_formatter_includes_the_exception() -> None:
    try:
        raise ValueError("bad cutout")
    except ValueError:
        import sys

        record = logging.makeLogRecord({"msg": "failed", "exc_info": sys.exc_info()})
    entry = json.loads(JsonFormatter().format(record))
    assert "ValueError: bad cutout" in entry["exception"]
