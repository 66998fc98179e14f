"""Where a run stands (`RunState`), read from a Job or a local process, and the conditions it sets.

A `RunState` is the phase word, the reason and the message the conditions
will carry. The operator reads it from a batch/v1 Job and its pods
(`cluster_run_state`; a RayJob's is in `rayjob.rayjob_run_state`), `sftctl
run` from the exit code of the process (`exit_run_state`); `with_run_state`
turns either into conditions, phase and times the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sft_trainer.config import EXIT_CONFIG_ERROR

from . import conditions as c
from .api import Phase
from .naming import QUEUE_LABEL
from .pod_reports import clip, last_pod_failure


@dataclass(frozen=True)
class RunState:
    """Where a run stands, with the reason and message conditions will carry."""

    state: Phase
    reason: str
    message: str = ""
    start_time: str | None = None
    completion_time: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in (c.PHASE_SUCCEEDED, c.PHASE_FAILED)


def job_run_state(job: dict[str, Any]) -> RunState:
    """Read a batch/v1 Job's status the way Kubernetes documents it."""
    spec = job.get("spec", {})
    status = job.get("status", {}) or {}
    start, end = status.get("startTime"), status.get("completionTime")
    name = job["metadata"]["name"]
    for condition in status.get("conditions", []) or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return RunState(c.PHASE_SUCCEEDED, c.JOB_SUCCEEDED, f"Job {name} completed", start, end)
        if condition.get("type") == "Failed":
            reason = condition.get("reason", "")
            mapped = {
                "PodFailurePolicy": c.CONFIG_ERROR,
                "DeadlineExceeded": c.DEADLINE_EXCEEDED,
                "BackoffLimitExceeded": c.BACKOFF_LIMIT_EXCEEDED,
            }.get(reason, c.JOB_FAILED)
            message = condition.get("message") or f"Job {name} failed ({reason})"
            return RunState(c.PHASE_FAILED, mapped, message, start, condition.get("lastTransitionTime"))
    if spec.get("suspend"):
        return RunState(c.PHASE_SUSPENDED, c.JOB_SUSPENDED, "Job is suspended", start)
    if (status.get("active") or 0) > 0 or (status.get("ready") or 0) > 0:
        return RunState(c.PHASE_RUNNING, c.JOB_RUNNING, f"Job {name} is running", start)
    return RunState(c.PHASE_PENDING, c.JOB_CREATED, f"Job {name} created", start)


def cluster_run_state(kind: str, job: dict[str, Any], pods: list[dict[str, Any]]) -> RunState:
    """`job_run_state` refined with what only a cluster shows.

    The Job counts a pod as active from creation, so "running" here means a
    pod is Ready; failed pods being retried and Kueue's suspension are named.
    """
    run = job_run_state(job)
    name = job["metadata"]["name"]
    status = job.get("status", {}) or {}
    failures = int(status.get("failed") or 0)
    if run.state == c.PHASE_FAILED:
        detail = last_pod_failure(pods)
        return replace(run, message=clip(f"{run.message}; {detail}" if detail else run.message))
    if run.state == c.PHASE_SUSPENDED:
        queue = (job["metadata"].get("labels") or {}).get(QUEUE_LABEL)
        if queue:
            return replace(run, message=f"Job {name} is suspended until Kueue admits it to queue {queue}")
        return run
    waiting_for_pods = RunState(
        c.PHASE_PENDING, c.PODS_PENDING, f"Job {name} is waiting for its pods to start", run.start_time
    )
    if run.state == c.PHASE_PENDING:
        return waiting_for_pods
    if run.state != c.PHASE_RUNNING:
        return run
    if int(status.get("ready") or 0) > 0:
        if failures:
            return replace(run, message=f"{run.message}, after {_retries(job, failures)}")
        return run
    if failures:
        detail = last_pod_failure(pods) or "a pod failed"
        # Training resumes from its checkpoints; a curation is cheap enough to run again from the start.
        retry = "the next pod resumes from the newest checkpoint" if kind == "SFTJob" else "the next pod starts over"
        message = f"{detail}; {_retries(job, failures)}, {retry}"
        return RunState(c.PHASE_PENDING, c.RETRYING, clip(message), run.start_time)
    return waiting_for_pods


def _retries(job: dict[str, Any], failures: int) -> str:
    limit = (job.get("spec", {}) or {}).get("backoffLimit")
    return f"{failures} of {limit} retries used" if limit is not None else f"{failures} retries used"


def exit_run_state(exit_code: int, log_tail: str, started: str, finished: str) -> RunState:
    """A local process's end (`sftctl run`), named as the Job's would be: a config error is not retried there either."""
    if exit_code == 0:
        return RunState(c.PHASE_SUCCEEDED, c.JOB_SUCCEEDED, "Completed locally", started, finished)
    if exit_code == EXIT_CONFIG_ERROR:
        return RunState(c.PHASE_FAILED, c.CONFIG_ERROR, clip(log_tail), started, finished)
    return RunState(c.PHASE_FAILED, c.JOB_FAILED, clip(f"exit code {exit_code}: {log_tail}"), started, finished)


def with_run_state(
    status: dict[str, Any], run: RunState, generation: int | None, now: str | None = None
) -> dict[str, Any]:
    """A copy of `status` whose conditions, phase and times reflect `run`."""
    conds: list[dict[str, Any]] = list(status.get("conditions", []))
    conds = c.set_condition(conds, c.PROGRESSING, not run.finished, run.reason, run.message, generation, now)
    succeeded = run.state == c.PHASE_SUCCEEDED
    conds = c.set_condition(conds, c.SUCCEEDED, succeeded, run.reason, run.message, generation, now)
    conds = c.set_condition(conds, c.FAILED, run.state == c.PHASE_FAILED, run.reason, run.message, generation, now)
    conds = c.set_condition(conds, c.READY, succeeded, run.reason, run.message, generation, now)
    updated = {**status, "conditions": conds, "phase": c.phase(conds), "observedGeneration": generation}
    if run.start_time:
        updated["startTime"] = run.start_time
    if run.completion_time and run.finished:
        updated["completionTime"] = run.completion_time
    return updated


def waiting(status: dict[str, Any], reason: str, message: str, generation: int | None) -> dict[str, Any]:
    """Status of an object that cannot start yet (e.g. WaitingForDataset)."""
    conds = c.set_condition(list(status.get("conditions", [])), c.PROGRESSING, True, reason, message, generation)
    conds = c.set_condition(conds, c.READY, False, reason, message, generation)
    return {**status, "conditions": conds, "phase": c.phase(conds), "observedGeneration": generation}


def failed(status: dict[str, Any], reason: str, message: str, generation: int | None) -> dict[str, Any]:
    """Status of an object that failed before or outside its Job (gates, bad spec)."""
    run = RunState(c.PHASE_FAILED, reason, message, completion_time=c.now_rfc3339())
    return with_run_state(status, run, generation)


def job_missing(status: dict[str, Any], job_name: str, generation: int | None) -> dict[str, Any]:
    """Status of a run whose Job was deleted before it finished."""
    message = f"Job {job_name} was deleted before it finished; recreate the object to run again"
    return failed(status, c.JOB_DELETED, message, generation)


def is_finished(status: dict[str, Any]) -> bool:
    """Whether the run in this status has ended (Succeeded or Failed): nothing is created for it again."""
    return c.is_finished(status.get("conditions", []) or [])


def is_running(status: dict[str, Any]) -> bool:
    """Whether a pod of the run in this status does the work now."""
    return c.is_running(status.get("conditions", []) or [])
