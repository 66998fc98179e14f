"""`sftctl crds [DIR] [--check]`: write (or check) the generated CRDs."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("crds", help="generate the CustomResourceDefinitions from the API models")
    parser.add_argument("out_dirs", nargs="*", help="folders to write (default: crds/ and the Helm chart's copy)")
    parser.add_argument("--check", action="store_true", help="fail if the files on disk are stale")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from sft_operator.crdgen import main

    return main(list(args.out_dirs) + (["--check"] if args.check else []))
