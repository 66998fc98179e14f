"""Lifecycle on the real API server: suspend, deadlines, retries, disruptions, TTL, deletion."""

from __future__ import annotations

import pytest
from operator_support import Api, Node, RunningOperator, condition, curation_manifest, eventually, sftjob_manifest

from sft_trainer.termination import compact

pytestmark = pytest.mark.cluster


def phase_is(api: Api, ns: str, name: str, phase: str) -> dict[str, object] | None:
    status = api.status("SFTJob", ns, name)
    return status if status.get("phase") == phase else None


def test_suspend_passes_the_queue_label_and_resumes_on_change(
    operator: RunningOperator, namespace: str, api: Api
) -> None:
    api.create(sftjob_manifest(namespace, "sft", lifecycle={"suspend": True, "queueName": "team-a"}))
    job = eventually(lambda: api.job(namespace, "sft-train"), what="Job sft-train")
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    suspended = eventually(lambda: phase_is(api, namespace, "sft", "Suspended"), what="phase Suspended")
    assert "until Kueue admits it to queue team-a" in condition(suspended, "Progressing")["message"]
    assert api.pods(namespace, "sft-train") == [], "a suspended Job has no pods"

    api.patch_spec("SFTJob", namespace, "sft", {"spec": {"lifecycle": {"suspend": False}}})
    eventually(lambda: (j := api.job(namespace, "sft-train")) and j["spec"]["suspend"] is False, what="Job resumed")
    pending = eventually(lambda: phase_is(api, namespace, "sft", "Pending"), what="phase Pending after resuming")
    assert condition(pending, "Progressing")["reason"] == "PodsPending"
    assert eventually(lambda: api.pods(namespace, "sft-train"), what="pods after resuming")
    events = api.event_messages(namespace, "sft")
    assert ("Normal", "Resumed", "Resumed Job sft-train") in events


def test_deadline_and_ttl_changes_reach_the_running_job_and_the_deadline_fails_it(
    operator: RunningOperator, namespace: str, api: Api
) -> None:
    api.create(sftjob_manifest(namespace, "sft"))
    eventually(lambda: api.status("SFTJob", namespace, "sft").get("jobName"), what="status.jobName")
    api.patch_spec(
        "SFTJob",
        namespace,
        "sft",
        {"spec": {"lifecycle": {"activeDeadlineSeconds": 1, "ttlSecondsAfterFinished": 600}}},
    )
    failed = eventually(lambda: phase_is(api, namespace, "sft", "Failed"), what="phase Failed by the deadline")
    assert condition(failed, "Failed")["reason"] == "DeadlineExceeded"
    # The TTL waits for the run to finish (and its status to be written), then reaches the Job.
    eventually(
        lambda: (j := api.job(namespace, "sft-train")) and j["spec"].get("ttlSecondsAfterFinished") == 600,
        what="the TTL on the failed Job",
    )
    events = api.event_messages(namespace, "sft")
    assert ("Normal", "Updated", "Updated Job sft-train: activeDeadlineSeconds=1") in events
    assert any(t == "Warning" and r == "DeadlineExceeded" for t, r, _ in events)


def test_a_failed_pod_is_retried_then_the_backoff_limit_fails_the_job(
    operator: RunningOperator, namespace: str, api: Api, node: Node
) -> None:
    api.create(sftjob_manifest(namespace, "sft", lifecycle={"backoffLimit": 1}))
    (first,) = node.wait_pending(namespace, "sft-train")
    node.run(first)
    node.finish(first, 1, "Traceback (most recent call last):\nRuntimeError: CUDA error: an illegal memory access")
    retrying = eventually(
        lambda: (
            (s := api.status("SFTJob", namespace, "sft"))
            and condition(s, "Progressing").get("reason") == "Retrying"
            and s
        ),
        what="reason Retrying",
    )
    message = condition(retrying, "Progressing")["message"]
    assert f"pod {first['metadata']['name']} exited with code 1: RuntimeError: CUDA error" in message
    assert "1 of 1 retries used" in message and "resumes from the newest checkpoint" in message

    # The Job controller's own backoff (10 s) delays the replacement; it runs the same config on the same output.
    (second,) = eventually(lambda: node.pods(namespace, "sft-train", "Pending"), timeout=40, what="the retry pod")
    assert second["spec"]["containers"][0]["command"] == first["spec"]["containers"][0]["command"]
    assert second["spec"]["volumes"] == first["spec"]["volumes"]
    node.run(second)
    running = eventually(lambda: phase_is(api, namespace, "sft", "Running"), what="the retry running")
    assert "after 1 of 1 retries used" in condition(running, "Progressing")["message"]
    node.finish(second, 1, "RuntimeError: again")
    failed = eventually(lambda: phase_is(api, namespace, "sft", "Failed"), what="phase Failed")
    assert condition(failed, "Failed")["reason"] == "BackoffLimitExceeded"
    assert "RuntimeError: again" in condition(failed, "Failed")["message"]
    assert [r for t, r, _ in api.event_messages(namespace, "sft") if t == "Warning"] == [
        "Retrying",
        "BackoffLimitExceeded",
    ]


def test_a_disrupted_pod_does_not_count_against_the_backoff_limit(
    operator: RunningOperator, namespace: str, api: Api, node: Node
) -> None:
    api.create(sftjob_manifest(namespace, "sft", lifecycle={"backoffLimit": 0}))
    (evicted,) = node.wait_pending(namespace, "sft-train")
    node.run(evicted)
    node.finish(evicted, 137, "", disrupted=True)
    replacement = eventually(
        lambda: [
            p
            for p in node.pods(namespace, "sft-train", "Pending")
            if p["metadata"]["name"] != evicted["metadata"]["name"]
        ],
        what="a replacement pod",
    )
    node.run(replacement[0])
    eventually(lambda: phase_is(api, namespace, "sft", "Running"), what="phase Running on the replacement")
    job = api.job(namespace, "sft-train")
    assert job is not None and not job["status"].get("failed"), "the disruption was counted"
    assert api.status("SFTJob", namespace, "sft")["phase"] == "Running"


def test_the_job_gets_its_ttl_only_once_status_holds_the_figures(
    operator: RunningOperator, namespace: str, api: Api, node: Node
) -> None:
    """The TTL controller deletes a finished Job's pods, and the figures with them: the TTL waits for status."""
    api.create(sftjob_manifest(namespace, "sft", lifecycle={"ttlSecondsAfterFinished": 600}))
    (pod,) = node.wait_pending(namespace, "sft-train")
    node.run(pod)
    eventually(lambda: phase_is(api, namespace, "sft", "Running"), what="phase Running")
    job = api.job(namespace, "sft-train")
    assert job is not None and "ttlSecondsAfterFinished" not in job["spec"], "a running Job carries no TTL"

    node.finish(pod, 0, compact({"metrics": {"trainLoss": 0.9}, "progress": {"step": 10, "totalSteps": 10}}))
    eventually(
        lambda: (j := api.job(namespace, "sft-train")) and j["spec"].get("ttlSecondsAfterFinished") == 600,
        what="the TTL on the finished Job",
    )
    # Patched after the status write that took the figures, so they are there as soon as the TTL is.
    done = api.status("SFTJob", namespace, "sft")
    assert done["phase"] == "Succeeded" and done["metrics"] == {"trainLoss": 0.9}
    assert condition(done, "Ready")["reason"] == "JobSucceeded"


@pytest.mark.parametrize("attempt", range(3))
def test_ttl_deletes_the_job_but_status_and_figures_stay(
    operator: RunningOperator, namespace: str, api: Api, node: Node, attempt: int
) -> None:
    """Run three times: the TTL-0 race (the Job's pods deleted before their report was read) lost no figures."""
    api.create(sftjob_manifest(namespace, "sft", lifecycle={"ttlSecondsAfterFinished": 0}))
    (pod,) = node.wait_pending(namespace, "sft-train")
    node.run(pod)
    node.finish(pod, 0, compact({"metrics": {"trainLoss": 0.9}, "progress": {"step": 10, "totalSteps": 10}}))
    eventually(lambda: api.job(namespace, "sft-train") is None, what="the TTL controller deleting the Job")
    done = eventually(lambda: phase_is(api, namespace, "sft", "Succeeded"), what="phase Succeeded")
    assert done["metrics"] == {"trainLoss": 0.9}
    assert condition(done, "Ready")["reason"] == "JobSucceeded"
    assert done["completionTime"]


def test_a_job_deleted_while_running_fails_the_object(operator: RunningOperator, namespace: str, api: Api) -> None:
    api.create(sftjob_manifest(namespace, "sft"))
    eventually(lambda: api.status("SFTJob", namespace, "sft").get("jobName"), what="status.jobName")
    api.batch.delete_namespaced_job("sft-train", namespace, propagation_policy="Background")
    failed = eventually(lambda: phase_is(api, namespace, "sft", "Failed"), what="phase Failed")
    assert condition(failed, "Failed")["reason"] == "JobDeleted"
    assert api.job(namespace, "sft-train") is None, "the operator recreated a deleted Job"


def test_deleting_the_object_removes_everything_it_created(
    operator: RunningOperator, namespace: str, api: Api, node: Node
) -> None:
    api.create(sftjob_manifest(namespace, "sft", resources={"nodes": 2, "gpusPerNode": 1}))
    node.wait_pending(namespace, "sft-train", count=2)
    assert len(api.config_maps(namespace)) == 1 and len(api.services(namespace)) == 1
    api.delete("SFTJob", namespace, "sft")
    eventually(
        lambda: (
            not (api.jobs(namespace) or api.config_maps(namespace) or api.services(namespace) or api.pods(namespace))
        ),
        timeout=60,
        what="the garbage collector removing Job, ConfigMap, Service and pods",
    )
    assert api.get("SFTJob", namespace, "sft") is None


def test_changing_the_training_of_a_started_job_is_reported_not_applied(
    operator: RunningOperator, namespace: str, api: Api
) -> None:
    api.create(sftjob_manifest(namespace, "sft"))
    job = eventually(lambda: api.job(namespace, "sft-train"), what="Job sft-train")
    api.patch_spec("SFTJob", namespace, "sft", {"spec": {"training": {"epochs": 1}}})
    warning = eventually(
        lambda: [m for t, r, m in api.event_messages(namespace, "sft") if r == "SpecChangeIgnored"],
        what="a SpecChangeIgnored Warning",
    )
    assert "spec.training.epochs" in warning[0] and "Job sft-train already exists" in warning[0]
    unchanged = api.job(namespace, "sft-train")
    assert unchanged is not None and unchanged["metadata"]["uid"] == job["metadata"]["uid"]


def test_a_curation_takes_lifecycle_changes_and_names_ignored_ones_as_an_sftjob_does(
    operator: RunningOperator, namespace: str, api: Api
) -> None:
    """Lifecycle and spec drift are one registration over both kinds (handlers/both_kinds.py)."""
    api.create(curation_manifest(namespace, "cur", lifecycle={"suspend": True}))
    eventually(
        lambda: api.status("DatasetCuration", namespace, "cur").get("phase") == "Suspended",
        what="DatasetCuration phase Suspended",
    )
    api.patch_spec(
        "DatasetCuration", namespace, "cur", {"spec": {"lifecycle": {"suspend": False}, "curation": {"maxRecords": 10}}}
    )
    eventually(
        lambda: (j := api.job(namespace, "cur-curate")) and j["spec"]["suspend"] is False,
        what="Job cur-curate resumed",
    )
    events = eventually(
        lambda: (e := api.event_messages(namespace, "cur")) and any(r == "SpecChangeIgnored" for _, r, _ in e) and e,
        what="a SpecChangeIgnored Warning on the curation",
    )
    assert ("Normal", "Resumed", "Resumed Job cur-curate") in events
    (ignored,) = [m for _, r, m in events if r == "SpecChangeIgnored"]
    assert "spec.curation.maxRecords" in ignored and "spec.lifecycle" not in ignored
