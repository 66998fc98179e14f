"""The pod's final summary, handed to the operator through the termination message.

The operator cannot read the output volume, but it can read a terminated
container's `state.terminated.message`, which Kubernetes fills from
/dev/termination-log (at most 4096 bytes). Both entrypoints write the
"status" object of their report there when they finish.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DEFAULT_PATH = "/dev/termination-log"
LIMIT_BYTES = 4096


def termination_log_path() -> Path | None:
    """Where to write: SFT_TERMINATION_LOG, or Kubernetes' file when it exists (never created outside a pod)."""
    configured = os.environ.get("SFT_TERMINATION_LOG")
    if configured:
        return Path(configured)
    default = Path(DEFAULT_PATH)
    return default if default.exists() else None


def compact(status: dict[str, Any], limit: int = LIMIT_BYTES) -> str:
    """JSON of `status` within `limit` bytes, dropping the least important detail first.

    Notes go first (the report has them all), then per-reason drop counts
    smallest first, then metrics; counts, progress and entropies always fit.
    """
    trimmed = json.loads(json.dumps(status))
    notes = trimmed.get("notes")
    while isinstance(notes, list) and notes and len(_dump(trimmed)) > limit:
        notes.pop()
        trimmed["notesTruncated"] = True
    for section in ("dropsByReason", "metrics"):
        entries = trimmed.get(section)
        if not isinstance(entries, dict):
            continue
        for key in sorted(entries, key=lambda k: (entries[k], k)):
            if len(_dump(trimmed)) <= limit:
                break
            del entries[key]
            trimmed[f"{section}Truncated"] = True
    text = _dump(trimmed)
    if len(text.encode()) > limit:
        raise ValueError(f"status summary is {len(text)} bytes even trimmed; limit {limit}")
    return text


def write_termination_summary(status: dict[str, Any]) -> None:
    path = termination_log_path()
    if path is None:
        return
    path.write_text(compact(status))


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True)
