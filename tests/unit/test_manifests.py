"""The pure builders: a custom resource in, the exact ConfigMap / Job / Service out, no cluster needed."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from sft_operator.layout import MountLayout
from sft_operator.naming import MANAGED_BY, MANAGED_BY_LABEL, ResourceRef, child_name, job_name
from sft_operator.pods import TORCHRUN
from sft_operator.settings import OperatorSettings
from sft_trainer.config import EXIT_CONFIG_ERROR
from support import manifests

SETTINGS = OperatorSettings(trainer_image="registry.example/trainer:1", progress_port=9191)


def sftjob(**spec: Any) -> dict[str, Any]:
    return manifests.sftjob("demo", "team", "uid-1", **spec)


def curation(**spec: Any) -> dict[str, Any]:
    return manifests.curation("cur", "team", "uid-2", **spec)


def container(job: dict[str, Any]) -> dict[str, Any]:
    (only,) = job["spec"]["template"]["spec"]["containers"]
    return only  # type: ignore[no-any-return]


def test_builders_are_deterministic_and_leave_their_input_alone() -> None:
    body = sftjob(resources={"nodes": 2, "gpusPerNode": 4})
    original = copy.deepcopy(body)
    first = manifests.children(body, SETTINGS).all()
    second = manifests.children(body, SETTINGS).all()
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    assert body == original


def test_every_child_is_named_from_its_owner_and_owned_by_it() -> None:
    children = manifests.children(sftjob(resources={"nodes": 2, "gpusPerNode": 1}), SETTINGS)
    names = [obj["metadata"]["name"] for obj in children.all()]
    assert names == ["demo-run-config", "demo-train", "demo-train"]  # ConfigMap, Service, Job
    for obj in children.all():
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref == {
            "apiVersion": "sft.trustdoc.io/v1alpha1",
            "kind": "SFTJob",
            "name": "demo",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert obj["metadata"]["namespace"] == "team"
        assert obj["metadata"]["labels"][MANAGED_BY_LABEL] == MANAGED_BY


def test_long_names_are_shortened_stably_within_the_label_limit() -> None:
    long = "a" * 80
    name = child_name(long, "train")
    assert len(name) <= 63 and name == child_name(long, "train") and name != child_name(long + "b", "train")
    assert job_name(ResourceRef("SFTJob", "ns", long, "u")) == name


def test_pod_failure_policy_fails_config_errors_at_once_and_ignores_disruptions() -> None:
    job = manifests.children(curation(lifecycle={"backoffLimit": 7}), SETTINGS).job
    assert job["spec"]["backoffLimit"] == 7
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [EXIT_CONFIG_ERROR]},
    }
    assert rules[1] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy requires it


def test_pods_are_locked_down() -> None:
    job = manifests.children(sftjob(), SETTINGS).job
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    security = container(job)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]} and security["seccompProfile"] == {"type": "RuntimeDefault"}


def test_the_report_summary_comes_back_through_the_termination_message() -> None:
    trainer = container(manifests.children(curation(), SETTINGS).job)
    assert trainer["terminationMessagePath"] == "/dev/termination-log"
    assert trainer["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert trainer["ports"] == [{"name": "progress", "containerPort": 9191}]


def test_a_hugging_face_token_is_passed_by_secret_reference_only() -> None:
    body = sftjob(model={"huggingFace": {"repo": "org/model", "tokenSecretRef": {"name": "hf", "key": "token"}}})
    children = manifests.children(body, SETTINGS)
    env = {e["name"]: e for e in container(children.job)["env"]}
    assert env["HF_TOKEN"] == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
    run_config = yaml.safe_load(children.config_map["data"]["run.yaml"])
    assert run_config["model"] == "hf://org/model@main"
    assert "tokenSecretRef" not in children.config_map["data"]["run.yaml"]


def test_multi_node_is_an_indexed_job_with_torchrun_rendezvous_on_index_zero() -> None:
    children = manifests.children(sftjob(resources={"nodes": 3, "gpusPerNode": 8}), SETTINGS)
    job = children.job
    assert job["spec"]["completionMode"] == "Indexed"
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (3, 3)
    trainer = container(job)
    assert trainer["command"][:7] == [
        *TORCHRUN,
        "--nnodes=3",
        "--nproc-per-node=8",
        "--node-rank=$(NODE_RANK)",
        "--master-addr=demo-train-0.demo-train",
    ]
    rank = next(e for e in trainer["env"] if e["name"] == "NODE_RANK")
    assert (
        rank["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == "8"  # a quantity string, as typed clients require
    assert job["spec"]["template"]["spec"]["subdomain"] == "demo-train"
    assert children.service is not None
    assert children.service["spec"]["clusterIP"] == "None" and children.service["spec"]["publishNotReadyAddresses"]
    assert children.service["spec"]["selector"] == {"batch.kubernetes.io/job-name": "demo-train"}


def test_pods_are_told_where_the_claims_are_mounted() -> None:
    moved = OperatorSettings(volumes_root="/data/claims")
    env = {e["name"]: e.get("value") for e in container(manifests.children(sftjob(), moved).job)["env"]}
    assert env["SFT_VOLUMES_ROOT"] == "/data/claims"


def test_one_node_with_several_gpus_runs_one_process_per_gpu() -> None:
    children = manifests.children(sftjob(resources={"gpusPerNode": 4}), SETTINGS)
    assert container(children.job)["command"] == [
        *TORCHRUN,
        "--standalone",
        "--nproc-per-node=4",
        "-m",
        "sft_trainer",
        "train",
        MountLayout().run_config_path,
    ]
    assert children.service is None and "completionMode" not in children.job["spec"]
    curation_job = manifests.children(curation(resources={"gpusPerNode": 2}), SETTINGS).job
    assert container(curation_job)["command"][:3] == ["python", "-m", "sft_trainer"]


def test_single_node_has_no_service_and_runs_the_module_directly() -> None:
    children = manifests.children(sftjob(), SETTINGS)
    assert children.service is None
    assert container(children.job)["command"][:4] == ["python", "-m", "sft_trainer", "train"]
    assert "completionMode" not in children.job["spec"]


@pytest.mark.parametrize(
    ("lifecycle", "expected"),
    [
        ({"suspend": True}, {"suspend": True}),
        ({"activeDeadlineSeconds": 3600}, {"activeDeadlineSeconds": 3600}),
        # The TTL reaches the Job only once status holds its report (reconciler.hand_to_ttl).
        ({"ttlSecondsAfterFinished": 0}, {"ttlSecondsAfterFinished": None}),
        ({}, {"suspend": False, "backoffLimit": 3}),
    ],
)
def test_lifecycle_maps_onto_the_job(lifecycle: dict[str, Any], expected: dict[str, Any]) -> None:
    spec = manifests.children(sftjob(lifecycle=lifecycle), SETTINGS).job["spec"]
    assert {key: spec.get(key) for key in expected} == expected
    if "activeDeadlineSeconds" not in lifecycle:
        assert "activeDeadlineSeconds" not in spec


def test_the_kueue_queue_name_becomes_the_job_label() -> None:
    job = manifests.children(curation(lifecycle={"queueName": "team-a", "suspend": True}), SETTINGS).job
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["spec"]["suspend"] is True


def test_a_curation_ref_reads_the_curated_file_from_the_curations_claim() -> None:
    body = sftjob(dataset={"curationRef": {"name": "cur"}})
    ref_curation = curation(output={"pvc": {"claimName": "curated-data", "path": "runs/cur"}})
    children = manifests.children(body, SETTINGS, ref_curation)
    run_config = yaml.safe_load(children.config_map["data"]["run.yaml"])
    assert run_config["dataset"].endswith("/curated-data/runs/cur/curated.jsonl")
    assert run_config["format"] == "messages"
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in children.job["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert sorted(claims) == ["curated-data", "models", "outputs"]
    with pytest.raises(ValueError, match="curationRef"):
        manifests.children(body, SETTINGS)
