"""The gallery's cutouts: a missing or undecodable one is left out and said; other errors raise."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from galpipe.demo.run import read_gallery_cutouts
from galpipe.storage import LocalObjectStore, ObjectStoreError
from galpipe.synthetic.catalog import make_truths
from galpipe.synthetic.fitsfile import cutout_fits_bytes

SIZE = 40


def _table(keys: list[str]) -> Table:
    n = len(keys)
    return Table(
        {
            "source_id": np.arange(1, n + 1),
            "object_key": keys,
            "true_position_angle": np.full(n, 30.0),
            "position_angle_deg": np.full(n, 31.0),
            "true_axis_ratio": np.full(n, 0.4),
        }
    )


def test_a_missing_or_undecodable_cutout_is_left_out_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = LocalObjectStore(tmp_path)
    (truth,) = make_truths(1, seed=3)
    store.put("good.fits", cutout_fits_bytes(truth))
    store.put("garbage.fits", b"not a FITS file" * 200)
    table = _table(["good.fits", "gone.fits", "garbage.fits"])
    with caplog.at_level(logging.WARNING, logger="galpipe.demo.run"):
        cubes, meta, skipped = read_gallery_cutouts(store, table, [1, 2, 3], SIZE)
    assert [m["source_id"] for m in meta] == [1]
    assert cubes[0].shape == (4, SIZE, SIZE)
    assert meta[0] == {
        "source_id": 1,
        "true_pa_deg": 30.0,
        "measured_pa_deg": 31.0,
        "axis_ratio": pytest.approx(0.4),
    }
    assert set(skipped) == {2, 3}
    assert skipped[2].startswith("ObjectNotFound")
    assert skipped[3].startswith("CutoutDecodeError")
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "galaxy 2 left out" in logged
    assert "galaxy 3 left out" in logged


class _BrokenStore(LocalObjectStore):
    def get(self, key: str, sha256: str | None = None) -> bytes:
        raise ObjectStoreError(f"cannot read key {key!r}: the disk went away")


def test_any_other_store_error_propagates(tmp_path: Path) -> None:
    with pytest.raises(ObjectStoreError, match="the disk went away"):
        read_gallery_cutouts(_BrokenStore(tmp_path), _table(["a.fits"]), [1], SIZE)
