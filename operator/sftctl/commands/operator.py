"""`sftctl operator [--namespace NS]... [--peering NAME] [--priority N] [--standalone]`: run the operator.

The same as `kopf run -m sft_operator.main`, with the operator's settings
(SFT_OPERATOR_* variables) as the one source for the watched namespaces and
the peering: a flag given here overrides its variable, so the startup
handler, which creates the peering objects, sees exactly what kopf serves.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "operator",
        help="run the operator against the current cluster ($KUBECONFIG or the pod's service account)",
    )
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        metavar="NS",
        help="watch only this namespace (repeatable); default: SFT_OPERATOR_NAMESPACES, else the whole cluster",
    )
    parser.add_argument(
        "--peering", metavar="NAME", help="peering object shared by replicas (SFT_OPERATOR_PEERING_NAME)"
    )
    parser.add_argument(
        "--priority", type=int, metavar="N", help="this replica's peering priority (SFT_OPERATOR_PEERING_PRIORITY)"
    )
    parser.add_argument(
        "--standalone", action="store_true", help="no peering: for a single replica without the peering CRDs"
    )
    parser.add_argument("--liveness", metavar="URL", help="kopf's liveness endpoint, e.g. http://0.0.0.0:8081/healthz")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    parser.set_defaults(handler=_run)


def settings_environment(args: argparse.Namespace) -> dict[str, str]:
    """The SFT_OPERATOR_* variables the flags stand for."""
    env: dict[str, str] = {}
    if args.namespace:
        env["SFT_OPERATOR_NAMESPACES"] = ",".join(args.namespace)
    if args.peering:
        env["SFT_OPERATOR_PEERING_NAME"] = args.peering
    if args.priority is not None:
        env["SFT_OPERATOR_PEERING_PRIORITY"] = str(args.priority)
    return env


def kopf_arguments(namespaces: Sequence[str], standalone: bool, liveness: str | None, verbose: bool) -> list[str]:
    """`kopf run` arguments for these settings (tests start the operator in-process with them)."""
    arguments = ["run", "-m", "sft_operator.main"]
    arguments += [item for namespace in namespaces for item in ("--namespace", namespace)] or ["--all-namespaces"]
    if standalone:
        arguments.append("--standalone")
    if liveness:
        arguments += ["--liveness", liveness]
    if verbose:
        arguments.append("--verbose")
    return arguments


def _run(args: argparse.Namespace) -> int:
    os.environ.update(settings_environment(args))
    from kopf.cli import main as kopf_main

    from sft_operator.settings import OperatorSettings

    settings = OperatorSettings.from_env()  # a bad variable stops here, naming it
    kopf_main(
        args=kopf_arguments(settings.namespaces, args.standalone, args.liveness, args.verbose),
        prog_name="sftctl operator",
    )
    return 0
