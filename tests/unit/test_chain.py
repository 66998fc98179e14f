"""Stages as pure functions: what a lineage loads, cycles, readiness, and `sftctl run`'s dependency order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sft_operator.api import SFTJobModelSource
from sft_operator.chain import find_cycle, lineage_of, parent_readiness, start_of
from sft_operator.layout import MountLayout
from sft_operator.local_executor import LocalExecutor, ManifestError
from sft_operator.settings import OperatorSettings
from support import manifests

BASE = {"model": {"pvc": {"claimName": "models", "path": "smollm2"}}}


def entry(name: str, use: str, method: str = "lora", claim: str = "outputs") -> dict[str, Any]:
    return {"sftJob": name, "use": use, "method": method, "output": {"claimName": claim, "path": f"sft/{name}"}}


def test_adapters_are_collected_down_to_the_first_merged_export_or_the_base() -> None:
    # safety -(adapter)-> domain -(adapter)-> general -(merged)-> general2 ... the walk stops at `general`'s merged/.
    lineage = [entry("domain", "adapter", claim="stage-a"), entry("general", "merged"), entry("root", "adapter"), BASE]
    start = start_of(lineage)
    assert start.model.model_dump() == {"claim_name": "outputs", "path": "sft/general/merged"}
    assert [a.path for a in start.adapters] == ["sft/domain/adapter"]
    assert start.claims == ["outputs", "stage-a"]  # the base model's claim is not read
    assert start.base.pvc is not None and start.base.pvc.path == "smollm2"

    all_adapters = start_of([entry("b", "adapter"), entry("a", "adapter"), BASE])
    assert [a.path for a in all_adapters.adapters] == ["sft/a/adapter", "sft/b/adapter"]  # oldest first
    assert all_adapters.claims == ["models", "outputs"]
    full = start_of([entry("a", "merged", method="full"), BASE])
    assert full.model.model_dump()["path"] == "sft/a/model"


def test_find_cycle_names_the_loop_and_stops_at_a_missing_or_root_stage() -> None:
    refs = {"b": "c", "c": "a", "x": None}
    assert find_cycle("a", "b", refs.get) == ["a", "b", "c", "a"]
    assert find_cycle("a", "a", refs.get) == ["a", "a"]
    assert find_cycle("a", "x", refs.get) is None
    assert find_cycle("a", "missing", refs.get) is None
    refs["a"] = "b"  # a loop that does not pass through `d` is still a loop on d's way
    assert find_cycle("d", "b", refs.get) == ["b", "c", "a", "b"]


def parent(phase: str, exports: list[str], method: str = "lora", **status: Any) -> dict[str, Any]:
    conditions = [{"type": phase, "status": "True", "reason": "JobSucceeded", "message": "done"}]
    return {
        "metadata": {"name": "general", "uid": "u1"},
        "spec": {
            "model": BASE["model"],
            "dataset": {"pvc": {"claimName": "datasets", "path": "d.jsonl"}},
            "output": {"pvc": {"claimName": "outputs", "path": "sft/general"}},
            "training": {"method": method},
        },
        "status": {"phase": phase, "conditions": conditions, "exports": exports, **status},
    }


def model(use: str = "adapter", **gates: bool) -> SFTJobModelSource:
    wire: dict[str, Any] = {"sftJobRef": {"name": "general", "use": use}}
    if gates:
        wire["gates"] = gates
    return SFTJobModelSource.model_validate(wire)


def test_readiness_waits_refuses_or_accepts() -> None:
    assert parent_readiness(None, model()).reason == "WaitingForModel"
    assert parent_readiness(None, model(), seen_uid="u1").reason == "ParentDeleted"
    running = parent("Progressing", [])
    running["status"]["phase"] = "Running"
    assert "it is Running" in parent_readiness(running, model()).message
    assert parent_readiness(parent("Failed", []), model()).reason == "ParentFailed"
    assert parent_readiness(parent("Succeeded", ["adapter"]), model("merged")).reason == "ParentUnusable"
    assert parent_readiness(parent("Succeeded", ["model"], "full"), model("adapter")).reason == "ParentUnusable"
    assert parent_readiness(parent("Succeeded", ["model"], "full"), model("merged")).state == "ready"
    assert parent_readiness(parent("Succeeded", ["adapter"]), model()).state == "ready"
    gated = model(requireEvaluationPassed=True)
    assert parent_readiness(parent("Succeeded", ["adapter"]), gated).reason == "ModelGateFailed"
    pending = parent("Succeeded", ["adapter"])
    pending["status"]["conditions"].append({"type": "EvaluationPassed", "status": "Unknown", "reason": "Running"})
    assert parent_readiness(pending, gated).reason == "WaitingForModel"


def test_lineage_of_a_root_parent_ends_in_its_model() -> None:
    body = parent("Succeeded", ["adapter"], metrics={"finalEvalLoss": 1.5})
    assert lineage_of(body, "adapter") == [
        {
            "sftJob": "general",
            "use": "adapter",
            "method": "lora",
            "finalEvalLoss": 1.5,
            "output": {"claimName": "outputs", "path": "sft/general"},
        },
        BASE,
    ]


def test_training_children_mount_the_parents_claims_read_only() -> None:
    body = {
        "kind": "SFTJob",
        "metadata": {"name": "domain", "namespace": "ns", "uid": "u2"},
        "spec": {
            "model": {"sftJobRef": {"name": "general", "use": "adapter"}},
            "dataset": {"pvc": {"claimName": "datasets", "path": "d.jsonl"}},
            "output": {"pvc": {"claimName": "outputs", "path": "sft/domain"}},
            "resources": {"gpusPerNode": 0},
        },
    }
    lineage = [entry("general", "adapter", claim="stage-outputs"), BASE]
    children = manifests.children(body, OperatorSettings(), lineage=lineage)
    run = yaml.safe_load(children.config_map["data"]["run.yaml"])
    root = MountLayout().volumes_root
    assert run["model"] == f"{root}/models/smollm2"
    assert run["parent"]["adapters"] == [f"{root}/stage-outputs/sft/general/adapter"]
    mounts = children.job["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    read_only = sorted(
        m["mountPath"].rsplit("/", 1)[1] for m in mounts if m.get("readOnly") and "volumes" in m["mountPath"]
    )
    assert read_only == ["models", "stage-outputs"]
    with pytest.raises(ValueError, match="model.sftJobRef needs the lineage"):
        manifests.children(body, OperatorSettings())


def sftjob(name: str, parent_name: str | None = None, curation: str | None = None) -> dict[str, Any]:
    return manifests.sftjob(
        name,
        model={"sftJobRef": {"name": parent_name, "use": "adapter"}} if parent_name else BASE["model"],
        dataset={"curationRef": {"name": curation}}
        if curation
        else {"pvc": {"claimName": "datasets", "path": "d.jsonl"}},
    )


def curation(name: str) -> dict[str, Any]:
    return manifests.curation(name)


def order(tmp_path: Path, *documents: dict[str, Any]) -> list[str]:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump_all(documents))
    executor = LocalExecutor(tmp_path / "runs")
    return [r.key for r in executor.ordered(executor.load(manifest))]


def test_sftctl_run_orders_stages_and_curations_by_dependency(tmp_path: Path) -> None:
    keys = order(
        tmp_path,
        sftjob("safety", "domain"),
        sftjob("domain", "general", curation="cur-domain"),
        curation("cur-domain"),
        sftjob("general", curation="cur"),
        curation("cur"),
    )
    position = {key: i for i, key in enumerate(keys)}
    assert sorted(keys) == sorted(
        ["SFTJob/safety", "SFTJob/domain", "DatasetCuration/cur-domain", "SFTJob/general", "DatasetCuration/cur"]
    )
    assert (
        position["DatasetCuration/cur"]
        < position["SFTJob/general"]
        < position["SFTJob/domain"]
        < position["SFTJob/safety"]
    )
    assert position["DatasetCuration/cur-domain"] < position["SFTJob/domain"]


def test_sftctl_run_refuses_a_cycle_or_an_unknown_parent_before_running(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cycle: SFTJob a -> b -> a"):
        order(tmp_path, sftjob("a", "b"), sftjob("b", "a"))
    with pytest.raises(ManifestError, match="spec.model.sftJobRef.name 'general' is neither in this file"):
        order(tmp_path, sftjob("domain", "general"))


def test_the_stages_example_runs_curation_then_general_domain_safety(tmp_path: Path) -> None:
    executor = LocalExecutor(tmp_path / "runs")
    example = Path(__file__).resolve().parents[2] / "examples" / "stages.yaml"
    keys = [r.key for r in executor.ordered(executor.load(example))]
    assert keys == ["DatasetCuration/stages-general", "SFTJob/general", "SFTJob/domain", "SFTJob/safety"]
