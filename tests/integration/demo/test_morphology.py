"""``galpipe demo --pipelines``: morphology workers beside radon, or instead of it.

30 galaxies per run: once through the real command (embedded PostgreSQL, local object store)
with radon and morphology, and once in-process with morphology alone against the test
database, which outlives the run so that its tasks and routes can be read.
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

from galpipe.db.demo_results import MORPHOLOGY_COLUMNS
from galpipe.db.morphology import FRACTION_COLUMNS
from galpipe.demo.model import shipped_model
from galpipe.demo.run import DemoOptions, run_demo
from galpipe.science import gz2
from galpipe.storage import sha256_hex

N_GALAXIES = 30
TERMINAL = {"done", "failed", "skipped"}
GZ2_COLUMNS = [f"gz2_{c}" for c in FRACTION_COLUMNS]
# Fractions are stored as float32 network outputs: their tree sums hold to float32 rounding.
TREE_ATOL = 1e-4


def _check_morphology(table: Table) -> Table:
    """Every fetched galaxy has a prediction or a terminal morphology task with its reason;
    the predictions obey the GZ2 tree and carry the shipped model's version."""
    onnx_bytes, _ = shipped_model()
    version = sha256_hex(onnx_bytes)
    assert set(MORPHOLOGY_COLUMNS) - {"source_id"} <= set(table.colnames)
    fetched = table[table["fetch_state"] == "done"]
    assert len(fetched) > 0
    for row in fetched:
        state = row["morphology_state"]
        assert state in TERMINAL, row["source_id"]
        if state == "done":
            assert row["morph_model_version"] == version
            assert row["morph_class"] in gz2.SIX_CLASSES
        else:
            assert row["morphology_error"], f"{row['source_id']}: {state} without a reason"
    predicted = fetched[fetched["morphology_state"] == "done"]
    assert len(predicted) > 0
    fractions = np.array([[row[c] for c in GZ2_COLUMNS] for row in predicted], dtype=float)
    gz2.check_fractions(fractions, atol=TREE_ATOL)
    codes, probability = gz2.six_class(fractions)
    assert list(predicted["morph_class"]) == [gz2.SIX_CLASSES[c] for c in codes]
    np.testing.assert_allclose(predicted["morph_class_probability"], probability, rtol=1e-6)
    return predicted


def _check_morphology_report(out: Path, predicted: Table) -> str:
    assert (out / "morphology_gallery.png").stat().st_size > 0
    text = (out / "report.md").read_text()
    assert "(morphology_gallery.png)" in text
    section = text.split("## Morphology", 1)[1].split("\n## ", 1)[0]
    _, report = shipped_model()
    metrics = report["model"]["metrics"]
    assert report["model"]["model_version"] in section
    assert f"RMSE {metrics['rmse']:.4f}" in section
    assert f"six-class accuracy {metrics['six_class_accuracy']:.3f}" in section
    labels = list(predicted["morph_class"])
    for label in set(labels):
        assert f"| {label} | {labels.count(label)} |" in section
    return text


def test_demo_command_runs_radon_and_morphology(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GALPIPE_")}
    done = subprocess.run(
        [
            *(sys.executable, "-m", "galpipe.cli", "demo", "--n", str(N_GALAXIES)),
            *("--out", str(out), "--no-progress", "--pipelines", "radon,morphology"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "1 radon and 1 morphology worker process(es)" in done.stdout
    table = Table.read(out / "results.ecsv", format="ascii.ecsv")
    assert len(table) == N_GALAXIES
    assert set(Table.read(out / "results.fits").colnames) == set(table.colnames)
    # Radon ran as before, beside morphology.
    fetched = table[table["fetch_state"] == "done"]
    assert set(fetched["radon_state"]) <= TERMINAL
    assert np.isfinite(np.asarray(fetched["position_angle_deg"], dtype=float)).any()
    predicted = _check_morphology(table)
    _check_morphology_report(out, predicted)
    for name in ("gallery.png", "pa_recovery.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "logs" / "morphology-1.log").exists()


def test_demo_with_morphology_alone_queues_no_radon_task(tmp_path: Path, database_url: str) -> None:
    out = tmp_path / "demo"
    result = run_demo(
        DemoOptions(
            n=N_GALAXIES,
            out=out,
            pipelines=("morphology",),
            seed=5,
            database_url=database_url,
            progress=False,
            timeout_s=150,
        ),
        Console(file=io.StringIO(), width=120),
    )
    assert result.ok, result.problems
    with psycopg.connect(database_url) as conn:
        states: dict[str, int] = dict(
            conn.execute(
                "SELECT pipeline || ':' || state::text, count(*) FROM tasks GROUP BY 1"
            ).fetchall()
        )
        routes = conn.execute("SELECT upstream, downstream FROM pipeline_routes").fetchall()
        predictions = conn.execute("SELECT count(*) FROM morphology_predictions").fetchone()
    assert not [k for k in states if k.startswith("radon:")]
    assert routes == [("fetch", "morphology")]
    fetch_done = states.get("fetch:done", 0)
    assert sum(n for k, n in states.items() if k.startswith("morphology:")) == fetch_done > 0
    assert predictions == (states.get("morphology:done", 0),)
    assert result.counts["morphology"]["done"] == states.get("morphology:done", 0)
    assert not list((out / "logs").glob("radon-*.log"))  # no radon worker started
    table = Table.read(out / "results.ecsv", format="ascii.ecsv")
    predicted = _check_morphology(table)
    text = _check_morphology_report(out, predicted)
    # Without radon: no accuracy against the truth and no radon figures.
    assert "## Accuracy" not in text
    assert not (out / "pa_recovery.png").exists()
    assert result.morphology_classes == {
        label: list(predicted["morph_class"]).count(label) for label in gz2.SIX_CLASSES
    }
