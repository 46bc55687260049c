"""The ``galpipe`` command: each command module registers its sub-commands; :func:`main` runs one.

A command module's ``register(subparsers)`` adds its sub-commands, each with a ``handler``
default: a ``(args, settings) -> None`` function that raises a
:class:`~galpipe.errors.GalpipeError` when it cannot do its job. :func:`main` is the one place
that turns the outcome into the exit status and prints the error's message.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from galpipe.catalog import cli as catalog_cli
from galpipe.control import cli as control_cli
from galpipe.demo import cli as demo_cli
from galpipe.errors import ConfigurationError, GalpipeError
from galpipe.morphology import cli as morphology_cli
from galpipe.ops import cli as ops_cli
from galpipe.photoz import cli as photoz_cli
from galpipe.pipelines import cli as pipelines_cli
from galpipe.runtime.logs import configure_logging
from galpipe.settings import Settings
from galpipe.synthetic import cli as synthetic_cli
from galpipe.validation import cli as validation_cli

# Exit statuses: 0 success, 1 the command failed, 2 bad usage or configuration (argparse exits 2
# on bad usage by itself), 130 interrupted (128 + SIGINT, as shells report it).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: What a sub-command's ``handler`` default is.
Handler = Callable[[argparse.Namespace, Settings], None]

#: What a command module's ``register`` is: it adds the module's sub-commands to ``galpipe``'s.
Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

#: Each command module's ``register``, in the order ``galpipe --help`` lists their commands.
COMMAND_REGISTRARS: tuple[Register, ...] = (
    ops_cli.register,
    catalog_cli.register,
    pipelines_cli.register,
    morphology_cli.register,
    photoz_cli.register,
    synthetic_cli.register,
    validation_cli.register,
    demo_cli.register,
    control_cli.register,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``galpipe`` argument parser, with every command module's sub-commands."""
    parser = argparse.ArgumentParser(
        prog="galpipe",
        description="Position angles of galaxies from Radon transforms of survey cutouts.",
        epilog="Configuration comes from GALPIPE_* environment variables (see the README).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in COMMAND_REGISTRARS:
        register(subparsers)
    return parser


def exit_status(error: GalpipeError) -> int:
    """The exit status for ``error``: 2 for a configuration error, 1 for every other family."""
    return EXIT_USAGE if isinstance(error, ConfigurationError) else EXIT_FAILED


def error_message(command: str, error: GalpipeError) -> str:
    """The line printed on stderr: ``galpipe COMMAND: <what failed and why>``."""
    kind = "configuration error: " if isinstance(error, ConfigurationError) else ""
    return f"galpipe {command}: {kind}{error}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``galpipe`` with ``argv`` (default: the process's arguments); the exit status.

    Bad usage exits 2 through argparse (``SystemExit``) before anything runs; every other
    outcome is returned: 0 success, 1 the command failed, 2 a configuration error, 130
    interrupted (Ctrl-C). Errors other than :class:`~galpipe.errors.GalpipeError` are bugs and
    propagate with their traceback.
    """
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        settings = Settings.from_env()
        configure_logging(settings.log_format, settings.log_level)
        handler(args, settings)
    except GalpipeError as exc:
        print(error_message(args.command, exc), file=sys.stderr)
        return exit_status(exc)
    except KeyboardInterrupt:
        print(f"galpipe {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
