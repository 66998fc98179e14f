"""A real Prometheus scrapes the operator's and a trainer pod's /metrics and answers PromQL."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sft_operator.metrics import OperatorMetrics, serve
from sft_trainer.progress import ProgressServer
from support.kube import free_port

PROMETHEUS = shutil.which("prometheus")


@pytest.fixture
def operator_metrics() -> Iterator[tuple[OperatorMetrics, int]]:
    """The operator's /metrics served by its own aiohttp app, in a background event loop."""
    metrics = OperatorMetrics()
    status = {"phase": "Running", "progress": {"percent": 40.0, "loss": 1.5, "tokensPerSecond": 321.0}}
    metrics.watch({("team-a", "llama-lora"): [status]}, {})
    metrics.reconciles.labels("SFTJob", "create", "ok").inc()
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = loop.run_until_complete(serve(metrics, "127.0.0.1", port))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield metrics, port
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.run_until_complete(runner.cleanup())
        loop.close()


@pytest.fixture
def trainer_metrics() -> Iterator[ProgressServer]:
    server = ProgressServer(prefix="sft_train", host="127.0.0.1", port=0).start()
    server.update(phase="training", step=12, totalSteps=30, loss=2.25, tokensPerSecond=150.0)
    try:
        yield server
    finally:
        server.stop()


def query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as response:
        payload = json.loads(response.read())
    assert payload["status"] == "success", payload
    return list(payload["data"]["result"])


def test_prometheus_scrapes_operator_and_trainer(
    tmp_path: Path, operator_metrics: tuple[OperatorMetrics, int], trainer_metrics: ProgressServer
) -> None:
    if PROMETHEUS is None:
        pytest.fail("prometheus not installed: run `make system-deps`")
    _, operator_port = operator_metrics
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"- job_name: operator\n  static_configs: [{{targets: ['127.0.0.1:{operator_port}']}}]\n"
        f"- job_name: trainer\n  static_configs: [{{targets: ['127.0.0.1:{trainer_metrics.port}']}}]\n"
    )
    web_port = free_port()
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{web_port}",
        ],
        stdout=(tmp_path / "prometheus.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        up: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                up = query(web_port, "up == 1")
            except OSError:
                up = []
            if {r["metric"]["job"] for r in up} == {"operator", "trainer"}:
                break
            time.sleep(0.5)
        assert {r["metric"]["job"] for r in up} == {"operator", "trainer"}, (tmp_path / "prometheus.log").read_text()

        progress = query(web_port, 'trustdoc_sft_progress_ratio{namespace="team-a", name="llama-lora"}')
        assert float(progress[0]["value"][1]) == pytest.approx(0.4)
        loss = query(web_port, 'sft_train_loss{job="trainer"}')
        assert float(loss[0]["value"][1]) == pytest.approx(2.25)
        ratio = query(web_port, "sft_train_step / sft_train_total_steps")
        assert float(ratio[0]["value"][1]) == pytest.approx(12 / 30)
        reconciles = query(web_port, 'sum(trustdoc_sft_reconciles_total{kind="SFTJob"})')
        assert float(reconciles[0]["value"][1]) == 1.0
    finally:
        process.terminate()
        process.wait(timeout=20)
