"""The operator's Prometheus `/metrics`.

Two kinds of series:

- per-object gauges (phase, progress ratio, latest loss, tokens per second,
  curation record counts) computed at scrape time from the custom resources'
  status, as kube-state-metrics does: nothing to keep in sync, nothing stale
  after an object is deleted;
- the operator's own counters and histogram (reconciles, errors, reconcile
  latency, progress polls).

Each operator has its own registry (no process-global state), served by an
aiohttp app in kopf's event loop, the same loop that updates kopf's indices,
so a scrape never reads an index while it changes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from .conditions import PHASES

PREFIX = "trustdoc_sft"
# Reconciles are API round trips: milliseconds to a few seconds.
SHUTDOWN_SECONDS = 1.0
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# (namespace, name) -> the object's status, as kopf's indices hold it.
StatusIndex = Mapping[Any, Iterable[Mapping[str, Any]]]


class StatusCollector(Collector):
    """Per-object gauges computed from CR status at scrape time."""

    def __init__(self, sftjobs: StatusIndex, curations: StatusIndex) -> None:
        self.sftjobs = sftjobs
        self.curations = curations

    def collect(self) -> Iterator[Metric]:
        phase = GaugeMetricFamily(
            f"{PREFIX}_phase",
            "1 for the phase the object is in, 0 for the others",
            labels=["kind", "namespace", "name", "phase"],
        )
        progress = GaugeMetricFamily(
            f"{PREFIX}_progress_ratio", "Share of optimiser steps done (0-1)", labels=["namespace", "name"]
        )
        loss = GaugeMetricFamily(f"{PREFIX}_loss", "Latest training loss", labels=["namespace", "name"])
        eval_loss = GaugeMetricFamily(f"{PREFIX}_eval_loss", "Latest evaluation loss", labels=["namespace", "name"])
        throughput = GaugeMetricFamily(
            f"{PREFIX}_tokens_per_second", "Non-pad tokens processed per second", labels=["namespace", "name"]
        )
        records = GaugeMetricFamily(
            f"{PREFIX}_curation_records",
            "Records of a curation by where they ended (input, curated, rejected, review)",
            labels=["namespace", "name", "outcome"],
        )
        entropy = GaugeMetricFamily(
            f"{PREFIX}_curation_task_entropy",
            "Normalised task-mix entropy before and after curation",
            labels=["namespace", "name", "stage"],
        )
        review = GaugeMetricFamily(
            f"{PREFIX}_curation_review_records",
            "Held records of a curation by review state (pending, kept, dropped)",
            labels=["namespace", "name", "state"],
        )
        evaluation = GaugeMetricFamily(
            f"{PREFIX}_evaluation_figure",
            "Evaluation figure after training, per model (base, tuned) and for the delta (tuned - base)",
            labels=["namespace", "name", "figure", "model"],
        )
        evaluation_passed = GaugeMetricFamily(
            f"{PREFIX}_evaluation_passed",
            "1 when the evaluation ran and every gate passed (EvaluationPassed), else 0",
            labels=["namespace", "name"],
        )
        for (namespace, name), status in _statuses(self.sftjobs):
            _evaluation(evaluation, evaluation_passed, namespace, name, status)
            _phase(phase, "SFTJob", namespace, name, status)
            figures = status.get("progress") or {}
            if figures.get("percent") is not None:
                progress.add_metric([namespace, name], float(figures["percent"]) / 100.0)
            for family, key in ((loss, "loss"), (eval_loss, "evalLoss"), (throughput, "tokensPerSecond")):
                if figures.get(key) is not None:
                    family.add_metric([namespace, name], float(figures[key]))
        for (namespace, name), status in _statuses(self.curations):
            _phase(phase, "DatasetCuration", namespace, name, status)
            for outcome, count in (status.get("counts") or {}).items():
                records.add_metric([namespace, name, outcome], float(count))
            for stage, key in (("before", "taskEntropyBefore"), ("after", "taskEntropyAfter")):
                if status.get(key) is not None:
                    entropy.add_metric([namespace, name, stage], float(status[key]))
            for state, count in (status.get("review") or {}).items():
                review.add_metric([namespace, name, state], float(count))
        yield from (
            phase,
            progress,
            loss,
            eval_loss,
            throughput,
            records,
            entropy,
            review,
            evaluation,
            evaluation_passed,
        )


def _statuses(index: StatusIndex) -> Iterator[tuple[tuple[str, str], Mapping[str, Any]]]:
    for key, store in list(index.items()):
        for status in store:
            yield key, status


def _evaluation(
    figures: GaugeMetricFamily, passed: GaugeMetricFamily, namespace: str, name: str, status: Mapping[str, Any]
) -> None:
    summary = status.get("evaluation") or {}
    if not summary:
        return
    passed.add_metric([namespace, name], 1.0 if summary.get("passed") else 0.0)
    for figure, values in (summary.get("figures") or {}).items():
        for model in ("base", "tuned", "delta"):
            if values.get(model) is not None:
                figures.add_metric([namespace, name, figure, model], float(values[model]))


def _phase(family: GaugeMetricFamily, kind: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
    current = status.get("phase") or "Pending"
    for phase in PHASES:
        family.add_metric([kind, namespace, name, phase], 1.0 if phase == current else 0.0)


class OperatorMetrics:
    """The operator's registry: its counters, its histogram, and the status collector."""

    def __init__(self) -> None:
        # No `*_created` companion series: they only double what Prometheus stores.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            f"{PREFIX}_reconciles_total",
            "Handler runs, by kind, handler and result (ok, waiting, error)",
            ["kind", "handler", "result"],
            registry=self.registry,
        )
        self.errors = Counter(
            f"{PREFIX}_reconcile_errors_total",
            "Handler runs that raised, by kind, handler and error class",
            ["kind", "handler", "error"],
            registry=self.registry,
        )
        self.latency = Histogram(
            f"{PREFIX}_reconcile_duration_seconds",
            "Wall time of one handler run",
            ["kind", "handler"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.progress_polls = Counter(
            f"{PREFIX}_progress_polls_total",
            "Reads of a pod's /progress, by result (ok, unavailable)",
            ["result"],
            registry=self.registry,
        )

    def watch(self, sftjobs: StatusIndex, curations: StatusIndex) -> None:
        self.registry.register(StatusCollector(sftjobs, curations))

    @contextmanager
    def timed(self, kind: str, handler: str, waiting: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
        """Count and time one handler run; `waiting` exceptions are retries, not errors."""
        started = time.perf_counter()
        result = "ok"
        try:
            yield
        except waiting:
            result = "waiting"
            raise
        except BaseException as err:
            result = "error"
            self.errors.labels(kind, handler, type(err).__name__).inc()
            raise
        finally:
            self.latency.labels(kind, handler).observe(time.perf_counter() - started)
            self.reconciles.labels(kind, handler, result).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


async def serve(metrics: OperatorMetrics, host: str, port: int) -> web.AppRunner:
    """Start `/metrics` and `/healthz` on host:port; the caller cleans the runner up."""

    async def scrape(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_request: web.Request) -> web.Response:
        # Answered by kopf's own event loop: a stuck loop fails the probe.
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/healthz", healthz)
    # Scrapers keep connections open; waiting for them (aiohttp's default: 60 s) would stall every shutdown.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_SECONDS)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
