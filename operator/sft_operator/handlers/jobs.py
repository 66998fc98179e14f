"""Child Jobs and RayJobs: every change to one rewrites its owner's status.

The Job controller updates a Job whenever one of its pods becomes Ready,
succeeds or fails, so watching Jobs (not the far more numerous pods) is
enough to follow every run; pods are then listed by the Job's uid. KubeRay
does the same for a RayJob (jobDeploymentStatus, jobStatus); a cluster
without KubeRay's CRD simply has no RayJobs to watch.
"""

from __future__ import annotations

from typing import Any

import kopf

from ..context import context
from ..kube import controller_of
from ..naming import MANAGED_BY, MANAGED_BY_LABEL, ResourceRef
from ..rayjob import RAY_GROUP, RAY_VERSION, RAYJOB_PLURAL
from . import reconciler as r

# Only Jobs this operator made (the label every child carries).
MANAGED = {MANAGED_BY_LABEL: MANAGED_BY}


@kopf.on.event(RAY_GROUP, RAY_VERSION, RAYJOB_PLURAL, labels=MANAGED, id="rayjob-status")
@kopf.on.event("batch", "v1", "jobs", labels=MANAGED, id="job-status")
def job_changed(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Job or RayJob created, running, retried, finished or deleted -> the owner's conditions and figures."""
    owner = controller_of(dict(body))
    if owner is None:
        return
    kind, name, uid = owner
    ctx = context(memo)
    ref = ResourceRef(kind, body["metadata"]["namespace"], name, uid)
    with r.instrumented(ctx, str(body.get("kind") or "Job"), "job-status", body):
        if type == "DELETED":
            r.job_gone(ctx, ref, body["metadata"]["name"])
        elif type == "ADDED":
            # Just created, by the reconcile, which wrote the owner's status from this very Job (or, cut
            # short, runs again and does); the Job controller's first status update follows. Saves a read.
            return
        else:
            r.sync(ctx, ref, dict(body))
