"""Label Studio review on a cluster: from finished annotations to a review-apply Job, and back to status.

The flow, one timer tick at a time (`sync`):

1. The token comes from the Secret that `spec.review.labelStudio.tokenSecretRef`
   names, read at each tick and kept nowhere: never in status, Events or logs
   (`LabelStudioError` messages name the URL and the HTTP status, never headers).
2. The project's tasks are exported; each task's newest finished annotation
   becomes a decision (`decisions_from_tasks`, pure). Unknown choice values
   (a labeling config edited by hand), an edit without text, tasks deleted
   after they were decided: reported in `status.labelStudio.problems`, never
   applied.
3. The decisions go into the ConfigMap of a review-apply Job whose name is a
   hash of them (`review_apply_name`): the same annotations give the same Job,
   so polling creates nothing twice. The pod appends the decisions the log
   lacks, applies them atomically, and imports the records still pending as
   tasks (keyed on source_index + record_hash, so a re-run duplicates none;
   the first Job, with no decisions, creates the project and its tasks).
4. The Job's termination message (the report's `status`) becomes
   `status.review` and the ReviewComplete condition, as the curation's does.

Label Studio unreachable or the token refused: condition LabelStudioSynced
False with the reason, and the tick is retried with back-off; nothing was
appended, so nothing is applied twice.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from kubernetes.client.exceptions import ApiException

from sft_trainer.config import (
    CHOICES,
    DECISION_CONTROL,
    EDIT_CONTROL,
    NOTE_CONTROL,
    LabelStudioClient,
    LabelStudioError,
)

from . import conditions as c
from .figures import curation_figures
from .kube import Kube
from .pod_reports import report_from_pods
from .run_state import job_run_state
from .run_status import with_review_condition

LABEL_STUDIO_SYNCED = "LabelStudioSynced"
SYNCED, APPLYING, APPLY_FAILED, NO_SECRET = "Synced", "ApplyingDecisions", "ApplyJobFailed", "TokenSecretMissing"
BACKOFF_BASE_SECONDS, BACKOFF_MAX_SECONDS = 10.0, 300.0
MAX_PROBLEMS = 10


def backoff_seconds(retry: int) -> float:
    """10 s, 20 s, 40 s ... at most 5 minutes between tries after a failure."""
    return float(min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** min(retry, 10)))


def wants_sync(status: dict[str, Any], spec: dict[str, Any]) -> bool:
    """A succeeded curation with held records (status.review) and Label Studio configured."""
    studio = (spec.get("review") or {}).get("labelStudio")
    succeeded = c.is_true(status.get("conditions", []) or [], c.SUCCEEDED)
    return bool(studio and succeeded and status.get("review"))


def token_from_secret(secret: dict[str, Any], key: str) -> str:
    """The token in a Secret object (base64 `data`, or `stringData` as a test may leave it)."""
    encoded = (secret.get("data") or {}).get(key)
    if encoded is None:
        raise LabelStudioError(NO_SECRET, f"Secret {secret['metadata']['name']} has no key {key}")
    return base64.b64decode(encoded).decode().strip()


# --------------------------------------------------------------------------
# Annotations -> decisions (pure)
# --------------------------------------------------------------------------


def _reviewer(annotation: dict[str, Any]) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        return str(who.get("email") or who.get("username") or f"labelstudio-user-{who.get('id')}")
    return f"labelstudio-user-{who}"


def _values(annotation: dict[str, Any]) -> dict[str, Any]:
    """from_name -> the value of that control (choices list or text list)."""
    out: dict[str, Any] = {}
    for region in annotation.get("result") or []:
        value = region.get("value") or {}
        if "choices" in value:
            out[region.get("from_name")] = value["choices"]
        elif "text" in value:
            text = value["text"]
            out[region.get("from_name")] = "\n".join(text) if isinstance(text, list) else str(text)
    return out


def decision_from_annotation(data: dict[str, Any], annotation: dict[str, Any]) -> dict[str, Any] | str:
    """The review_decisions.jsonl line one annotation stands for, or the problem that stops it."""
    where = f"task {data.get('key')}"
    values = _values(annotation)
    choices = values.get(DECISION_CONTROL) or []
    if len(choices) != 1:
        return (
            f"{where}: annotation {annotation.get('id')} has {len(choices)} choices for '{DECISION_CONTROL}', needs 1"
        )
    verdict = CHOICES.get(choices[0])
    if verdict is None:
        known = ", ".join(CHOICES)
        return f"{where}: annotation {annotation.get('id')} chose unknown value {choices[0]!r} (known: {known})"
    decision: dict[str, Any] = {
        "source_index": int(data["source_index"]),
        "record_hash": str(data["record_hash"]),
        "decision": verdict,
        "reviewer": _reviewer(annotation),
        "time": str(annotation.get("updated_at") or annotation.get("created_at") or ""),
    }
    note = str(values.get(NOTE_CONTROL) or "").strip()
    if note:
        decision["note"] = note
    if verdict == "edit":
        edited = str(values.get(EDIT_CONTROL) or "")
        if not edited.strip():
            return f"{where}: annotation {annotation.get('id')} keeps an edited response but gives no text"
        decision["edited_response"] = edited
    return decision


def decisions_from_tasks(tasks: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """One decision per task with a finished annotation (the newest one wins), and the problems met, in order."""
    decisions: list[dict[str, Any]] = []
    problems: list[str] = []
    for task in sorted(tasks, key=lambda t: int((t.get("data") or {}).get("source_index", -1))):
        data = task.get("data") or {}
        if "source_index" not in data or "record_hash" not in data:
            problems.append(f"task {task.get('id')}: not a review task (no source_index/record_hash in its data)")
            continue
        finished = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
        if not finished:
            continue
        newest = max(finished, key=lambda a: (str(a.get("updated_at") or ""), int(a.get("id") or 0)))
        made = decision_from_annotation(data, newest)
        if isinstance(made, str):
            problems.append(made)
        else:
            decisions.append(made)
    return decisions, problems


def deleted_problems(previous: dict[str, Any], decided_now: int) -> list[str]:
    """Fewer decided tasks than the last tick: tasks were deleted by hand. Their decisions stay in the log
    (applied, nothing lost); a deleted task still pending is imported again by the next review-apply Job."""
    gone = int(previous.get("decisions") or 0) - decided_now
    earlier = [p for p in previous.get("problems", []) if "deleted in Label Studio" in p]
    if gone <= 0:
        return earlier
    return [
        *earlier,
        f"{gone} decided tasks disappeared from the project (deleted in Label Studio): their decisions stay applied",
    ]


def digest(decisions: list[dict[str, Any]]) -> str:
    """A short fingerprint of the decisions, to tell new annotations from the ones a Job already has."""
    canonical = json.dumps(decisions, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def read_secret(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    """The Secret as a dict (only `get` on secrets: the chart grants nothing more); None when it does not exist."""
    try:
        response = kube.core.read_namespaced_secret(name, namespace, _preload_content=False)
    except ApiException as err:
        if err.status == 404:
            return None
        raise
    secret: dict[str, Any] = json.loads(response.data)
    return secret


def fetch_decisions(
    client: LabelStudioClient, project_title: str
) -> tuple[int | None, list[dict[str, Any]], list[str]]:
    """(project id, decisions, problems); no project yet: (None, [], [])."""
    project = client.find_project(project_title)
    if project is None:
        return None, [], []
    decisions, problems = decisions_from_tasks(client.export_tasks(project))
    return project, decisions, problems


# --------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------


def with_sync_condition(
    status: dict[str, Any], ok: bool, reason: str, message: str, generation: int | None
) -> dict[str, Any]:
    conds = c.set_condition(list(status.get("conditions", [])), LABEL_STUDIO_SYNCED, ok, reason, message, generation)
    return {**status, "conditions": conds}


def with_apply_result(
    status: dict[str, Any], job: dict[str, Any], pods: list[dict[str, Any]], generation: int | None
) -> dict[str, Any]:
    """Merge a succeeded review-apply pod's report (`status.review` and the counts) and ReviewComplete."""
    found = report_from_pods(pods)
    if found.report is None:
        return status
    merged = {**status, **curation_figures(found.report)}
    return with_review_condition(merged, generation)


def applied(status: dict[str, Any], apply_job: str) -> bool:
    """Whether status already holds the result of the review-apply Job `apply_job` (Synced by it)."""
    synced = c.get_condition(status.get("conditions", []) or [], LABEL_STUDIO_SYNCED) or {}
    by_it = (status.get("labelStudio") or {}).get("applyJob") == apply_job
    return by_it and synced.get("status") == "True" and synced.get("reason") == SYNCED


def job_outcome(job: dict[str, Any] | None) -> str:
    """'missing', 'running', 'succeeded' or 'failed' for a batch/v1 Job."""
    if job is None:
        return "missing"
    state = job_run_state(job).state  # the Job read as every run's Job is
    return {c.PHASE_SUCCEEDED: "succeeded", c.PHASE_FAILED: "failed"}.get(state, "running")
