"""What a run's pods tell: the failure of the newest failed pod, the report of the newest succeeded one.

The trainer and curation processes write their report's `status` object, as
compact JSON, to the container's termination message (the operator cannot
read the output claim); on a crash the log tail takes its place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .naming import COMPLETION_INDEX, CONTAINER

MESSAGE_LIMIT = 300


def clip(text: str) -> str:
    """A condition or Event message cut to MESSAGE_LIMIT characters."""
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


@dataclass(frozen=True)
class Report:
    """What the run reported: its report's `{"status": ...}`, or why there is none (`problem`)."""

    report: dict[str, Any] | None
    problem: str = ""


def _terminated(pod: dict[str, Any]) -> dict[str, Any]:
    for container in (pod.get("status", {}) or {}).get("containerStatuses", []) or []:
        if container.get("name") == CONTAINER:
            return ((container.get("state") or {}).get("terminated")) or {}
    return {}


def _finished_at(pod: dict[str, Any]) -> str:
    return str(_terminated(pod).get("finishedAt") or pod["metadata"].get("creationTimestamp") or "")


def last_pod_failure(pods: list[dict[str, Any]]) -> str:
    """`pod NAME exited with code N: LAST LINE` for the newest failed pod, or ''."""
    failed = [pod for pod in pods if (pod.get("status", {}) or {}).get("phase") == "Failed"]
    if not failed:
        return ""
    pod = max(failed, key=_finished_at)
    terminated = _terminated(pod)
    name = pod["metadata"]["name"]
    if not terminated:
        reason = (pod.get("status", {}) or {}).get("reason") or "unknown reason"
        return f"pod {name} failed ({reason})"
    lines = [line.strip() for line in str(terminated.get("message") or "").splitlines() if line.strip()]
    detail = f": {lines[-1]}" if lines else ""
    return clip(f"pod {name} exited with code {terminated.get('exitCode')}{detail}")


def is_rank_zero(pod: dict[str, Any]) -> bool:
    """The pod that reports for the run: the only one, or index 0 of an Indexed Job."""
    index = (pod["metadata"].get("annotations") or {}).get(COMPLETION_INDEX)
    return index in (None, "0")


def report_from_pods(pods: list[dict[str, Any]]) -> Report:
    """The `{"status": ...}` report in the termination message of the newest succeeded rank-0 pod."""
    succeeded = [p for p in pods if (p.get("status", {}) or {}).get("phase") == "Succeeded" and is_rank_zero(p)]
    if not succeeded:
        return Report(None, "no succeeded pod left a report")
    pod = max(succeeded, key=_finished_at)
    message = str(_terminated(pod).get("message") or "").strip()
    name = pod["metadata"]["name"]
    if not message:
        return Report(None, f"pod {name} left no termination message")
    try:
        summary = json.loads(message)
    except json.JSONDecodeError as err:
        return Report(None, f"termination message of pod {name} is not JSON ({err.msg})")
    if not isinstance(summary, dict):
        return Report(None, f"termination message of pod {name} is not a JSON object")
    return Report({"status": summary})
