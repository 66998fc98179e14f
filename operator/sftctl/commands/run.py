"""`sftctl run FILE.yaml`: run DatasetCuration and SFTJob manifests on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "run",
        help="run DatasetCuration/SFTJob manifests locally, without a cluster",
        description="Runs each resource through the operator's own builders and pod commands, in dependency "
        "order (a curation before the SFTJobs that read it, a stage after the SFTJob it starts from); "
        "writes DIR/<Kind>/<name>/status.json, the status the operator would write to the CR.",
    )
    parser.add_argument("manifest", type=Path, help="YAML file with DatasetCuration and/or SFTJob documents")
    parser.add_argument("--workdir", type=Path, default=Path(".sft-runs"), help="where runs and status.json go")
    parser.add_argument(
        "--volume",
        action="append",
        default=[],
        metavar="CLAIM=DIR",
        help="map a PersistentVolumeClaim name to a local folder (repeatable); "
        "unmapped claims live under WORKDIR/volumes/CLAIM",
    )
    parser.set_defaults(handler=_run)


def _parse_volumes(items: list[str]) -> dict[str, Path]:
    volumes: dict[str, Path] = {}
    for item in items:
        claim, sep, folder = item.partition("=")
        if not sep or not claim or not folder:
            raise SystemExit(f"--volume {item!r}: expected CLAIM=DIR")
        volumes[claim] = Path(folder)
    return volumes


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from sft_operator.local_executor import LocalExecutor, ManifestError

    console = Console()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
    )
    tasks: dict[str, Any] = {}

    def on_progress(key: str, payload: dict[str, Any]) -> None:
        if key not in tasks:
            tasks[key] = progress.add_task(key, total=100.0, detail="")
        detail = " ".join(
            f"{name}={payload[name]:.4g}" if isinstance(payload.get(name), float) else f"{name}={payload[name]}"
            for name in ("phase", "step", "loss", "evalLoss")
            if payload.get(name) is not None
        )
        progress.update(tasks[key], completed=float(payload.get("percent") or 0.0), detail=detail)

    try:
        executor = LocalExecutor(args.workdir, _parse_volumes(args.volume), on_progress=on_progress)
        resources = executor.load(args.manifest)
        with progress:
            runs = []
            for resource in executor.ordered(resources):
                console.log(f"Started {resource.key}")
                run = executor.run(resource)
                if resource.key in tasks and run.succeeded:
                    progress.update(tasks[resource.key], completed=100.0)
                console.log(f"{run.phase} {resource.key} (log: {run.log})")
                runs.append(run)
    except ManifestError as err:
        console.print(f"[red]Invalid manifest:[/red] {err}")
        return 2

    table = Table(title="sftctl run")
    for column in ("Resource", "Phase", "Reason", "Figures", "Output", "Status file"):
        table.add_column(column, overflow="fold")
    for run in runs:
        reason = next((c.get("reason", "") for c in run.status.get("conditions", []) if c["type"] == "Ready"), "")
        table.add_row(
            run.resource.key,
            run.phase,
            reason,
            _figures(run.status),
            run.status.get("outputLocation", ""),
            str(run.workdir / "status.json"),
        )
    console.print(table)
    for run in runs:
        if run.status.get("evaluation"):
            print_evaluation(console, run.resource.key, run.status.get("outputLocation"), run.status["evaluation"])
    for run in runs:
        for artifact in _artifacts(run.status.get("outputLocation")):
            console.print(f"{run.resource.key}: {artifact}")
    return 0 if all(run.succeeded for run in runs) else 1


# What a person opens after a run, in this order, where present.
ARTIFACTS = (
    "report.html",
    "curated.jsonl",
    "adapter",
    "model",
    "merged",
    "train_report.html",
    "eval/eval_report.html",
    "NOT_PROMOTED",
)


def print_evaluation(console: Console, key: str, output: str | None, evaluation: dict[str, Any]) -> None:
    """The evaluation's labelled figures from eval/eval_report.json in the output (as `sftctl eval` prints
    them), then what status adds: why it could not run and whether the export was promoted."""
    import json

    from sft_trainer.evaluation.after_training import EVAL_DIR
    from sft_trainer.evaluation.report import REPORT_JSON

    from .eval import print_report

    report_file = Path(output or "") / EVAL_DIR / REPORT_JSON
    if output and report_file.is_file():
        print_report(console, json.loads(report_file.read_text()), f"{key}: evaluation (95% bootstrap intervals)")
    if evaluation.get("error"):
        console.print(f"[red]Evaluation could not run:[/red] {evaluation['error']}")
    verdict = "promoted" if evaluation.get("promoted") else "[red]not promoted[/red]"
    console.print(f"{key}: {evaluation.get('gatesChecked', 0)} gates checked, {verdict}")


def _artifacts(output: str | None) -> list[Path]:
    if not output:
        return []
    return [Path(output) / name for name in ARTIFACTS if (Path(output) / name).exists()]


def _figures(status: dict[str, Any]) -> str:
    counts = status.get("counts")
    if counts:
        entropy = status.get("taskEntropyAfter")
        text = f"kept {counts['curated']}/{counts['input']}, rejected {counts['rejected']}, review {counts['review']}"
        selection = status.get("selection")
        if selection:
            text += f", selected {selection['selected']} by {selection['strategy']} (control {selection['control']})"
        return text + (f", entropy {entropy:.3f}" if entropy is not None else "")
    progress = status.get("progress") or {}
    metrics = status.get("metrics") or {}
    parent = next(iter(status.get("lineage") or []), {})  # a stage names where it started
    parts = [f"from {parent['sftJob']} ({parent['use']})"] if parent.get("sftJob") else []
    parts += [f"step {progress['step']}/{progress.get('totalSteps')}"] if progress.get("step") is not None else []
    for name in ("loss", "evalLoss"):
        if progress.get(name) is not None:
            parts.append(f"{name} {progress[name]:.4f}")
    parts += [f"{k} {v:.4g}" for k, v in sorted(metrics.items())[:4]]
    return ", ".join(parts)
