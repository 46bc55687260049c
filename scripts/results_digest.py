"""A digest of what the radon pipeline stores for a seeded synthetic sky.

Runs ``galpipe demo`` (the synthetic GalSim sky, fetch and radon worker processes) against an
embedded PostgreSQL that outlives the run, reads every ``radon_measurements`` row (each band and
the combined angle) in a fixed order, and prints one SHA-256 per column and one for the whole
table. Run it before and after a change that must not move any result; equal digests mean the
stored angles, errors and flags are bit-identical::

    python scripts/results_digest.py --n 1000 --out /tmp/digest-before
    # ... change ...
    python scripts/results_digest.py --n 1000 --out /tmp/digest-after

The rows are also written to ``OUT/measurements.csv`` so that a difference can be located.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import subprocess
import sys
from pathlib import Path

import psycopg

from galpipe.db.embedded import start_embedded_postgres

#: Columns that record when, not what: left out of the digest.
_WHEN_COLUMNS = {"measured_at"}


def run_demo(database_url: str, n: int, seed: int, out: Path) -> None:
    """Run the demo's fetch and radon processes against ``database_url``; raise if it fails."""
    command = [sys.executable, "-m", "galpipe.cli", "demo", "--n", str(n), "--seed", str(seed)]
    command += ["--out", str(out / "demo"), "--database-url", database_url, "--no-progress"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def measurement_rows(database_url: str) -> tuple[list[str], list[tuple[object, ...]]]:
    """Every stored measurement, ordered by galaxy and band, without the time columns."""
    with psycopg.connect(database_url) as conn:
        cursor = conn.execute("SELECT * FROM radon_measurements ORDER BY source_id, band")
        names = [d.name for d in cursor.description or ()]
        rows = cursor.fetchall()
    keep = [i for i, name in enumerate(names) if name not in _WHEN_COLUMNS]
    return [names[i] for i in keep], [tuple(row[i] for i in keep) for row in rows]


def digests(names: list[str], rows: list[tuple[object, ...]]) -> dict[str, str]:
    """SHA-256 of each column's values (``repr``, exact for floats) and of all of them."""
    result = {}
    for i, name in enumerate(names):
        column = "\n".join(repr(row[i]) for row in rows)
        result[name] = hashlib.sha256(column.encode()).hexdigest()
    result["ALL"] = hashlib.sha256("".join(result.values()).encode()).hexdigest()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="synthetic galaxies (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic sky")
    parser.add_argument("--out", type=Path, required=True, help="directory for the run's files")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    server = start_embedded_postgres()
    try:
        url = server.get_uri()
        run_demo(url, args.n, args.seed, args.out)
        names, rows = measurement_rows(url)
    finally:
        server.cleanup()
    with (args.out / "measurements.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        writer.writerows([repr(v) for v in row] for row in rows)
    print(f"{len(rows)} measurement rows")
    for name, digest in digests(names, rows).items():
        print(f"{name:28s} {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
