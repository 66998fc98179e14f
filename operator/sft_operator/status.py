"""Pure status logic shared by the operator and the local executor.

Given what happened to the Job (or the local process) and what the pod wrote
(report.json / train_report.json), compute the status object for the custom
resource. `sftctl run` writes the very same object to status.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from . import conditions as c
from .api import (
    CommonStatus,
    CurationCounts,
    CurationProgress,
    DatasetCurationSpec,
    DatasetCurationStatus,
    LineageEntry,
    ModelSource,
    PvcLocation,
    SFTJobSpec,
    SFTJobStatus,
    TrainingProgress,
)

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
        selection=figures.get("selection"),
        notes=figures.get("notes", []),
        # A curation that nobody reviewed yet: every held record is pending.
        review=figures.get("review") or {"pending": figures.get("counts", {}).get("review", 0)},
    )
    return _figures_only(validated.to_wire())


def with_review_condition(status: dict[str, Any], generation: int | None) -> dict[str, Any]:
    """ReviewComplete: False with the count while held records wait for a person, True when none does."""
    if not status.get("review"):
        return status
    pending = status["review"].get("pending", 0)
    conds = c.set_condition(
        list(status.get("conditions", [])),
        c.REVIEW_COMPLETE,
        pending == 0,
        c.NOTHING_PENDING if pending == 0 else c.RECORDS_PENDING,
        "no record waits for review" if pending == 0 else f"{pending} records wait for review",
        generation,
    )
    return {**status, "conditions": conds}


def with_evaluation_condition(status: dict[str, Any], generation: int | None) -> dict[str, Any]:
    """EvaluationPassed from the pod's status.evaluation: True when it ran and every gate passed.

    No evaluation (switched off, or the run has not finished) leaves the condition unset.
    """
    evaluation = status.get("evaluation")
    if not evaluation:
        return status
    if evaluation.get("error"):
        passed, reason = False, c.EVALUATION_ERROR
        message = f"the evaluation could not run (the trained artifacts are intact): {evaluation['error']}"
    elif evaluation.get("failedGates"):
        passed, reason = False, c.EVALUATION_GATE_FAILED
        message = "not promoted: " + "; ".join(evaluation["failedGates"])
    else:
        passed, reason = True, c.GATES_PASSED
        checked = evaluation.get("gatesChecked", 0)
        message = f"{checked} gates passed" if checked else "evaluated; no gates set"
    not_run = evaluation.get("notRun") or {}
    if not_run and not evaluation.get("error"):
        message += "; not run: " + ", ".join(sorted(not_run))
    conds = c.set_condition(
        list(status.get("conditions", [])), c.EVALUATION_PASSED, passed, reason, _clip(message), generation
    )
    return {**status, "conditions": conds}


def review_wait(gates: dict[str, Any] | None, curation_status: dict[str, Any], name: str) -> str | None:
    """Why an SFTJob waits for its curation's review (gate maxPendingReview), or None when it need not."""
    limit = (gates or {}).get("maxPendingReview")
    if limit is None:
        return None
    review = curation_status.get("review") or {}
    pending = review.get("pending", (curation_status.get("counts") or {}).get("review", 0))
    if pending <= limit:
        return None
    return (
        f"Waiting for review of DatasetCuration {name}: {pending} records pending, more than maxPendingReview {limit}"
    )


def training_figures(report: dict[str, Any]) -> dict[str, Any]:
    """The part of train_report.json's `status` that SFTJob.status carries, validated."""
    figures = report.get("status", {})
    metrics = {k: float(v) for k, v in (figures.get("metrics") or {}).items() if isinstance(v, int | float)}
    validated = SFTJobStatus(
        progress=TrainingProgress.model_validate(figures.get("progress") or {}),
        metrics=metrics,
        exports=figures.get("exports") or [],
        evaluation=figures.get("evaluation"),
    )
    # Only what the report sets: an empty default (lineage, written from the spec) must not overwrite status.
    return _figures_only(validated.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_unset=True))


# Keys every status has (conditions, times...): a figures dict never carries
# them, so merging figures into a status cannot wipe its conditions.
_COMMON_KEYS = frozenset(field.alias or name for name, field in CommonStatus.model_fields.items())


def _figures_only(wire: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in wire.items() if key not in _COMMON_KEYS}


def progress_figures(payload: dict[str, Any], kind: str = "SFTJob") -> dict[str, Any]:
    """A pod's /progress JSON reduced to the kind's progress fields (unknown keys ignored)."""
    model: type[TrainingProgress] | type[CurationProgress] = (
        CurationProgress if kind == "DatasetCuration" else TrainingProgress
    )
    known = {field.alias or name for name, field in model.model_fields.items()}
    return model.model_validate({k: v for k, v in payload.items() if k in known}).to_wire()


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
        failures.append(
            f"minTaskEntropy: task entropy {_fmt(entropy)} is below {minimum_entropy:.3f}{_by(minimum_entropy, entropy)}"
        )
    maximum_rejected = gates.get("maxRejectedFraction")
    if maximum_rejected is not None and (rejected is None or rejected > maximum_rejected):
        failures.append(
            f"maxRejectedFraction: rejected fraction {_fmt(rejected)} is above {maximum_rejected:.3f}"
            f"{_by(rejected, maximum_rejected)}"
        )
    minimum_curated = gates.get("minCuratedRecords")
    if minimum_curated is not None and (curated is None or curated < minimum_curated):
        failures.append(
            f"minCuratedRecords: {curated} curated records, fewer than {minimum_curated}"
            + (f" by {minimum_curated - curated}" if curated is not None else "")
        )
    return failures


def _fmt(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.3f}"


def _by(high: float | None, low: float | None) -> str:
    """` by 0.123`: how far a figure missed its gate (empty when the figure is unknown)."""
    return "" if high is None or low is None else f" by {high - low:.3f}"


# --------------------------------------------------------------------------
# The operator's view: a Job, its pods, and what they tell about the run
# --------------------------------------------------------------------------

CONTAINER = "trainer"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
MESSAGE_LIMIT = 300
FINISHED = (SUCCEEDED, FAILED)


def is_finished(status: dict[str, Any]) -> bool:
    """Whether the run has ended (Succeeded or Failed): nothing is created for it again."""
    conds = status.get("conditions", []) or []
    return c.is_true(conds, c.SUCCEEDED) or c.is_true(conds, c.FAILED)


def output_location(location: PvcLocation) -> str:
    """`pvc://CLAIM/PATH`, the form status.outputLocation uses."""
    return f"pvc://{location.claim_name}" + ("" if location.path in ("", ".") else f"/{location.path}")


def root_lineage(spec: SFTJobSpec) -> list[dict[str, Any]]:
    """The lineage of an SFTJob that starts from a base model: that model."""
    model = ModelSource(pvc=spec.model.pvc, hugging_face=spec.model.hugging_face)
    return [LineageEntry(model=model).to_wire()]


def fields_from_spec(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Status fields that follow from the spec alone (outputLocation, curationName).

    Every status write that names the Job carries them, so no reader ever
    sees status.jobName without them, whichever handler wrote first.
    """
    if kind == "DatasetCuration":
        return {"outputLocation": output_location(DatasetCurationSpec.model_validate(spec).output.pvc)}
    parsed = SFTJobSpec.model_validate(spec)
    fields: dict[str, Any] = {"outputLocation": output_location(parsed.output.pvc)}
    if parsed.dataset.curation_ref is not None:
        fields["curationName"] = parsed.dataset.curation_ref.name
    if parsed.model.sft_job_ref is None:  # a chained job's lineage comes from its parent (chain.lineage_of)
        fields["lineage"] = root_lineage(parsed)
    return fields


def cluster_run_state(kind: str, job: dict[str, Any], pods: list[dict[str, Any]]) -> RunState:
    """`job_run_state` refined with what only a cluster shows.

    The Job counts a pod as active from creation, so "running" here means a
    pod is Ready; failed pods being retried and Kueue's suspension are named.
    """
    run = job_run_state(job)
    name = job["metadata"]["name"]
    status = job.get("status", {}) or {}
    failures = int(status.get("failed") or 0)
    if run.state == FAILED:
        detail = last_pod_failure(pods)
        return replace(run, message=_clip(f"{run.message}; {detail}" if detail else run.message))
    if run.state == SUSPENDED:
        queue = (job["metadata"].get("labels") or {}).get(QUEUE_LABEL)
        if queue:
            return replace(run, message=f"Job {name} is suspended until Kueue admits it to queue {queue}")
        return run
    if run.state == PENDING:
        return RunState(PENDING, c.PODS_PENDING, f"Job {name} is waiting for its pods to start", run.start_time)
    if run.state != RUNNING:
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
        return RunState(PENDING, c.RETRYING, _clip(message), run.start_time)
    return RunState(PENDING, c.PODS_PENDING, f"Job {name} is waiting for its pods to start", run.start_time)


def _retries(job: dict[str, Any], failures: int) -> str:
    limit = (job.get("spec", {}) or {}).get("backoffLimit")
    return f"{failures} of {limit} retries used" if limit is not None else f"{failures} retries used"


def _clip(text: str) -> str:
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


def _terminated(pod: dict[str, Any]) -> dict[str, Any]:
    for container in (pod.get("status", {}) or {}).get("containerStatuses", []) or []:
        if container.get("name") == CONTAINER:
            return ((container.get("state") or {}).get("terminated")) or {}
    return {}


def _finished_at(pod: dict[str, Any]) -> str:
    return str(_terminated(pod).get("finishedAt") or pod["metadata"].get("creationTimestamp") or "")


def last_pod_failure(pods: list[dict[str, Any]]) -> str:
    """`pod NAME exited with code N: LAST LINE` for the newest failed pod, or ''."""
    failed = [pod for pod in pods if (pod.get("status", {}) or {}).get("phase") == "Failed"]
    if not failed:
        return ""
    pod = max(failed, key=_finished_at)
    terminated = _terminated(pod)
    name = pod["metadata"]["name"]
    if not terminated:
        reason = (pod.get("status", {}) or {}).get("reason") or "unknown reason"
        return f"pod {name} failed ({reason})"
    lines = [line.strip() for line in str(terminated.get("message") or "").splitlines() if line.strip()]
    detail = f": {lines[-1]}" if lines else ""
    return _clip(f"pod {name} exited with code {terminated.get('exitCode')}{detail}")


def is_rank_zero(pod: dict[str, Any]) -> bool:
    """The pod that reports for the run: the only one, or index 0 of an Indexed Job."""
    index = (pod["metadata"].get("annotations") or {}).get(COMPLETION_INDEX)
    return index in (None, "0")


@dataclass(frozen=True)
class PodReport:
    """What a succeeded pod left in its termination message."""

    report: dict[str, Any] | None
    problem: str = ""


def report_from_pods(pods: list[dict[str, Any]]) -> PodReport:
    """The `{"status": ...}` report of the newest succeeded rank-0 pod.

    The trainer and curation processes write their report's `status` object,
    as compact JSON, to the termination message.
    """
    succeeded = [p for p in pods if (p.get("status", {}) or {}).get("phase") == "Succeeded" and is_rank_zero(p)]
    if not succeeded:
        return PodReport(None, "no succeeded pod left a report")
    pod = max(succeeded, key=_finished_at)
    message = str(_terminated(pod).get("message") or "").strip()
    name = pod["metadata"]["name"]
    if not message:
        return PodReport(None, f"pod {name} left no termination message")
    try:
        summary = json.loads(message)
    except json.JSONDecodeError as err:
        return PodReport(None, f"termination message of pod {name} is not JSON ({err.msg})")
    if not isinstance(summary, dict):
        return PodReport(None, f"termination message of pod {name} is not a JSON object")
    return PodReport({"status": summary})


FIGURE_KEYS = {"DatasetCuration": ("counts",), "SFTJob": ("metrics", "progress")}


def has_figures(kind: str, status: dict[str, Any]) -> bool:
    return any(status.get(key) for key in FIGURE_KEYS[kind])


def figures(kind: str, report: dict[str, Any]) -> dict[str, Any]:
    return curation_figures(report) if kind == "DatasetCuration" else training_figures(report)


def observe_job(
    kind: str, status: dict[str, Any], job: dict[str, Any], pods: list[dict[str, Any]], generation: int | None
) -> dict[str, Any]:
    """The status a custom resource has, given its Job and the Job's pods.

    Figures are taken as soon as a succeeded pod shows them (the Job may be
    deleted by its TTL a moment after it completes); a completed run without
    them is still Succeeded, with reason ReportMissing.
    """
    return observe_run(kind, status, cluster_run_state(kind, job, pods), job["metadata"]["name"], pods, generation)


def observe_run(
    kind: str, status: dict[str, Any], run: RunState, job_name: str, pods: list[dict[str, Any]], generation: int | None
) -> dict[str, Any]:
    """`observe_job` for any kind of run: `run` is where it stands, `pods` those whose report counts."""
    updated = {**status, "jobName": job_name}
    found = report_from_pods(pods)
    if found.report is not None:
        try:
            updated.update(figures(kind, found.report))
        except ValueError as err:  # pydantic's ValidationError is a ValueError
            found = PodReport(None, f"the report does not match the {kind} status: {err}".splitlines()[0])
    if run.state == SUCCEEDED and not has_figures(kind, updated):
        message = f"{run.message}, but {found.problem}: figures are unavailable"
        run = replace(run, reason=c.REPORT_MISSING, message=_clip(message))
    updated = with_run_state(updated, run, generation)
    return (
        with_review_condition(updated, generation)
        if kind == "DatasetCuration"
        else with_evaluation_condition(updated, generation)
    )


def job_missing(status: dict[str, Any], job_name: str, generation: int | None) -> dict[str, Any]:
    """Status of a run whose Job was deleted before it finished."""
    message = f"Job {job_name} was deleted before it finished; recreate the object to run again"
    return failed(status, c.JOB_DELETED, message, generation)


# --------------------------------------------------------------------------
# Events: one per transition of the headline condition
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Transition:
    """A Kubernetes Event to post: type (Normal or Warning), reason, message."""

    type: str
    reason: str
    message: str


def _headline(status: dict[str, Any]) -> dict[str, Any] | None:
    conds = status.get("conditions", []) or []
    for type_ in (c.FAILED, c.SUCCEEDED):
        if c.is_true(conds, type_):
            return c.get_condition(conds, type_)
    return c.get_condition(conds, c.PROGRESSING)


def transition(before: dict[str, Any], after: dict[str, Any]) -> Transition | None:
    """The Event for a status change, or None when nothing a person cares about changed."""
    new = _headline(after)
    if new is None:
        return None
    old = _headline(before)
    if old is not None and (old.get("type"), old.get("reason"), old.get("message")) == (
        new.get("type"),
        new.get("reason"),
        new.get("message"),
    ):
        return None
    reason = str(new.get("reason", ""))
    return Transition("Warning" if reason in c.WARNING_REASONS else "Normal", reason, str(new.get("message", "")))


def evaluation_transitions(before: dict[str, Any], after: dict[str, Any]) -> list[Transition]:
    """Events when an evaluation lands: one per regressed figure, one for a failed gate or evaluation."""
    evaluation = after.get("evaluation") or {}
    if not evaluation or before.get("evaluation"):
        return []
    events = [
        Transition("Warning", c.FIGURE_REGRESSED, _clip(_regression_message(name, evaluation)))
        for name in evaluation.get("regressed") or []
    ]
    condition = c.get_condition(after.get("conditions", []) or [], c.EVALUATION_PASSED)
    if condition is not None:
        reason = str(condition.get("reason", ""))
        kind = "Warning" if reason in c.WARNING_REASONS else "Normal"
        events.append(Transition(kind, reason, str(condition.get("message", ""))))
    return events


def _regression_message(name: str, evaluation: dict[str, Any]) -> str:
    figure = (evaluation.get("figures") or {}).get(name) or {}
    if figure.get("delta") is None:
        return f"{name} regressed after fine-tuning"
    return (
        f"{name} regressed after fine-tuning: base {figure.get('base')}, tuned {figure.get('tuned')}, "
        f"delta {figure['delta']:+.4f} (95% interval {figure.get('low')} to {figure.get('high')})"
    )


# --------------------------------------------------------------------------
# An SFTJob's dataset: is the curation ready, and does it pass the gates?
# --------------------------------------------------------------------------

READY_TO_USE, NOT_YET, UNUSABLE = "ready", "waiting", "unusable"


def curation_readiness(curation: dict[str, Any] | None, name: str) -> tuple[str, str]:
    """(READY_TO_USE | NOT_YET | UNUSABLE, message) for a referenced DatasetCuration."""
    if curation is None:
        return NOT_YET, f"Waiting for DatasetCuration {name}: it does not exist yet"
    conds = (curation.get("status", {}) or {}).get("conditions", []) or []
    if c.is_true(conds, c.FAILED):
        failure = c.get_condition(conds, c.FAILED) or {}
        return UNUSABLE, f"DatasetCuration {name} failed: {failure.get('message') or failure.get('reason')}"
    if c.is_true(conds, c.READY):
        return READY_TO_USE, f"DatasetCuration {name} is Ready"
    phase_ = (curation.get("status", {}) or {}).get("phase") or "Pending"
    return NOT_YET, f"Waiting for DatasetCuration {name} to be Ready (it is {phase_})"
