"""SFTJob: waits for its dataset, checks the quality gates, runs the trainer's Job, reports progress."""

from __future__ import annotations

from typing import Any

import kopf

from .. import conditions as c
from ..api import GROUP, VERSION, Lifecycle, SFTJobSpec
from ..manifests import training_children
from ..status import NOT_YET, UNUSABLE, curation_readiness, gate_failures, review_wait
from . import runs
from .runs import PROGRESS_POLL_SECONDS

KIND, PLURAL = "SFTJob", "sftjobs"


@kopf.on.resume(GROUP, VERSION, PLURAL, id="reconcile", backoff=5)
@kopf.on.create(GROUP, VERSION, PLURAL, id="reconcile", backoff=5)
def reconcile(body: kopf.Body, spec: kopf.Spec, memo: kopf.Memo, **_: Any) -> None:
    """Wait for the dataset, check the gates, then create the children (or find them)."""
    ctx = runs.context(memo)
    ref = runs.Ref.of(body)
    with runs.instrumented(ctx, KIND, "reconcile", body):
        try:
            parsed = SFTJobSpec.model_validate(dict(spec))
        except ValueError as err:
            raise runs.invalid_spec(ctx, ref, err) from err
        curation = ready_curation(ctx, ref, parsed) if parsed.dataset.curation_ref else None
        if parsed.dataset.curation_ref and curation is None:
            return  # the dataset failed or missed a gate: status says which
        runs.start(ctx, body, lambda: training_children(dict(body), ctx.settings, curation))


def ready_curation(ctx: runs.Context, ref: runs.Ref, spec: SFTJobSpec) -> dict[str, Any] | None:
    """The referenced DatasetCuration once Ready and through the gates; None after failing the job."""
    assert spec.dataset.curation_ref is not None
    name = spec.dataset.curation_ref.name
    curation = ctx.kube.read_custom("DatasetCuration", ref.namespace, name)
    state, message = curation_readiness(curation, name)
    if state == NOT_YET:
        raise runs.wait(ctx, ref, c.WAITING_FOR_DATASET, message, ctx.settings.dataset_wait_seconds)
    if state == UNUSABLE:
        runs.fail(ctx, ref, c.DATASET_FAILED, message)
        return None
    assert curation is not None
    gates = spec.dataset.gates.to_wire() if spec.dataset.gates else None
    failures = gate_failures(gates, curation.get("status") or {})
    if failures:
        runs.fail(ctx, ref, c.QUALITY_GATE_FAILED, f"DatasetCuration {name} failed " + "; ".join(failures))
        return None
    waiting = review_wait(gates, curation.get("status") or {}, name)
    if waiting:  # retried until the count drops: the job then starts by itself
        raise runs.wait(ctx, ref, c.WAITING_FOR_REVIEW, waiting, ctx.settings.dataset_wait_seconds)
    return curation


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


@kopf.timer(GROUP, VERSION, PLURAL, id="progress", interval=PROGRESS_POLL_SECONDS, when=runs.is_running)
def poll_progress(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    """Copy the rank-0 pod's /progress into status.progress while the Job runs."""
    ctx = runs.context(memo)
    with runs.instrumented(ctx, KIND, "progress", body):
        runs.poll_progress(ctx, body, logger)


@kopf.index(GROUP, VERSION, PLURAL, id="sftjob_status")
def sftjob_status(namespace: str | None, name: str, status: kopf.Status, **_: Any) -> dict[Any, Any]:
    """(namespace, name) -> status, read by the metrics collector at scrape time."""
    return {(namespace, name): dict(status)}
