"""The operator's entry point: `kopf run -m sft_operator.main` (what `sftctl operator` runs).

Importing this module registers every handler. One startup handler sets
kopf's settings and builds the handlers' context; a second serves /metrics.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import kopf
from aiohttp import web

from . import handlers  # noqa: F401 - registers the handlers with kopf
from .api import GROUP
from .context import Context
from .kube import Kube
from .metrics import OperatorMetrics, serve
from .settings import OperatorSettings

REPORTING_COMPONENT = "trustdoc-sft-operator"
METRICS_HOST = "0.0.0.0"
MAX_PRIORITY = 2**31 - 1


@kopf.on.login(id="login")
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod: its service account; elsewhere: $KUBECONFIG, read now (the same as `Kube.connect`)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup(id="configure")
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    try:
        operator = OperatorSettings.from_env()
    except ValueError as err:
        raise kopf.PermanentError(f"invalid operator setting: {err}") from err
    # Handler progress goes to annotations under our group: status is pruned to its schema, so kopf's default (status.kopf) would vanish.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    # The last handled spec (for update handlers' diffs) is an annotation too, under our group.
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # kopf holds an object's next change-handling until the watch shows its own state patch, then gives up
    # after this long and takes the object for unhandled: under a burst the watch lagged past the default 5 s
    # and the create handlers ran again for 7 objects in 10 (idempotent, but 4 more API requests each).
    settings.persistence.consistency_timeout = 30
    # Our finalizer's name; kopf adds it only while a progress timer runs on an SFTJob.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Ask the API server to end each watch after 4.5 min (kopf re-lists then) so a silently dead stream never lingers.
    settings.watching.server_timeout = 270
    # The client gives up on a watch a little after the server should have ended it.
    settings.watching.client_timeout = 300
    # Connecting to the API server must not hang forever either.
    settings.watching.connect_timeout = 30
    # Events are posted explicitly in Kubernetes style ("Created Job x"); kopf's own log lines never become Events.
    settings.posting.level = logging.CRITICAL
    # Events name this operator as their source.
    settings.posting.reporting_component = REPORTING_COMPONENT
    # Sync handlers run in kopf's thread pool and mostly wait on the API server: a burst needs more than its default.
    settings.execution.max_workers = operator.workers
    kube = Kube.connect(connections=operator.workers)
    _configure_peering(settings, operator, kube, logger)
    memo.ctx = Context(settings=operator, kube=kube, metrics=OperatorMetrics())


def _configure_peering(
    settings: kopf.OperatorSettings, operator: OperatorSettings, kube: Kube, logger: kopf.Logger
) -> None:
    """Replicas share one peering object: the highest priority acts, the others stand by."""
    if settings.peering.standalone:
        return
    if not settings.peering.mandatory:  # no --peering on the command line: ours, required
        settings.peering.name = operator.peering_name
        settings.peering.mandatory = True
    if settings.peering.priority == 0:  # no --priority: equal priorities would pause every replica
        settings.peering.priority = operator.peering_priority or random.randint(1, MAX_PRIORITY)
    namespaces = () if settings.peering.clusterwide else operator.namespaces
    if not settings.peering.clusterwide and not namespaces:
        logger.warning("Namespaced run without SFT_OPERATOR_NAMESPACES: peering objects are not created")
        settings.peering.mandatory = False
        return
    try:
        created = kube.ensure_peering(settings.peering.name, namespaces)
    except Exception as err:  # most often: the peering CRDs are not installed
        raise kopf.PermanentError(
            f"cannot create the peering object {settings.peering.name!r} ({err}); "
            "apply crds/peering/ or run with --standalone"
        ) from err
    for what in created:
        logger.info(f"Created {what}")
    logger.info(f"Peering {settings.peering.name!r} with priority {settings.peering.priority}")


@kopf.on.startup(id="metrics")
async def start_metrics(
    memo: kopf.Memo,
    sftjob_status: kopf.Index[Any, Any] | None = None,
    datasetcuration_status: kopf.Index[Any, Any] | None = None,
    **_: Any,
) -> None:
    """Serve /metrics (and /healthz); per-object gauges come from the status indices at scrape time."""
    ctx: Context = memo.ctx
    assert sftjob_status is not None and datasetcuration_status is not None, "kopf passes every index by its id"
    ctx.metrics.watch(sftjob_status, datasetcuration_status)
    memo.metrics_runner = await serve(ctx.metrics, METRICS_HOST, ctx.settings.metrics_port)


@kopf.on.cleanup(id="metrics")
async def stop_metrics(memo: kopf.Memo, **_: Any) -> None:
    runner = memo.get("metrics_runner")
    if isinstance(runner, web.AppRunner):
        await runner.cleanup()
