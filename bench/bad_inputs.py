"""Bad input at every place it enters galpipe: how many were tried, how many went unhandled.

Run ``python bench/bad_inputs.py --n 10000`` (``--seed`` to vary the draw). It generates at least
``n`` bad inputs with a seeded ``random.Random`` (the generators of ``tests/fuzz/generators.py``,
shared with the fuzz tests) across the four entry kinds and feeds each to the real entry point:

- ``catalog``: a catalogue file ingested as ``galpipe ingest`` does, into a PostgreSQL database
  (a private embedded server unless ``pool_url`` is given);
- ``cutout``: an answer body classified as the fetch pipeline does before it stores anything;
- ``settings``: one ``GALPIPE_*`` variable read, then what the processes build from it;
- ``http``: raw bytes sent to the health/metrics server, the synthetic sky and the control API
  (uvicorn, the real actions on the database, the tests' fake Kubernetes API), 16 at a time.

An input is *unhandled* when galpipe answered it with an exception outside its clear-error
family, a 5xx, a hang or a server that stopped answering, or left something half-written (the
judges are ``tests/fuzz/oracles.py``). The last line is ``RESULT {json}`` with
``bad_inputs_tried`` and ``bad_inputs_unhandled``.

:func:`run_bad_inputs` is what the chaos benchmark imports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import random
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# The generators and judges live with the fuzz tests; the embedded server with the benchmarks.
REPO_ROOT = Path(__file__).resolve().parents[1]
for _path in (REPO_ROOT, Path(__file__).resolve().parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from tests.fuzz import generators, oracles  # noqa: E402

from _postgres import embedded_postgres  # noqa: E402
from galpipe.db.connection import open_pool  # noqa: E402
from galpipe.db.migrate import migrate  # noqa: E402

#: Share of the inputs each entry kind gets (each gets at least one).
SHARES = {"catalog": 0.15, "cutout": 0.35, "settings": 0.30, "http": 0.20}
#: Concurrent connections of the HTTP inputs (most of their time is waiting on a socket).
HTTP_CLIENTS = 16
#: Unhandled inputs kept as examples in the result.
MAX_EXAMPLES = 20
#: Loggers that would print a line per bad input (astropy's reader warnings, uvicorn's
#: "Invalid HTTP request received").
_QUIET_LOGGERS = ("galpipe", "uvicorn", "uvicorn.error", "astropy")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the per-input warnings for the run; restore the loggers' levels after."""
    saved = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    try:
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def _database(pool_url: str | None) -> Iterator[tuple[str, Path]]:
    """A migrated database URL and a scratch directory: the given URL, else a private server."""
    if pool_url is not None:
        with tempfile.TemporaryDirectory(prefix="galpipe-bad-inputs-") as tmp:
            yield pool_url, Path(tmp)
        return
    with embedded_postgres("galpipe-bad-inputs-") as (url, tmp):
        migrate(url)
        yield url, tmp


def _counts(n: int) -> dict[str, int]:
    return {entry: max(1, math.ceil(n * SHARES[entry])) for entry in generators.ENTRIES}


def run_bad_inputs(n: int, seed: int, *, pool_url: str | None = None) -> dict[str, Any]:
    """Try at least ``n`` generated bad inputs across the four entry kinds.

    Parameters
    ----------
    n
        Inputs to try at least (split by :data:`SHARES`, rounded up).
    seed
        Seed of the draw: the same seed tries the same inputs.
    pool_url
        A migrated galpipe database the catalogue inputs may write to (they ingest galaxies and
        queue fetch tasks); None starts a private embedded PostgreSQL for the run.

    Returns
    -------
    dict
        ``tried``, ``unhandled``, ``by_entry`` (entry → ``tried``, ``unhandled``, ``seconds``)
        and ``examples_unhandled`` (up to :data:`MAX_EXAMPLES` of ``entry``, ``case``,
        ``detail``).
    """
    counts = _counts(n)
    by_entry: dict[str, dict[str, Any]] = {}
    examples: list[dict[str, str]] = []

    def record(entry: str, verdicts: list[tuple[str, oracles.Verdict]], seconds: float) -> None:
        bad = [(name, v) for name, v in verdicts if not v.handled]
        by_entry[entry] = {
            "tried": len(verdicts),
            "unhandled": len(bad),
            "seconds": round(seconds, 2),
        }
        for name, verdict in bad[: MAX_EXAMPLES - len(examples)]:
            examples.append({"entry": entry, "case": name, "detail": verdict.detail})

    def timed(
        entry: str, run: Callable[[random.Random, int], list[tuple[str, oracles.Verdict]]]
    ) -> None:
        started = time.perf_counter()
        rng = random.Random(f"{seed}:{entry}")
        record(entry, run(rng, counts[entry]), time.perf_counter() - started)

    with _quiet():
        timed("cutout", lambda rng, k: [_cutout(generators.cutout_case(rng)) for _ in range(k)])
        timed("settings", lambda rng, k: [_setting(generators.setting_case(rng)) for _ in range(k)])
        with _database(pool_url) as (url, scratch):
            pool = open_pool(url, max_size=4, name="galpipe-bad-inputs")
            try:
                timed(
                    "catalog",
                    lambda rng, k: [
                        _catalog(generators.catalog_case(rng), pool, scratch) for _ in range(k)
                    ],
                )
                timed("http", lambda rng, k: _http(rng, k, pool))
            finally:
                pool.close()
    return {
        "tried": sum(e["tried"] for e in by_entry.values()),
        "unhandled": sum(e["unhandled"] for e in by_entry.values()),
        "by_entry": {entry: by_entry[entry] for entry in generators.ENTRIES},
        "examples_unhandled": examples,
    }


def _cutout(case: generators.CutoutCase) -> tuple[str, oracles.Verdict]:
    return case.name, oracles.try_cutout(case)


def _setting(case: generators.SettingCase) -> tuple[str, oracles.Verdict]:
    return f"{case.env}={case.value[:40]!r}", oracles.try_setting(case)


def _catalog(case: generators.CatalogCase, pool: Any, scratch: Path) -> tuple[str, oracles.Verdict]:
    return case.name, oracles.try_catalog(case, pool, scratch)


def _http(rng: random.Random, count: int, pool: Any) -> list[tuple[str, oracles.Verdict]]:
    """``count`` raw requests, :data:`HTTP_CLIENTS` at a time; then every server must answer."""
    cases = [generators.http_case(rng) for _ in range(count)]
    with oracles.http_servers(pool) as servers, ThreadPoolExecutor(HTTP_CLIENTS) as clients:
        verdicts = list(
            clients.map(
                lambda case: (f"{case.target}: {case.name}", oracles.try_http(case, servers)), cases
            )
        )
        for target in generators.HTTP_TARGETS:
            if not oracles.server_answers(servers, target):
                verdicts.append(
                    (
                        f"{target}: after the run",
                        oracles.Verdict(False, f"{target} no longer answers"),
                    )
                )
    return verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="bad inputs to try at least")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = run_bad_inputs(args.n, args.seed)
    seconds = time.perf_counter() - started
    print(
        f"bad inputs: {result['tried']} tried, {result['unhandled']} unhandled in {seconds:.1f} s"
    )
    for entry, figures in result["by_entry"].items():
        tried, unhandled, spent = figures["tried"], figures["unhandled"], figures["seconds"]
        print(f"  {entry:<9} {tried:>6} tried {unhandled:>5} unhandled  {spent:>7.1f} s")
    for example in result["examples_unhandled"]:
        print(f"  unhandled {example['entry']}: {example['case']}: {example['detail']}")
    summary = {
        "bad_inputs_tried": result["tried"],
        "bad_inputs_unhandled": result["unhandled"],
        "by_entry": result["by_entry"],
        "seconds": round(seconds, 1),
    }
    print("RESULT " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
