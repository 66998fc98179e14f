"""`sftctl eval --model DIR [--adapter DIR] [--base DIR] [--suites ifeval,safety,reference,style,forgetting] --out DIR`.

Evaluates one model (its files and eval_report.json straight in --out), or a
base and a tuned model side by side with deltas and paired intervals: with
--adapter the base is --model without the adapter; with --base the base is
that folder. Then the files go to --out/base and --out/tuned.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


def _default_shared(relative: str) -> Path | None:
    """A file under $SFT_SHARED_DATA, when that variable names a folder holding it."""
    root = os.environ.get("SFT_SHARED_DATA")
    if root and (Path(root) / relative).exists():
        return Path(root) / relative
    return None


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "eval", help="evaluate a model (or base vs tuned): IFEval, safety, reference NLL, style, forgetting"
    )
    parser.add_argument("--model", type=Path, required=True, help="model folder (the tuned model, or the base)")
    parser.add_argument("--adapter", type=Path, help="LoRA adapter folder on top of --model; --model is then the base")
    parser.add_argument("--base", type=Path, help="base model folder to compare a fully fine-tuned --model with")
    parser.add_argument("--no-base", action="store_true", help="with --adapter: evaluate only the adapted model")
    parser.add_argument(
        "--suites",
        default="ifeval,safety,reference,style,forgetting",
        help="comma-separated: ifeval, safety, reference, style, forgetting (reference and style need --reference-data)",
    )
    parser.add_argument("--limit", type=int, help="at most N prompts per suite (per set for safety)")
    parser.add_argument(
        "--ifeval-data",
        type=Path,
        default=_default_shared("eval/ifeval_input_data.jsonl"),
        help="IFEval's input_data.jsonl (default: $SFT_SHARED_DATA/eval/ifeval_input_data.jsonl, else the copy shipped with the trainer)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=256, help="IFEval generation cap (default 256)")
    parser.add_argument(
        "--safety-data",
        type=Path,
        default=_default_shared("safety/xstest_prompts.csv") and _default_shared("safety"),
        help="folder with advbench_harmful_behaviors.csv and xstest_prompts.csv "
        "(default: $SFT_SHARED_DATA/safety, else the 198 prompts shipped with the trainer)",
    )
    parser.add_argument(
        "--safety-max-new-tokens",
        type=int,
        default=64,
        help="safety generation cap (default 64; the judge reads 200 chars)",
    )
    parser.add_argument(
        "--reference-data",
        type=Path,
        help="dataset file of held-out human-written answers (reference and style suites)",
    )
    parser.add_argument("--template", default="auto", help="chat template: auto (the model's), chatml, llama3, alpaca")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts generated together (default 16)")
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="auto: bf16 on a GPU, fp32 on a CPU; bf16 on a CPU with native bf16 (AVX512-BF16, AMX) is ~1.6x faster",
    )
    parser.add_argument(
        "--threads", type=int, help="CPU threads for torch (default: torch's; 1 is faster on a machine others load)"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for eval_report.json/.html and responses")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sft_trainer.config import EXIT_CONFIG_ERROR
    from sft_trainer.config.evaluation import EvaluationConfig, StyleSuite
    from sft_trainer.evaluation.generation import load_eval_model
    from sft_trainer.evaluation.runner import SUITES, EvalSettings, evaluate
    from sft_trainer.runconfig import ConfigError

    console = Console(stderr=True)
    if args.limit is not None and args.limit < 1:
        console.print("[red]--limit must be at least 1[/]")
        return EXIT_CONFIG_ERROR
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    suites = [s.strip() for s in args.suites.split(",") if s.strip()]
    unknown = sorted(set(suites) - set(SUITES))
    if unknown:
        console.print(f"[red]--suites: unknown suite(s) {unknown}; expected some of {list(SUITES)}[/]")
        return EXIT_CONFIG_ERROR

    def path(value: Path | None) -> str | None:
        return str(value) if value is not None else None

    try:
        config = EvaluationConfig.model_validate(
            {
                "ifeval": {"enabled": "ifeval" in suites, "prompts": args.limit, "maxNewTokens": args.max_new_tokens,
                           "data": path(args.ifeval_data)},
                "safety": {"enabled": "safety" in suites, "promptsPerSet": args.limit,
                           "maxNewTokens": args.safety_max_new_tokens, "data": path(args.safety_data)},
                "reference": {"enabled": "reference" in suites, "records": args.limit,
                              "data": path(args.reference_data)},
                "style": {"enabled": "style" in suites, "prompts": args.limit or StyleSuite().prompts,
                          "maxNewTokens": args.max_new_tokens},
                "forgetting": {"enabled": "forgetting" in suites},
                "batchSize": args.batch_size,
            }
        )  # fmt: skip
    except ValueError as err:
        console.print(f"[red]Cannot evaluate:[/] {err}")
        return EXIT_CONFIG_ERROR
    settings = EvalSettings(config)

    def loader(model: Path, adapter: Path | None, name: str):  # type: ignore[no-untyped-def]
        return lambda: load_eval_model(
            model, adapter, template=args.template, precision=args.precision, batch_size=args.batch_size, name=name
        )

    if args.adapter and not args.no_base:
        loaders = {
            "base": loader(args.model, None, str(args.model)),
            "tuned": loader(args.model, args.adapter, f"{args.model} + {args.adapter}"),
        }
    elif args.base:
        loaders = {"base": loader(args.base, None, str(args.base)), "tuned": loader(args.model, None, str(args.model))}
    else:
        loaders = {"model": loader(args.model, args.adapter, str(args.model))}
    try:
        report = evaluate(loaders, settings, args.out)
    except ConfigError as err:
        console.print(f"[red]Cannot evaluate:[/] {err}")
        return EXIT_CONFIG_ERROR
    print_report(Console(), report, "Evaluation (95% bootstrap intervals)")
    console.print(f"Report: {args.out / 'eval_report.json'} and {args.out / 'eval_report.html'}")
    return 0


def print_report(console: Console, report: dict, title: str) -> None:
    """eval_report.json as a table of labelled figures (rates in %, NLL in nats), then its gates and regressions."""
    from rich.table import Table

    roles = list(report["models"])
    table = Table(title=title)
    table.add_column("suite")
    table.add_column("figure")
    for role in roles:
        table.add_column(role, justify="right")
    if roles == ["base", "tuned"]:
        table.add_column("delta", justify="right")
    for suite, entry in report["suites"].items():
        if entry.get("error"):
            table.add_row(suite, "not run: " + "; ".join(entry["error"].values()), *[""] * len(roles))
        for row in entry["figures"]:
            cells = [_cell(row.get(role), row["unit"]) for role in roles]
            if "delta" in row:
                cells.append(_cell(row["delta"], row["unit"], signed=True))
            table.add_row(suite, row["label"], *cells)
    console.print(table)
    gates = report.get("gates")
    for result in (gates or {}).get("results", []):
        console.print(("[green]passed[/] " if result["passed"] else "[red]failed[/] ") + result["message"])
    for found in report.get("regressions", []):
        delta = {"value": found["delta"], "low": found["low"], "high": found["high"]}
        console.print(f"[red]regressed[/] {found['label']}: {_cell(delta, found['unit'], signed=True)}")


def _cell(estimate: dict | None, unit: str, signed: bool = False) -> str:
    if not estimate or estimate["value"] is None:
        return "n/a"
    scale, digits = (100.0, 1) if unit == "rate" else (1.0, 3)
    sign = "+" if signed else ""
    low, high = estimate["low"], estimate["high"]
    return f"{estimate['value'] * scale:{sign}.{digits}f} [{low * scale:{sign}.{digits}f}, {high * scale:{sign}.{digits}f}]"
