"""Conditions, their reasons, and the phase shown in `kubectl get`.

Status is a set of conditions (Ready, Progressing, Succeeded, Failed), each
with a reason from the constants below; `phase` is derived from them for
display and never drives behaviour.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from .api import Phase

# status.phase's words. `api.Phase`, the CRD's enum, is their type: mypy refuses any other word here.
PHASE_PENDING: Phase = "Pending"
PHASE_WAITING: Phase = "Waiting"
PHASE_SUSPENDED: Phase = "Suspended"
PHASE_RUNNING: Phase = "Running"
PHASE_SUCCEEDED: Phase = "Succeeded"
PHASE_FAILED: Phase = "Failed"
PHASES: tuple[Phase, ...] = (
    PHASE_PENDING,
    PHASE_WAITING,
    PHASE_SUSPENDED,
    PHASE_RUNNING,
    PHASE_SUCCEEDED,
    PHASE_FAILED,
)

# Condition types
READY = "Ready"
PROGRESSING = "Progressing"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
REVIEW_COMPLETE = "ReviewComplete"
# True when the post-training evaluation ran and every gate passed; a
# chained SFTJob waits on it.
EVALUATION_PASSED = "EvaluationPassed"

# Reasons
JOB_CREATED = "JobCreated"
JOB_RUNNING = "JobRunning"
JOB_SUSPENDED = "JobSuspended"
JOB_SUCCEEDED = "JobSucceeded"
JOB_FAILED = "JobFailed"
CONFIG_ERROR = "ConfigurationError"
DEADLINE_EXCEEDED = "DeadlineExceeded"
BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
WAITING_FOR_DATASET = "WaitingForDataset"
WAITING_FOR_REVIEW = "WaitingForReview"
# A chained SFTJob (spec.model.sftJobRef) and the SFTJob it starts from.
WAITING_FOR_MODEL = "WaitingForModel"
PARENT_DELETED = "ParentDeleted"
PARENT_FAILED = "ParentFailed"
PARENT_UNUSABLE = "ParentUnusable"
MODEL_GATE_FAILED = "ModelGateFailed"
CHAIN_CYCLE = "ChainCycle"
BASE_MODEL_MISMATCH = "BaseModelMismatch"
RECORDS_PENDING = "RecordsPending"
NOTHING_PENDING = "NothingPending"
DATASET_FAILED = "DatasetFailed"
QUALITY_GATE_FAILED = "QualityGateFailed"
INVALID_SPEC = "InvalidSpec"
OUTPUT_NOT_SHARED = "OutputNotShared"
REPORT_MISSING = "ReportMissing"
PODS_PENDING = "PodsPending"
RETRYING = "Retrying"
JOB_DELETED = "JobDeleted"
NAME_CONFLICT = "NameConflict"
# spec.engine names an engine the cluster does not serve (engine ray without the RayJob CRD).
ENGINE_UNAVAILABLE = "EngineUnavailable"
GATES_PASSED = "GatesPassed"
EVALUATION_GATE_FAILED = "EvaluationGateFailed"
EVALUATION_ERROR = "EvaluationError"
EVALUATION_PENDING = "EvaluationPending"
FIGURE_REGRESSED = "FigureRegressed"

# Reasons whose Events are Warnings: something went wrong or needs a person.
WARNING_REASONS = frozenset(
    {
        JOB_FAILED,
        CONFIG_ERROR,
        DEADLINE_EXCEEDED,
        BACKOFF_LIMIT_EXCEEDED,
        DATASET_FAILED,
        QUALITY_GATE_FAILED,
        INVALID_SPEC,
        REPORT_MISSING,
        RETRYING,
        JOB_DELETED,
        NAME_CONFLICT,
        ENGINE_UNAVAILABLE,
        EVALUATION_GATE_FAILED,
        EVALUATION_ERROR,
        FIGURE_REGRESSED,
        PARENT_DELETED,
        PARENT_FAILED,
        PARENT_UNUSABLE,
        MODEL_GATE_FAILED,
        CHAIN_CYCLE,
        BASE_MODEL_MISMATCH,
    }
)


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str = "",
    generation: int | None = None,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """A copy of `conditions` with one condition set.

    lastTransitionTime changes only when the status flips, as Kubernetes
    conventions require.
    """
    value = "True" if status else "False"
    updated: list[dict[str, Any]] = []
    found = False
    for condition in conditions:
        if condition.get("type") != type_:
            updated.append(condition)
            continue
        found = True
        transitioned = condition.get("status") != value
        updated.append(
            {
                "type": type_,
                "status": value,
                "reason": reason,
                "message": message,
                "observedGeneration": generation,
                "lastTransitionTime": (now or now_rfc3339()) if transitioned else condition.get("lastTransitionTime"),
            }
        )
    if not found:
        updated.append(
            {
                "type": type_,
                "status": value,
                "reason": reason,
                "message": message,
                "observedGeneration": generation,
                "lastTransitionTime": now or now_rfc3339(),
            }
        )
    return [{k: v for k, v in c.items() if v is not None} for c in updated]


def get_condition(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def is_true(conditions: list[dict[str, Any]], type_: str) -> bool:
    condition = get_condition(conditions, type_)
    return bool(condition and condition.get("status") == "True")


def is_finished(conditions: list[dict[str, Any]]) -> bool:
    """Whether the run has ended (Succeeded or Failed): nothing is created for it again."""
    return is_true(conditions, SUCCEEDED) or is_true(conditions, FAILED)


def is_running(conditions: list[dict[str, Any]]) -> bool:
    """Whether a pod does the work now (Progressing because JobRunning): the one a progress poll can ask."""
    progressing = get_condition(conditions, PROGRESSING)
    return bool(progressing and progressing.get("status") == "True" and progressing.get("reason") == JOB_RUNNING)


# Progressing reasons shown as phase Waiting: the object waits for something outside its own run.
WAITING_REASONS = frozenset({WAITING_FOR_DATASET, WAITING_FOR_REVIEW, WAITING_FOR_MODEL, PARENT_DELETED})


def phase(conditions: list[dict[str, Any]]) -> Phase:
    """The one-word summary for printer columns (display only: behaviour reads the conditions)."""
    if is_true(conditions, FAILED):
        return PHASE_FAILED
    if is_true(conditions, SUCCEEDED):
        return PHASE_SUCCEEDED
    if is_running(conditions):
        return PHASE_RUNNING
    reason = (get_condition(conditions, PROGRESSING) or {}).get("reason")
    if reason in WAITING_REASONS:
        return PHASE_WAITING
    if reason == JOB_SUSPENDED:
        return PHASE_SUSPENDED
    return PHASE_PENDING
