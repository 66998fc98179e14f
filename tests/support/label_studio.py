"""A real Label Studio server for the review tests: installed by hack/install-label-studio.sh, on loopback, SQLite."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support.kube import REPO_ROOT, free_port

LS_BIN = REPO_ROOT / ".cache" / "label-studio-venv" / "bin" / "label-studio"
TOKEN = "5f0c1d2e3a4b5c6d7e8f90112233445566778899"
USER, PASSWORD = "reviewer@example.com", "review-pass-1"
STARTUP_SECONDS = 300


class LabelStudioFailed(RuntimeError):
    """Label Studio could not be installed or started; the message has the script's or the server's output."""


def install() -> None:
    done = subprocess.run(["bash", str(REPO_ROOT / "hack" / "install-label-studio.sh")], capture_output=True, text=True)
    if done.returncode != 0:
        raise LabelStudioFailed(f"installing Label Studio failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")


@contextmanager
def label_studio_server(data: Path) -> Iterator[str]:
    """`label-studio start` with its data under `data`, a user whose legacy API token is TOKEN; yields its URL."""
    install()
    port = free_port()
    log_path = data / "server.log"
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(data), "DJANGO_DB": "sqlite"}
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [
                str(LS_BIN), "start", "--no-browser", "--data-dir", str(data / "data"),
                "--internal-host", "127.0.0.1", "--port", str(port),
                "--username", USER, "--password", PASSWORD,
                "--user-token", TOKEN, "--enable-legacy-api-token",
            ],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=data,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + STARTUP_SECONDS
            while not _healthy(url):
                if server.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-3000:]
                    raise LabelStudioFailed(f"label-studio start did not come up (exit {server.poll()}):\n{tail}")
                time.sleep(2)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def api(url: str, method: str, path: str, body: object = None) -> object:
    """One call to Label Studio's HTTP API as the test user."""
    request = urllib.request.Request(
        url + path,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Token {TOKEN}", "Content-Type": "application/json"},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = response.read()
    return json.loads(payload) if payload else None


def annotate(url: str, task_id: int, choice: str, note: str = "", edited: str = "") -> None:
    """What Submit in the labeling interface posts."""
    result: list[dict[str, object]] = [
        {"from_name": "decision", "to_name": "response", "type": "choices", "value": {"choices": [choice]}}
    ]
    if note:
        result.append({"from_name": "note", "to_name": "response", "type": "textarea", "value": {"text": [note]}})
    if edited:
        result.append(
            {"from_name": "edited_response", "to_name": "response", "type": "textarea", "value": {"text": [edited]}}
        )
    api(url, "POST", f"/api/tasks/{task_id}/annotations", {"result": result})
