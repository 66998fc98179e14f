"""The Argo CD health check, run by a real Lua 5.4 against statuses the operator writes."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest

from sft_operator import conditions as c
from sft_operator import run_state as st
from support.kube import REPO_ROOT

SCRIPT = (REPO_ROOT / "docs" / "argocd" / "health.lua").read_text()
LUA = shutil.which("lua5.4") or shutil.which("lua")


def to_lua(value: Any) -> str:
    """A Python value as a Lua literal (what Argo CD hands the script as `obj`)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "{" + ", ".join(to_lua(v) for v in value) + "}"
    return "{" + ", ".join(f"[{json.dumps(k)}] = {to_lua(v)}" for k, v in value.items()) + "}"


def health(obj: dict[str, Any]) -> tuple[str, str]:
    if LUA is None:
        pytest.fail("lua5.4 not installed: run `make system-deps`")
    program = f"obj = {to_lua(obj)}\nlocal function check()\n{SCRIPT}\nend\nlocal hs = check()\nio.write(hs.status, '\\t', hs.message)"
    result = subprocess.run([LUA, "-"], input=program, capture_output=True, text=True, check=True)
    status, _, message = result.stdout.partition("\t")
    return status, message


def run_state(state: str, reason: str, message: str = "") -> dict[str, Any]:
    return st.with_run_state({}, st.RunState(state, reason, message), generation=1)


def test_no_status_yet_is_progressing() -> None:
    assert health({"kind": "SFTJob"})[0] == "Progressing"


def test_running_job_is_progressing_with_percent() -> None:
    status = run_state(c.PHASE_RUNNING, c.JOB_RUNNING, "Job demo-train is running")
    status["progress"] = {"percent": 42.5, "step": 17}
    assert health({"status": status}) == ("Progressing", "JobRunning: Job demo-train is running (42.5%)")


def test_waiting_for_dataset_is_progressing() -> None:
    status = st.waiting({}, c.WAITING_FOR_DATASET, "DatasetCuration cur is not Ready", 1)
    assert health({"status": status}) == ("Progressing", "WaitingForDataset: DatasetCuration cur is not Ready")


def test_suspended_job_is_suspended() -> None:
    assert health({"status": run_state(c.PHASE_SUSPENDED, c.JOB_SUSPENDED, "Job is suspended")})[0] == "Suspended"


def test_succeeded_is_healthy() -> None:
    assert health({"status": run_state(c.PHASE_SUCCEEDED, c.JOB_SUCCEEDED, "done")}) == ("Healthy", "done")


@pytest.mark.parametrize("reason", [c.CONFIG_ERROR, c.QUALITY_GATE_FAILED, c.DEADLINE_EXCEEDED])
def test_failed_is_degraded_with_reason(reason: str) -> None:
    status = st.failed({}, reason, "minTaskEntropy: task entropy 0.410 is below 0.800", 1)
    assert health({"status": status}) == ("Degraded", f"{reason}: minTaskEntropy: task entropy 0.410 is below 0.800")
