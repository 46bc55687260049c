"""The sky as the demo's child process: its URL comes from the ready file, never from its log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from galpipe.demo import DemoError
from galpipe.demo.processes import start_sky
from galpipe.synthetic.catalog import make_truths, write_catalog


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    return write_catalog(tmp_path / "catalog.ecsv", make_truths(3, seed=1))


def test_the_sky_announces_its_url_in_the_ready_file(tmp_path: Path, catalog: Path) -> None:
    ready = tmp_path / "sky.ready.json"
    # A file an earlier run left behind names a server that is gone: it must not be taken.
    ready.write_text(json.dumps({"url": "http://127.0.0.1:9", "port": 9}))
    sky = start_sky(catalog, tmp_path, cache_size=10)
    try:
        url = sky.wait_until_ready(timeout_s=60)
        assert url != "http://127.0.0.1:9"
        announced = json.loads(ready.read_text())
        assert announced["url"] == url == f"http://127.0.0.1:{announced['port']}"
        assert announced["pid"] == sky.process.pid
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
    finally:
        code = sky.stop()
    assert code == 0
    assert not ready.exists()  # removed when the server stopped
    assert "synthetic sky on" in (tmp_path / "sky.log").read_text()


def test_a_sky_that_exits_before_listening_is_an_error(tmp_path: Path, catalog: Path) -> None:
    sky = start_sky(catalog, tmp_path, cache_size=10, extra_args=("--error-ratio", "2"))
    with pytest.raises(DemoError, match=r"sky exited with 2 before it listened; see .*sky\.log"):
        sky.wait_until_ready(timeout_s=60)
    sky.stop()


def test_a_sky_that_never_listens_times_out(tmp_path: Path, catalog: Path) -> None:
    # No time at all: a freshly started interpreter cannot have bound its port yet.
    sky = start_sky(catalog, tmp_path, cache_size=10)
    try:
        with pytest.raises(DemoError, match="sky not listening after 0 s"):
            sky.wait_until_ready(timeout_s=0)
    finally:
        sky.stop()
