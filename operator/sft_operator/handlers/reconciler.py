"""The reconciler: what both kinds do with their run, the steps the handler modules call.

Every function here is safe to repeat and safe to run from two places at
once (the CR's own handlers and the Job watcher): children are created or
read back, and status is rewritten from what the cluster shows through
`Kube.update_status` (resourceVersion-guarded). An Event is posted for each
status write that changes the headline condition, so each transition gets
exactly one Event from whoever wrote it.

The spec is parsed once per handler call (`parse_spec`) and handed down;
the Job watcher, which starts from a Job, parses it once per event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import kopf
from pydantic import ValidationError

from .. import conditions as c
from ..api import DatasetCurationSpec, Lifecycle, SFTJobSpec, Spec, spec_of, spec_problems
from ..children import Children
from ..context import Context
from ..events import evaluation_transitions, transition
from ..figures import progress_figures
from ..kube import ForeignChildError, Obj, StatusUpdate
from ..naming import ResourceRef, job_name
from ..pod_reports import report_from_pods
from ..progress_poll import ProgressUnavailable, progress_url, read_progress, reporting_pod
from ..rayjob import RAYJOB_KIND, is_rayjob, ray_job_name, rayjob_run_state, wants_ray
from ..run_state import cluster_run_state, failed, is_finished, job_missing, waiting
from ..run_status import report_missing, run_status, spec_fields

NAME_CONFLICT_RETRY_SECONDS = 5.0

SpecModel = TypeVar("SpecModel", SFTJobSpec, DatasetCurationSpec)


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


def write_status(
    ctx: Context, ref: ResourceRef, change: Callable[[Obj], Obj | None], held: Obj | None = None
) -> StatusUpdate | None:
    """Rewrite the object's status with `change` (skipped for a recreated namesake) and post its Event.

    `held`: the object as the handler holds it, tried before a fresh read (see `Kube.update_status`).
    """

    def guarded(current: Obj) -> Obj | None:
        if current["metadata"].get("uid") != ref.uid or current["metadata"].get("deletionTimestamp"):
            return None
        return change(current)

    update = ctx.kube.update_status(ref.kind, ref.namespace, ref.name, guarded, held)
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
# Before the Job: the spec, waiting, impossible specs, failed gates
# --------------------------------------------------------------------------


def parse_spec(ctx: Context, ref: ResourceRef, model: type[SpecModel], spec: Any) -> SpecModel:
    """The spec as its model, once per handler call; one the operator cannot run fails the object (InvalidSpec)."""
    try:
        return model.model_validate(dict(spec or {}))
    except ValueError as err:  # pydantic's ValidationError is a ValueError
        raise invalid_spec(ctx, ref, err) from err


def wait(
    ctx: Context, ref: ResourceRef, reason: str, message: str, delay: float, record: Obj | None = None
) -> kopf.TemporaryError:
    """Record why the object waits (with `record`'s fields); the caller raises the result so kopf retries after `delay`."""
    write_status(ctx, ref, lambda obj: waiting({**_status(obj), **(record or {})}, reason, message, _generation(obj)))
    return kopf.TemporaryError(message, delay=delay)


def fail(ctx: Context, ref: ResourceRef, reason: str, message: str, record: Obj | None = None) -> None:
    """End the object's run before it has a Job (bad spec, failed dataset or gate), with `record`'s fields."""

    def change(obj: Obj) -> Obj | None:
        status = _status(obj)
        return None if is_finished(status) else failed({**status, **(record or {})}, reason, message, _generation(obj))

    write_status(ctx, ref, change)


def invalid_spec(ctx: Context, ref: ResourceRef, err: ValidationError | ValueError) -> kopf.PermanentError:
    """Record a spec the API server accepted but the operator cannot run; the caller raises the result."""
    problems = spec_problems(err)
    fail(ctx, ref, c.INVALID_SPEC, problems)
    return kopf.PermanentError(problems)


def build(ctx: Context, ref: ResourceRef, children: Callable[[], Children]) -> Children:
    """The children from the builders; what they refuse (a spec they cannot render) fails the object."""
    try:
        return children()
    except (ValidationError, ValueError) as err:
        raise invalid_spec(ctx, ref, err) from err


# --------------------------------------------------------------------------
# The Job: create it, follow it
# --------------------------------------------------------------------------


def start(ctx: Context, body: kopf.Body, spec: Spec, children: Children, held: Obj | None = None) -> None:
    """Make sure the children exist (creating only what is missing), then sync status from the Job.

    `held`: the object as the caller last wrote it, when it wrote since kopf handed over `body`.
    """
    ref = ResourceRef.of(body)
    status = dict(body.get("status") or {})
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
    # The body kopf handed over is current unless something wrote since: no read before the status write.
    sync(ctx, ref, job, spec, held=held or dict(body))


def sync(ctx: Context, ref: ResourceRef, job: Obj, spec: Spec | None = None, held: Obj | None = None) -> None:
    """Rewrite the object's status from its Job (or RayJob) and the pods that report for it.

    `spec` is the parsed spec when the caller has it; the Job watcher has
    not, and the spec read with the object is then parsed once (per
    generation) however often a conflicting write is retried.
    """
    ray = is_rayjob(job)
    pods = ctx.kube.submitter_pods(job) if ray else ctx.kube.pods_of(job)
    run = rayjob_run_state(job, pods) if ray else cluster_run_state(ref.kind, job, pods)
    report = report_from_pods(pods)
    by_generation: dict[int | None, tuple[Spec, Obj]] = {}
    seen: list[Spec] = []  # the spec of the object the status was computed for (its lifecycle: the TTL)

    def parsed(obj: Obj) -> tuple[Spec, Obj]:
        generation = _generation(obj)
        if generation not in by_generation:
            current = spec or spec_of(ref.kind, obj.get("spec") or {})
            by_generation[generation] = (current, spec_fields(current))
        return by_generation[generation]

    def change(obj: Obj) -> Obj | None:
        current, fields = parsed(obj)
        seen.append(current)
        status = _status(obj)
        if is_finished(status) and not report_missing(status):
            return None
        status.update(fields, jobName=job["metadata"]["name"])
        return run_status(ref.kind, status, run, report, _generation(obj))

    write_status(ctx, ref, change, held)
    if run.finished and seen:
        hand_to_ttl(ctx, job, seen[-1].lifecycle)


def hand_to_ttl(ctx: Context, job: Obj, lifecycle: Lifecycle) -> None:
    """Give a finished Job the user's ttlSecondsAfterFinished; call it once status holds what its pods reported.

    Jobs are created without a TTL: with one (0 above all) the TTL controller
    deleted a finished Job, pods first, before the Job watcher had read the
    pod's termination message, and the run ended ReportMissing. The field is
    mutable, so the Job gets it here, after the status write. A RayJob keeps
    the TTL it was created with: it removes only the Ray cluster, while the
    RayJob and its submitter pod (which carries the figures) stay.
    """
    ttl = lifecycle.ttl_seconds_after_finished
    if ttl is None or is_rayjob(job) or job["spec"].get("ttlSecondsAfterFinished") == ttl:
        return
    ctx.kube.patch_job(
        job["metadata"]["namespace"], job["metadata"]["name"], {"spec": {"ttlSecondsAfterFinished": ttl}}
    )


def job_gone(ctx: Context, ref: ResourceRef, job_name: str) -> None:
    """The Job disappeared: a failure unless the run had already finished (TTL) or the owner is going."""

    def change(obj: Obj) -> Obj | None:
        status = _status(obj)
        if is_finished(status) or status.get("jobName") != job_name:
            return None
        return job_missing(status, job_name, _generation(obj))

    write_status(ctx, ref, change)


def apply_lifecycle(ctx: Context, body: kopf.Body, lifecycle: Lifecycle) -> None:
    """Carry a changed spec.lifecycle into the existing Job or RayJob (these fields are mutable in both)."""
    ref = ResourceRef.of(body)
    ray = wants_ray(dict(body.get("spec") or {}))
    # The deterministic name, not status.jobName: a change that lands between
    # the Job's creation and the status write must still reach the Job.
    name = ray_job_name(ref) if ray else job_name(ref)
    job = ctx.kube.read_run(RAYJOB_KIND if ray else "Job", ref.namespace, name)
    if job is None:
        return  # no Job yet (it is built from the new spec), or no more
    if is_finished(dict(body.get("status") or {})):
        hand_to_ttl(ctx, job, lifecycle)  # the TTL is all that still means something to a finished Job
        return
    desired: Obj = {
        "suspend": lifecycle.suspend,
        "activeDeadlineSeconds": lifecycle.active_deadline_seconds,
        "backoffLimit": lifecycle.backoff_limit,
    }
    if ray:
        # A RayJob's TTL (of its Ray cluster) has no unset: 0 is the default. A Job's waits for `hand_to_ttl`.
        desired["ttlSecondsAfterFinished"] = lifecycle.ttl_seconds_after_finished or 0
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
# Progress of a running Job
# --------------------------------------------------------------------------


def poll_progress(ctx: Context, body: kopf.Body, logger: Any) -> None:
    """Copy the rank-0 pod's /progress into status.progress."""
    ref = ResourceRef.of(body)
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
    figures = progress_figures(payload, ref.kind)

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
