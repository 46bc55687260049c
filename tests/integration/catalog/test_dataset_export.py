"""``galpipe export --format parquet-dataset`` against a real PostgreSQL, read back as a dataset
by pyarrow and DuckDB: every galaxy once, in its tile, with the single-file export's columns."""

from __future__ import annotations

from pathlib import Path

import astropy.units as u
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from astropy_healpix import HEALPix
from psycopg_pool import ConnectionPool

from galpipe.catalog import dataset_export
from galpipe.catalog.dataset_export import PART_FILE, algo_key, export_dataset
from galpipe.catalog.export import ExportError, build_results_table
from tests.integration.catalog.test_export import NOW, V1, V2, _run, populated

__all__ = ["populated"]  # the fixture, shared with the single-file export's tests

PARTITIONS = ("algo", "healpix_order", "healpix")


def _read(root: Path) -> pa.Table:
    """The whole dataset through pyarrow.dataset's Hive partitioning, in source_id order."""
    table = ds.dataset(root, format="parquet", partitioning="hive").to_table()
    return table.sort_by("source_id")


def _tiles(ra: list[float], dec: list[float], order: int) -> list[int]:
    """astropy-healpix's own NESTED indices (its HEALPix class, not the function we call)."""
    tiles = HEALPix(nside=2**order, order="nested").lonlat_to_healpix(ra * u.deg, dec * u.deg)
    return np.asarray(tiles).tolist()


def test_dataset_holds_the_single_file_export_with_units_and_nulls(populated, tmp_path) -> None:
    out = tmp_path / "cat"
    summary = export_dataset(
        populated, out, selection="all", bands="all", healpix_order=6, now=NOW, chunk_rows=2
    )
    expected = build_results_table(populated, selection="all", bands="all", now=NOW)
    read = _read(out)
    assert (summary.rows, summary.algo_version) == (len(expected), V2)
    assert read.column_names == [*expected.colnames, "algo_version", *PARTITIONS]
    for name in expected.colnames:
        want, field = expected[name], read.schema.field(name)
        got = read.column(name)
        mask = np.ma.getmaskarray(want).tolist()
        assert got.is_null().to_pylist() == mask, name  # masked <-> Parquet null
        kept = [v for v, m in zip(np.asarray(want).tolist(), mask, strict=True) if not m]
        assert [v for v in got.to_pylist() if v is not None] == kept, name
        meta = field.metadata or {}
        assert meta[b"description"].decode() == want.description, name
        if want.unit is None:
            assert b"unit" not in meta, name
        else:
            assert u.Unit(meta[b"unit"].decode()) == want.unit, name
    for name in ("pa", "pa_z", "posangle_sersic", "n_obs"):  # nulls, never NaN
        column = read.column(name)
        assert column.null_count > 0, name
        if pa.types.is_floating(column.type):
            assert not pc.any(pc.is_nan(column)).as_py(), name
    assert read.schema.field("n_obs").type == pa.int64()
    assert read.schema.field("flags").type == pa.int32()


def test_each_galaxy_lies_in_its_tile_once(populated, tmp_path) -> None:
    out = tmp_path / "cat"
    order = 7
    summary = export_dataset(populated, out, selection="all", healpix_order=order)
    read = _read(out)
    ra, dec = read.column("ra").to_pylist(), read.column("dec").to_pylist()
    assert read.column("healpix").to_pylist() == _tiles(ra, dec, order)
    assert set(read.column("healpix_order").to_pylist()) == {order}
    assert set(read.column("algo_version").to_pylist()) == {V2}
    assert set(read.column("algo").to_pylist()) == {algo_key(V2)}
    assert read.column("source_id").to_pylist() == [1, 2, 3, 4, 5, 6]
    files = sorted(out.rglob("*.parquet"))
    assert len(files) == summary.tiles == len(set(read.column("healpix").to_pylist()))
    for file in files:
        assert file.name == PART_FILE
        assert file.parent.parent.name == f"healpix_order={order}"
        assert file.parent.parent.parent.name == f"algo={algo_key(V2)}"
    schema = pq.read_schema(out / "_common_metadata")
    assert schema.metadata[b"ALGOVER"] == V2.encode()
    assert schema.metadata[b"HPXORDER"] == str(order).encode()
    assert schema.metadata[b"ORDERING"] == b"NESTED"


def test_older_version_and_morphology_free_default_layout(populated, tmp_path) -> None:
    export_dataset(populated, tmp_path / "v1", algo_version=V1)
    read = _read(tmp_path / "v1")
    assert read.column("pa").to_pylist() == [1.0, 1.0, 1.0]
    assert set(read.column("algo_version").to_pylist()) == {V1}
    assert "pa_g" not in read.column_names


def _many(pool: ConnectionPool, add_galaxies, n: int) -> None:
    """``n`` transformed galaxies spread evenly over the sky (the R2 low-discrepancy sequence,
    uniform in ra and sin(dec)), each with a combined measurement; every tenth pa NULL."""
    add_galaxies(n)
    with pool.connection() as conn:
        conn.execute(
            "UPDATE galaxies SET ra = 360 * mod(source_id * 0.7548776662, 1), "
            "dec = degrees(asin(2 * mod(source_id * 0.5698402910, 1) - 1))"
        )
        for pipeline in ("fetch", "radon"):
            conn.execute(
                "INSERT INTO tasks (pipeline, source_id, state) "
                "SELECT %s, source_id, 'done' FROM galaxies",
                (pipeline,),
            )
        conn.execute(
            "INSERT INTO radon_measurements (source_id, algo_version, band, "
            "position_angle_deg, flags) SELECT source_id, %s, 'combined', "
            "CASE WHEN source_id %% 10 = 0 THEN NULL ELSE source_id %% 180 END, 0 "
            "FROM galaxies",
            (V2,),
        )


def test_every_galaxy_once_across_chunks_read_by_duckdb(pool, add_galaxies, tmp_path) -> None:
    n, order = 2000, 2
    _many(pool, add_galaxies, n)
    out = tmp_path / "sky"
    summary = export_dataset(pool, out, healpix_order=order, chunk_rows=97)
    assert summary.rows == n
    assert summary.tiles == len(list(out.rglob(PART_FILE))) > 150  # most of the 192 tiles
    glob = str(out / "**" / "*.parquet")
    con = duckdb.connect()
    (rows,) = con.execute(
        f"SELECT count(*), count(DISTINCT source_id), min(source_id), max(source_id), "
        f"count(*) FILTER (WHERE pa IS NULL), count(DISTINCT algo_version) "
        f"FROM read_parquet('{glob}', hive_partitioning = true)"
    ).fetchall()
    assert rows == (n, n, 1, n, n // 10, 1)
    tiles = con.execute(
        f"SELECT source_id, ra, dec, healpix FROM read_parquet('{glob}', hive_partitioning = "
        "true) ORDER BY source_id"
    ).fetchall()
    _, ra, dec, healpix = (list(c) for c in zip(*tiles, strict=True))
    assert healpix == _tiles(ra, dec, order)
    for file in out.rglob(PART_FILE):  # a tile's rows, in source_id order
        ids = pq.read_table(file, columns=["source_id"]).column(0).to_pylist()
        assert ids == sorted(ids)


def test_an_existing_non_empty_directory_is_refused(populated, tmp_path) -> None:
    out = tmp_path / "cat"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match=rf"{out}: already exists and is not empty"):
        export_dataset(populated, out)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    with pytest.raises(ExportError, match="exists and is not a directory"):
        export_dataset(populated, out / "keep.txt")
    with pytest.raises(ExportError, match=r"parent directory .* does not exist"):
        export_dataset(populated, tmp_path / "missing" / "cat")


def test_an_empty_directory_is_filled(populated, tmp_path) -> None:
    out = tmp_path / "cat"
    out.mkdir()
    assert export_dataset(populated, out).rows == 3
    assert _read(out).num_rows == 3


def test_a_failure_mid_write_leaves_nothing(populated, tmp_path, monkeypatch) -> None:
    written: list[int] = []
    write = dataset_export._TileFiles.write

    def fail_on_second_tile(self, tile, batch):
        if written and tile != written[-1]:
            raise OSError(28, "No space left on device")
        written.append(tile)
        write(self, tile, batch)

    monkeypatch.setattr(dataset_export._TileFiles, "write", fail_on_second_tile)
    out = tmp_path / "cat"
    with pytest.raises(ExportError, match=rf"{out}: cannot write the dataset.*No space left"):
        export_dataset(populated, out, selection="all", healpix_order=8, chunk_rows=2)
    assert written  # it failed after writing a tile
    assert list(tmp_path.iterdir()) == []  # no target, no partial directory beside it


def test_an_interrupt_mid_write_leaves_nothing(populated, tmp_path, monkeypatch) -> None:
    def interrupt(self, rows):
        raise KeyboardInterrupt

    monkeypatch.setattr(dataset_export._Layout, "batch", interrupt)
    with pytest.raises(KeyboardInterrupt):
        export_dataset(populated, tmp_path / "cat")
    assert list(tmp_path.iterdir()) == []


def test_no_matching_galaxy_is_an_error_and_leaves_nothing(populated, tmp_path) -> None:
    with populated.connection() as conn:
        conn.execute("UPDATE tasks SET state = 'failed' WHERE pipeline = 'radon'")
    with pytest.raises(ExportError, match=r"no transformed galaxies .*radon-v2\+test"):
        export_dataset(populated, tmp_path / "cat")
    assert list(tmp_path.iterdir()) == []


def test_command_writes_the_dataset(populated, database_url, tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "cat"
    argv = ["export", str(out), "--format", "parquet-dataset", "--healpix-order", "4"]
    assert _run(argv, database_url, monkeypatch) == 0
    printed = capsys.readouterr().out
    assert "wrote 3 galaxies" in printed
    assert "healpix order 4" in printed
    assert set(_read(out).column("healpix_order").to_pylist()) == {4}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--format", "parquet-dataset", "--healpix-order", "11"], "--healpix-order 11"),
        (["--format", "parquet-dataset", "--healpix-order", "-1"], "--healpix-order -1"),
        (["--format", "parquet-datset"], "unknown format 'parquet-datset'"),
        (["--format", "fits", "--healpix-order", "3"], "--healpix-order applies only to"),
    ],
)
def test_command_bad_options_name_the_option(
    populated, database_url, tmp_path, monkeypatch, capsys, argv, message
) -> None:
    assert _run(["export", str(tmp_path / "cat"), *argv], database_url, monkeypatch) == 1
    err = capsys.readouterr().err
    assert err.startswith("galpipe export: ")
    assert message in err
    assert list(tmp_path.iterdir()) == []
