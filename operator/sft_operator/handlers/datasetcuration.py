"""DatasetCuration: a Job running `python -m sft_trainer curate`, its progress and figures copied into status;
then, with spec.review.labelStudio, the review timer (see `sft_operator.labelstudio`)."""

from __future__ import annotations

from typing import Any

import kopf

from sft_trainer.config import LabelStudioClient, LabelStudioError

from .. import conditions as c
from .. import labelstudio as ls
from ..api import GROUP, VERSION, DatasetCurationSpec, Lifecycle
from ..kube import Obj
from ..manifests import curation_children, review_apply_children
from ..rayjob import RAY_GROUP, RAY_VERSION, RAYJOB_PLURAL, engine_unavailable_message, ray_job
from ..status import is_finished, last_pod_failure
from . import runs

KIND, PLURAL = "DatasetCuration", "datasetcurations"
# Label Studio is polled as often as pod progress (the operator's progressPollSeconds setting).
LABEL_STUDIO_POLL_SECONDS = runs.PROGRESS_POLL_SECONDS
# How often a curation on Ray checks again for KubeRay's CRD (installing KubeRay later starts it).
ENGINE_RETRY_SECONDS = 30.0


@kopf.on.resume(GROUP, VERSION, PLURAL, id="reconcile", backoff=5)
@kopf.on.create(GROUP, VERSION, PLURAL, id="reconcile", backoff=5)
def reconcile(body: kopf.Body, spec: kopf.Spec, memo: kopf.Memo, **_: Any) -> None:
    """Create the ConfigMap and Job (or find them), then follow the Job."""
    ctx = runs.context(memo)
    with runs.instrumented(ctx, KIND, "reconcile", body):
        try:
            parsed = DatasetCurationSpec.model_validate(dict(spec))
        except ValueError as err:  # pydantic's ValidationError is a ValueError
            raise runs.invalid_spec(ctx, runs.Ref.of(body), err) from err
        on_ray = parsed.engine.type == "ray"
        if on_ray and not _ray_available(ctx, body):
            message = engine_unavailable_message()
            raise runs.wait(ctx, runs.Ref.of(body), c.ENGINE_UNAVAILABLE, message, ENGINE_RETRY_SECONDS)
        runner = ray_job if on_ray else None
        runs.start(ctx, body, lambda: curation_children(dict(body), ctx.settings, runner=runner))


def _ray_available(ctx: runs.Context, body: kopf.Body) -> bool:
    """KubeRay's RayJob CRD is served (a finished run needs nothing: its RayJob may be gone)."""
    return is_finished(dict(body.get("status") or {})) or ctx.kube.serves(RAY_GROUP, RAY_VERSION, RAYJOB_PLURAL)


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec.lifecycle", id="lifecycle", backoff=5)
def lifecycle_changed(body: kopf.Body, new: Any, memo: kopf.Memo, **_: Any) -> None:
    """Suspend/resume, deadline, TTL and retries apply to the running Job."""
    ctx = runs.context(memo)
    with runs.instrumented(ctx, KIND, "lifecycle", body):
        runs.apply_lifecycle(ctx, body, Lifecycle.model_validate(dict(new or {})))


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", id="spec-drift")
def spec_changed(body: kopf.Body, diff: kopf.Diff, **_: Any) -> None:
    """A started Job's pod template is immutable: say so rather than drift silently."""
    runs.warn_ignored_changes(body, diff)


@kopf.timer(GROUP, VERSION, PLURAL, id="progress", interval=runs.PROGRESS_POLL_SECONDS, when=runs.is_running)
def poll_progress(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    """Copy the curation pod's /progress into status.progress while the Job runs."""
    ctx = runs.context(memo)
    with runs.instrumented(ctx, KIND, "progress", body):
        runs.poll_progress(ctx, body, logger)


def _wants_label_studio(status: kopf.Status, spec: kopf.Spec, **_: Any) -> bool:
    return ls.wants_sync(dict(status), dict(spec))


@kopf.timer(GROUP, VERSION, PLURAL, id="label-studio", interval=LABEL_STUDIO_POLL_SECONDS, when=_wants_label_studio)
def sync_label_studio(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """Poll the Label Studio project; new finished annotations -> a review-apply Job; its result -> status."""
    ctx = runs.context(memo)
    with runs.instrumented(ctx, KIND, "label-studio", body):
        try:
            sync_review(ctx, dict(body))
        except LabelStudioError as err:  # the message names the URL and the HTTP status, never the token
            reason, message = err.reason, str(err)
            runs.write_status(
                ctx, runs.Ref.of(body), lambda obj: ls.with_sync_condition(_status(obj), False, reason, message, None)
            )
            delay = ls.backoff_seconds(int(kwargs.get("retry") or 0))
            raise kopf.TemporaryError(f"{reason}: {message}", delay=delay) from None


def _status(obj: Obj) -> Obj:
    return dict(obj.get("status") or {})


def sync_review(ctx: runs.Context, body: Obj) -> None:
    studio = ls.label_studio_spec(body["spec"])
    if studio is None:
        return
    ref = runs.Ref.of(body)
    secret_ref = studio.token_secret_ref
    secret = ls.read_secret(ctx.kube, ref.namespace, secret_ref.name)
    if secret is None:
        raise LabelStudioError(ls.NO_SECRET, f"Secret {secret_ref.name} (spec.review.labelStudio) does not exist")
    client = LabelStudioClient(studio.url, ls.token_from_secret(secret, secret_ref.key))
    project, decisions, problems = ls.fetch_decisions(client, studio.project)
    before = dict((body.get("status") or {}).get("labelStudio") or {})
    # The same decisions keep their count of failed Jobs; new decisions start again at 0.
    digest = ls.digest(decisions)
    attempt = int(before.get("attempt") or 0) if before.get("digest") == digest else 0
    children = review_apply_children(body, ctx.settings, decisions, attempt)
    name = children.job["metadata"]["name"]
    job = ctx.kube.read_job(ref.namespace, name)
    if job is None:
        for child in children.all():
            if ctx.kube.ensure_child(child).created:
                runs.post(body, "Normal", "Created", f"Created {child['kind']} {child['metadata']['name']}")
        job = ctx.kube.read_job(ref.namespace, name)
    outcome = ls.job_outcome(job)
    pods = ctx.kube.pods_of(job) if job is not None and outcome != "running" else []

    def change(obj: Obj) -> Obj | None:
        status = _status(obj)
        generation = obj["metadata"].get("generation")
        previous = status.get("labelStudio") or {}
        said = problems + ls.deleted_problems(previous, len(decisions))
        status["labelStudio"] = {
            "project": project,
            "decisions": len(decisions),
            "digest": digest,
            "applyJob": name,
            "attempt": attempt + 1 if outcome == "failed" else attempt,
            "problems": said[: ls.MAX_PROBLEMS],
        }
        if outcome == "succeeded" and job is not None:
            status = ls.with_apply_result(status, job, pods, generation)
            return ls.with_sync_condition(status, True, ls.SYNCED, f"{len(decisions)} decisions applied", generation)
        if outcome == "failed":
            message = last_pod_failure(pods) or f"Job {name} failed"
            return ls.with_sync_condition(status, False, ls.APPLY_FAILED, f"{message}; retrying", generation)
        return ls.with_sync_condition(
            status, False, ls.APPLYING, f"Job {name} applies {len(decisions)} decisions", generation
        )

    runs.write_status(ctx, ref, change)


@kopf.index(GROUP, VERSION, PLURAL, id="datasetcuration_status")
def datasetcuration_status(namespace: str | None, name: str, status: kopf.Status, **_: Any) -> dict[Any, Any]:
    """(namespace, name) -> status, read by the metrics collector at scrape time."""
    return {(namespace, name): dict(status)}
