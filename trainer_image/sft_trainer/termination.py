"""The pod's final summary, handed to the operator through the termination message.

The operator cannot read the output volume, but it can read a terminated
container's `state.terminated.message`, which Kubernetes fills from
/dev/termination-log (at most 4096 bytes). Both entrypoints write the
"status" object of their report there when they finish.
"""

from __future__ import annotations

import json
import os
import sys
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


def main(argv: list[str] | None = None) -> int:
    """`python -m sft_trainer.termination REPORT_JSON`: write a finished run's summary from its report.

    For a process other than the one that ran: the submitter of a Ray
    curation, whose driver ran on the Ray head and wrote report.json to the
    output volume.
    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m sft_trainer.termination REPORT_JSON", file=sys.stderr)
        return 2
    path = Path(args[0])
    if not path.is_file():
        print(f"{path} does not exist: the curation did not finish", file=sys.stderr)
        return 1
    report = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(report.get("status"), dict):
        print(
            f"{path} has no status block: the curation failed ({report.get('error', 'no error recorded')})",
            file=sys.stderr,
        )
        return 1
    write_termination_summary(report["status"])
    print(compact(report["status"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
