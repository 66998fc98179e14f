"""Run `python -m sft_trainer`'s main() on many run configs in one process.

    python cli_batch.py PLAN.json RESULTS.json

PLAN is a list of {"id": ..., "argv": ["curate" | "train", CONFIG]}. Each run
gets the exact code path of `python -m sft_trainer curate|train CONFIG`; one
process for all of them saves importing torch once per run (seconds each).
RESULTS gets, per id, the exit code (or "crash" / "hang" with the
traceback), what the run printed to stderr, and its seconds; plus the
process's peak RSS.

Before each run the batch opens MARKER/<id>, a path that never exists: under
strace the failed open marks where that run's system calls begin.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import resource
import signal
import sys
import time
import traceback
from pathlib import Path

MARKER = "/nonexistent-sft-batch-marker"
# A run still going after this long counts as hung (a blocking read, a loop).
RUN_SECONDS_LIMIT = 90


class Hung(Exception):
    pass


class _CurrentStderr(logging.Handler):
    """Logs to whatever sys.stderr is now, so each run's log lines land in its own capture."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(self.format(record) + "\n")


def _on_alarm(signum: int, frame: object) -> None:
    raise Hung(f"still running after {RUN_SECONDS_LIMIT} s")


def mark(run_id: str) -> None:
    with contextlib.suppress(OSError):
        Path(MARKER, run_id).open().close()


def run_one(argv: list[str]) -> tuple[int | str, str, float]:
    from sft_trainer.__main__ import main

    captured = io.StringIO()
    started = time.monotonic()
    signal.alarm(RUN_SECONDS_LIMIT)
    try:
        with contextlib.redirect_stderr(captured):
            code: int | str = main(argv)
    except Hung:
        code = "hang"
        captured.write(traceback.format_exc())
    except BaseException:  # a crash, SystemExit included: exactly what must not happen
        code = "crash"
        captured.write(traceback.format_exc())
    finally:
        signal.alarm(0)
    return code, captured.getvalue(), round(time.monotonic() - started, 2)


def main() -> None:
    plan_path, results_path = map(Path, sys.argv[1:3])
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    signal.signal(signal.SIGALRM, _on_alarm)
    results = {}
    for step in json.loads(plan_path.read_text()):
        mark(step["id"])
        code, stderr, seconds = run_one(step["argv"])
        results[step["id"]] = {"exit": code, "stderr": stderr, "seconds": seconds}
    mark("end")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results_path.write_text(json.dumps({"runs": results, "peakRssMb": round(peak_mb)}))


if __name__ == "__main__":
    main()
