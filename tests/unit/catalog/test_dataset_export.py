"""Tiles and paths of the partitioned Parquet export (``galpipe.catalog.dataset_export``)."""

from __future__ import annotations

import hashlib
import math

import astropy.units as u
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from astropy_healpix import HEALPix

from galpipe.catalog.dataset_export import (
    MAX_HEALPIX_ORDER,
    _runs,
    algo_key,
    check_healpix_order,
    healpix_tiles,
    tile_directory,
)
from galpipe.catalog.export import ExportError
from galpipe.science.core import RadonConfig

# The 12 base pixels' centres (Górski et al. 2005, fig. 3): four about the north pole at
# z = 2/3, four on the equator starting at ra = 0, four about the south pole at z = -2/3.
_POLAR_DEC = math.degrees(math.asin(2 / 3))
BASE_CENTRES = [
    *((ra, _POLAR_DEC) for ra in (45.0, 135.0, 225.0, 315.0)),
    *((ra, 0.0) for ra in (0.0, 90.0, 180.0, 270.0)),
    *((ra, -_POLAR_DEC) for ra in (45.0, 135.0, 225.0, 315.0)),
]


def _sky(n: int, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """``n`` positions uniform on the sphere, degrees."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))


@pytest.mark.parametrize("order", [0, 1, 3, 6, MAX_HEALPIX_ORDER])
def test_base_pixel_centres_number_the_nested_tiles(order: int) -> None:
    ra, dec = (np.array(c) for c in zip(*BASE_CENTRES, strict=True))
    # NESTED: a tile of order k lies in base pixel index // 4**k.
    assert (healpix_tiles(ra, dec, order) // 4**order).tolist() == list(range(12))


@pytest.mark.parametrize("order", range(MAX_HEALPIX_ORDER + 1))
def test_tiles_agree_with_astropy_healpix(order: int) -> None:
    ra, dec = _sky(2000)
    theirs = HEALPix(nside=2**order, order="nested").lonlat_to_healpix(ra * u.deg, dec * u.deg)
    tiles = healpix_tiles(ra, dec, order)
    assert tiles.dtype == np.int64
    assert tiles.tolist() == np.asarray(theirs).tolist()
    assert tiles.min() >= 0
    assert tiles.max() < 12 * 4**order


def test_a_tile_nests_in_its_parent() -> None:
    ra, dec = _sky(5000, seed=9)
    for order in range(MAX_HEALPIX_ORDER):
        parents = healpix_tiles(ra, dec, order)
        assert (healpix_tiles(ra, dec, order + 1) // 4).tolist() == parents.tolist()


def test_nested_is_not_ring() -> None:
    ra, dec = _sky(500)
    ring = HEALPix(nside=16, order="ring").lonlat_to_healpix(ra * u.deg, dec * u.deg)
    assert (healpix_tiles(ra, dec, 4) != np.asarray(ring)).mean() > 0.9


def test_poles_and_the_ra_wrap_are_tiles() -> None:
    tiles = healpix_tiles(np.array([0.0, 360.0, 12.0, 12.0]), np.array([10, 10, 90, -90]), 5)
    assert tiles[0] == tiles[1]  # ra 360 is ra 0
    assert tiles[2] // 4**5 in (0, 1, 2, 3)
    assert tiles[3] // 4**5 in (8, 9, 10, 11)


@pytest.mark.parametrize("order", [-1, MAX_HEALPIX_ORDER + 1, 2.5, True, "3"])
def test_orders_outside_the_range_are_refused_naming_the_option(order) -> None:
    with pytest.raises(ExportError, match=r"^--healpix-order "):
        check_healpix_order(order)


def test_tile_directory_is_hive_and_fits_a_file_name_whatever_the_version() -> None:
    """The default configuration's version is ~200 characters; percent-encoded it overflowed
    the 255-byte file-name limit. The directory names its SHA-256 prefix instead."""
    version = RadonConfig().algo_version
    assert len(version) > 150
    path = tile_directory(version, 3, 517)
    first, order, tile = path.parts
    assert (order, tile) == ("healpix_order=3", "healpix=517")
    assert first == f"algo={hashlib.sha256(version.encode()).hexdigest()[:16]}"
    assert all(len(part.encode()) <= 255 for part in path.parts)
    assert algo_key(version) != algo_key(version + "x")
    schema = pa.schema(
        [("algo", pa.string()), ("healpix_order", pa.int32()), ("healpix", pa.int64())]
    )
    parsed = ds.HivePartitioning(schema).parse(f"/{path.as_posix()}/part-0.parquet")
    assert str(parsed) == (
        f'(((algo == "{algo_key(version)}") and (healpix_order == 3)) and (healpix == 517))'
    )


def test_runs_split_a_sorted_chunk_by_tile() -> None:
    assert list(_runs(np.array([4, 4, 7, 9, 9, 9]))) == [(4, 0, 2), (7, 2, 3), (9, 3, 6)]
    assert list(_runs(np.array([5]))) == [(5, 0, 1)]
