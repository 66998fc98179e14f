"""Reading a running pod's `/progress`: pull, so pods need no API credentials.

The port is the pod's own container port named `progress` (not the
operator's setting), so a pod keeps reporting whatever the operator is
configured with later. In a multi-node run only rank 0 (completion index 0)
is read: every rank would report the same global step.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from .naming import CONTAINER
from .pod_reports import is_rank_zero
from .pods import PROGRESS_PORT_NAME


class ProgressUnavailable(RuntimeError):
    """The pod did not answer /progress with a JSON object."""


def progress_url(pod: dict[str, Any]) -> str | None:
    """`http://POD_IP:PORT/progress` of a running pod, or None when it has no address yet."""
    status = pod.get("status", {}) or {}
    ip = status.get("podIP")
    if status.get("phase") != "Running" or not ip:
        return None
    for container in pod.get("spec", {}).get("containers", []):
        if container.get("name") != CONTAINER:
            continue
        for port in container.get("ports", []) or []:
            if port.get("name") == PROGRESS_PORT_NAME:
                host = f"[{ip}]" if ":" in ip else ip
                return f"http://{host}:{port['containerPort']}/progress"
    return None


def reporting_pod(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The running rank-0 pod, the one whose progress stands for the run."""
    running = [pod for pod in pods if progress_url(pod) and is_rank_zero(pod)]
    return max(running, key=lambda pod: str(pod["metadata"].get("creationTimestamp", ""))) if running else None


def read_progress(url: str, timeout: float) -> dict[str, Any]:
    """GET /progress; any failure is ProgressUnavailable naming the URL."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http to a pod IP by design
            payload = json.loads(response.read())
    except (OSError, urllib.error.URLError, json.JSONDecodeError, ValueError) as err:
        raise ProgressUnavailable(f"{url}: {err}") from err
    if not isinstance(payload, dict):
        raise ProgressUnavailable(f"{url}: expected a JSON object, got {type(payload).__name__}")
    return payload
