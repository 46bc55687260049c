"""``galpipe demo`` end to end: the synthetic sky, fetch and radon worker processes, the report.

300 galaxies per run, about 15 s each on two cores once the Radon operator is cached:
once through the real command (embedded PostgreSQL, local object store) and once in-process
against the test database and moto's S3 server, where the database and the bucket outlive the
run so the results can be reconciled with the tasks and the stored objects.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg
from astropy.table import Table
from rich.console import Console

from galpipe.demo.processes import worker_environment
from galpipe.demo.run import DemoOptions, DemoResult, run_demo
from galpipe.science.core import Flag, RadonConfig
from galpipe.storage import open_object_store
from tests.tools import require_tool

N_GALAXIES = 300
TERMINAL = {"done", "failed", "skipped"}
BLANK_DEC = (-20.0, -10.0)  # degrees: the S3 run's sky has no data in this band of declination


def _check_catalogue(out: Path) -> Table:
    """The catalogue reads back from FITS and ECSV; every galaxy is terminal with a reason."""
    fits = Table.read(out / "results.fits")
    ecsv = Table.read(out / "results.ecsv", format="ascii.ecsv")
    assert len(fits) == len(ecsv) == N_GALAXIES
    np.testing.assert_array_equal(fits["source_id"], ecsv["source_id"])
    assert ecsv["position_angle_deg"].unit == "deg"
    assert "east of north" in ecsv["position_angle_deg"].description
    assert fits["true_position_angle"].unit == "deg"
    for row in ecsv:
        assert row["fetch_state"] in TERMINAL, row["source_id"]
        if row["fetch_state"] != "done":
            assert row["fetch_error"], f"{row['source_id']}: {row['fetch_state']} without reason"
            assert not row["radon_state"]  # empty (masked when read back from ECSV)
            continue
        assert row["radon_state"] in TERMINAL, row["source_id"]
        if row["radon_state"] == "done":
            # A done radon task has its combined measurement; NaN only where flags say why.
            assert row["algo_version"] == RadonConfig().algo_version
            assert np.isfinite(row["position_angle_deg"]) or row["flags"] & Flag.NO_VALID_BAND
        else:
            assert row["radon_error"], f"{row['source_id']}: {row['radon_state']} without reason"
    return ecsv


def _check_accuracy(table: Table) -> None:
    """The demo's accuracy: median axial error < 3 degrees for axis ratio < 0.6 and S/N > 30."""
    q = np.asarray(table["true_axis_ratio"])
    snr = np.asarray(table["snr_half_light"])
    errors = np.asarray(table["pa_error_deg"], dtype=float)
    selected = (q < 0.6) & (snr > 30) & np.isfinite(errors)
    assert selected.sum() > 100
    assert np.median(errors[selected]) < 3.0
    # Round galaxies are harder: their errors must be larger, or the truth join is broken.
    round_ = (q >= 0.8) & np.isfinite(errors)
    assert np.median(errors[round_]) > np.median(errors[selected])


def _check_outputs(out: Path) -> None:
    for name in ("report.md", "pa_recovery.png", "pa_error_histograms.png", "gallery.png"):
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    assert "LIFTED" in report
    for link in ("results.fits", "results.ecsv", "gallery.png", "pa_recovery.png"):
        assert f"({link})" in report
    check = subprocess.run(
        [require_tool("fitsverify"), "-q", str(out / "results.fits")],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_demo_command_with_embedded_postgres_and_local_store(tmp_path: Path) -> None:
    out = tmp_path / "galpipe-demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GALPIPE_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "galpipe.cli",
            "demo",
            "--n",
            str(N_GALAXIES),
            "--out",
            str(out),
            "--no-progress",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "rate limit is LIFTED" in done.stdout
    assert "axis ratio < 0.6 and S/N > 30" in done.stdout
    table = _check_catalogue(out)
    _check_accuracy(table)
    _check_outputs(out)
    # Every fetched galaxy's bytes are in the local store under the key the catalogue names.
    store = open_object_store((out / "objects").as_uri())
    fetched = table[table["fetch_state"] == "done"]
    assert all(store.exists(str(key)) for key in fetched["object_key"])


def test_demo_with_an_external_database_and_s3(
    tmp_path: Path,
    database_url: str,
    moto_endpoint: str,
    bucket: str,
    aws_environment: dict[str, str],
) -> None:
    out = tmp_path / "demo-s3"
    console = Console(file=io.StringIO(), width=120)
    result: DemoResult = run_demo(
        DemoOptions(
            n=N_GALAXIES,
            out=out,
            fetch_workers=2,
            radon_workers=1,
            seed=11,
            database_url=database_url,
            object_store=f"s3://{bucket}/demo",
            s3_endpoint_url=moto_endpoint,
            progress=False,
            timeout_s=150,
            # Part of the sky has no data, and the service sometimes fails: galaxies there are
            # skipped with their reason; the rest are retried until they succeed.
            sky_args=(
                *("--blank-region", f"0:360:{BLANK_DEC[0]}:{BLANK_DEC[1]}:zeros"),
                *("--error-ratio", "0.03"),
            ),
        ),
        console,
    )
    assert result.ok, result.problems
    table = _check_catalogue(out)
    _check_accuracy(table)
    _check_outputs(out)

    # Results reconcile with tasks, in the database the demo wrote to.
    with psycopg.connect(database_url) as conn:
        states = dict(
            conn.execute(
                "SELECT pipeline || ':' || state::text, count(*) FROM tasks GROUP BY 1"
            ).fetchall()
        )
        per_galaxy = conn.execute(
            "SELECT source_id, count(*) FROM radon_measurements GROUP BY 1"
        ).fetchall()
        cutouts = conn.execute("SELECT object_key, sha256 FROM cutouts").fetchall()
    fetch_done, radon_done = states.get("fetch:done", 0), states.get("radon:done", 0)
    assert sum(n for k, n in states.items() if k.startswith("fetch:")) == N_GALAXIES
    assert sum(n for k, n in states.items() if k.startswith("radon:")) == fetch_done
    assert len(cutouts) == fetch_done
    assert len(per_galaxy) == radon_done
    assert {n for _, n in per_galaxy} == {5}  # g, r, i, z and combined
    assert result.counts["radon"]["done"] == radon_done
    in_blank = (table["dec"] >= BLANK_DEC[0]) & (table["dec"] <= BLANK_DEC[1])
    assert in_blank.sum() > 10
    assert set(table["fetch_state"][in_blank]) == {"skipped"}
    assert all("no coverage" in e for e in table["fetch_error"][in_blank])
    assert set(table["fetch_state"][~in_blank]) == {"done"}
    assert (table["fetch_attempts"][~in_blank] > 1).any()  # the injected 503s were retried
    assert result.failures  # the skips are summarised by reason in the report
    assert "no coverage" in (out / "report.md").read_text()

    # Every recorded cutout is in the bucket with the recorded checksum.
    store = open_object_store(f"s3://{bucket}/demo", endpoint_url=moto_endpoint)
    for key, sha256 in cutouts[:20]:
        store.get(key, sha256)  # raises on a missing object or a checksum mismatch


def test_worker_environment_points_every_worker_at_the_stack(tmp_path: Path) -> None:
    env = worker_environment(
        {"GALPIPE_DATABASE_URL": "postgresql://elsewhere/db", "PATH": "/bin"},
        database_url="postgresql://demo/db",
        object_store="file:///tmp/objects",
        cutout_url="http://127.0.0.1:1",
        fetch_rate=1000,
        radon_cache_dir=tmp_path,
        s3_endpoint_url="http://127.0.0.1:2",
    )
    from galpipe.settings import Settings

    settings = Settings.from_env(env)
    assert settings.database_url == "postgresql://demo/db"
    assert settings.fetch_rate_limit == 1000
    assert settings.metrics_port == 0
    assert settings.radon_cache_dir == str(tmp_path)
    assert settings.s3_endpoint_url == "http://127.0.0.1:2"
    assert env["PATH"] == "/bin"
