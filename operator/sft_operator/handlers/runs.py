"""What both kinds do with their Job: the steps the handler modules call.

Every function here is safe to repeat and safe to run from two places at
once (the CR's own handlers and the Job watcher): children are created or
read back, and status is rewritten from what the cluster shows through
`Kube.update_status` (resourceVersion-guarded). An Event is posted for each
status write that changes the headline condition, so each transition gets
exactly one Event from whoever wrote it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import kopf
from pydantic import ValidationError

from .. import conditions as c
from ..api import Lifecycle
from ..kube import ForeignChildError, Kube, Obj, StatusUpdate
from ..manifests import Children, Owner, job_name
from ..metrics import OperatorMetrics
from ..progress_poll import ProgressUnavailable, progress_url, read_progress, reporting_pod
from ..rayjob import RAYJOB_KIND, is_rayjob, ray_job_name, rayjob_run_state, wants_ray
from ..settings import OperatorSettings
from ..status import (
    evaluation_transitions,
    failed,
    fields_from_spec,
    is_finished,
    job_missing,
    observe_job,
    observe_run,
    progress_figures,
    transition,
    waiting,
)

# kopf fixes a timer's interval when it registers the handler, so this one
# setting is read at import (the startup handler reads the same variables).
PROGRESS_POLL_SECONDS = OperatorSettings.from_env().progress_poll_seconds

NAME_CONFLICT_RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class Context:
    """Everything a handler needs, built once by the startup handler (kept in kopf's memo)."""

    settings: OperatorSettings
    kube: Kube
    metrics: OperatorMetrics


def context(memo: kopf.Memo) -> Context:
    ctx = memo.get("ctx")
    if not isinstance(ctx, Context):
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return ctx


@dataclass(frozen=True)
class Ref:
    """Which custom resource (this very one: the uid tells a recreated namesake apart)."""

    kind: str
    namespace: str
    name: str
    uid: str

    @classmethod
    def of(cls, body: kopf.Body | Obj) -> Ref:
        meta = body["metadata"]
        return cls(body["kind"], meta["namespace"], meta["name"], meta["uid"])


@contextmanager
def instrumented(ctx: Context, kind: str, handler: str, body: kopf.Body | Obj) -> Iterator[None]:
    """Count and time a handler; an unexpected error becomes a Warning Event on the object."""
    try:
        with ctx.metrics.timed(kind, handler, waiting=(kopf.TemporaryError,)):
            yield
    except (kopf.TemporaryError, kopf.PermanentError):
        raise
    except Exception as err:
        post(body, "Warning", "ReconcileError", f"{handler} failed, will retry: {err}")
        raise


def post(body: kopf.Body | Obj, type_: str, reason: str, message: str) -> None:
    # kopf reads only apiVersion, kind and metadata from it: a wire dict does as well as a Body.
    kopf.event(cast(kopf.Body, body), type=type_, reason=reason, message=message)


def write_status(ctx: Context, ref: Ref, change: Callable[[Obj], Obj | None]) -> StatusUpdate | None:
    """Rewrite the object's status with `change` (skipped for a recreated namesake) and post its Event."""

    def guarded(current: Obj) -> Obj | None:
        if current["metadata"].get("uid") != ref.uid or current["metadata"].get("deletionTimestamp"):
            return None
        return change(current)

    update = ctx.kube.update_status(ref.kind, ref.namespace, ref.name, guarded)
    if update is not None:
        event = transition(update.before.get("status") or {}, update.after.get("status") or {})
        if event is not None:
            post(update.after, event.type, event.reason, event.message)
        for extra in evaluation_transitions(update.before.get("status") or {}, update.after.get("status") or {}):
            post(update.after, extra.type, extra.reason, extra.message)
    return update


def _status(obj: Obj) -> Obj:
    return dict(obj.get("status") or {})


def _generation(obj: Obj) -> int | None:
    generation = obj["metadata"].get("generation")
    return int(generation) if generation is not None else None


# --------------------------------------------------------------------------
# Before the Job: waiting, impossible specs, failed gates
# --------------------------------------------------------------------------


def wait(ctx: Context, ref: Ref, reason: str, message: str, delay: float) -> kopf.TemporaryError:
    """Record why the object waits; the caller raises the returned error so kopf retries after `delay`."""
    write_status(ctx, ref, lambda obj: waiting(_status(obj), reason, message, _generation(obj)))
    return kopf.TemporaryError(message, delay=delay)


def fail(ctx: Context, ref: Ref, reason: str, message: str) -> None:
    """End the object's run before it has a Job (bad spec, failed dataset or gate)."""
    write_status(
        ctx,
        ref,
        lambda obj: None if is_finished(_status(obj)) else failed(_status(obj), reason, message, _generation(obj)),
    )


def invalid_spec(ctx: Context, ref: Ref, err: ValidationError | ValueError) -> kopf.PermanentError:
    """Record a spec the API server accepted but the operator cannot run; the caller raises the result."""
    if isinstance(err, ValidationError):
        problems = "; ".join(
            f"spec.{'.'.join(str(p) for p in problem['loc'])}: {problem['msg']}" for problem in err.errors()
        )
    else:
        problems = str(err)
    fail(ctx, ref, c.INVALID_SPEC, problems)
    return kopf.PermanentError(problems)


# --------------------------------------------------------------------------
# The Job: create it, follow it
# --------------------------------------------------------------------------


def start(ctx: Context, body: kopf.Body, build: Callable[[], Children]) -> None:
    """Make sure the children exist (creating only what is missing), then sync status from the Job."""
    ref = Ref.of(body)
    status = dict(body.get("status") or {})
    if is_finished(status):
        return  # a finished run is never started again (its Job may be gone by TTL)
    try:
        children = build()
    except (ValidationError, ValueError) as err:
        raise invalid_spec(ctx, ref, err) from err
    # The run is a Job or, for a curation on Ray, a RayJob (children.job either way).
    if status.get("jobName") and ctx.kube.read_run(children.job["kind"], ref.namespace, status["jobName"]) is None:
        job_gone(ctx, ref, status["jobName"])
        return
    job: Obj = {}
    for child in children.all():
        try:
            ensured = ctx.kube.ensure_child(child)
        except ForeignChildError as err:
            raise wait(ctx, ref, c.NAME_CONFLICT, f"{err}; waiting for it to go", NAME_CONFLICT_RETRY_SECONDS) from err
        if ensured.created:
            post(body, "Normal", "Created", f"Created {child['kind']} {child['metadata']['name']}")
        if child is children.job:
            job = ensured.obj
    sync(ctx, ref, job)


def sync(ctx: Context, ref: Ref, job: Obj) -> None:
    """Rewrite the object's status from its Job (or RayJob) and the pods that report for it."""
    ray = is_rayjob(job)
    pods = ctx.kube.submitter_pods(job) if ray else ctx.kube.pods_of(job)

    def change(obj: Obj) -> Obj | None:
        status = _status(obj)
        if is_finished(status) and not _report_missing(status):
            return None
        status.update(fields_from_spec(ref.kind, dict(obj.get("spec") or {})))
        if ray:
            run = rayjob_run_state(job, pods)
            return observe_run(ref.kind, status, run, job["metadata"]["name"], pods, _generation(obj))
        return observe_job(ref.kind, status, job, pods, _generation(obj))

    write_status(ctx, ref, change)


def _report_missing(status: Obj) -> bool:
    succeeded = c.get_condition(status.get("conditions", []) or [], c.SUCCEEDED) or {}
    return succeeded.get("status") == "True" and succeeded.get("reason") == c.REPORT_MISSING


def job_gone(ctx: Context, ref: Ref, job_name: str) -> None:
    """The Job disappeared: a failure unless the run had already finished (TTL) or the owner is going."""

    def change(obj: Obj) -> Obj | None:
        status = _status(obj)
        if is_finished(status) or status.get("jobName") != job_name:
            return None
        return job_missing(status, job_name, _generation(obj))

    write_status(ctx, ref, change)


def apply_lifecycle(ctx: Context, body: kopf.Body, lifecycle: Lifecycle) -> None:
    """Carry a changed spec.lifecycle into the existing Job or RayJob (these fields are mutable in both)."""
    ref = Ref.of(body)
    ray = wants_ray(dict(body.get("spec") or {}))
    # The deterministic name, not status.jobName: a change that lands between
    # the Job's creation and the status write must still reach the Job.
    owner = Owner.of(dict(body))
    name = ray_job_name(owner) if ray else job_name(owner)
    job = ctx.kube.read_run(RAYJOB_KIND if ray else "Job", ref.namespace, name)
    if job is None or is_finished(dict(body.get("status") or {})):
        return  # no Job yet (it is built from the new spec) or nothing left to change
    desired = {
        "suspend": lifecycle.suspend,
        "activeDeadlineSeconds": lifecycle.active_deadline_seconds,
        # A RayJob's TTL (of its Ray cluster) has no unset: 0 is the default.
        "ttlSecondsAfterFinished": (lifecycle.ttl_seconds_after_finished or 0)
        if ray
        else lifecycle.ttl_seconds_after_finished,
        "backoffLimit": lifecycle.backoff_limit,
    }
    changes = {key: value for key, value in desired.items() if job["spec"].get(key) != value}
    if not changes:
        return
    job = ctx.kube.patch_run(job["kind"], ref.namespace, name, {"spec": changes})
    post(body, "Normal", *_lifecycle_event(f"{job['kind']} {name}", changes))
    sync(ctx, ref, job)


def _lifecycle_event(run: str, changes: Obj) -> tuple[str, str]:
    """`run` is `Job NAME` or `RayJob NAME`."""
    if set(changes) == {"suspend"}:
        return ("Suspended", f"Suspended {run}") if changes["suspend"] else ("Resumed", f"Resumed {run}")
    listed = ", ".join(f"{key}={'unset' if value is None else value}" for key, value in sorted(changes.items()))
    return "Updated", f"Updated {run}: {listed}"


# --------------------------------------------------------------------------
# Progress of a running SFTJob
# --------------------------------------------------------------------------


def is_running(status: kopf.Status, **_: Any) -> bool:
    """The progress timers' filter: only a running Job has a pod to ask."""
    return bool(status.get("phase") == "Running")


def poll_progress(ctx: Context, body: kopf.Body, logger: Any) -> None:
    """Copy the rank-0 pod's /progress into status.progress."""
    ref = Ref.of(body)
    job_name = (body.get("status") or {}).get("jobName")
    kind = RAYJOB_KIND if wants_ray(dict(body.get("spec") or {})) else "Job"
    job = ctx.kube.read_run(kind, ref.namespace, job_name) if job_name else None
    # On Ray the driver, which serves /progress, runs on the head pod.
    pods = (ctx.kube.ray_head_pods(job) if kind == RAYJOB_KIND else ctx.kube.pods_of(job)) if job else []
    pod = reporting_pod(pods)
    url = progress_url(pod) if pod else None
    if url is None:
        return
    try:
        payload = read_progress(url, ctx.settings.progress_timeout_seconds)
    except ProgressUnavailable as err:
        ctx.metrics.progress_polls.labels("unavailable").inc()
        logger.info(f"No progress from pod {pod['metadata']['name'] if pod else '?'}: {err}")
        return
    ctx.metrics.progress_polls.labels("ok").inc()
    figures = progress_figures(payload, body.get("kind", "SFTJob"))

    def change(obj: Obj) -> Obj | None:
        status = _status(obj)
        return None if is_finished(status) else {**status, "progress": figures}

    write_status(ctx, ref, change)


# --------------------------------------------------------------------------
# Spec changes that cannot reach a started Job
# --------------------------------------------------------------------------


def ignored_changes(diff: kopf.Diff) -> list[str]:
    """Dotted spec paths changed outside spec.lifecycle (the only part a started Job takes)."""
    paths: list[str] = []
    for item in diff:
        parts = [str(part) for part in item[1]]
        if parts[:1] != ["spec"]:
            parts = ["spec", *parts]
        if parts[:2] != ["spec", "lifecycle"]:
            paths.append(".".join(parts))
    return sorted(set(paths))


def warn_ignored_changes(body: kopf.Body, diff: kopf.Diff) -> None:
    status = dict(body.get("status") or {})
    paths = ignored_changes(diff)
    if not paths or not status.get("jobName"):
        return  # nothing ignored, or no Job yet: it will be built from the new spec
    message = (
        f"Ignored change to {', '.join(paths)}: Job {status['jobName']} already exists and its pod template "
        "is immutable; create a new object to run with it"
    )
    post(body, "Warning", "SpecChangeIgnored", message)
