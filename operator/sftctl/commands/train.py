"""`sftctl train CONFIG` (or flags): fine-tune on this machine with a live progress view.

The same code the SFTJob pod runs (`python -m sft_trainer train CONFIG`), with
the same run config file. Without CONFIG, flags build one:

    sftctl train --model .cache/models/smollm2-135m-instruct --dataset data.json --output out \\
        --method lora --max-steps 50

Exit codes are the pod's: 0 success, 42 configuration error, 1 failure (run it
again: it resumes from the newest checkpoint).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("train", help="fine-tune a model locally (LoRA or full)")
    parser.add_argument("config", nargs="?", type=Path, help="run config file (YAML or JSON), as the pod reads it")
    parser.add_argument("--model", help="model folder or .gguf file")
    parser.add_argument("--dataset", help="training data file")
    parser.add_argument("--output", help="output folder")
    parser.add_argument("--method", choices=["lora", "full"], help="default: lora")
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--max-seq-length", type=int)
    parser.add_argument("--packing", action="store_true", default=None)
    parser.add_argument("--progress-port", type=int, help="serve /progress and /metrics on this port")
    parser.add_argument(
        "--no-probes", action="store_true", help="skip the memorisation probe and the evaluation after training"
    )
    parser.set_defaults(handler=_run)


_TRAINING_FLAGS = {
    "method": "method",
    "epochs": "epochs",
    "max_steps": "maxSteps",
    "batch_size": "batchSize",
    "learning_rate": "learningRate",
    "max_seq_length": "maxSeqLength",
    "packing": "packing",
}


def _build_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from pydantic import ValidationError

    from sft_trainer.config import TrainRunConfig
    from sft_trainer.runconfig import ConfigError, format_validation_error, load_run_config

    if args.config is not None:
        cfg = load_run_config(args.config, TrainRunConfig)
        data = cfg.to_wire()
    else:
        missing = [flag for flag in ("model", "dataset", "output") if getattr(args, flag) is None]
        if missing:
            raise ConfigError("give a CONFIG file, or all of " + ", ".join(f"--{m}" for m in missing))
        data = {"model": args.model, "dataset": args.dataset, "outputDir": args.output, "training": {}}
    for flag, key in _TRAINING_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            data.setdefault("training", {})[key] = value
    if args.no_probes:
        data.setdefault("training", {})["probes"] = {"memorisationPrompts": 0}
        data["training"]["evaluation"] = {"enabled": False}
    for flag, key in (
        ("model", "model"),
        ("dataset", "dataset"),
        ("output", "outputDir"),
        ("progress_port", "progressPort"),
    ):
        if getattr(args, flag) is not None:
            data[key] = getattr(args, flag)
    try:
        return TrainRunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from err


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from sft_trainer.config import EXIT_CONFIG_ERROR
    from sft_trainer.runconfig import ConfigError

    console = Console(stderr=True)
    try:
        cfg = _build_config(args)
    except ConfigError as err:
        console.print(f"[bold red]Configuration error:[/] {err}")
        return EXIT_CONFIG_ERROR

    from sft_trainer.training.entrypoint import run_from_config

    columns = (
        TextColumn("[bold]{task.fields[phase]}"),
        BarColumn(),
        TextColumn("step {task.fields[steps]}"),
        TextColumn("loss {task.fields[loss]}  eval {task.fields[eval]}  {task.fields[tps]} tok/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("train", total=None, phase="starting", steps="-", loss="-", eval="-", tps="-")

        def on_progress(fields: dict) -> None:  # type: ignore[type-arg]
            loss, evl, tps = fields.get("loss"), fields.get("evalLoss"), fields.get("tokensPerSecond")
            progress.update(
                task,
                total=fields.get("totalSteps"),
                completed=fields.get("step", 0),
                phase=fields.get("phase", ""),
                steps=f"{fields.get('step', 0)}/{fields.get('totalSteps', '?')}",
                loss=f"{loss:.4f}" if loss is not None else "-",
                eval=f"{evl:.4f}" if evl is not None else "-",
                tps=f"{tps:.0f}" if tps is not None else "-",
            )

        code = run_from_config(cfg, on_progress)
    if code == 0:
        console.print(f"[green]Finished.[/] Outputs and train_report.html are in {cfg.output_dir}")
    return code
