"""Stages on the real API server: an SFTJob whose model is another SFTJob's result (spec.model.sftJobRef).

Parents run through the real Job controller: the test plays the node and
finishes their pods with the summary a trainer writes (exports, figures), so
the operator's own path from pod to status is what the child reads.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from kubernetes import client
from operator_support import (
    Api,
    Node,
    RunningOperator,
    condition,
    curation_manifest,
    eventually,
    sftjob_manifest,
)

from sft_trainer.termination import compact
from support.kube import Kubectl

pytestmark = pytest.mark.cluster

SMOLLM2 = {"pvc": {"claimName": "models", "path": "smollm2"}}


def claim(api: Api, ns: str, name: str) -> None:
    """A PersistentVolumeClaim (Pending without storage: the operator only checks that it exists)."""
    api.core.create_namespaced_persistent_volume_claim(
        ns,
        {
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
    )


def stage(ns: str, name: str, parent: str | None, use: str = "adapter", **spec: Any) -> dict[str, Any]:
    model = {"sftJobRef": {"name": parent, "use": use}} if parent else SMOLLM2
    spec.setdefault("output", {"pvc": {"claimName": "stage-outputs", "path": f"sft/{name}"}})
    return sftjob_manifest(ns, name, model=model, **spec)


def finish(api: Api, node: Node, ns: str, name: str, exit_code: int = 0, **summary: Any) -> dict[str, Any]:
    """Run SFTJob `name`'s pod to its end; a succeeded one reports `summary` (exports, metrics) as a trainer does."""
    (pod,) = node.wait_pending(ns, f"{name}-train")
    if exit_code == 0:
        figures = {"progress": {"step": 10, "totalSteps": 10, "percent": 100.0}, "metrics": {}, **summary}
        node.finish(pod, 0, compact(figures))
        phase = "Succeeded"
    else:
        node.finish(pod, exit_code, "Configuration error: dataset: no such file train.jsonl")
        phase = "Failed"
    return eventually(lambda: (s := api.status("SFTJob", ns, name)).get("phase") == phase and s, what=f"{name} {phase}")


def waiting(api: Api, ns: str, name: str, text: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        status = api.status("SFTJob", ns, name)
        return status if text in condition(status, "Progressing").get("message", "") else None

    status = eventually(probe, what=f"{name} waiting with {text!r}")
    assert status["phase"] == "Waiting"
    return status


def failed(api: Api, ns: str, name: str) -> dict[str, Any]:
    status = eventually(
        lambda: (s := api.status("SFTJob", ns, name)).get("phase") == "Failed" and s, what=f"{name} Failed"
    )
    return condition(status, "Failed")


def test_a_stage_waits_for_its_parent_then_trains_on_its_adapter_from_a_read_only_claim(
    operator: RunningOperator, namespace: str, api: Api, node: Node, kubectl: Kubectl
) -> None:
    for name in ("models", "datasets", "outputs", "stage-outputs"):
        claim(api, namespace, name)
    api.create(stage(namespace, "domain", "general", output={"pvc": {"claimName": "outputs", "path": "sft/domain"}}))
    status = waiting(api, namespace, "domain", "Waiting for SFTJob general: it does not exist yet")
    assert condition(status, "Progressing")["reason"] == "WaitingForModel"

    api.create(stage(namespace, "general", None))
    waiting(api, namespace, "domain", "Waiting for SFTJob general to succeed (it is Pending)")
    assert api.job(namespace, "domain-train") is None, "a stage started before its parent succeeded"
    finish(api, node, namespace, "general", exports=["adapter"], metrics={"finalEvalLoss": 1.25})

    job = eventually(lambda: api.job(namespace, "domain-train"), what="Job domain-train once general Succeeded")
    status = eventually(lambda: (s := api.status("SFTJob", namespace, "domain")).get("jobName") and s)
    output = {"claimName": "stage-outputs", "path": "sft/general"}
    assert status["lineage"] == [
        {"sftJob": "general", "use": "adapter", "method": "lora", "finalEvalLoss": 1.25, "output": output},
        {"model": SMOLLM2},
    ]
    assert api.status("SFTJob", namespace, "general")["lineage"] == [{"model": SMOLLM2}]
    run_config = yaml.safe_load(
        next(cm for cm in api.config_maps(namespace) if cm["metadata"]["name"] == "domain-run-config")["data"][
            "run.yaml"
        ]
    )
    assert run_config["model"] == "/mnt/volumes/models/smollm2"
    assert run_config["name"] == "domain"
    assert run_config["parent"] == {
        "name": "general",
        "outputDir": "/mnt/volumes/stage-outputs/sft/general",
        "use": "adapter",
        "adapters": ["/mnt/volumes/stage-outputs/sft/general/adapter"],
        "baseModel": "/mnt/volumes/models/smollm2",
    }
    pod = job["spec"]["template"]["spec"]
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v
    }
    mounts = {
        claims[m["name"]]: m.get("readOnly", False) for m in pod["containers"][0]["volumeMounts"] if m["name"] in claims
    }
    # Only the output claim is written: the parent's outputs and the chain's base model are mounted read-only.
    assert mounts == {"models": True, "datasets": False, "outputs": False, "stage-outputs": True}

    lines = kubectl.run("get", "sft", "-n", namespace, "-o", "wide", check=True).stdout.splitlines()
    at = lines[0].index("PARENT")  # columns are aligned; an empty cell would shift a split()
    parents = {line.split()[0]: line[at:].split()[0] for line in lines[1:]}
    assert parents["domain"] == "general"
    assert "PARENT" not in kubectl.run("get", "sft", "-n", namespace, check=True).stdout  # -o wide only


def test_refusals_name_the_parent_and_why(operator: RunningOperator, namespace: str, api: Api, node: Node) -> None:
    for name in ("models", "datasets", "outputs", "stage-outputs"):
        claim(api, namespace, name)
    api.create(stage(namespace, "broken", None))
    api.create(stage(namespace, "adapter-only", None))
    api.create(stage(namespace, "from-broken", "broken"))
    api.create(stage(namespace, "wants-merged", "adapter-only", use="merged"))
    api.create(stage(namespace, "gated", "adapter-only", use="adapter"))
    finish(api, node, namespace, "broken", exit_code=42)
    finish(api, node, namespace, "adapter-only", exports=["adapter"], metrics={"finalEvalLoss": 1.5})

    cond = failed(api, namespace, "from-broken")
    assert cond["reason"] == "ParentFailed"
    assert "spec.model.sftJobRef: SFTJob broken failed" in cond["message"] and "no such file" in cond["message"]
    cond = failed(api, namespace, "wants-merged")
    assert cond["reason"] == "ParentUnusable"
    assert cond["message"].startswith("spec.model.sftJobRef.use: merged: SFTJob adapter-only exported no merged model")
    for name in ("from-broken", "wants-merged"):
        assert api.job(namespace, f"{name}-train") is None
    eventually(lambda: api.job(namespace, "gated-train"), what="the stage that uses the adapter it has")
    eventually(
        lambda: ("Warning", "ParentUnusable") in [(t, r) for t, r, _ in api.event_messages(namespace, "wants-merged")],
        what="a ParentUnusable Warning",
    )


def test_a_cycle_is_refused_with_the_names(operator: RunningOperator, namespace: str, api: Api) -> None:
    api.create(stage(namespace, "a", "b"))
    api.create(stage(namespace, "b", "c"))
    api.create(stage(namespace, "c", "a"))
    for name, loop in (("a", "a -> b -> c -> a"), ("b", "b -> c -> a -> b"), ("c", "c -> a -> b -> c")):
        cond = failed(api, namespace, name)
        assert cond["reason"] == "ChainCycle"
        assert f"spec.model.sftJobRef: the stages reference each other in a cycle: SFTJob {loop}" == cond["message"]
    assert api.jobs(namespace) == []


def test_the_evaluation_gate_needs_a_passed_evaluation(
    operator: RunningOperator, namespace: str, api: Api, node: Node
) -> None:
    for name in ("models", "datasets", "stage-outputs"):
        claim(api, namespace, name)
    gates = {"requireEvaluationPassed": True}
    for parent in ("unevaluated", "failing", "passing"):
        api.create(stage(namespace, parent, None))
        finish(api, node, namespace, parent, exports=["adapter"], metrics={"finalEvalLoss": 1.1})
    for parent, passed, reason, message in (
        ("failing", "False", "EvaluationGateFailed", "not promoted: ifevalStrictPrompt fell by 0.080"),
        ("passing", "True", "GatesPassed", "3 gates passed"),
    ):
        status = api.status("SFTJob", namespace, parent)
        evaluation = {"type": "EvaluationPassed", "status": passed, "reason": reason, "message": message}
        api.set_status("SFTJob", namespace, parent, {**status, "conditions": [*status["conditions"], evaluation]})
    for parent in ("unevaluated", "failing", "passing"):
        manifest = stage(namespace, f"after-{parent}", parent)
        manifest["spec"]["model"]["gates"] = gates
        api.create(manifest)

    cond = failed(api, namespace, "after-unevaluated")
    assert cond["reason"] == "ModelGateFailed"
    assert "requireEvaluationPassed: SFTJob unevaluated ran no evaluation" in cond["message"]
    cond = failed(api, namespace, "after-failing")
    assert cond["reason"] == "ModelGateFailed"
    assert (
        "requireEvaluationPassed: SFTJob failing did not pass its evaluation (EvaluationGateFailed: not promoted: "
        "ifevalStrictPrompt fell by 0.080)" in cond["message"]
    )
    eventually(lambda: api.job(namespace, "after-passing-train"), what="the gated stage after a passed evaluation")


def test_a_deleted_parent_or_output_claim_is_a_condition_not_a_crash(
    operator: RunningOperator, namespace: str, api: Api, node: Node
) -> None:
    for name in ("models", "datasets", "outputs"):
        claim(api, namespace, name)  # no stage-outputs: the parents' output claim is gone
    api.create(stage(namespace, "general", None))
    api.create(stage(namespace, "domain", "general", output={"pvc": {"claimName": "outputs", "path": "sft/domain"}}))
    waiting(api, namespace, "domain", "(it is Pending)")
    eventually(lambda: api.status("SFTJob", namespace, "domain").get("parentUid"), what="the parent's uid recorded")

    api.delete("SFTJob", namespace, "general")
    status = waiting(api, namespace, "domain", "SFTJob general was deleted while this job waited for it")
    assert condition(status, "Progressing")["reason"] == "ParentDeleted"
    assert api.job(namespace, "domain-train") is None

    # Recreated under the same name, it is waited for again; its output claim does not exist.
    eventually(lambda: api.get("SFTJob", namespace, "general") is None, what="general gone")
    eventually(
        lambda: api.job(namespace, "general-train") is None and not api.pods(namespace, "general-train"),
        timeout=60,
        what="the first general's Job and pod collected",
    )
    api.create(stage(namespace, "general", None))
    finish(api, node, namespace, "general", exports=["adapter"], metrics={"finalEvalLoss": 1.3})
    cond = failed(api, namespace, "domain")
    assert cond["reason"] == "ParentUnusable"
    assert (
        cond["message"]
        == "spec.model.sftJobRef: SFTJob general's results are gone: claim stage-outputs no longer exists"
    )
    assert api.job(namespace, "domain-train") is None
    assert operator.runner.future.done() is False  # the operator kept running throughout


def test_a_curation_measured_with_another_base_models_tokenizer_is_refused(
    operator: RunningOperator, namespace: str, api: Api, node: Node
) -> None:
    for name in ("models", "datasets", "outputs", "stage-outputs"):
        claim(api, namespace, name)
    api.create(stage(namespace, "general", None))
    finish(api, node, namespace, "general", exports=["adapter", "merged"], metrics={"finalEvalLoss": 1.2})
    llama = {"pvc": {"claimName": "models", "path": "llama-3-8b"}}
    api.create(curation_manifest(namespace, "cur", tokenizer=llama))
    (pod,) = node.wait_pending(namespace, "cur-curate")
    node.finish(pod, 0, compact({"counts": {"input": 10, "curated": 10, "rejected": 0, "review": 0}}))
    api.create(stage(namespace, "domain", "general", use="merged", dataset={"curationRef": {"name": "cur"}}))
    cond = failed(api, namespace, "domain")
    assert cond["reason"] == "BaseModelMismatch"
    assert cond["message"] == (
        "spec.model.sftJobRef: the chain (SFTJob general) starts from base model pvc://models/smollm2, but "
        "spec.dataset.curationRef cur measured its tokens with tokenizer pvc://models/llama-3-8b; curate with "
        "the chain's tokenizer, or start from that model"
    )
    assert api.job(namespace, "domain-train") is None


def test_another_namespace_is_refused_by_the_api_server(crds_installed: Kubectl, namespace: str, api: Api) -> None:
    manifest = stage(namespace, "domain", "other-team/general")
    with pytest.raises(client.exceptions.ApiException) as refused:
        api.create(manifest)
    assert refused.value.status == 422
    assert "same namespace only" in str(refused.value.body)
