"""`python -m sft_trainer curate|train|review-apply CONFIG`: what the operator's pods run.

CONFIG is the run config the operator rendered into a ConfigMap (YAML or
JSON). Exit codes are part of the contract with the Job's podFailurePolicy:
a configuration error exits with EXIT_CONFIG_ERROR and fails the Job at once
instead of being retried.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Literal

from .config import EXIT_CONFIG_ERROR
from .runconfig import ConfigError, load_run_config
from .sources import HF_SCHEME, resolve


def hub_or_path(location: str | None, repo_type: Literal["model", "dataset"], field: str) -> str | None:
    """Download `hf://` sources into HF_HOME; leave paths for the step that reads them to check."""
    if location is None or not location.startswith(HF_SCHEME):
        return location
    return str(resolve(location, repo_type, field))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sft_trainer")
    parser.add_argument("command", choices=["curate", "train", "review-apply"])
    parser.add_argument("config", type=Path, help="run config file (YAML or JSON)")
    args = parser.parse_args(argv)
    try:
        if args.command == "curate":
            from .config import CurationRunConfig
            from .curation.entrypoint import run_from_config as run_curation

            curation = load_run_config(args.config, CurationRunConfig)
            return run_curation(
                curation.model_copy(
                    update={
                        "input": hub_or_path(curation.input, "dataset", "input"),
                        "tokenizer": hub_or_path(curation.tokenizer, "model", "tokenizer"),
                    }
                )
            )
        if args.command == "review-apply":
            from .config.review import ReviewApplyRunConfig
            from .curation.review import run_review_apply

            return run_review_apply(load_run_config(args.config, ReviewApplyRunConfig))
        from .config import TrainRunConfig
        from .training.entrypoint import run_from_config as run_training

        training = load_run_config(args.config, TrainRunConfig)
        return run_training(
            training.model_copy(
                update={
                    "model": hub_or_path(training.model, "model", "model"),
                    "dataset": hub_or_path(training.dataset, "dataset", "dataset"),
                }
            )
        )
    except ConfigError as err:
        print(f"Configuration error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR


if __name__ == "__main__":
    sys.exit(main())
