"""`python -m sft_trainer curate|train CONFIG`: what the operator's pods run.

CONFIG is the run config the operator rendered into a ConfigMap (YAML or
JSON). Exit codes are part of the contract with the Job's podFailurePolicy:
a configuration error exits with EXIT_CONFIG_ERROR and fails the Job at once
instead of being retried.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .runconfig import EXIT_CONFIG_ERROR, ConfigError, load_run_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sft_trainer")
    parser.add_argument("command", choices=["curate", "train"])
    parser.add_argument("config", type=Path, help="run config file (YAML or JSON)")
    args = parser.parse_args(argv)
    try:
        if args.command == "curate":
            from .config import CurationRunConfig
            from .curation.entrypoint import run_from_config as run_curation

            return run_curation(load_run_config(args.config, CurationRunConfig))
        from .config import TrainRunConfig
        from .training.entrypoint import run_from_config as run_training

        return run_training(load_run_config(args.config, TrainRunConfig))
    except ConfigError as err:
        print(f"Configuration error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR


if __name__ == "__main__":
    sys.exit(main())
