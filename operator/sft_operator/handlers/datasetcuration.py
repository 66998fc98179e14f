"""DatasetCuration: a Job running `python -m sft_trainer curate`, its progress and figures copied into status."""

from __future__ import annotations

from typing import Any

import kopf

from ..api import GROUP, VERSION, DatasetCurationSpec, Lifecycle
from ..manifests import curation_children
from . import runs

KIND, PLURAL = "DatasetCuration", "datasetcurations"


@kopf.on.resume(GROUP, VERSION, PLURAL, id="reconcile", backoff=5)
@kopf.on.create(GROUP, VERSION, PLURAL, id="reconcile", backoff=5)
def reconcile(body: kopf.Body, spec: kopf.Spec, memo: kopf.Memo, **_: Any) -> None:
    """Create the ConfigMap and Job (or find them), then follow the Job."""
    ctx = runs.context(memo)
    with runs.instrumented(ctx, KIND, "reconcile", body):
        try:
            DatasetCurationSpec.model_validate(dict(spec))
        except ValueError as err:  # pydantic's ValidationError is a ValueError
            raise runs.invalid_spec(ctx, runs.Ref.of(body), err) from err
        runs.start(ctx, body, lambda: curation_children(dict(body), ctx.settings))


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


@kopf.index(GROUP, VERSION, PLURAL, id="datasetcuration_status")
def datasetcuration_status(namespace: str | None, name: str, status: kopf.Status, **_: Any) -> dict[Any, Any]:
    """(namespace, name) -> status, read by the metrics collector at scrape time."""
    return {(namespace, name): dict(status)}
