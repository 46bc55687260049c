"""``galpipe sky catalog`` and ``galpipe sky serve``.

Only argparse is imported here; GalSim, astropy and the server load when a command runs, so the
``galpipe`` command stays quick to start.
"""

from __future__ import annotations

import argparse
from typing import Any

from galpipe.errors import CommandError, InputError, reraise_as

__all__ = ["fault_config_from_args", "register"]


def _range(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _ratio(text: str) -> float:
    value = _range(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: a ratio must lie in [0, 1]")
    return value


def _outage(text: str) -> tuple[float, float]:
    start, sep, duration = text.partition(":")
    try:
        window = (float(start), float(duration))
    except ValueError:
        window = None
    if not sep or window is None or window[0] < 0 or window[1] <= 0:
        raise argparse.ArgumentTypeError(
            f"outage {text!r}: expected START:DURATION in seconds after start, e.g. 30:10"
        )
    return window


def _blank_region(text: str) -> Any:
    from galpipe.synthetic.faults import BlankRegion

    try:
        return BlankRegion.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``sky`` with its sub-commands ``sky catalog`` and ``sky serve`` to ``subparsers``."""
    sky = subparsers.add_parser("sky", help="the synthetic GalSim sky (catalogue and server)")
    sky_sub = sky.add_subparsers(dest="sky_command", required=True, metavar="SKY_COMMAND")
    _add_catalog_command(sky_sub)
    serve = _add_serve_command(sky_sub)
    _add_fault_options(serve.add_argument_group("fault injection"))


def _add_catalog_command(sky_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sky_sub.add_parser("catalog", help="write a catalogue of synthetic galaxies (ECSV)")
    p.add_argument("--n", type=int, required=True, help="number of galaxies")
    p.add_argument("--out", required=True, help="ECSV file to write")
    p.add_argument("--seed", type=int, default=0, help="seeds ids and positions (default 0)")
    p.add_argument(
        "--ra-range",
        nargs=2,
        type=_range,
        default=(0.0, 360.0),
        metavar=("LOW", "HIGH"),
        help="right ascension range, degrees (default 0 360)",
    )
    p.add_argument(
        "--dec-range",
        nargs=2,
        type=_range,
        default=(-20.0, 50.0),
        metavar=("LOW", "HIGH"),
        help="declination range, degrees (default -20 50; dec >= 32.375 lacks i in ls-dr10)",
    )
    p.add_argument(
        "--neighbour-fraction",
        type=_ratio,
        default=None,
        help="fraction of galaxies with stars/companions near them (default 0.3)",
    )
    p.add_argument(
        "--sdss-fields",
        action="store_true",
        help="add run, rerun, camcol, field: each galaxy's SDSS field in the synthetic sky's "
        "frame layout (for GALPIPE_FETCH_SOURCE=sdss)",
    )
    # ``command`` names the sub-command in full in error messages: "galpipe sky catalog: …".
    p.set_defaults(handler=_cmd_catalog, command="sky catalog")


def _add_serve_command(
    sky_sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    p = sky_sub.add_parser("serve", help="serve cutouts like the Legacy Surveys viewer")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8764, help="port (default 8764; 0 = any free)")
    p.add_argument("--catalog", default=None, help="ECSV written by `galpipe sky catalog`")
    p.add_argument(
        "--rate",
        type=_range,
        default=5.0,
        help="requests/s the server admits before answering 429 (default 5; 0 = unlimited)",
    )
    p.add_argument("--match-radius", type=_range, default=1.0, help="arcsec (default 1)")
    p.add_argument("--prerender", action="store_true", help="render the catalogue at start")
    p.add_argument("--workers", type=int, default=1, help="processes for --prerender")
    p.add_argument("--cache-size", type=int, default=10_000, help="cutouts kept (0: no cache)")
    p.add_argument("--log-file", default=None, help="append the request log here (JSON lines)")
    p.add_argument(
        "--ready-file",
        default=None,
        metavar="PATH",
        help='once listening, write {"url", "host", "port", "pid"} here as JSON (removed at exit)',
    )
    p.set_defaults(handler=_cmd_serve, command="sky serve")
    return p


def _add_fault_options(faults: argparse._ArgumentGroup) -> None:
    """The options of :func:`fault_config_from_args`: what the served sky gets wrong."""
    faults.add_argument("--error-ratio", type=_ratio, default=0.0, help="503 answers")
    faults.add_argument("--throttle-ratio", type=_ratio, default=0.0, help="429 answers")
    faults.add_argument("--retry-after", type=int, default=1, help="Retry-After of 429s, s")
    faults.add_argument("--timeout-ratio", type=_ratio, default=0.0, help="never answered")
    faults.add_argument("--timeout-mode", choices=("sleep", "close"), default="sleep")
    faults.add_argument("--timeout-sleep", type=_range, default=30.0, help="seconds held")
    faults.add_argument("--truncated-ratio", type=_ratio, default=0.0, help="half bodies")
    faults.add_argument("--truncate-mode", choices=("dropped", "short"), default="dropped")
    faults.add_argument("--corrupt-ratio", type=_ratio, default=0.0, help="random-byte bodies")
    faults.add_argument("--latency", type=_range, default=0.0, help="seconds added")
    faults.add_argument("--latency-jitter", type=_range, default=0.0, help="+ U(0, this) s")
    faults.add_argument(
        "--outage",
        type=_outage,
        action="append",
        default=[],
        metavar="START:DURATION",
        help="503 for everything from START for DURATION seconds after start (repeatable)",
    )
    faults.add_argument(
        "--blank-region",
        type=_blank_region,
        action="append",
        default=[],
        metavar="RA0:RA1:DEC0:DEC1[:http500|zeros]",
        help="area without data (repeatable)",
    )
    faults.add_argument(
        "--north-dec",
        type=_range,
        default=32.375,
        help="ls-dr10 lacks the i band at dec >= this (default 32.375)",
    )
    faults.add_argument("--no-north", action="store_true", help="serve i everywhere")
    faults.add_argument("--fault-seed", type=int, default=0, help="seeds the fault draws")


def fault_config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~galpipe.synthetic.faults.FaultConfig` that ``sky serve`` options ask for."""
    from galpipe.synthetic.faults import FaultConfig

    return FaultConfig(
        error_ratio=args.error_ratio,
        throttle_ratio=args.throttle_ratio,
        retry_after_s=args.retry_after,
        timeout_ratio=args.timeout_ratio,
        timeout_mode=args.timeout_mode,
        timeout_sleep_s=args.timeout_sleep,
        truncated_ratio=args.truncated_ratio,
        truncate_mode=args.truncate_mode,
        corrupt_ratio=args.corrupt_ratio,
        latency_s=args.latency,
        latency_jitter_s=args.latency_jitter,
        outages=tuple(args.outage),
        blank_regions=tuple(args.blank_region),
        north_without_i_dec=None if args.no_north else args.north_dec,
        seed=args.fault_seed,
    )


def _cmd_catalog(args: argparse.Namespace, settings: object) -> None:
    from dataclasses import replace

    from galpipe.synthetic.catalog import make_truths, write_catalog
    from galpipe.synthetic.truth import SkyConfig

    config = SkyConfig()
    if args.neighbour_fraction is not None:
        config = replace(config, neighbour_fraction=args.neighbour_fraction)
    with reraise_as(InputError, ValueError, OSError):
        truths = make_truths(
            args.n,
            seed=args.seed,
            ra_range=tuple(args.ra_range),
            dec_range=tuple(args.dec_range),
            config=config,
        )
        path = write_catalog(args.out, truths, sdss_fields=args.sdss_fields)
    print(f"wrote {len(truths):,} synthetic galaxies to {path}")


def _cmd_serve(args: argparse.Namespace, settings: object) -> None:
    from galpipe.runtime.service import serve
    from galpipe.synthetic.catalog import read_catalog
    from galpipe.synthetic.server import SkyProcess, SyntheticSky

    with reraise_as(InputError, ValueError, OSError):
        truths = read_catalog(args.catalog) if args.catalog else []
        sky = SyntheticSky(
            truths,
            faults=fault_config_from_args(args),
            rate=args.rate,
            host=args.host,
            port=args.port,
            match_radius_arcsec=args.match_radius,
            cache_size=args.cache_size,
            log_path=args.log_file,
            ready_file=args.ready_file,
        )
    process = SkyProcess(sky, prerender_workers=args.workers if args.prerender else None)
    # Port 0: no health server; the sky is a stand-in for the survey, not a probed service.
    with reraise_as(CommandError, OSError, context=f"cannot listen on {args.host}:{args.port}"):
        serve(process, port=0)
