"""A curation on Ray: the RayJob built from the curation pod template, and what KubeRay's status means."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sft_operator import conditions as c
from sft_operator.api import DatasetCurationSpec
from sft_operator.conditions import PHASE_FAILED as FAILED
from sft_operator.conditions import PHASE_PENDING as PENDING
from sft_operator.conditions import PHASE_RUNNING as RUNNING
from sft_operator.conditions import PHASE_SUCCEEDED as SUCCEEDED
from sft_operator.conditions import PHASE_SUSPENDED as SUSPENDED
from sft_operator.pod_reports import report_from_pods
from sft_operator.rayjob import (
    MAX_RAYJOB_NAME,
    SUBMIT_SCRIPT,
    engine_unavailable_message,
    ray_job,
    rayjob_run_state,
)
from sft_operator.run_status import run_status
from sft_operator.settings import OperatorSettings
from sft_trainer.termination import compact
from support import manifests

SETTINGS = OperatorSettings(trainer_image="registry.example/trainer:1", progress_port=9191)


def curation(name: str = "cur", **spec: Any) -> dict[str, Any]:
    ray: dict[str, Any] = {
        "output": {"pvc": {"claimName": "outputs", "path": "curated"}},
        "engine": {"type": "ray", "workers": 3, "cpusPerWorker": 2, "gpusPerWorker": 1},
        "resources": {"cpu": "4", "memory": "16Gi"},
        "lifecycle": {"ttlSecondsAfterFinished": 120, "activeDeadlineSeconds": 3600, "queueName": "team-q"},
    }
    return manifests.curation(name, "team", "uid-7", **{**ray, **spec})


def rayjob_of(body: dict[str, Any]) -> dict[str, Any]:
    return manifests.children(body, SETTINGS, runner=ray_job).job


def test_the_rayjob_is_the_curation_pod_template_in_three_roles() -> None:
    body = curation()
    job_template = manifests.children(body, SETTINGS).job["spec"]["template"]
    rayjob = rayjob_of(body)
    spec = rayjob["spec"]
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    assert rayjob["metadata"]["name"] == "cur-curate"
    assert rayjob["metadata"]["ownerReferences"][0] | {} == {
        "apiVersion": "sft.trustdoc.io/v1alpha1",
        "kind": "DatasetCuration",
        "name": "cur",
        "uid": "uid-7",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert rayjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-q"
    assert spec["entrypoint"] == "python -m sft_trainer curate /mnt/config/run.yaml"
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] == 120 and spec["activeDeadlineSeconds"] == 3600
    head = spec["rayClusterSpec"]["headGroupSpec"]
    (workers,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    submitter = spec["submitterPodTemplate"]
    for template in (head["template"], workers["template"], submitter):
        pod, job_pod = template["spec"], job_template["spec"]
        # Same volumes (run config, scratch, claims), pod security, no API token.
        assert pod["volumes"] == job_pod["volumes"]
        assert pod["securityContext"] == job_pod["securityContext"]
        assert pod["automountServiceAccountToken"] is False
        (container,) = pod["containers"]
        (job_container,) = job_pod["containers"]
        for key in ("image", "volumeMounts", "securityContext", "env", "terminationMessagePolicy"):
            if key == "env" and template is submitter:
                continue
            assert container[key] == job_container[key], key
    # KubeRay puts `ray start` into the Ray nodes: they carry no command of their own.
    assert "command" not in head["template"]["spec"]["containers"][0]
    assert "command" not in workers["template"]["spec"]["containers"][0]
    assert head["rayStartParams"] == {"num-cpus": "0"}
    # KubeRay's head Service takes the container's ports and adds its defaults only when there are none.
    head_ports = {p["name"]: p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert head_ports == {"progress": 9191, "gcs-server": 6379, "dashboard": 8265, "client": 10001, "metrics": 8080}
    assert head["template"]["spec"]["containers"][0]["resources"] == job_template["spec"]["containers"][0]["resources"]
    assert workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"] == 3
    assert workers["template"]["spec"]["containers"][0]["resources"] == {
        "limits": {"nvidia.com/gpu": "1", "cpu": "2", "memory": "16Gi"},
        "requests": {"cpu": "2", "memory": "16Gi"},
    }


def test_the_submitter_gets_the_entrypoint_as_arguments_never_as_shell_text() -> None:
    rayjob = rayjob_of(curation())
    (container,) = rayjob["spec"]["submitterPodTemplate"]["spec"]["containers"]
    assert container["command"][:3] == ["bash", "-c", SUBMIT_SCRIPT]
    assert container["command"][3:] == ["submit", "python", "-m", "sft_trainer", "curate", "/mnt/config/run.yaml"]
    assert {"name": "SFT_REPORT", "value": "/mnt/volumes/outputs/curated/report.json"} in container["env"]
    # It needs no GPU and no progress port: it only submits and follows logs.
    assert "nvidia.com/gpu" not in json.dumps(container["resources"]) and "ports" not in container


def test_the_run_config_carries_spec_engine_and_spec_curation_cannot_set_it() -> None:
    children = manifests.children(curation(), SETTINGS, runner=ray_job)
    run_config = yaml.safe_load(children.config_map["data"]["run.yaml"])
    assert run_config["curation"]["engine"] == {"type": "ray", "workers": 3, "cpusPerWorker": 2.0, "gpusPerWorker": 1}
    with pytest.raises(ValueError, match="set spec.engine instead"):
        DatasetCurationSpec.model_validate({**curation()["spec"], "curation": {"engine": {"type": "ray"}}})


def test_fractional_cpus_become_millicores_and_long_names_fit_kuberay() -> None:
    body = curation(name="a" * 60, engine={"type": "ray", "workers": 1, "cpusPerWorker": 0.5})
    rayjob = rayjob_of(body)
    (workers,) = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert workers["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "500m"
    assert len(rayjob["metadata"]["name"]) <= MAX_RAYJOB_NAME


def rayjob_with(status: dict[str, Any], suspend: bool = False) -> dict[str, Any]:
    return {"metadata": {"name": "cur-curate"}, "spec": {"suspend": suspend, "backoffLimit": 3}, "status": status}


def pod(phase: str, exit_code: int, message: str) -> dict[str, Any]:
    terminated = {"exitCode": exit_code, "message": message, "finishedAt": "2026-01-01T00:00:00Z"}
    return {
        "metadata": {"name": "cur-curate-abcde", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {"phase": phase, "containerStatuses": [{"name": "trainer", "state": {"terminated": terminated}}]},
    }


@pytest.mark.parametrize(
    ("status", "suspend", "state", "reason"),
    [
        ({}, False, PENDING, c.PODS_PENDING),
        ({"jobDeploymentStatus": "Initializing"}, False, PENDING, c.PODS_PENDING),
        ({"jobDeploymentStatus": "Running", "jobStatus": "PENDING"}, False, PENDING, c.PODS_PENDING),
        ({"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, False, RUNNING, c.JOB_RUNNING),
        ({"jobDeploymentStatus": "Suspended"}, True, SUSPENDED, c.JOB_SUSPENDED),
        ({"jobDeploymentStatus": "Retrying", "failed": 1}, False, PENDING, c.RETRYING),
        ({"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}, False, SUCCEEDED, c.JOB_SUCCEEDED),
        ({"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "reason": "AppFailed"}, False, FAILED, c.JOB_FAILED),
        ({"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded"}, False, FAILED, c.DEADLINE_EXCEEDED),
    ],
)
def test_kuberay_status_maps_to_a_run_state(status: dict[str, Any], suspend: bool, state: str, reason: str) -> None:
    run = rayjob_run_state(rayjob_with(status, suspend), [])
    assert (run.state, run.reason) == (state, reason)
    assert "cur-curate" in run.message or status.get("reason", "") in run.message


def test_a_failed_rayjob_names_the_submitters_last_log_line() -> None:
    status = {"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "reason": "AppFailed", "message": "Job failed"}
    run = rayjob_run_state(rayjob_with(status), [pod("Failed", 1, "...\nConfiguration error: input not found")])
    assert run.message.startswith("Job failed; pod cur-curate-abcde exited with code 1: Configuration error")


def test_a_completed_rayjob_takes_its_figures_from_the_submitters_termination_message() -> None:
    counts = {"input": 10, "curated": 7, "rejected": 2, "review": 1}
    message = compact({"counts": counts, "dropsByReason": {"dedup.exact": 2}, "rejectedFraction": 0.2})
    rayjob = rayjob_with(
        {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED", "endTime": "2026-01-01T00:01:00Z"}
    )
    pods = [pod("Succeeded", 0, message)]
    status = run_status(
        "DatasetCuration", {"jobName": "cur-curate"}, rayjob_run_state(rayjob, pods), report_from_pods(pods), 1
    )
    assert status["counts"] == counts and status["jobName"] == "cur-curate"
    assert status["phase"] == "Succeeded" and status["completionTime"] == "2026-01-01T00:01:00Z"
    missing = run_status("DatasetCuration", {}, rayjob_run_state(rayjob, []), report_from_pods([]), 1)
    assert next(x for x in missing["conditions"] if x["type"] == "Succeeded")["reason"] == c.REPORT_MISSING


def test_engine_unavailable_names_the_crd_and_the_helm_value() -> None:
    message = engine_unavailable_message()
    assert "rayjobs.ray.io" in message and "ray.enabled=true" in message


def test_the_submitter_writes_the_reports_status_as_its_termination_message(tmp_path: Path) -> None:
    report = {"status": {"counts": {"input": 3, "curated": 3, "rejected": 0, "review": 0}}, "steps": ["..."]}
    (tmp_path / "report.json").write_text(json.dumps(report))
    log = tmp_path / "termination-log"
    subprocess.run(
        [sys.executable, "-m", "sft_trainer.termination", str(tmp_path / "report.json")],
        check=True,
        env={"SFT_TERMINATION_LOG": str(log), "PATH": "/usr/bin:/bin"},
        capture_output=True,
    )
    assert json.loads(log.read_text()) == report["status"]


@pytest.mark.parametrize(
    ("report", "says"),
    [(None, "does not exist"), ({"error": "input not found"}, "the curation failed (input not found)")],
)
def test_without_a_successful_report_the_submitter_fails_and_says_why(
    tmp_path: Path, report: dict[str, Any] | None, says: str
) -> None:
    path = tmp_path / "report.json"
    if report is not None:
        path.write_text(json.dumps(report))
    log = tmp_path / "termination-log"
    done = subprocess.run(
        [sys.executable, "-m", "sft_trainer.termination", str(path)],
        env={"SFT_TERMINATION_LOG": str(log), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and says in done.stderr
    assert not log.exists()
