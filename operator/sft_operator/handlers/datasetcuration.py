"""DatasetCuration: a Job running `python -m sft_trainer curate`, its progress and figures copied into status;
then, with spec.review.labelStudio, the review timer (see `sft_operator.labelstudio`).

What it shares with SFTJob (lifecycle, spec drift, progress) is registered
once for both kinds in `handlers.both_kinds`.
"""

from __future__ import annotations

from typing import Any

import kopf

from sft_trainer.config import LabelStudioClient, LabelStudioError

from .. import conditions as c
from .. import labelstudio as ls
from ..api import GROUP, VERSION, DatasetCurationSpec
from ..children import curation_children, review_apply_children
from ..context import PROGRESS_POLL_SECONDS, Context, context
from ..kube import Obj
from ..naming import ResourceRef
from ..pod_reports import last_pod_failure
from ..pods import job
from ..rayjob import RAY_GROUP, RAY_VERSION, RAYJOB_PLURAL, engine_unavailable_message, ray_job
from ..run_state import is_finished
from . import reconciler as r

KIND, PLURAL = "DatasetCuration", "datasetcurations"
# Label Studio is polled as often as pod progress (the operator's progressPollSeconds setting).
LABEL_STUDIO_POLL_SECONDS = PROGRESS_POLL_SECONDS
# How often a curation on Ray checks again for KubeRay's CRD (installing KubeRay later starts it).
ENGINE_RETRY_SECONDS = 30.0


@kopf.on.resume(GROUP, VERSION, PLURAL, id="reconcile", backoff=5)
@kopf.on.create(GROUP, VERSION, PLURAL, id="reconcile", backoff=5)
def reconcile(body: kopf.Body, spec: kopf.Spec, memo: kopf.Memo, **_: Any) -> None:
    """Create the ConfigMap and Job (or RayJob), or find them, then follow the run."""
    ctx = context(memo)
    ref = ResourceRef.of(body)
    with r.instrumented(ctx, KIND, "reconcile", body):
        parsed = r.parse_spec(ctx, ref, DatasetCurationSpec, spec)
        if is_finished(dict(body.get("status") or {})):
            return  # a finished run is never started again (its Job or RayJob may be gone by TTL)
        on_ray = parsed.engine.type == "ray"
        if on_ray and not ctx.kube.serves(RAY_GROUP, RAY_VERSION, RAYJOB_PLURAL):
            raise r.wait(ctx, ref, c.ENGINE_UNAVAILABLE, engine_unavailable_message(), ENGINE_RETRY_SECONDS)
        runner = ray_job if on_ray else job
        children = r.build(ctx, ref, lambda: curation_children(ref, parsed, ctx.settings, runner=runner))
        r.start(ctx, body, parsed, children)


def _wants_label_studio(status: kopf.Status, spec: kopf.Spec, **_: Any) -> bool:
    return ls.wants_sync(dict(status), dict(spec))


@kopf.timer(GROUP, VERSION, PLURAL, id="label-studio", interval=LABEL_STUDIO_POLL_SECONDS, when=_wants_label_studio)
def sync_label_studio(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """Poll the Label Studio project; new finished annotations -> a review-apply Job; its result -> status."""
    ctx = context(memo)
    with r.instrumented(ctx, KIND, "label-studio", body):
        try:
            sync_review(ctx, dict(body))
        except LabelStudioError as err:  # the message names the URL and the HTTP status, never the token
            reason, message = err.reason, str(err)
            r.write_status(
                ctx,
                ResourceRef.of(body),
                lambda obj: ls.with_sync_condition(_status(obj), False, reason, message, None),
            )
            delay = ls.backoff_seconds(int(kwargs.get("retry") or 0))
            raise kopf.TemporaryError(f"{reason}: {message}", delay=delay) from None


def _status(obj: Obj) -> Obj:
    return dict(obj.get("status") or {})


def sync_review(ctx: Context, body: Obj) -> None:
    spec = DatasetCurationSpec.model_validate(body["spec"])
    studio = spec.review.label_studio if spec.review else None
    if studio is None:
        return
    ref = ResourceRef.of(body)
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
    children = review_apply_children(ref, spec, ctx.settings, decisions, attempt)
    name = children.job["metadata"]["name"]
    job = ctx.kube.read_job(ref.namespace, name)
    if job is None and ls.applied(dict(body.get("status") or {}), name):
        return  # these decisions are in status, and their Job was since deleted by its TTL: nothing to run again
    if job is None:
        for child in children.all():
            if ctx.kube.ensure_child(child).created:
                r.post(body, "Normal", "Created", f"Created {child['kind']} {child['metadata']['name']}")
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

    r.write_status(ctx, ref, change)
    if job is not None and outcome in ("succeeded", "failed"):
        r.hand_to_ttl(ctx, job, spec.lifecycle)
