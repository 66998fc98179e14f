"""What every handler needs (`Context`), built once by the startup handler in `main` and kept in kopf's memo."""

from __future__ import annotations

from dataclasses import dataclass

import kopf

from .kube import Kube
from .metrics import OperatorMetrics
from .settings import OperatorSettings

# kopf fixes a timer's interval when it registers the handler, so this one
# setting is read at import (the startup handler reads the same variables).
PROGRESS_POLL_SECONDS = OperatorSettings.from_env().progress_poll_seconds


@dataclass(frozen=True)
class Context:
    """Everything a handler needs, built once by the startup handler (kept in kopf's memo)."""

    settings: OperatorSettings
    kube: Kube
    metrics: OperatorMetrics


def context(memo: kopf.Memo) -> Context:
    """The handlers' Context; until the startup handler built it, the handler is retried a second later."""
    ctx = memo.get("ctx")
    if not isinstance(ctx, Context):
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return ctx
