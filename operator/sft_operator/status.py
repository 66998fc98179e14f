"""Pure status logic shared by the operator and the local executor.

Given what happened to the Job (or the local process) and what the pod wrote
(report.json / train_report.json), compute the status object for the custom
resource. `sftctl run` writes the very same object to status.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import conditions as c
from .api import CurationCounts, DatasetCurationStatus, SFTJobStatus, TrainingProgress

PENDING, RUNNING, SUSPENDED, SUCCEEDED, FAILED = "Pending", "Running", "Suspended", "Succeeded", "Failed"


@dataclass(frozen=True)
class RunState:
    """Where a run stands, with the reason and message conditions will carry."""

    state: str
    reason: str
    message: str = ""
    start_time: str | None = None
    completion_time: str | None = None


def job_run_state(job: dict[str, Any]) -> RunState:
    """Read a batch/v1 Job's status the way Kubernetes documents it."""
    spec = job.get("spec", {})
    status = job.get("status", {}) or {}
    start, end = status.get("startTime"), status.get("completionTime")
    for condition in status.get("conditions", []) or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return RunState(SUCCEEDED, c.JOB_SUCCEEDED, f"Job {job['metadata']['name']} completed", start, end)
        if condition.get("type") == "Failed":
            reason = condition.get("reason", "")
            mapped = {
                "PodFailurePolicy": c.CONFIG_ERROR,
                "DeadlineExceeded": c.DEADLINE_EXCEEDED,
                "BackoffLimitExceeded": c.BACKOFF_LIMIT_EXCEEDED,
            }.get(reason, c.JOB_FAILED)
            message = condition.get("message") or f"Job {job['metadata']['name']} failed ({reason})"
            return RunState(FAILED, mapped, message, start, condition.get("lastTransitionTime"))
    if spec.get("suspend"):
        return RunState(SUSPENDED, c.JOB_SUSPENDED, "Job is suspended", start)
    if (status.get("active") or 0) > 0 or (status.get("ready") or 0) > 0:
        return RunState(RUNNING, c.JOB_RUNNING, f"Job {job['metadata']['name']} is running", start)
    return RunState(PENDING, c.JOB_CREATED, f"Job {job['metadata']['name']} created", start)


def with_run_state(
    status: dict[str, Any], run: RunState, generation: int | None, now: str | None = None
) -> dict[str, Any]:
    """A copy of `status` whose conditions, phase and times reflect `run`."""
    conds: list[dict[str, Any]] = list(status.get("conditions", []))
    done = run.state in (SUCCEEDED, FAILED)
    conds = c.set_condition(conds, c.PROGRESSING, not done, run.reason, run.message, generation, now)
    conds = c.set_condition(conds, c.SUCCEEDED, run.state == SUCCEEDED, run.reason, run.message, generation, now)
    conds = c.set_condition(conds, c.FAILED, run.state == FAILED, run.reason, run.message, generation, now)
    conds = c.set_condition(conds, c.READY, run.state == SUCCEEDED, run.reason, run.message, generation, now)
    updated = {**status, "conditions": conds, "phase": c.phase(conds), "observedGeneration": generation}
    if run.start_time:
        updated["startTime"] = run.start_time
    if run.completion_time and done:
        updated["completionTime"] = run.completion_time
    return updated


def waiting(status: dict[str, Any], reason: str, message: str, generation: int | None) -> dict[str, Any]:
    """Status of an object that cannot start yet (e.g. WaitingForDataset)."""
    conds = c.set_condition(list(status.get("conditions", [])), c.PROGRESSING, True, reason, message, generation)
    conds = c.set_condition(conds, c.READY, False, reason, message, generation)
    return {**status, "conditions": conds, "phase": c.phase(conds), "observedGeneration": generation}


def failed(status: dict[str, Any], reason: str, message: str, generation: int | None) -> dict[str, Any]:
    """Status of an object that failed before or outside its Job (gates, bad spec)."""
    run = RunState(FAILED, reason, message, completion_time=c.now_rfc3339())
    return with_run_state(status, run, generation)


def curation_figures(report: dict[str, Any]) -> dict[str, Any]:
    """The part of report.json's `status` that DatasetCuration.status carries, validated."""
    figures = report.get("status", {})
    validated = DatasetCurationStatus(
        counts=CurationCounts.model_validate(figures.get("counts", {})),
        drops_by_reason=figures.get("dropsByReason", {}),
        task_entropy_before=figures.get("taskEntropyBefore"),
        task_entropy_after=figures.get("taskEntropyAfter"),
        rejected_fraction=figures.get("rejectedFraction"),
    )
    return validated.to_wire()


def training_figures(report: dict[str, Any]) -> dict[str, Any]:
    """The part of train_report.json's `status` that SFTJob.status carries, validated."""
    figures = report.get("status", {})
    metrics = {k: float(v) for k, v in (figures.get("metrics") or {}).items() if isinstance(v, int | float)}
    validated = SFTJobStatus(
        progress=TrainingProgress.model_validate(figures.get("progress") or {}),
        metrics=metrics,
    )
    return validated.to_wire()


def progress_figures(payload: dict[str, Any]) -> dict[str, Any]:
    """A pod's /progress JSON reduced to the TrainingProgress fields (unknown keys ignored)."""
    known = {field.alias or name for name, field in TrainingProgress.model_fields.items()}
    return TrainingProgress.model_validate({k: v for k, v in payload.items() if k in known}).to_wire()


def gate_failures(gates: dict[str, Any] | None, curation_status: dict[str, Any]) -> list[str]:
    """Which quality gates a curation's figures fail, each saying by how much.

    `gates` is an SFTJob's `spec.dataset.gates` (camelCase); an empty list
    means the job may train on this curation.
    """
    if not gates:
        return []
    failures: list[str] = []
    entropy = curation_status.get("taskEntropyAfter")
    rejected = curation_status.get("rejectedFraction")
    curated = (curation_status.get("counts") or {}).get("curated")
    minimum_entropy = gates.get("minTaskEntropy")
    if minimum_entropy is not None and (entropy is None or entropy < minimum_entropy):
        failures.append(f"minTaskEntropy: task entropy {_fmt(entropy)} is below {minimum_entropy:.3f}")
    maximum_rejected = gates.get("maxRejectedFraction")
    if maximum_rejected is not None and (rejected is None or rejected > maximum_rejected):
        failures.append(f"maxRejectedFraction: rejected fraction {_fmt(rejected)} is above {maximum_rejected:.3f}")
    minimum_curated = gates.get("minCuratedRecords")
    if minimum_curated is not None and (curated is None or curated < minimum_curated):
        failures.append(f"minCuratedRecords: {curated} curated records, fewer than {minimum_curated}")
    return failures


def _fmt(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.3f}"
