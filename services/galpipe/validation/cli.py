"""``galpipe validate``: the validation report (truth, the paper's protocol, a peer, Gaia,
fit for weak lensing).

:func:`register` adds the command to ``galpipe``.
Only argparse is imported here; GalSim and matplotlib load when the command runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["register"]


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


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``validate`` to ``subparsers``."""
    parser = subparsers.add_parser(
        "validate",
        help="validation report: accuracy vs truth, the paper's augmentation protocol, a peer",
        description="Render a GalSim truth population in the cutout format, measure it with "
        "the production configuration and with SExtractor's second moments (sep), run the "
        "paper's R/B/N augmentation protocol, compare with Gaia-like Sersic angles, check the "
        "fit for weak lensing (no preferred direction; shear calibration bias m and additive "
        "bias c), and write report.md, PNG figures and summary.json into OUT.",
    )
    parser.add_argument("out", help="report directory (created; files in it are overwritten)")
    # Sizes default to None: --quick then chooses the defaults of those not given, and a size
    # given always wins (galpipe.validation.run.resolve_sizes).
    parser.add_argument(
        "--n-truth",
        type=_positive_int,
        default=None,
        help="truth galaxies (default 10000; with --quick 400)",
    )
    parser.add_argument(
        "--n-augment",
        type=_non_negative_int,
        default=None,
        help="augmented images of the protocol (default 500000, as the paper; with --quick 2000)",
    )
    parser.add_argument(
        "--n-floor",
        type=_non_negative_int,
        default=None,
        help="isolated galaxies the oracle (the information floor) measures, 8 augmented "
        "images each (default 160; with --quick 4)",
    )
    parser.add_argument(
        "--lensing-galaxies",
        type=_non_negative_int,
        default=None,
        help="galaxies of the weak-lensing isotropy test (default 5000; with --quick 200); "
        "0 switches the lensing check off",
    )
    parser.add_argument(
        "--lensing-rings",
        type=_non_negative_int,
        default=None,
        help="rings of the weak-lensing shear test, 4 orientations x 6 shears each (default "
        "1000; with --quick 10); 0 switches the lensing check off",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds population, protocol and lensing check"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the test suite's sizes for those not given: 400 galaxies, 2000 augmentations, "
        "4 oracle galaxies, 200 lensing galaxies and 10 rings (seconds)",
    )
    parser.add_argument(
        "--workers", type=_positive_int, default=None, help="processes (default: every core)"
    )
    parser.set_defaults(handler=_cmd_validate)


def _cmd_validate(args: argparse.Namespace, settings: object) -> None:
    """Run the validation with the parsed ``args``; print the headline as JSON."""
    from galpipe.validation.run import run_validation  # loads GalSim and matplotlib: only here

    summary = run_validation(
        args.out,
        n_truth=args.n_truth,
        n_augment=args.n_augment,
        seed=args.seed,
        quick=args.quick,
        workers=args.workers,
        n_floor=args.n_floor,
        n_lensing=args.lensing_galaxies,
        n_rings=args.lensing_rings,
    )
    headline = {
        **summary.headline.to_json(),
        "out_dir": args.out,
        "elapsed_s": summary.timing.total_s,
    }
    print(json.dumps(headline, sort_keys=True))
    print(f"report: {Path(args.out) / 'report.md'}")
