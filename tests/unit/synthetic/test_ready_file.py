"""``sky serve --ready-file``: where a listening sky is, for the process that started it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from galpipe.synthetic.server import SyntheticSky, read_ready_file


def test_a_listening_sky_writes_its_address_and_removes_it_when_stopped(tmp_path: Path) -> None:
    ready = tmp_path / "sky.ready.json"
    sky = SyntheticSky(port=0, ready_file=ready)
    assert read_ready_file(ready) is None  # nothing before the sky listens
    with sky:
        announced = json.loads(ready.read_text())
        assert announced == {
            "url": sky.url,
            "host": "127.0.0.1",
            "port": sky.port,
            "pid": os.getpid(),
        }
        assert sky.port != 0
        assert read_ready_file(ready) == sky.url
        assert [p.name for p in tmp_path.iterdir()] == ["sky.ready.json"]  # no partial file
    assert not ready.exists()
