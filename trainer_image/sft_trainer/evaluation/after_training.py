"""The evaluation an SFTJob runs after training (rank 0): base vs tuned, from the exported artifacts.

Training has already exported its adapter or model and written its report
when this runs, so nothing here can lose the trained artifacts: any failure
(a missing suite file, an adapter that does not load, running out of memory)
becomes `error` in the summary, condition EvaluationPassed=False and a
NOT_PROMOTED marker, never a failed pod after hours of training.

The tuned model is loaded from the export (the adapter on the base folder, or
the exported full model), which also checks that the export loads; the base
is the model folder the run trained from. Files: <output>/eval/eval_report.json
and .html, <output>/eval/base/ and <output>/eval/tuned/ (ifeval_responses.jsonl).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..config import EvaluationConfig, EvaluationSummary, FigureSummary, TrainRunConfig
from ..formats import Conversation
from .generation import EvalModel, load_eval_model
from .report import REPORT_HTML
from .runner import EvalSettings, evaluate

log = logging.getLogger("sft_trainer.evaluation")

EVAL_DIR = "eval"
NOT_PROMOTED = "NOT_PROMOTED"
# The summary travels in the termination message (4 KiB with the training figures): at most 11 figures,
# 4 gates and 5 suites, with these lengths, it stays under 3 KiB.
ERROR_CHARS = 300
NOT_RUN_CHARS = 160


def model_loaders(
    cfg: TrainRunConfig, model_folder: Path, exports: dict[str, str]
) -> dict[str, Callable[[], EvalModel]]:
    """base: the folder the run trained from; tuned: the export (adapter on that folder, or the full model)."""
    training = cfg.training
    options = {
        "template": training.template.name,
        "precision": training.precision,
        "batch_size": training.evaluation.batch_size,
        "max_seq_length": training.max_seq_length,
    }
    adapter = Path(exports["adapter"]) if "adapter" in exports else None
    tuned_folder = model_folder if adapter is not None else Path(exports["model"])
    # A stage chained with use: adapter started from its folder with earlier stages' adapters merged in:
    # that start is its base, and its own adapter goes on top of it (a full model already holds them).
    chain = [Path(a) for a in cfg.parent.adapters] if cfg.parent else []
    return {
        "base": lambda: load_eval_model(
            model_folder,
            None,
            name=f"base: {model_folder.name}",
            merged_adapters=chain,
            **options,  # type: ignore[arg-type]
        ),
        "tuned": lambda: load_eval_model(
            tuned_folder,
            adapter,
            name=f"tuned: {(adapter or tuned_folder).name}",
            merged_adapters=chain if adapter is not None else [],
            **options,  # type: ignore[arg-type]
        ),
    }


def evaluate_after_training(
    cfg: TrainRunConfig, model_folder: Path, exports: dict[str, str], held_out: Sequence[Conversation]
) -> dict[str, Any]:
    """Run the configured suites on base and tuned; the status summary (status.evaluation). Never raises."""
    output = Path(cfg.output_dir)
    config = cfg.training.evaluation
    try:
        report = evaluate(model_loaders(cfg, model_folder, exports), EvalSettings(config, held_out), output / EVAL_DIR)
        summary = summarise(report, config)
    except Exception as err:  # after training, nothing may fail the pod: the artifacts are exported already
        log.exception("Evaluation after training failed; the trained artifacts are intact")
        message = f"{type(err).__name__}: {err}"
        summary = EvaluationSummary(passed=False, promoted=False, error=message[:ERROR_CHARS])
    mark_promotion(output, summary)
    return summary.to_wire()


def summarise(report: dict[str, Any], config: EvaluationConfig) -> EvaluationSummary:
    """The report in brief, within the termination message's few kilobytes."""
    figures: dict[str, FigureSummary] = {}
    not_run: dict[str, str] = {}
    for suite, entry in report["suites"].items():
        if entry.get("error"):
            reasons = entry["error"]
            same = len(set(reasons.values())) == 1  # the usual case: a data problem both models hit
            text = next(iter(reasons.values())) if same else "; ".join(f"{r}: {m}" for r, m in reasons.items())
            not_run[suite] = text[:NOT_RUN_CHARS]
        for row in entry["figures"]:
            delta = row.get("delta") or {}
            figures[_name(suite, row["key"])] = FigureSummary(
                base=_value(row.get("base")),
                tuned=_value(row.get("tuned")),
                delta=_rounded(delta.get("value")),
                low=_rounded(delta.get("low")),
                high=_rounded(delta.get("high")),
            )
    gates = report.get("gates") or {"passed": True, "results": []}
    failed = [r["message"] for r in gates["results"] if not r["passed"]]
    passed = not failed
    return EvaluationSummary(
        passed=passed,
        promoted=passed,
        figures=figures,
        gates_checked=len(gates["results"]),
        failed_gates=failed,
        regressed=[_name(r["suite"], r["key"]) for r in report.get("regressions", [])],
        not_run=not_run,
        report=f"{EVAL_DIR}/{REPORT_HTML}",
    )


def _name(suite: str, key: str) -> str:
    return f"{suite}{key[0].upper()}{key[1:]}"


def _value(estimate: dict[str, Any] | None) -> float | None:
    return _rounded(estimate["value"]) if estimate else None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def mark_promotion(output: Path, summary: EvaluationSummary) -> None:
    """NOT_PROMOTED in the output (why, as JSON) when the export must not ship; removed when it may."""
    marker = output / NOT_PROMOTED
    if summary.promoted:
        marker.unlink(missing_ok=True)
        return
    reasons = summary.failed_gates or ([f"evaluation failed: {summary.error}"] if summary.error else [])
    marker.write_text(json.dumps({"promoted": False, "reasons": reasons}, indent=2) + "\n", encoding="utf-8")
