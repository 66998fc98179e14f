"""What SFTJob and DatasetCuration do alike, registered once over both kinds.

Lifecycle changes reach the running Job, other spec changes are named as
ignored, a running Job's progress is polled into status, and each object's
status is indexed for the metrics collector. The handler ids are the same
for both kinds (kopf keys its state per object and handler id).
"""

from __future__ import annotations

from typing import Any

import kopf

from ..api import GROUP, KINDS, VERSION, Lifecycle
from ..context import PROGRESS_POLL_SECONDS, context
from ..run_state import is_running
from . import reconciler as r

PLURALS = tuple(info.plural for info in KINDS.values())


def lifecycle_changed(body: kopf.Body, new: Any, memo: kopf.Memo, **_: Any) -> None:
    """Suspend/resume, deadline, TTL and retries apply to the running Job."""
    ctx = context(memo)
    with r.instrumented(ctx, body["kind"], "lifecycle", body):
        r.apply_lifecycle(ctx, body, Lifecycle.model_validate(dict(new or {})))


def spec_changed(body: kopf.Body, diff: kopf.Diff, **_: Any) -> None:
    """A started Job's pod template is immutable: say so rather than drift silently."""
    r.warn_ignored_changes(body, diff)


def running(status: kopf.Status, **_: Any) -> bool:
    """The progress timer's filter (on the conditions): only a running Job has a pod to ask."""
    return is_running(dict(status))


def poll_progress(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    """Copy the reporting pod's /progress into status.progress while the Job runs."""
    ctx = context(memo)
    with r.instrumented(ctx, body["kind"], "progress", body):
        r.poll_progress(ctx, body, logger)


def status_index(namespace: str | None, name: str, status: kopf.Status, **_: Any) -> dict[Any, Any]:
    """(namespace, name) -> status, read by the metrics collector at scrape time."""
    return {(namespace, name): dict(status)}


for _kind, _info in KINDS.items():
    kopf.on.update(GROUP, VERSION, _info.plural, field="spec.lifecycle", id="lifecycle", backoff=5)(lifecycle_changed)
    kopf.on.update(GROUP, VERSION, _info.plural, field="spec", id="spec-drift")(spec_changed)
    kopf.timer(GROUP, VERSION, _info.plural, id="progress", interval=PROGRESS_POLL_SECONDS, when=running)(poll_progress)
    # `main.start_metrics` takes each index by its id: sftjob_status, datasetcuration_status.
    kopf.index(GROUP, VERSION, _info.plural, id=f"{_kind.lower()}_status")(status_index)
