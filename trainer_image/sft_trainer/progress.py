"""Live progress of a pod: `/progress` (JSON) and `/metrics` (Prometheus text).

The operator polls `/progress` and copies it into the custom resource's
status; Prometheus scrapes `/metrics`. Both are served from one snapshot that
the work loop updates with `ProgressServer.update(...)`, by a stdlib HTTP
server in a daemon thread (it never blocks or slows the loop: a request only
copies a small dict under a lock).

The server is generic: the trainer reports `step`, `loss`, `tokensPerSecond`
..., the curation pod can report `stage` and `percent`. Every numeric field
also becomes a gauge `<prefix>_<snake_case name>`; the phase becomes
`<prefix>_phase{phase="..."} 1`.

    server = ProgressServer(prefix="sft_train", port=8080).start()
    server.update(phase="training", step=3, totalSteps=100, loss=1.9)
    ...
    server.stop()

The bind address comes from the environment variable SFT_PROGRESS_HOST
(default 0.0.0.0, so the pod IP answers).
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

HOST_ENV = "SFT_PROGRESS_HOST"


def utc_now() -> str:
    """RFC 3339 timestamp, second precision, as Kubernetes writes them."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class _PollServer(ThreadingHTTPServer):
    """The HTTP server, quiet about pollers that hang up: a poller that gives up on a busy pod (its
    timeout) breaks the pipe we answer on, which is routine, not a traceback for the run's log."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class ProgressServer:
    """Holds the latest progress snapshot and serves it over HTTP."""

    def __init__(self, prefix: str = "sft", host: str | None = None, port: int = 0) -> None:
        self.prefix = prefix
        self.host = host if host is not None else os.environ.get(HOST_ENV, "0.0.0.0")
        self.requested_port = port
        self.registry = CollectorRegistry()  # private: no process/GC collectors, nothing global
        self._lock = threading.Lock()
        self._snapshot: dict[str, Any] = {"phase": "starting", "updatedAt": utc_now()}
        self._gauges: dict[str, Gauge] = {}
        self._phase = Gauge(
            f"{prefix}_phase", "Current phase (1 for the active one)", ["phase"], registry=self.registry
        )
        self._phase.labels(phase="starting").set(1)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- updates

    def update(self, **fields: Any) -> None:
        """Merge camelCase fields into the snapshot (None clears a field) and refresh the gauges."""
        with self._lock:
            old_phase = self._snapshot.get("phase")
            for key, value in fields.items():
                if value is None:
                    self._snapshot.pop(key, None)
                else:
                    self._snapshot[key] = value
            self._snapshot["updatedAt"] = utc_now()
            new_phase = self._snapshot.get("phase")
            if new_phase != old_phase:
                if old_phase is not None:
                    self._phase.labels(phase=str(old_phase)).set(0)
                self._phase.labels(phase=str(new_phase)).set(1)
            for key, value in fields.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._gauge(key).set(float(value))

    def snapshot(self) -> dict[str, Any]:
        """A copy of the current figures."""
        with self._lock:
            return dict(self._snapshot)

    def _gauge(self, key: str) -> Gauge:
        gauge = self._gauges.get(key)
        if gauge is None:
            gauge = Gauge(f"{self.prefix}_{_snake(key)}", f"Latest {key} reported by the pod", registry=self.registry)
            self._gauges[key] = gauge
        return gauge

    # ------------------------------------------------------------------ server

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    def start(self) -> ProgressServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                path = self.path.split("?", 1)[0]
                if path == "/progress":
                    body = json.dumps(owner.snapshot()).encode()
                    content_type = "application/json"
                elif path == "/metrics":
                    body = generate_latest(owner.registry)
                    content_type = CONTENT_TYPE_LATEST
                elif path in ("/healthz", "/"):
                    body, content_type = b"ok\n", "text/plain"
                else:
                    self.send_error(404, "try /progress or /metrics")
                    return
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one line per poll would drown the training log

        self._httpd = _PollServer((self.host, self.requested_port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="progress-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> ProgressServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
