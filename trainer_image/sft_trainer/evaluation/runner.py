"""Run the chosen suites on one model, or on a base and a tuned model, and write the report."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..formats import Conversation
from ..runconfig import ConfigError
from .generation import EvalModel
from .ifeval import run_ifeval
from .reference import reference_from_path, run_reference
from .report import build_report, write_report
from .safety import run_safety
from .suite import SuiteResult, skipped_suite

log = logging.getLogger("sft_trainer.evaluation")

SUITES = ("ifeval", "safety", "reference")


@dataclass
class EvalSettings:
    suites: Sequence[str] = SUITES
    limit: int | None = None
    """At most this many prompts per suite (per set for safety): a quick look, not the benchmark."""
    ifeval_data: Path | None = None
    """IFEval's input_data.jsonl."""
    ifeval_max_new_tokens: int = 256
    safety_data: Path | None = None
    """Folder with advbench_harmful_behaviors.csv and xstest_prompts.csv; None: the 198 shipped prompts."""
    safety_max_new_tokens: int = 64
    reference_data: Path | None = None
    """A dataset file of human-written answers; None: `reference_conversations` (an SFTJob's held-out split)."""
    reference_conversations: Sequence[Conversation] | None = None

    def check(self) -> None:
        """Fail before any model loads: unknown suites, data files that do not exist."""
        unknown = sorted(set(self.suites) - set(SUITES))
        if unknown:
            raise ConfigError(f"suites: unknown suite(s) {unknown}; expected some of {list(SUITES)}")
        if "ifeval" in self.suites:
            if self.ifeval_data is None:
                raise ConfigError("ifeval.data: the ifeval suite needs IFEval's input_data.jsonl (--ifeval-data)")
            if not Path(self.ifeval_data).is_file():
                raise ConfigError(f"ifeval.data: {self.ifeval_data} does not exist")
        if "safety" in self.suites and self.safety_data is not None and not Path(self.safety_data).is_dir():
            raise ConfigError(f"safety.data: {self.safety_data} is not a folder")
        if "reference" in self.suites and self.reference_data is not None and not Path(self.reference_data).is_file():
            raise ConfigError(f"reference.data: {self.reference_data} does not exist")


def run_suites(model: EvalModel, settings: EvalSettings, out_dir: Path) -> dict[str, SuiteResult]:
    """Each chosen suite on one model. A suite whose data turns out unusable is reported as not run."""
    results: dict[str, SuiteResult] = {}
    for suite in settings.suites:
        log.info("Evaluating %s: %s", model.name, suite)
        try:
            results[suite] = _run_one(suite, model, settings, out_dir)
        except ConfigError as err:
            results[suite] = skipped_suite(suite, str(err))
    return results


def _run_one(suite: str, model: EvalModel, settings: EvalSettings, out_dir: Path) -> SuiteResult:
    if suite == "ifeval":
        assert settings.ifeval_data is not None
        return run_ifeval(
            model, settings.ifeval_data, out_dir, limit=settings.limit, max_new_tokens=settings.ifeval_max_new_tokens
        )
    if suite == "safety":
        return run_safety(
            model, settings.safety_data, limit=settings.limit, max_new_tokens=settings.safety_max_new_tokens
        )
    if settings.reference_data is not None:
        return reference_from_path(model, settings.reference_data, settings.limit)
    if settings.reference_conversations is None:
        return skipped_suite("reference", "no reference data: give a dataset file (--reference-data)")
    conversations = list(settings.reference_conversations)[: settings.limit]
    return run_reference(model, conversations)


def evaluate(loaders: dict[str, Callable[[], EvalModel]], settings: EvalSettings, out_dir: Path) -> dict[str, Any]:
    """Load each model in turn (role -> loader: `model`, or `base` and `tuned`), run the suites, write the report.

    With one model its files go straight into out_dir; with two, into out_dir/base and out_dir/tuned.
    """
    settings.check()
    out_dir = Path(out_dir)
    results: dict[str, dict[str, SuiteResult]] = {}
    labels: dict[str, str] = {}
    for role, load in loaders.items():
        model = load()
        labels[role] = model.name
        results[role] = run_suites(model, settings, out_dir if role == "model" else out_dir / role)
        del model
        gc.collect()
    report = build_report(labels, results)
    write_report(out_dir, report)
    return report
