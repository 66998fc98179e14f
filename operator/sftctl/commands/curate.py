"""`sftctl curate INPUT --out DIR [--config FILE] [--format auto] [--tokenizer DIR] [--budget N]
[--engine local|ray] [--address ADDR | --workers N]`: curate a dataset here.

Runs exactly the code of the DatasetCuration pod (`python -m sft_trainer
curate`), with a progress bar and a closing summary table. `--engine ray`
runs it on Ray: the cluster at `--address` (or `RAY_ADDRESS`), else a local
Ray cluster of `--workers` workers.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "curate", help="curate an instruction dataset locally (same code as the DatasetCuration pod)"
    )
    parser.add_argument("input", help="dataset file: JSON, JSONL or Parquet (Alpaca, ShareGPT or messages records)")
    parser.add_argument(
        "--out", required=True, help="folder for curated.jsonl, rejected.jsonl, review.jsonl and the reports"
    )
    parser.add_argument(
        "--config", type=Path, help="curation settings (YAML/JSON), the `curation` section of a DatasetCuration spec"
    )
    parser.add_argument(
        "--format",
        default="auto",
        choices=["auto", "alpaca", "sharegpt", "messages"],
        help="record format (default: auto)",
    )
    parser.add_argument("--tokenizer", help="folder of the target model's tokenizer; enables the token-based steps")
    parser.add_argument(
        "--budget",
        type=int,
        help="keep the best N records (selection.budget), and write a random control of N to control.jsonl",
    )
    parser.add_argument(
        "--strategy",
        choices=["diverse-quality", "quality", "ifd", "random"],
        help="how --budget ranks records (selection.strategy; default diverse-quality)",
    )
    parser.add_argument(
        "--engine",
        choices=["local", "ray"],
        help="where the curation runs (engine.type): this process, streaming the input in shards (default), or Ray",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--address", help="with --engine ray: address of a running Ray cluster (sets RAY_ADDRESS)")
    where.add_argument(
        "--workers",
        type=int,
        help="with --engine ray: Ray workers of the local cluster (engine.workers); local engine: processes",
    )
    parser.set_defaults(handler=_run)


def _with_engine(settings: dict, engine: str | None, workers: int | None) -> dict:
    """The flags override the settings file's `engine` section."""
    if engine is None and workers is None:
        return settings
    section = dict(settings.get("engine") or {})
    if engine is not None:
        section["type"] = engine
    if workers is not None and section.get("type") == "ray":
        section["workers"] = workers
    return {**settings, "engine": section}


def _with_selection(settings: dict, budget: int | None, strategy: str | None) -> dict:
    """The flags override the settings file's `selection` section."""
    if budget is None and strategy is None:
        return settings
    selection = dict(settings.get("selection") or {})
    if budget is not None:
        selection.pop("fraction", None)
        selection["budget"] = budget
    if strategy is not None:
        selection["strategy"] = strategy
    return {**settings, "selection": selection}


def _load_settings(path: Path | None) -> dict:
    if path is None:
        return {}
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of curation settings")
    # Accept a whole DatasetCuration manifest, its spec, or the curation section itself.
    for key in ("spec", "curation"):
        if isinstance(data.get(key), dict):
            data = data[key]
    return data


def _run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from sft_trainer.config import EXIT_CONFIG_ERROR, CurationConfig, CurationRunConfig
    from sft_trainer.curation.entrypoint import run_from_config
    from sft_trainer.runconfig import format_validation_error

    console = Console(stderr=True)
    if args.address and args.engine != "ray":
        console.print("[red]--address needs --engine ray[/]")
        return EXIT_CONFIG_ERROR
    if args.address:
        os.environ["RAY_ADDRESS"] = args.address  # what ray.init() joins, as in a KubeRay RayJob
    try:
        settings = _with_selection(_load_settings(args.config), args.budget, args.strategy)
        curation = CurationConfig.model_validate(_with_engine(settings, args.engine, args.workers))
    except ValidationError as err:
        console.print(f"[red]Invalid curation settings in {args.config}:[/] {format_validation_error(err)}")
        return EXIT_CONFIG_ERROR
    except (OSError, ValueError) as err:
        console.print(f"[red]Cannot read {args.config}:[/] {err}")
        return EXIT_CONFIG_ERROR
    cfg = CurationRunConfig(
        input=args.input, format=args.format, output_dir=args.out, tokenizer=args.tokenizer, curation=curation
    )

    columns = (TextColumn("{task.description:<8}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        tasks: dict[str, int] = {}

        def on_progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=max(total, 1))
            progress.update(tasks[stage], completed=done, total=max(total, 1))

        code = run_from_config(cfg, on_progress, workers=args.workers if curation.engine.type == "local" else None)
    if code != 0:
        return code
    _print_summary(Console(), Path(args.out), Table)
    return 0


def _print_summary(console, out: Path, table_cls) -> None:  # type: ignore[no-untyped-def]
    import json

    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    status = report["status"]
    counts = status["counts"]
    summary = table_cls(title=f"Curated {report['input']}")
    summary.add_column("outcome")
    summary.add_column("records", justify="right")
    summary.add_column("share", justify="right")
    for key in ("curated", "rejected", "review"):
        summary.add_row(key, str(counts[key]), f"{counts[key] / max(counts['input'], 1):.1%}")
    summary.add_row("input", str(counts["input"]), "100%")
    console.print(summary)
    drops = table_cls(title="Drops per reason")
    drops.add_column("reason")
    drops.add_column("records", justify="right")
    for reason, n in sorted(status["dropsByReason"].items(), key=lambda kv: -kv[1]):
        drops.add_row(reason, str(n))
    console.print(drops)
    if status.get("selection"):
        sel = status["selection"]
        console.print(
            f"Selected {sel['selected']} of budget {sel['budget']} by {sel['strategy']}; "
            f"random control of {sel['control']} in {out / 'control.jsonl'}"
        )
    for note in status.get("notes", []):
        console.print(f"Note: {note}")
    console.print(
        f"Task entropy {status['taskEntropyBefore']:.3f} -> {status['taskEntropyAfter']:.3f}; "
        f"outputs and report.html in {out}"
    )
