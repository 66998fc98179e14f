"""Pure status logic: a Job and its pods in, the custom resource's status and Events out."""

from __future__ import annotations

import json
from typing import Any, get_args

import pytest

from sft_operator import conditions as c
from sft_operator.api import DatasetCurationSpec, Phase, PvcLocation, SFTJobSpec
from sft_operator.events import transition
from sft_operator.figures import curation_figures
from sft_operator.inputs import curation_readiness, gate_failures
from sft_operator.pod_reports import last_pod_failure, report_from_pods
from sft_operator.readiness import NOT_YET, READY_TO_USE, UNUSABLE, Readiness
from sft_operator.run_state import RunState as State
from sft_operator.run_state import cluster_run_state, is_running, with_run_state
from sft_operator.run_status import output_location, run_status, spec_fields


def job(
    status: dict[str, Any] | None = None, suspend: bool = False, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {"name": "x-train", "labels": labels or {}},
        "spec": {"suspend": suspend, "backoffLimit": 3},
        "status": status or {},
    }


def pod(
    name: str,
    phase: str,
    exit_code: int | None = None,
    message: str = "",
    index: str | None = None,
    finished: str = "2026-01-01T00:00:00Z",
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "creationTimestamp": finished}
    if index is not None:
        meta["annotations"] = {"batch.kubernetes.io/job-completion-index": index}
    status: dict[str, Any] = {"phase": phase}
    if exit_code is not None:
        terminated = {"exitCode": exit_code, "message": message, "finishedAt": finished}
        status["containerStatuses"] = [{"name": "trainer", "state": {"terminated": terminated}}]
    return {"metadata": meta, "status": status}


def observe_job(
    kind: str, status: dict[str, Any], job: dict[str, Any], pods: list[dict[str, Any]], generation: int
) -> dict[str, Any]:
    """What the operator writes after a Job event: the shared `run_status` fed from the Job and its pods."""
    named = {**status, "jobName": job["metadata"]["name"]}
    return run_status(kind, named, cluster_run_state(kind, job, pods), report_from_pods(pods), generation)


COMPLETE = {
    "conditions": [{"type": "Complete", "status": "True"}],
    "startTime": "t0",
    "completionTime": "t1",
    "succeeded": 1,
}
FIGURES = {
    "counts": {"input": 10, "curated": 7, "rejected": 2, "review": 1},
    "taskEntropyAfter": 0.8,
    "rejectedFraction": 0.2,
}


def test_a_job_whose_pods_are_not_ready_is_pending_not_running() -> None:
    assert cluster_run_state("SFTJob", job({"active": 1, "ready": 0}), []).reason == c.PODS_PENDING
    assert cluster_run_state("SFTJob", job({}), []).reason == c.PODS_PENDING
    running = cluster_run_state("SFTJob", job({"active": 1, "ready": 1}), [])
    assert (running.state, running.reason) == ("Running", c.JOB_RUNNING)


def test_a_failed_pod_being_retried_says_which_exit_code_and_how_many_retries() -> None:
    pods = [pod("x-train-a", "Failed", 1, "loading\nRuntimeError: CUDA out of memory\n")]
    state = cluster_run_state("SFTJob", job({"failed": 1, "active": 1, "ready": 0}), pods)
    assert state.reason == c.RETRYING
    assert state.message == (
        "pod x-train-a exited with code 1: RuntimeError: CUDA out of memory; "
        "1 of 3 retries used, the next pod resumes from the newest checkpoint"
    )
    curation = cluster_run_state("DatasetCuration", job({"failed": 1, "active": 1, "ready": 0}), pods)
    assert curation.message.endswith("1 of 3 retries used, the next pod starts over")
    again = cluster_run_state("SFTJob", job({"failed": 1, "active": 1, "ready": 1}), pods)
    assert again.reason == c.JOB_RUNNING and again.message.endswith("after 1 of 3 retries used")


def test_a_suspended_job_names_its_kueue_queue() -> None:
    state = cluster_run_state("SFTJob", job(suspend=True, labels={"kueue.x-k8s.io/queue-name": "team-a"}), [])
    assert (state.reason, state.message) == (
        c.JOB_SUSPENDED,
        "Job x-train is suspended until Kueue admits it to queue team-a",
    )


def test_a_failed_job_carries_the_last_pod_failure() -> None:
    failed = {
        "conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": "exit code 42"}]
    }
    pods = [pod("x-train-a", "Failed", 42, "Configuration error: run.yaml: epochs: must be > 0")]
    state = cluster_run_state("SFTJob", job(failed), pods)
    assert state.reason == c.CONFIG_ERROR
    assert (
        state.message
        == "exit code 42; pod x-train-a exited with code 42: Configuration error: run.yaml: epochs: must be > 0"
    )


def test_last_pod_failure_is_the_newest_and_is_clipped() -> None:
    pods = [
        pod("old", "Failed", 1, "old error", finished="2026-01-01T00:00:00Z"),
        pod("new", "Failed", 2, "x" * 1000, finished="2026-01-01T00:05:00Z"),
        pod("ok", "Running"),
    ]
    failure = last_pod_failure(pods)
    assert failure.startswith("pod new exited with code 2: xxx") and len(failure) == 300
    assert last_pod_failure([pod("ok", "Running")]) == ""


def test_the_report_comes_from_the_rank_zero_succeeded_pod() -> None:
    pods = [
        pod("r1", "Succeeded", 0, json.dumps({"counts": {"input": 1}}), index="1"),
        pod("r0", "Succeeded", 0, json.dumps(FIGURES), index="0"),
    ]
    assert report_from_pods(pods).report == {"status": FIGURES}
    missing = report_from_pods([pod("r0", "Succeeded", 0, "")])
    assert missing.report is None and missing.problem == "pod r0 left no termination message"
    garbled = report_from_pods([pod("r0", "Succeeded", 0, "Traceback: boom")])
    assert garbled.report is None and "is not JSON" in garbled.problem


def test_observe_job_merges_figures_without_touching_other_status_fields() -> None:
    before = {"outputLocation": "pvc://outputs/cur", "conditions": []}
    after = observe_job("DatasetCuration", before, job(COMPLETE), [pod("p", "Succeeded", 0, json.dumps(FIGURES))], 2)
    assert after["counts"] == FIGURES["counts"] and after["taskEntropyAfter"] == 0.8
    assert after["outputLocation"] == "pvc://outputs/cur" and after["jobName"] == "x-train"
    assert (after["phase"], after["observedGeneration"]) == ("Succeeded", 2)
    ready = c.get_condition(after["conditions"], c.READY)
    assert ready is not None and (ready["status"], ready["reason"], ready["observedGeneration"]) == (
        "True",
        c.JOB_SUCCEEDED,
        2,
    )
    assert (after["startTime"], after["completionTime"]) == ("t0", "t1")


def test_a_completed_job_without_report_succeeds_with_report_missing() -> None:
    after = observe_job("SFTJob", {}, job(COMPLETE), [pod("p", "Succeeded", 0, "")], 1)
    succeeded = c.get_condition(after["conditions"], c.SUCCEEDED)
    assert after["phase"] == "Succeeded"
    assert succeeded is not None and succeeded["reason"] == c.REPORT_MISSING
    assert "pod p left no termination message" in succeeded["message"]
    # Figures taken earlier (before a TTL deleted the pods) still count as the report.
    kept = observe_job("DatasetCuration", curation_figures({"status": FIGURES}), job(COMPLETE), [], 1)
    assert c.get_condition(kept["conditions"], c.READY)["reason"] == c.JOB_SUCCEEDED  # type: ignore[index]


def test_curation_figures_never_carry_conditions() -> None:
    status = {"conditions": [{"type": "Ready", "status": "True"}]}
    merged = {**status, **curation_figures({"status": FIGURES})}
    assert merged["conditions"] == status["conditions"]


def test_an_event_is_due_only_when_the_headline_condition_changes() -> None:
    pending = with_run_state({}, State("Pending", c.PODS_PENDING, "waiting for pods"), 1)
    running = with_run_state(pending, State("Running", c.JOB_RUNNING, "Job x-train is running"), 1)
    failed = with_run_state(running, State("Failed", c.BACKOFF_LIMIT_EXCEEDED, "backoff"), 1)
    assert transition({}, pending) == transition({}, pending)
    first = transition({}, pending)
    assert first is not None and (first.type, first.reason) == ("Normal", c.PODS_PENDING)
    assert transition(pending, pending) is None
    assert transition(pending, {**running, "progress": {"step": 3}}) == transition(pending, running)
    assert transition(running, {**running, "progress": {"step": 4}}) is None
    event = transition(running, failed)
    assert event is not None and (event.type, event.reason, event.message) == (
        "Warning",
        c.BACKOFF_LIMIT_EXCEEDED,
        "backoff",
    )


@pytest.mark.parametrize(
    ("gates", "figures", "expected"),
    [
        (
            {"minTaskEntropy": 0.9},
            {"taskEntropyAfter": 0.75},
            ["minTaskEntropy: task entropy 0.750 is below 0.900 by 0.150"],
        ),
        (
            {"maxRejectedFraction": 0.3},
            {"rejectedFraction": 0.42},
            ["maxRejectedFraction: rejected fraction 0.420 is above 0.300 by 0.120"],
        ),
        (
            {"minCuratedRecords": 100},
            {"counts": {"curated": 60}},
            ["minCuratedRecords: 60 curated records, fewer than 100 by 40"],
        ),
        ({"minTaskEntropy": 0.5}, {}, ["minTaskEntropy: task entropy unknown is below 0.500"]),
        ({"minTaskEntropy": 0.5, "maxRejectedFraction": 0.5}, {"taskEntropyAfter": 0.6, "rejectedFraction": 0.5}, []),
        (None, {}, []),
    ],
)
def test_gate_failures_name_the_gate_and_the_margin(
    gates: dict[str, Any] | None, figures: dict[str, Any], expected: list[str]
) -> None:
    assert gate_failures(gates, figures) == expected


def test_curation_readiness() -> None:
    assert curation_readiness(None, "cur", None) == Readiness(
        NOT_YET, c.WAITING_FOR_DATASET, "Waiting for DatasetCuration cur: it does not exist yet"
    )
    running = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}}
    assert curation_readiness(running, "cur", None) == Readiness(
        NOT_YET, c.WAITING_FOR_DATASET, "Waiting for DatasetCuration cur to be Ready (it is Running)"
    )
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}], "counts": {"curated": 5, "review": 3}}}
    assert curation_readiness(ready, "cur", None).state == READY_TO_USE
    gated = curation_readiness(ready, "cur", {"minCuratedRecords": 10})
    assert (gated.state, gated.reason) == (UNUSABLE, c.QUALITY_GATE_FAILED) and "minCuratedRecords" in gated.message
    held = curation_readiness(ready, "cur", {"maxPendingReview": 0})
    assert (held.state, held.reason) == (NOT_YET, c.WAITING_FOR_REVIEW)
    failed = {"status": {"conditions": [{"type": "Failed", "status": "True", "message": "exit code 42"}]}}
    assert curation_readiness(failed, "cur", None) == Readiness(
        UNUSABLE, c.DATASET_FAILED, "DatasetCuration cur failed: exit code 42"
    )


def test_output_location() -> None:
    assert output_location(PvcLocation(claim_name="outputs", path="runs/a")) == "pvc://outputs/runs/a"
    assert output_location(PvcLocation(claim_name="outputs")) == "pvc://outputs"


def test_spec_fields_name_the_output_and_the_curation() -> None:
    sftjob = {
        "model": {"pvc": {"claimName": "models", "path": "smollm2"}},
        "dataset": {"curationRef": {"name": "cur"}},
        "output": {"pvc": {"claimName": "outputs", "path": "sft/a"}},
    }
    lineage = [{"model": {"pvc": {"claimName": "models", "path": "smollm2"}}}]  # a root stage: its base model
    assert spec_fields(SFTJobSpec.model_validate(sftjob)) == {
        "outputLocation": "pvc://outputs/sft/a",
        "curationName": "cur",
        "lineage": lineage,
    }
    sftjob["dataset"] = {"pvc": {"claimName": "datasets", "path": "train.jsonl"}}
    assert spec_fields(SFTJobSpec.model_validate(sftjob)) == {
        "outputLocation": "pvc://outputs/sft/a",
        "lineage": lineage,
    }
    sftjob["model"] = {"sftJobRef": {"name": "general", "use": "adapter"}}
    assert spec_fields(SFTJobSpec.model_validate(sftjob)) == {
        "outputLocation": "pvc://outputs/sft/a"
    }  # from its parent
    curation = {
        "source": {"pvc": {"claimName": "datasets", "path": "raw.json"}},
        "output": {"pvc": {"claimName": "outputs"}},
    }
    assert spec_fields(DatasetCurationSpec.model_validate(curation)) == {"outputLocation": "pvc://outputs"}


def test_running_is_read_from_the_conditions_and_the_phase_is_only_their_summary() -> None:
    running = with_run_state({}, State(c.PHASE_RUNNING, c.JOB_RUNNING, "Job x-train is running"), 1)
    assert is_running(running) and running["phase"] == c.PHASE_RUNNING
    retrying = with_run_state(running, State(c.PHASE_PENDING, c.RETRYING, "pod failed; 1 of 3 retries used"), 1)
    assert not is_running(retrying) and retrying["phase"] == c.PHASE_PENDING
    # The progress timer's filter decides on the conditions: a stale phase word changes nothing.
    assert not is_running({**retrying, "phase": c.PHASE_RUNNING})
    assert set(c.PHASES) == set(get_args(Phase))  # the CRD's enum and the words the code writes agree
