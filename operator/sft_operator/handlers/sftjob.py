"""SFTJob: waits for the stage it starts from and its dataset, checks the gates, runs the trainer's Job.

What it shares with DatasetCuration (lifecycle, spec drift, progress) is
registered once for both kinds in `handlers.both_kinds`.
"""

from __future__ import annotations

from typing import Any

import kopf

from .. import conditions as c
from ..api import GROUP, VERSION, SFTJobSpec
from ..children import training_children
from ..context import Context, context
from ..inputs import training_inputs
from ..kube import Obj
from ..naming import ResourceRef
from ..readiness import NOT_YET, UNUSABLE
from ..run_state import is_finished
from . import reconciler as r

KIND, PLURAL = "SFTJob", "sftjobs"


@kopf.on.resume(GROUP, VERSION, PLURAL, id="reconcile", backoff=5)
@kopf.on.create(GROUP, VERSION, PLURAL, id="reconcile", backoff=5)
def reconcile(body: kopf.Body, spec: kopf.Spec, memo: kopf.Memo, **_: Any) -> None:
    """Wait for the parent stage and the dataset, check the gates, then create the children (or find them)."""
    ctx = context(memo)
    ref = ResourceRef.of(body)
    with r.instrumented(ctx, KIND, "reconcile", body):
        parsed = r.parse_spec(ctx, ref, SFTJobSpec, spec)
        status = dict(body.get("status") or {})
        if is_finished(status):
            return  # a finished run is never started again (its Job may be gone by TTL)
        started = bool(status.get("jobName"))
        inputs = training_inputs(
            ref.name,
            parsed,
            ClusterLookup(ctx, ref.namespace),
            seen_parent_uid=status.get("parentUid"),
            # A job that already has a Job keeps the lineage it started with: its parent may since be gone.
            started_lineage=list(status.get("lineage") or []) if started and parsed.model.sft_job_ref else None,
        )
        record = _changed(status, {"parentUid": inputs.parent_uid, "lineage": inputs.lineage})
        readiness = inputs.readiness
        if readiness.state == NOT_YET:
            raise r.wait(ctx, ref, readiness.reason, readiness.message, ctx.settings.dataset_wait_seconds, record)
        if readiness.state == UNUSABLE:
            r.fail(ctx, ref, readiness.reason, readiness.message, record)
            return
        if not started and (unshared := unshared_output(ctx, ref, parsed)):
            r.fail(ctx, ref, c.OUTPUT_NOT_SHARED, unshared, record)
            return
        written = None
        if record:  # the lineage is in status before the Job exists: a resumed reconcile builds from it
            written = r.write_status(ctx, ref, lambda obj: {**(obj.get("status") or {}), **record}, dict(body))
        children = r.build(
            ctx, ref, lambda: training_children(ref, parsed, ctx.settings, inputs.curation, lineage=inputs.lineage)
        )
        r.start(ctx, body, parsed, children, held=written.after if written else None)


def _changed(status: Obj, fields: Obj) -> Obj:
    """The fields (not None) whose value differs from the status's."""
    return {key: value for key, value in fields.items() if value is not None and status.get(key) != value}


class ClusterLookup:
    """`inputs.Lookup` on the API: the namespace's custom resources and claims."""

    def __init__(self, ctx: Context, namespace: str) -> None:
        self.kube, self.namespace = ctx.kube, namespace

    def custom(self, kind: str, name: str) -> Obj | None:
        return self.kube.read_custom(kind, self.namespace, name)

    def claim_exists(self, name: str) -> bool:
        return self.kube.read_claim(self.namespace, name) is not None


def unshared_output(ctx: Context, ref: ResourceRef, spec: SFTJobSpec) -> str | None:
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
