"""``galpipe fetch`` and ``galpipe radon``: run one worker process of a pipeline until SIGTERM.

Only argparse is imported here; a pipeline's code loads when its worker starts.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from galpipe.settings import Settings

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fetch`` and ``radon`` to ``subparsers``."""
    p = subparsers.add_parser(
        "fetch", help="run a fetch worker: cutouts from the survey into the object store"
    )
    p.set_defaults(handler=_cmd_fetch)

    p = subparsers.add_parser(
        "radon", help="run a radon worker: position angles of fetched cutouts"
    )
    p.set_defaults(handler=_cmd_radon)


def _cmd_fetch(args: argparse.Namespace, settings: Settings) -> None:
    from galpipe.pipelines.fetch import build_fetch_pipeline
    from galpipe.pipelines.worker import run_from_settings

    run_from_settings(settings, build_fetch_pipeline)


def _cmd_radon(args: argparse.Namespace, settings: Settings) -> None:
    from galpipe.pipelines.radon import build_radon_pipeline
    from galpipe.pipelines.worker import run_from_settings

    run_from_settings(settings, build_radon_pipeline)
