"""SFTJob on the real API server: dataset waiting and gates, progress, printer columns, metrics, multi-node."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from operator_support import (
    Api,
    Node,
    RunningOperator,
    condition,
    curation_manifest,
    eventually,
    sftjob_manifest,
)

from sft_operator.layout import MountLayout
from sft_trainer.progress import ProgressServer
from sft_trainer.termination import compact
from support.kube import Kubectl

pytestmark = pytest.mark.cluster

CURATED = {
    "counts": {"input": 200, "curated": 150, "rejected": 40, "review": 10},
    "dropsByReason": {"duplicate": 40},
    "taskEntropyBefore": 0.61,
    "taskEntropyAfter": 0.55,
    "rejectedFraction": 0.2,
}


def finish_curation(api: Api, node: Node, ns: str, name: str, figures: dict[str, Any]) -> None:
    (pod,) = node.wait_pending(ns, f"{name}-curate")
    node.finish(pod, 0, compact(figures))
    eventually(lambda: api.status("DatasetCuration", ns, name).get("phase") == "Succeeded", what=f"{name} Succeeded")


def test_sftjob_waits_for_its_curation_then_trains_on_the_curated_file(
    operator: RunningOperator, namespace: str, api: Api, node: Node
) -> None:
    api.create(sftjob_manifest(namespace, "sft", dataset={"curationRef": {"name": "cur"}}))
    waiting = eventually(
        lambda: (s := api.status("SFTJob", namespace, "sft")).get("phase") == "Waiting" and s, what="phase Waiting"
    )
    progressing = condition(waiting, "Progressing")
    assert progressing["reason"] == "WaitingForDataset"
    assert "DatasetCuration cur" in progressing["message"]
    assert api.jobs(namespace) == [], "a Job was created before the dataset was ready"

    api.create(curation_manifest(namespace, "cur"))
    eventually(
        lambda: "is Pending" in condition(api.status("SFTJob", namespace, "sft"), "Progressing").get("message", "")
    )
    assert api.job(namespace, "sft-train") is None
    finish_curation(api, node, namespace, "cur", CURATED)

    job = eventually(lambda: api.job(namespace, "sft-train"), what="Job sft-train after the curation is Ready")
    status = eventually(lambda: (s := api.status("SFTJob", namespace, "sft")).get("jobName") and s)
    assert status["curationName"] == "cur"
    assert status["outputLocation"] == "pvc://outputs/sft/sft"
    run_config = yaml.safe_load(
        next(cm for cm in api.config_maps(namespace) if cm["metadata"]["name"] == "sft-run-config")["data"]["run.yaml"]
    )
    layout = MountLayout()
    assert run_config["dataset"] == f"{layout.volumes_root}/outputs/curation/cur/curated.jsonl"
    assert run_config["format"] == "messages"
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in job["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {"models", "outputs"}  # the curation's output claim holds curated.jsonl
    reasons = [r for _, r, _ in api.event_messages(namespace, "sft")]
    assert reasons.index("WaitingForDataset") < reasons.index("Created")


@pytest.mark.parametrize(
    ("gates", "expected"),
    [
        ({"minTaskEntropy": 0.8}, "minTaskEntropy: task entropy 0.550 is below 0.800 by 0.250"),
        ({"maxRejectedFraction": 0.15}, "maxRejectedFraction: rejected fraction 0.200 is above 0.150 by 0.050"),
        ({"minCuratedRecords": 500}, "minCuratedRecords: 150 curated records, fewer than 500 by 350"),
    ],
    ids=["minTaskEntropy", "maxRejectedFraction", "minCuratedRecords"],
)
def test_a_failed_quality_gate_fails_the_job_naming_gate_and_margin(
    operator: RunningOperator, namespace: str, api: Api, node: Node, gates: dict[str, Any], expected: str
) -> None:
    api.create(curation_manifest(namespace, "cur"))
    finish_curation(api, node, namespace, "cur", CURATED)
    api.create(sftjob_manifest(namespace, "sft", dataset={"curationRef": {"name": "cur"}, "gates": gates}))
    failed = eventually(
        lambda: (s := api.status("SFTJob", namespace, "sft")).get("phase") == "Failed" and s, what="phase Failed"
    )
    cond = condition(failed, "Failed")
    assert cond["reason"] == "QualityGateFailed"
    assert expected in cond["message"], cond["message"]
    assert api.jobs(namespace) == [job for job in api.jobs(namespace) if job["metadata"]["name"] == "cur-curate"]
    eventually(
        lambda: ("Warning", "QualityGateFailed") in [(t, r) for t, r, _ in api.event_messages(namespace, "sft")],
        what="a QualityGateFailed Warning",
    )


def test_a_failed_curation_fails_the_job_that_waits_for_it(
    operator: RunningOperator, namespace: str, api: Api, node: Node
) -> None:
    api.create(curation_manifest(namespace, "cur"))
    api.create(sftjob_manifest(namespace, "sft", dataset={"curationRef": {"name": "cur"}}))
    (pod,) = node.wait_pending(namespace, "cur-curate")
    node.finish(pod, 42, "Configuration error: no such file raw/alpaca.json")
    failed = eventually(
        lambda: (s := api.status("SFTJob", namespace, "sft")).get("phase") == "Failed" and s, what="phase Failed"
    )
    cond = condition(failed, "Failed")
    assert cond["reason"] == "DatasetFailed"
    assert "no such file raw/alpaca.json" in cond["message"]
    assert api.job(namespace, "sft-train") is None


def table_row(header: str, row: str) -> dict[str, str]:
    """A `kubectl get` row by column: cells sit under their headers (an empty cell is blank, so no split())."""
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    ends = [*starts[1:], None]
    return {header[a:b].strip(): row[a:b].strip() for a, b in zip(starts, ends, strict=True)}


def test_progress_is_polled_into_status_printer_columns_and_metrics(
    operator: RunningOperator, namespace: str, api: Api, node: Node, kubectl: Kubectl
) -> None:
    api.create(sftjob_manifest(namespace, "sft"))
    (pod,) = node.wait_pending(namespace, "sft-train")
    assert pod["spec"]["containers"][0]["ports"][0] == {
        "name": "progress",
        "containerPort": operator.progress_port,
        "protocol": "TCP",
    }
    with ProgressServer(prefix="sft_train", host="127.0.0.1", port=operator.progress_port) as server:
        server.update(
            phase="training",
            step=42,
            totalSteps=100,
            epoch=1.26,
            percent=42.0,
            loss=1.8731,
            evalLoss=1.9502,
            learningRate=0.0002,
            tokensPerSecond=5123.5,
            etaSeconds=61.0,
        )
        node.run(pod)
        progress = eventually(
            lambda: (
                (api.status("SFTJob", namespace, "sft").get("progress") or {}).get("step") == 42
                and api.status("SFTJob", namespace, "sft")["progress"]
            ),
            what="status.progress from /progress",
        )
        assert progress["percent"] == 42.0 and progress["totalSteps"] == 100 and progress["loss"] == 1.8731
        assert progress["tokensPerSecond"] == 5123.5 and progress["etaSeconds"] == 61.0 and progress["updatedAt"]

        server.update(step=60, percent=60.0, loss=1.5)
        eventually(
            lambda: (api.status("SFTJob", namespace, "sft").get("progress") or {}).get("step") == 60,
            what="the next poll",
        )

        # `kubectl get sft` lists by the short name (and the category of the same name, see the report).
        lines = kubectl.run("get", "sft", "-n", namespace, "-o", "wide", check=True).stdout.splitlines()
        header_at = next(i for i, line in enumerate(lines) if "PROGRESS" in line)
        columns = table_row(lines[header_at], lines[header_at + 1])
        assert columns["NAME"].endswith("/sft") or columns["NAME"] == "sft"
        assert columns["STATUS"] == "Running" and columns["PROGRESS"] == "60" and columns["LOSS"] == "1.5"
        assert columns["EVAL-LOSS"] == "1.9502" and columns["TOKENS/S"] == "5123.5"

        labels = {"namespace": namespace, "name": "sft"}
        assert operator.sample("trustdoc_sft_progress_ratio", **labels) == 0.6
        assert operator.sample("trustdoc_sft_loss", **labels) == 1.5
        assert operator.sample("trustdoc_sft_tokens_per_second", **labels) == 5123.5
        assert operator.sample("trustdoc_sft_phase", kind="SFTJob", phase="Running", **labels) == 1
        assert operator.sample("trustdoc_sft_phase", kind="SFTJob", phase="Pending", **labels) == 0
        assert (operator.sample("trustdoc_sft_progress_polls_total", result="ok") or 0) >= 2

    final = {
        "progress": {"step": 100, "totalSteps": 100, "percent": 100.0, "loss": 1.2, "epoch": 3.0},
        "metrics": {"trainLoss": 1.2, "evalLoss": 1.31, "memorisationRate": 0.02},
    }
    node.finish(pod, 0, compact(final))
    done = eventually(lambda: (s := api.status("SFTJob", namespace, "sft")).get("phase") == "Succeeded" and s)
    assert done["metrics"] == {"trainLoss": 1.2, "evalLoss": 1.31, "memorisationRate": 0.02}
    assert done["progress"]["percent"] == 100.0
    assert condition(done, "Ready")["reason"] == "JobSucceeded"
    eventually(lambda: operator.sample("trustdoc_sft_phase", kind="SFTJob", phase="Succeeded", **labels) == 1)
    assert (
        operator.sample("trustdoc_sft_reconcile_duration_seconds_count", kind="SFTJob", handler="reconcile") or 0
    ) >= 1


def create_claim(api: Api, namespace: str, name: str, *modes: str) -> None:
    api.core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name},
            "spec": {"accessModes": list(modes), "resources": {"requests": {"storage": "1Gi"}}},
        },
    )


def test_a_multi_node_run_on_an_output_claim_other_nodes_cannot_mount_fails_naming_it(
    operator: RunningOperator, namespace: str, api: Api
) -> None:
    create_claim(api, namespace, "outputs", "ReadWriteOnce")
    api.create(sftjob_manifest(namespace, "big", resources={"nodes": 2, "gpusPerNode": 1}))
    failed = eventually(
        lambda: (s := api.status("SFTJob", namespace, "big")).get("phase") == "Failed" and s, what="phase Failed"
    )
    cond = condition(failed, "Failed")
    assert cond["reason"] == "OutputNotShared"
    assert "claim outputs is ReadWriteOnce" in cond["message"] and "ReadWriteMany" in cond["message"]
    assert api.job(namespace, "big-train") is None  # refused before anything ran


def test_multi_node_gets_an_indexed_job_a_headless_service_and_rank_zero_progress(
    operator: RunningOperator, namespace: str, api: Api, node: Node
) -> None:
    create_claim(api, namespace, "outputs", "ReadWriteMany")
    api.create(sftjob_manifest(namespace, "big", resources={"nodes": 2, "gpusPerNode": 1}))
    job = eventually(lambda: api.job(namespace, "big-train"), what="Job big-train")
    assert job["spec"]["completionMode"] == "Indexed"
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (2, 2)
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["python", "-m", "sft_trainer.launch"] and "--master-addr=big-train-0.big-train" in command
    (service,) = api.services(namespace)
    assert service["metadata"]["name"] == "big-train" and service["spec"]["clusterIP"] == "None"
    assert service["metadata"]["ownerReferences"][0]["name"] == "big"

    pods = node.wait_pending(namespace, "big-train", count=2)
    by_index = {p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]: p for p in pods}
    port = operator.progress_port
    with ProgressServer(host="127.0.0.1", port=port) as rank0, ProgressServer(host="127.0.0.2", port=port) as rank1:
        rank0.update(step=7, totalSteps=70, percent=10.0, loss=2.5)
        rank1.update(step=999, totalSteps=999, percent=99.0, loss=9.9)
        node.run(by_index["1"], ip="127.0.0.2")
        node.run(by_index["0"], ip="127.0.0.1")
        progress = eventually(lambda: api.status("SFTJob", namespace, "big").get("progress"), what="status.progress")
        assert (progress["step"], progress["loss"]) == (7, 2.5), "progress must come from rank 0 only"
