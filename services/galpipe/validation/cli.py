"""``galpipe validate``: the validation report (truth, the paper's protocol, a peer, Gaia).

Wiring (in :mod:`galpipe.cli`): ``add_validate_parser(sub)`` adds the subcommand and sets its
``handler`` (the ``(args, settings) -> int`` form of the other commands);
:func:`run_validate` is the command itself.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_validate_parser", "run_validate"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: expected a positive integer")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: expected an integer >= 0")
    return value


def add_validate_parser(subparsers: Any) -> None:
    """Add ``validate`` to the ``galpipe`` subcommands (``argparse`` subparsers action)."""
    parser = subparsers.add_parser(
        "validate",
        help="validation report: accuracy vs truth, the paper's augmentation protocol, a peer",
        description="Render a GalSim truth population in the cutout format, measure it with "
        "the production configuration and with SExtractor's second moments (sep), run the "
        "paper's R/B/N augmentation protocol, compare with Gaia-like Sersic angles, and write "
        "report.md, PNG figures and summary.json into OUT.",
    )
    parser.add_argument("out", help="report directory (created; files in it are overwritten)")
    parser.add_argument(
        "--n-truth", type=_positive_int, default=10_000, help="truth galaxies (default 10000)"
    )
    parser.add_argument(
        "--n-augment",
        type=_non_negative_int,
        default=500_000,
        help="augmented images of the protocol (default 500000, as the paper)",
    )
    parser.add_argument(
        "--n-floor",
        type=_non_negative_int,
        default=None,
        help="isolated galaxies the oracle (the information floor) measures, 8 augmented "
        "images each (default: FLOOR_GALAXIES of galpipe.validation.run, 160)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds population and protocol")
    parser.add_argument(
        "--quick", action="store_true", help="400 galaxies, 2000 augmentations (seconds)"
    )
    parser.add_argument(
        "--workers", type=_positive_int, default=None, help="processes (default: every core)"
    )
    parser.set_defaults(handler=lambda args, _settings: run_validate(args))


def run_validate(args: argparse.Namespace) -> int:
    """Run the validation with the parsed ``args``; print the headline as JSON; exit status 0."""
    from galpipe.validation.run import run_validation  # loads GalSim and matplotlib: only here

    summary = run_validation(
        args.out,
        n_truth=args.n_truth,
        n_augment=args.n_augment,
        seed=args.seed,
        quick=args.quick,
        workers=args.workers,
        **({} if args.n_floor is None else {"n_floor": args.n_floor}),
    )
    print(json.dumps(summary.as_dict(), sort_keys=True))
    print(f"report: {summary.out_dir / 'report.md'}")
    return 0
