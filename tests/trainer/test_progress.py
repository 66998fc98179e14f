"""The /progress and /metrics server: real HTTP, real Prometheus text."""

from __future__ import annotations

import json
import socket
import struct
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sft_trainer.progress import ProgressServer


def get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


def test_progress_json_and_prometheus_metrics() -> None:
    with ProgressServer(prefix="sft_train", host="127.0.0.1", port=0) as server:
        base = f"http://127.0.0.1:{server.port}"
        server.update(phase="training", step=5, totalSteps=20, percent=25.0, loss=1.5, tokensPerSecond=1234.5)
        status, content_type, body = get(base + "/progress")
        assert status == 200 and content_type == "application/json"
        progress = json.loads(body)
        assert progress["phase"] == "training" and progress["step"] == 5 and progress["loss"] == 1.5
        assert progress["updatedAt"].endswith("Z")

        server.update(phase="evaluating", step=6, evalLoss=None)
        _, content_type, text = get(base + "/metrics")
        assert content_type.startswith("text/plain")
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert samples[("sft_train_step", ())] == 6
        assert samples[("sft_train_tokens_per_second", ())] == 1234.5
        assert samples[("sft_train_phase", (("phase", "evaluating"),))] == 1
        assert samples[("sft_train_phase", (("phase", "training"),))] == 0
        # Only this server's figures: a private registry, no process or GC collectors.
        assert not any(name.startswith(("process_", "python_gc")) for name, _ in samples)

        with pytest.raises(urllib.error.HTTPError) as err:
            get(base + "/nope")
        assert err.value.code == 404


def test_generic_stage_fields_for_the_curation_pod() -> None:
    with ProgressServer(prefix="sft_curation", host="127.0.0.1", port=0) as server:
        server.update(phase="running", stage="dedup", percent=40.0, recordsDone=400)
        progress = json.loads(get(f"http://127.0.0.1:{server.port}/progress")[2])
        assert progress["stage"] == "dedup" and progress["recordsDone"] == 400
        assert "sft_curation_records_done 400.0" in get(f"http://127.0.0.1:{server.port}/metrics")[2]


def test_bind_host_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("SFT_PROGRESS_HOST", "127.0.0.1")
    server = ProgressServer()
    assert server.host == "127.0.0.1"
    monkeypatch.delenv("SFT_PROGRESS_HOST")
    assert ProgressServer().host == "0.0.0.0"


def test_a_poller_that_hangs_up_leaves_no_traceback(capfd) -> None:
    """A poller that gives up (its timeout on a busy pod) breaks the pipe; the run's log stays clean."""
    with ProgressServer(prefix="sft_train", host="127.0.0.1", port=0) as server:
        server.update(phase="training", note="x" * 8_000_000)  # more than the socket buffers take at once
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"GET /progress HTTP/1.1\r\nHost: pod\r\n\r\n")
            sock.recv(1)  # the answer has started
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
        status, _, _ = get(f"http://127.0.0.1:{server.port}/healthz")  # still serving
        assert status == 200
    assert "Traceback" not in capfd.readouterr().err
