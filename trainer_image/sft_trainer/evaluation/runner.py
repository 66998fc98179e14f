"""Run the chosen suites on one model, or on a base and a tuned model, and write the report.

The suites and their sizes are an `EvaluationConfig` (`training.evaluation`
of an SFTJob; `sftctl eval` builds one from its flags), so a pod and the CLI
run exactly the same thing. `run_suites(model, settings, out_dir)` is the
entry point for one model; `evaluate(loaders, settings, out_dir)` loads each
model in turn, runs the suites, checks the gates and writes the report.
"""

from __future__ import annotations

import gc
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..config import EvaluationConfig
from ..formats import Conversation
from ..runconfig import ConfigError
from .forgetting import run_forgetting
from .gates import check_gates, regressions
from .generation import EvalModel
from .ifeval import run_ifeval
from .reference import load_reference, run_reference
from .report import build_report, write_report
from .safety import run_safety
from .style import run_style
from .suite import SuiteResult, skipped_suite

log = logging.getLogger("sft_trainer.evaluation")

SUITES = ("ifeval", "safety", "reference", "style", "forgetting")
PACKAGED_IFEVAL = "ifeval_input_data.jsonl"


def packaged_ifeval() -> Path:
    """IFEval's input_data.jsonl (541 prompts, Apache-2.0) shipped with the trainer, so a pod needs no volume."""
    return Path(str(resources.files("sft_trainer.resources").joinpath(PACKAGED_IFEVAL)))


@dataclass
class EvalSettings:
    config: EvaluationConfig
    held_out: Sequence[Conversation] | None = None
    """An SFTJob's held-out split: the default records of the reference and style suites."""

    @property
    def suites(self) -> list[str]:
        return self.config.suites()

    @property
    def ifeval_data(self) -> Path:
        return Path(self.config.ifeval.data) if self.config.ifeval.data else packaged_ifeval()

    def check(self) -> None:
        """Fail before any model loads when a configured data path does not exist (naming the field)."""
        config = self.config
        if config.ifeval.enabled and not self.ifeval_data.is_file():
            raise ConfigError(f"evaluation.ifeval.data: {self.ifeval_data} does not exist")
        if config.safety.enabled and config.safety.data is not None and not Path(config.safety.data).is_dir():
            raise ConfigError(f"evaluation.safety.data: {config.safety.data} is not a folder")
        if config.reference.enabled and config.reference.data is not None and not Path(config.reference.data).is_file():
            raise ConfigError(f"evaluation.reference.data: {config.reference.data} does not exist")

    def reference_records(self) -> tuple[list[Conversation], dict[str, int]]:
        """The reference suite's records (the data file, else the held-out split) and format rejects."""
        if self.config.reference.data is not None:
            conversations, rejects = load_reference(Path(self.config.reference.data), self.config.reference.records)
            return conversations, dict(rejects)
        records = list(self.held_out or [])
        limit = self.config.reference.records
        return (records[:limit] if limit is not None else records), {}


def run_suites(model: EvalModel, settings: EvalSettings, out_dir: Path) -> dict[str, SuiteResult]:
    """Each chosen suite on one model. A suite that cannot run is reported as not run, with the reason."""
    results: dict[str, SuiteResult] = {}
    for suite in settings.suites:
        log.info("Evaluating %s: %s", model.name, suite)
        try:
            results[suite] = _run_one(suite, model, settings, out_dir)
        except ConfigError as err:
            results[suite] = skipped_suite(suite, str(err))
        except Exception as err:  # one suite's failure (out of memory, a bad file) must not cost the others
            log.exception("Suite %s failed on %s", suite, model.name)
            results[suite] = skipped_suite(suite, f"{type(err).__name__}: {str(err)[:300]}")
    return results


def _run_one(suite: str, model: EvalModel, settings: EvalSettings, out_dir: Path) -> SuiteResult:
    config = settings.config
    if suite == "ifeval":
        return run_ifeval(
            model,
            settings.ifeval_data,
            out_dir,
            limit=config.ifeval.prompts,
            max_new_tokens=config.ifeval.max_new_tokens,
        )
    if suite == "safety":
        data = Path(config.safety.data) if config.safety.data else None
        return run_safety(model, data, limit=config.safety.prompts_per_set, max_new_tokens=config.safety.max_new_tokens)
    if suite == "forgetting":
        return run_forgetting(model)
    if settings.held_out is None and config.reference.data is None:
        return skipped_suite(suite, "no held-out records: set evaluation.reference.data (--reference-data)")
    records, rejects = settings.reference_records()
    if suite == "reference":
        return run_reference(model, records, skipped=Counter(rejects))
    return run_style(model, records[: config.style.prompts], max_new_tokens=config.style.max_new_tokens)


def evaluate(loaders: dict[str, Callable[[], EvalModel]], settings: EvalSettings, out_dir: Path) -> dict[str, Any]:
    """Load each model in turn (role -> loader: `model`, or `base` and `tuned`), run the suites, write the report.

    With one model its files go straight into out_dir; with two, into
    out_dir/base and out_dir/tuned, and the report has deltas, the gates'
    verdicts and the figures that regressed.
    """
    settings.check()
    _free_memory()  # after training: whatever the trainer left (its model, optimizer) goes before a model loads
    out_dir = Path(out_dir)
    results: dict[str, dict[str, SuiteResult]] = {}
    labels: dict[str, str] = {}
    for role, load in loaders.items():
        model = load()
        labels[role] = model.name
        results[role] = run_suites(model, settings, out_dir if role == "model" else out_dir / role)
        del model
        _free_memory()
    report = build_report(labels, results)
    if list(labels) == ["base", "tuned"]:
        report["gates"] = check_gates(settings.config.gates, report)
        report["regressions"] = regressions(report)
    write_report(out_dir, report)
    return report


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is always there in the trainer
        pass
