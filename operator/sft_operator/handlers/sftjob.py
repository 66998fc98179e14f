"""SFTJob: waits for its parent stage and its dataset, checks the gates, runs the trainer's Job, reports progress."""

from __future__ import annotations

from typing import Any

import kopf

from .. import conditions as c
from ..api import GROUP, VERSION, DatasetCurationSpec, Lifecycle, SFTJobSpec
from ..chain import base_model_mismatch, cycle_message, find_cycle, lineage_of, parent_of, parent_readiness, start_of
from ..manifests import training_children
from ..status import NOT_YET, UNUSABLE, curation_readiness, gate_failures, is_finished, review_wait
from . import runs
from .runs import PROGRESS_POLL_SECONDS

KIND, PLURAL = "SFTJob", "sftjobs"


@kopf.on.resume(GROUP, VERSION, PLURAL, id="reconcile", backoff=5)
@kopf.on.create(GROUP, VERSION, PLURAL, id="reconcile", backoff=5)
def reconcile(body: kopf.Body, spec: kopf.Spec, memo: kopf.Memo, **_: Any) -> None:
    """Wait for the parent stage and the dataset, check the gates, then create the children (or find them)."""
    ctx = runs.context(memo)
    ref = runs.Ref.of(body)
    with runs.instrumented(ctx, KIND, "reconcile", body):
        try:
            parsed = SFTJobSpec.model_validate(dict(spec))
        except ValueError as err:
            raise runs.invalid_spec(ctx, ref, err) from err
        lineage = ready_lineage(ctx, ref, parsed, body) if parsed.model.sft_job_ref else None
        if parsed.model.sft_job_ref and lineage is None:
            return  # the parent failed, is unusable or missed a gate: status says which
        curation = ready_curation(ctx, ref, parsed) if parsed.dataset.curation_ref else None
        if parsed.dataset.curation_ref and curation is None:
            return  # the dataset failed or missed a gate: status says which
        if lineage and curation and base_model_refused(ctx, ref, lineage, curation):
            return
        if not (body.get("status") or {}).get("jobName") and (unshared := unshared_output(ctx, ref, parsed)):
            runs.fail(ctx, ref, c.OUTPUT_NOT_SHARED, unshared)
            return
        runs.start(ctx, body, lambda: training_children(dict(body), ctx.settings, curation, lineage=lineage))


def unshared_output(ctx: runs.Context, ref: runs.Ref, spec: SFTJobSpec) -> str | None:
    """Why a multi-node run's output claim cannot serve it, or None.

    The pods of every node write checkpoints and reports into the one output
    folder, so its claim must be ReadWriteMany; any other claim would fail the
    run mid-way, when the second node's pod cannot mount it. A claim that does
    not exist yet is left to the pods to wait for.
    """
    if spec.resources.nodes == 1:
        return None
    name = spec.output.pvc.claim_name
    claim = ctx.kube.read_claim(ref.namespace, name)
    modes = list((claim or {}).get("spec", {}).get("accessModes") or [])
    if claim is None or "ReadWriteMany" in modes:
        return None
    return (
        f"spec.output.pvc.claimName: claim {name} is {', '.join(modes) or 'without access modes'}; "
        f"spec.resources.nodes={spec.resources.nodes} needs a ReadWriteMany claim (the pods of every node write there)"
    )


def ready_lineage(ctx: runs.Context, ref: runs.Ref, spec: SFTJobSpec, body: kopf.Body) -> list[dict[str, Any]] | None:
    """The lineage of a chained job once its parent is usable (written to status); None after failing the job.

    A job that already has a Job keeps the lineage it started with: its parent
    may since have been deleted, and nothing is re-checked for a started run.
    """
    assert spec.model.sft_job_ref is not None
    status = dict(body.get("status") or {})
    if status.get("jobName") or is_finished(status):
        return list(status.get("lineage") or [])
    name = spec.model.sft_job_ref.name
    cycle = find_cycle(ref.name, name, lambda n: parent_of(ctx.kube.read_custom(KIND, ref.namespace, n) or {}))
    if cycle:
        runs.fail(ctx, ref, c.CHAIN_CYCLE, cycle_message(cycle))
        return None
    parent = ctx.kube.read_custom(KIND, ref.namespace, name)
    if parent is not None and status.get("parentUid") != parent["metadata"]["uid"]:
        runs.write_status(ctx, ref, lambda obj: {**(obj.get("status") or {}), "parentUid": parent["metadata"]["uid"]})
    readiness = parent_readiness(parent, spec.model, status.get("parentUid"))
    if readiness.state == NOT_YET:
        raise runs.wait(ctx, ref, readiness.reason, readiness.message, ctx.settings.dataset_wait_seconds)
    if readiness.state == UNUSABLE:
        runs.fail(ctx, ref, readiness.reason, readiness.message)
        return None
    assert parent is not None
    lineage = lineage_of(parent, spec.model.sft_job_ref.use)
    gone = [claim for claim in start_of(lineage).claims if ctx.kube.read_claim(ref.namespace, claim) is None]
    if gone:
        runs.fail(
            ctx,
            ref,
            c.PARENT_UNUSABLE,
            f"spec.model.sftJobRef: SFTJob {name}'s results are gone: claim {', '.join(gone)} no longer exists",
        )
        return None
    runs.write_status(ctx, ref, lambda obj: {**(obj.get("status") or {}), "lineage": lineage})
    return lineage


def base_model_refused(
    ctx: runs.Context, ref: runs.Ref, lineage: list[dict[str, Any]], curation: dict[str, Any]
) -> bool:
    """Fail the job if its curation measured tokens with another tokenizer than the chain's base model's."""
    spec = DatasetCurationSpec.model_validate(curation["spec"])
    mismatch = base_model_mismatch(lineage, curation["metadata"]["name"], spec)
    if mismatch is not None:
        runs.fail(ctx, ref, c.BASE_MODEL_MISMATCH, mismatch)
    return mismatch is not None


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
