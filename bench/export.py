"""Benchmark of ``galpipe export --format parquet-dataset``: throughput, and memory that stays flat.

Run ``python bench/export.py`` (``--quick`` for a smoke run: 10⁴ and 10⁵ rows). It starts a
private embedded PostgreSQL, migrates two databases and bulk-loads them with COPY: the anchor
with 10⁵ transformed galaxies, the measured one with 10⁶ (``--rows``), each with a combined
measurement (3 % of them unmeasurable: NULL angles) and two Gaia catalogue columns in
``extra``, at positions uniform on the sky in random ``source_id`` order (the worst case: no
tile is contiguous in id order). Then, each in a fresh child process (so its peak resident
memory is its own):

1. **Anchor**: the dataset export of the 10⁵ galaxies (default HEALPix order).
2. **Measured**: the same export of the 10⁶ galaxies.
3. **Contrast** (skip with ``--no-contrast``): the single-file Parquet export
   (``galpipe export OUT.parquet``: an astropy table built whole in memory) of both.

Each line gives rows/s (rows / wall seconds of the export call) and the child's peak RSS
(``getrusage`` ``ru_maxrss``), both in total and above the child's RSS before the export
(interpreter, numpy, astropy, pyarrow and the pool loaded). The figure that matters is the
ratio of the measured export's peak RSS to the anchor's: ~1 for a streaming export (memory
bounded by one chunk), ~10 for one that holds the catalogue. The last line is
``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from _postgres import embedded_postgres, migrated_database

ANCHOR_ROWS = 100_000
MEASURED_ROWS = 1_000_000
QUICK_ANCHOR_ROWS = 10_000
QUICK_MEASURED_ROWS = 100_000
VERSION = "radon-bench"
SEED = 20261206
LOAD_CHUNK = 100_000  # rows generated and COPYed at a time
CHILD_TIMEOUT_S = 1800.0
SHOWN_SETTINGS = ("server_version", "work_mem", "shared_buffers")

# -- setup SQL (bench-only fixtures; the library's SQL stays under services/galpipe/db/) -------

COPY_GALAXIES_SQL = "COPY galaxies (source_id, ra, dec, catalog, extra) FROM STDIN"
COPY_MEASUREMENTS_SQL = """
COPY radon_measurements (source_id, algo_version, band, angle_image_deg, position_angle_deg,
    angle_err_deg, anisotropy, band_spread_deg, n_bands, nonfinite_pixels, masked_fraction,
    contaminated, flags) FROM STDIN
"""
SETUP_TASKS_SQL = """
INSERT INTO tasks (pipeline, source_id, state)
SELECT p, g.source_id, 'done' FROM galaxies g, unnest(ARRAY['fetch', 'radon']) p
"""


def _galaxy_lines(ids: np.ndarray, rng: np.random.Generator) -> str:
    """COPY text of galaxies ``ids`` at random positions, uniform on the sphere."""
    ra = rng.uniform(0, 360, len(ids)) % 360
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, len(ids))))
    posangle = rng.uniform(0, 180, len(ids))
    ellipticity = rng.uniform(0, 0.9, len(ids))
    missing = rng.random(len(ids)) < 0.05
    lines = []
    columns = (ids, ra, dec, posangle, ellipticity, missing)
    for sid, r, d, pa, e, m in zip(*(c.tolist() for c in columns), strict=True):
        extra = json.dumps({"posangle_sersic": None if m else pa, "ellipticity_sersic": e})
        lines.append(f"{sid}\t{r!r}\t{d!r}\tbench\t{extra}\n")
    return "".join(lines)


def _measurement_lines(ids: np.ndarray, rng: np.random.Generator) -> str:
    """COPY text of one combined measurement per galaxy; 3 % unmeasurable (NULL angles)."""
    n = len(ids)
    pa = rng.uniform(0, 180, n)
    err = rng.uniform(0.2, 5, n)
    anisotropy = rng.uniform(0, 1, n)
    spread = rng.uniform(0, 3, n)
    masked = rng.uniform(0, 0.3, n)
    blank = rng.random(n) < 0.03
    lines = []
    for sid, p, s, a, b, m, x in zip(
        ids.tolist(),
        pa.tolist(),
        err.tolist(),
        anisotropy.tolist(),
        spread.tolist(),
        masked.tolist(),
        blank.tolist(),
        strict=True,
    ):
        if x:
            lines.append(
                f"{sid}\t{VERSION}\tcombined\t\\N\t\\N\t\\N\t\\N\t\\N\t0\t0\t{m!r}\tf\t32\n"
            )
        else:
            angles = f"{(p + 3) % 180!r}\t{p!r}\t{s!r}\t{a!r}\t{b!r}"
            lines.append(f"{sid}\t{VERSION}\tcombined\t{angles}\t4\t0\t{m!r}\tf\t0\n")
    return "".join(lines)


def load(url: str, rows: int) -> float:
    """COPY ``rows`` transformed galaxies with measurements into the database; seconds taken."""
    rng = np.random.default_rng(SEED + rows)
    ids = rng.permutation(np.arange(1, rows + 1, dtype=np.int64))  # position unrelated to id
    start = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        for sql, lines in (
            (COPY_GALAXIES_SQL, _galaxy_lines),
            (COPY_MEASUREMENTS_SQL, _measurement_lines),
        ):
            with conn.cursor() as cur, cur.copy(sql) as copy:
                for first in range(0, rows, LOAD_CHUNK):
                    copy.write(lines(np.sort(ids[first : first + LOAD_CHUNK]), rng))
        conn.execute(SETUP_TASKS_SQL)
        conn.execute("VACUUM (ANALYZE)")
    return time.perf_counter() - start


# -- the export, in a child process -------------------------------------------------------------


@dataclass(frozen=True)
class ExportRun:
    """One export in a fresh process."""

    kind: str
    name: str
    rows: int
    seconds: float
    baseline_mib: float
    peak_mib: float
    files: int
    bytes_on_disk: int

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds

    @property
    def growth_mib(self) -> float:
        return self.peak_mib - self.baseline_mib


def _max_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _child(url: str, out: str, kind: str, queue: Any) -> None:
    """Export the database to ``out`` (a dataset, or one Parquet file) and report."""
    import pyarrow.parquet  # noqa: F401  (loaded before the baseline, as the export needs it)

    from galpipe.catalog.dataset_export import export_dataset
    from galpipe.catalog.export import export_results
    from galpipe.db.connection import open_pool

    with open_pool(url, max_size=2) as pool:
        with pool.connection() as conn:
            conn.execute("SELECT 1")
        baseline = _max_rss_mib()
        start = time.perf_counter()
        if kind == "dataset":
            rows = export_dataset(pool, Path(out)).rows
        else:
            rows = export_results(pool, Path(out), fmt="parquet").rows
        seconds = time.perf_counter() - start
    queue.put((rows, seconds, baseline, _max_rss_mib()))


def run_export(name: str, url: str, out: Path, kind: str) -> ExportRun:
    """One export of ``kind`` (``dataset`` or ``file``) in a fresh spawned process."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(url, str(out), kind, queue))
    child.start()
    rows, seconds, baseline, peak = queue.get(timeout=CHILD_TIMEOUT_S)
    child.join(CHILD_TIMEOUT_S)
    if child.exitcode != 0:
        raise SystemExit(f"{name}: the export process exited {child.exitcode}")
    files = [out] if out.is_file() else [p for p in out.rglob("*") if p.is_file()]
    return ExportRun(
        kind, name, rows, seconds, baseline, peak, len(files), sum(p.stat().st_size for p in files)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10⁴ and 10⁵ rows: a smoke run")
    parser.add_argument("--rows", type=int, default=None, help="rows of the measured export")
    parser.add_argument("--no-contrast", action="store_true", help="skip the single-file export")
    args = parser.parse_args(argv)
    anchor_rows = QUICK_ANCHOR_ROWS if args.quick else ANCHOR_ROWS
    measured_rows = args.rows or (QUICK_MEASURED_ROWS if args.quick else MEASURED_ROWS)

    runs: list[ExportRun] = []
    with embedded_postgres("galpipe-bench-export-") as (admin, scratch):
        urls = {}
        for label, rows in (("anchor", anchor_rows), ("measured", measured_rows)):
            url, settings = migrated_database(admin, f"galpipe_export_{label}", SHOWN_SETTINGS)
            seconds = load(url, rows)
            print(f"loaded {rows:,} galaxies into {label} with COPY in {seconds:.1f} s")
            urls[label] = (url, rows)
        print("server: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
        kinds = ["dataset"] if args.no_contrast else ["dataset", "file"]
        for kind in kinds:
            for label in ("anchor", "measured"):
                url, rows = urls[label]
                out = scratch / f"{kind}-{label}" / ("cat" if kind == "dataset" else "cat.parquet")
                out.parent.mkdir()
                run = run_export(f"{kind} {label} ({rows:,})", url, out, kind)
                if run.rows != rows:
                    raise SystemExit(f"{run.name}: exported {run.rows:,} rows of {rows:,}")
                runs.append(run)

    print()
    print(f"{'export':<28}{'rows/s':>10}{'s':>8}{'peak MiB':>10}{'growth':>8}{'files':>7}{'MB':>7}")
    for r in runs:
        print(
            f"{r.name:<28}{r.rows_per_s:>10,.0f}{r.seconds:>8.1f}{r.peak_mib:>10.0f}"
            f"{r.growth_mib:>8.0f}{r.files:>7}{r.bytes_on_disk / 1e6:>7.1f}"
        )
    ratios: dict[str, dict[str, float]] = {}
    for kind in kinds:
        anchor, measured = (r for r in runs if r.kind == kind)
        ratios[kind] = {
            "rows": measured.rows / anchor.rows,
            "peak_rss": measured.peak_mib / anchor.peak_mib,
            "rss_growth": measured.growth_mib / max(anchor.growth_mib, 1.0),
            "rows_per_s": measured.rows_per_s / anchor.rows_per_s,
        }
        print(
            f"{kind}: {ratios[kind]['rows']:.0f}x the rows -> peak RSS x"
            f"{ratios[kind]['peak_rss']:.2f}, growth over baseline x"
            f"{ratios[kind]['rss_growth']:.2f}, rows/s x{ratios[kind]['rows_per_s']:.2f}"
        )
    result = {"runs": [asdict(r) | {"rows_per_s": r.rows_per_s} for r in runs], "ratios": ratios}
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
