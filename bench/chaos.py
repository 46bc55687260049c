"""Benchmark of galpipe's promise under chaos: kill anything, lose nothing, double nothing.

Run ``python bench/chaos.py`` (``--quick`` for a few thousand galaxies). It runs the chaos run
of ``tests/chaos/run.py`` — embedded PostgreSQL, moto's S3 server and the synthetic sky behind
fault proxies, fetch and radon worker processes supervised like pods — through a clean phase
(the anchor: throughput with no fault) and a faulted phase of at least 20,000 galaxies while
every fault kind is injected on a seeded schedule, then reconciles the state with
``galpipe check`` over every stored object. Then it tries at least 10,000 bad inputs at every
entry point (``bench/bad_inputs.py``).

Printed: faults by kind, the final states, the breaker's transitions, what the proxies did,
lost / doubled / corrupt, seconds to drain after the last fault, throughput with and without
faults (and their ratio), bad inputs tried and unhandled. The last line is ``RESULT {json}``
with the keys ``galaxies``, ``faults``, ``lost``, ``doubled``, ``corrupt``, ``drain_s``,
``clean_per_s``, ``faulted_per_s``, ``bad_inputs_tried``, ``bad_inputs_unhandled``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

# The chaos harness and the bad-input generators live with the tests.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.chaos.run import ChaosOptions, run_chaos  # noqa: E402


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the test suite's short run")
    parser.add_argument("--galaxies", type=int, default=20_000, help="faulted-phase galaxies")
    parser.add_argument("--clean", type=int, default=2_000, help="clean-phase galaxies")
    parser.add_argument("--fetch-rate", type=float, default=100.0, help="shared cutout requests/s")
    parser.add_argument("--bad-inputs", type=int, default=10_000, help="bad inputs to try")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="logs (default: a temp dir)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="galpipe-chaos-bench-"))
    if args.quick:
        options = ChaosOptions.short(out, seed=args.seed)
    else:
        options = ChaosOptions(
            out=out,
            clean_galaxies=args.clean,
            faulted_galaxies=args.galaxies,
            fetch_rate=args.fetch_rate,
            seed=args.seed,
        )
    started = time.monotonic()
    result = run_chaos(options)
    print(f"faults: {dict(sorted(result.faults.items()))}")
    print(f"final states: {result.final_states}")
    print(f"fetch breaker: {result.breaker}; worker restarts: {result.restarts}")
    print(f"proxies: {result.proxies}")
    for note in result.notes:
        print(f"note: {note}")
    for breach in result.breaches:
        print(f"BREACH: {breach}")
    print(
        f"galaxies {result.galaxies:,}: lost {result.lost}, doubled {result.doubled}, corrupt "
        f"{result.corrupt} ({result.objects_verified:,} objects verified); drained "
        f"{result.drain_s:.1f} s after the last fault"
    )
    ratio = result.faulted_per_s / result.clean_per_s
    print(
        f"throughput: clean {result.clean_per_s:.1f}/s (anchor), faulted "
        f"{result.faulted_per_s:.1f}/s = {ratio:.2f}x the anchor"
    )
    bad: dict[str, Any] = {"tried": 0, "unhandled": 0}
    if args.bad_inputs > 0:
        from bad_inputs import run_bad_inputs

        bad = run_bad_inputs(args.bad_inputs if not args.quick else 1_000, args.seed)
        print(f"bad inputs: {bad['tried']:,} tried, {bad['unhandled']} unhandled")
        for example in bad.get("examples_unhandled", []):
            print(f"UNHANDLED: {example}")
    summary = {
        "galaxies": result.galaxies,
        "faults": dict(sorted(result.faults.items())),
        "lost": result.lost,
        "doubled": result.doubled,
        "corrupt": result.corrupt,
        "drain_s": round(result.drain_s, 1),
        "clean_per_s": round(result.clean_per_s, 2),
        "faulted_per_s": round(result.faulted_per_s, 2),
        "faulted_vs_clean": round(ratio, 3),
        "breaches": result.breaches,
        "objects_verified": result.objects_verified,
        "breaker": result.breaker,
        "worker_restarts": result.restarts,
        "bad_inputs_tried": bad["tried"],
        "bad_inputs_unhandled": bad["unhandled"],
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "quick": args.quick,
        "bench_wall_s": round(time.monotonic() - started, 1),
    }
    print("RESULT " + json.dumps(summary, sort_keys=True))
    return 0 if result.ok and bad["unhandled"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
