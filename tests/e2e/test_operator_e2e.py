"""From `kubectl apply` to Succeeded: the operator, the real scheduler, pods that really train.

The operator runs as its own process (`sftctl operator`) against the e2e
cluster; the GPU node agent runs the curation and training pods as local
processes with their claims mounted where the pod expects them. The result is
real artifacts on the output volume, figures in the custom resources' status,
and reports that open in a browser.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.browser import render_dom, sections
from support.e2e import GPU_PRODUCT, bound_claim, operator_process
from support.kube import ControlPlane, Kubectl
from support.manifests import condition
from support.node_agent import NodeAgent
from support.waiting import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
NAMESPACE = "e2e-flow"


@pytest.fixture(scope="module")
def claims(
    e2e_kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory, tiny_models: Path, shared_data: Path
) -> Path:
    e2e_kubectl.run("create", "namespace", NAMESPACE, check=True)
    outputs = tmp_path_factory.mktemp("outputs")
    bound_claim(e2e_kubectl, NAMESPACE, "datasets", shared_data)
    bound_claim(e2e_kubectl, NAMESPACE, "models", tiny_models)
    bound_claim(e2e_kubectl, NAMESPACE, "outputs", outputs)
    return outputs


@pytest.fixture(scope="module")
def operator(e2e_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[bytes]]:
    with operator_process(e2e_plane, NAMESPACE, tmp_path_factory.mktemp("operator") / "operator.log") as process:
        yield process


def manifests() -> list[dict[str, Any]]:
    placement = {
        "gpusPerNode": 1,
        "nodeSelector": {"nvidia.com/gpu.product": GPU_PRODUCT},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }
    curation = {
        "apiVersion": "sft.trustdoc.io/v1alpha1",
        "kind": "DatasetCuration",
        "metadata": {"name": "lima", "namespace": NAMESPACE},
        "spec": {
            "source": {"pvc": {"claimName": "datasets", "path": "alpaca_data.json"}},
            "output": {"pvc": {"claimName": "outputs", "path": "curation/lima"}},
            "tokenizer": {"pvc": {"claimName": "models", "path": "tiny"}},
            "curation": {"maxRecords": 150, "template": {"maxSeqLength": 1024}, "selection": {"budget": 100}},
            # No GPU, but the only node is a tainted GPU node.
            "resources": {"tolerations": placement["tolerations"]},
        },
    }
    job = {
        "apiVersion": "sft.trustdoc.io/v1alpha1",
        "kind": "SFTJob",
        "metadata": {"name": "tiny-lora", "namespace": NAMESPACE},
        "spec": {
            "model": {"pvc": {"claimName": "models", "path": "tiny"}},
            "dataset": {"curationRef": {"name": "lima"}, "gates": {"maxRejectedFraction": 0.5}},
            "output": {"pvc": {"claimName": "outputs", "path": "sft/tiny-lora"}},
            "training": {
                "method": "lora",
                "maxSteps": 6,
                "batchSize": 4,
                "maxSeqLength": 1024,
                "evalEverySteps": 3,
                "checkpointEverySteps": 3,
                "probes": {"memorisationPrompts": 2, "maxNewTokens": 8},
                "evaluation": {
                    "ifeval": {"prompts": 2, "maxNewTokens": 8},
                    "safety": {"promptsPerSet": 2, "maxNewTokens": 8},
                    "style": {"prompts": 2, "maxNewTokens": 8},
                    "reference": {"records": 4},
                },
            },
            "resources": placement,
        },
    }
    return [curation, job]


def test_sftjob_from_apply_to_succeeded_with_real_artifacts(
    e2e_kubectl: Kubectl, gpu_node: NodeAgent, claims: Path, operator: subprocess.Popen[bytes]
) -> None:
    kubectl = e2e_kubectl
    curation, job = manifests()
    kubectl.apply_objects(curation, job).check_returncode()

    def diagnose() -> str:
        return (
            kubectl.run("get", "trustdoc,jobs,pods", "-n", NAMESPACE, "-o", "wide").stdout
            + kubectl.run("get", "events", "-n", NAMESPACE).stdout
        )

    # The SFTJob waits for its dataset first.
    waiting = eventually(
        lambda: kubectl.get_json("sft", "tiny-lora", "-n", NAMESPACE).get("status", {}).get("phase"),
        60,
        "the SFTJob to report a phase",
        diagnose=diagnose,
    )
    assert waiting in ("Waiting", "Pending", "Running")

    curated = eventually(
        lambda: (
            condition(kubectl.get_json("dcur", "lima", "-n", NAMESPACE).get("status") or {}, "Ready").get("status")
            == "True"
            and kubectl.get_json("dcur", "lima", "-n", NAMESPACE)
        ),
        300,
        "the DatasetCuration to be Ready",
        diagnose=diagnose,
    )
    counts = curated["status"]["counts"]
    assert counts["input"] == 150
    assert counts["curated"] + counts["rejected"] + counts["review"] == 150
    assert curated["status"]["taskEntropyAfter"] > 0
    # The selection and its random control, reported by the pod through status (the budget caps at the pool).
    selection = curated["status"]["selection"]
    assert selection["strategy"] == "diverse-quality" and 0 < selection["budget"] <= 100
    assert selection["selected"] == counts["curated"] == selection["control"] > 0
    control = (claims / "curation" / "lima" / "control.jsonl").read_text().splitlines()
    assert len(control) == selection["control"]

    done = eventually(
        lambda: (
            condition(kubectl.get_json("sft", "tiny-lora", "-n", NAMESPACE).get("status") or {}, "Succeeded").get(
                "status"
            )
            == "True"
            and kubectl.get_json("sft", "tiny-lora", "-n", NAMESPACE)
        ),
        600,
        "the SFTJob to succeed",
        diagnose=diagnose,
    )
    status = done["status"]
    assert status["progress"]["step"] == 6 and status["progress"]["totalSteps"] == 6
    assert status["metrics"], "no final metrics reached the status (termination message)"
    assert status["startTime"] and status["completionTime"]

    # The pods ran on the GPU node, placed by the real scheduler.
    pods = kubectl.get_json("pods", "-n", NAMESPACE)["items"]
    assert {p["spec"]["nodeName"] for p in pods} == {gpu_node.name}

    # Real artifacts on the output volume.
    output = claims / "sft" / "tiny-lora"
    assert (output / "adapter" / "adapter_config.json").exists()
    assert json.loads((output / "train_report.json").read_text())["status"]["progress"]["step"] == 6
    for report, figures in (
        (claims / "curation" / "lima" / "report.html", ("funnel", "task-mix")),
        (output / "train_report.html", ("loss-curve",)),
    ):
        found = sections(render_dom(report))
        for figure in figures:
            assert figure in found and found[figure].svg_shapes > 0, f"{report.name}: #{figure} not rendered"

    # kubectl shows it the way the README says.
    table = kubectl.run("get", "sft", "-n", NAMESPACE).stdout
    assert "Succeeded" in table and "tiny-lora" in table

    # Deleting the CR removes what the operator created (the real garbage collector).
    kubectl.run("delete", "sft", "tiny-lora", "-n", NAMESPACE, check=True)
    eventually(
        lambda: not kubectl.get_json("jobs", "-n", NAMESPACE, "-l", "sft.trustdoc.io/sftjob=tiny-lora")["items"],
        60,
        "the training Job to be garbage-collected",
    )
