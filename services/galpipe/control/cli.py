"""The ``galpipe control`` command (the operator API and console server) and ``galpipe ctl``
(its client: the same actions from a terminal).

Only argparse is imported here; the server's and the client's code load when a command runs.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from galpipe.settings import Settings

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``control`` to ``subparsers``."""
    p = subparsers.add_parser(
        "control",
        help="serve the operator API and console (in the cluster: TokenReview and "
        "SubjectAccessReview decide who may do what)",
    )
    p.set_defaults(handler=_cmd_control)
    _register_ctl(subparsers)


def _cmd_control(args: argparse.Namespace, settings: Settings) -> None:
    from galpipe.control.service import run_from_settings

    run_from_settings(settings)


#: What ``galpipe ctl`` can change, with its help line; each needs ``--reason``.
_CHANGES = {
    "pause": "stop the pipeline's workers claiming (KEDA then scales it to zero)",
    "resume": "undo a pause",
    "hold": "hold the pipeline's replicas at N (KEDA paused-replicas)",
    "release-hold": "hand the replica count back to the autoscaler",
    "restart": "roll the pipeline's pods (kubectl rollout restart)",
    "pin": "run IMAGE (roll back or forward); Flux is suspended until unpinned",
    "unpin": "hand the image back to Git (Flux resumes)",
    "retry": "queue failed tasks again (a dry-run count; --yes applies it)",
    "requeue": "queue galaxies again under a new --algo-version (dry run; --yes applies)",
}


def _connection_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Where the API is, whose token, and the output; accepted before or after the verb.

    On the verbs the defaults are suppressed, so an option given before the verb is not reset.
    """

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("connection and output")
    group.add_argument(
        "--server",
        default=default(None),
        help="control API URL (default: $GALPIPE_CONTROL_URL), e.g. http://127.0.0.1:8080",
    )
    group.add_argument(
        "--token",
        default=default(None),
        help="bearer token (visible to other local users in the process list: prefer "
        "--token-file or the kubeconfig)",
    )
    group.add_argument("--token-file", default=default(None), help="file holding the token")
    group.add_argument(
        "--kubeconfig",
        default=default(None),
        help="kubeconfig whose context gives the token (default: $KUBECONFIG, ~/.kube/config)",
    )
    group.add_argument("--context", default=default(None), help="kubeconfig context to use")
    group.add_argument(
        "--ca-file", default=default(None), help="CA bundle of the API's TLS certificate"
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print the API's JSON instead of tables",
    )


def _register_ctl(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "ctl",
        help="operator actions against the control API (token from the kubeconfig context)",
        description="Operator actions against `galpipe control`, authorised by the cluster's "
        "RBAC. Every change needs --reason and is recorded in the audit log.",
    )
    _connection_options(p, suppress=False)
    p.set_defaults(handler=_cmd_ctl)
    common = argparse.ArgumentParser(add_help=False)
    _connection_options(common, suppress=True)
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    verbs.add_parser("whoami", parents=[common], help="who the token belongs to")
    verbs.add_parser(
        "overview",
        parents=[common],
        help="per pipeline: queue, pause, replicas, pods, images; the overrides in place",
    )
    audit = verbs.add_parser("audit", parents=[common], help="the audit log, newest first")
    audit.add_argument("--user", help="only this user's actions")
    audit.add_argument("--action", help="only this action (pause, hold, pin …)")
    audit.add_argument("--pipeline", help="only this pipeline")
    audit.add_argument("--since", help="ISO 8601 time or a duration ago: 30m, 12h, 7d")
    audit.add_argument("--limit", type=int, default=100, help="at most this many (1-1000)")
    for verb, help_text in _CHANGES.items():
        change = verbs.add_parser(verb, parents=[common], help=help_text)
        change.add_argument(
            "pipeline",
            help="the pipeline, e.g. fetch (the control service refuses one it does not know, "
            "naming those it does)",
        )
        if verb == "hold":
            change.add_argument("replicas", type=int, help="replicas to hold at")
        elif verb == "pin":
            change.add_argument("image", help="image reference, e.g. ghcr.io/o/galpipe:1.2.3")
        elif verb == "retry":
            change.add_argument("--error-contains", help="only tasks whose last error has this")
        elif verb == "requeue":
            change.add_argument("--algo-version", required=True, help="the new algo_version")
            change.add_argument(
                "--ids", type=int, nargs="+", metavar="SOURCE_ID", help="only these galaxies"
            )
        if verb in ("retry", "requeue"):
            change.add_argument(
                "--yes", action="store_true", help="apply the change after the dry-run count"
            )
        change.add_argument("--reason", required=True, help="why, for the audit log")


def _cmd_ctl(args: argparse.Namespace, settings: Settings) -> None:
    from galpipe.control.ctl import run_ctl

    run_ctl(args)
