"""The status of a custom resource from its run: one function for the operator and `sftctl run`.

Whoever ran the work says where it stands (a `RunState`: from the Job and
its pods, a RayJob, or a local process's exit code) and what it reported (a
`Report`: the termination message of the rank-0 pod, or report.json on this
machine); `run_status` turns the two into the status object. The operator
writes it to the custom resource, `sftctl run` to status.json.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from . import conditions as c
from .api import DatasetCurationSpec, PvcLocation, SFTJobSpec
from .chain import root_lineage
from .figures import figures, has_figures
from .pod_reports import Report, clip
from .run_state import RunState, with_run_state


def run_status(
    kind: str, status: dict[str, Any], run: RunState, report: Report, generation: int | None
) -> dict[str, Any]:
    """`status` with the run's figures, its conditions, and ReviewComplete or EvaluationPassed.

    Figures are taken as soon as a report shows them (on a cluster the Job may
    be deleted by its TTL a moment after it completes); a completed run
    without them is still Succeeded, with reason ReportMissing.
    """
    updated = dict(status)
    if report.report is not None:
        try:
            updated.update(figures(kind, report.report))
        except ValueError as err:  # pydantic's ValidationError is a ValueError
            report = Report(None, f"the report does not match the {kind} status: {err}".splitlines()[0])
    if run.state == c.PHASE_SUCCEEDED and not has_figures(kind, updated):
        message = f"{run.message}, but {report.problem}: figures are unavailable"
        run = replace(run, reason=c.REPORT_MISSING, message=clip(message))
    updated = with_run_state(updated, run, generation)
    if kind == "DatasetCuration":
        return with_review_condition(updated, generation)
    return with_evaluation_condition(updated, generation)


def report_missing(status: dict[str, Any]) -> bool:
    """Succeeded without figures (ReportMissing): a later look at the pods may still find them."""
    succeeded = c.get_condition(status.get("conditions", []) or [], c.SUCCEEDED) or {}
    return succeeded.get("status") == "True" and succeeded.get("reason") == c.REPORT_MISSING


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
        list(status.get("conditions", [])), c.EVALUATION_PASSED, passed, reason, clip(message), generation
    )
    return {**status, "conditions": conds}


def output_location(location: PvcLocation) -> str:
    """`pvc://CLAIM/PATH`, the form status.outputLocation uses."""
    return f"pvc://{location.claim_name}" + ("" if location.path in ("", ".") else f"/{location.path}")


def spec_fields(spec: DatasetCurationSpec | SFTJobSpec) -> dict[str, Any]:
    """Status fields that follow from the spec alone (outputLocation, curationName, a root job's lineage).

    Every status write that names the Job carries them, so no reader ever
    sees status.jobName without them, whichever handler wrote first.
    """
    fields: dict[str, Any] = {"outputLocation": output_location(spec.output.pvc)}
    if isinstance(spec, DatasetCurationSpec):
        return fields
    if spec.dataset.curation_ref is not None:
        fields["curationName"] = spec.dataset.curation_ref.name
    if spec.model.sft_job_ref is None:  # a chained job's lineage comes from its parent (chain.lineage_of)
        fields["lineage"] = root_lineage(spec)
    return fields
