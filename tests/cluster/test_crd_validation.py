"""The generated CRDs on a real API server: samples accepted, bad specs refused.

Every invalid case is one line of data: the kind, the field to change (a
dotted path; `[0]` indexes a list), the value to put there (DELETE removes the
field) and the text the API server's error must contain, which always names
the offending field.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

from sft_operator.api import MAX_MULTI_NODE_NAME, object_problems
from support import manifests
from support.kube import REPO_ROOT, Kubectl

pytestmark = pytest.mark.cluster

DELETE = object()

VALID_SFTJOB = manifests.sftjob("valid-sft", training={"method": "lora", "lora": {"r": 8}})
VALID_CURATION = manifests.curation("valid-dcur")
BASES = {"SFTJob": VALID_SFTJOB, "DatasetCuration": VALID_CURATION}


class Invalid(NamedTuple):
    kind: str
    field: str
    value: Any
    error: str


# fmt: off
INVALID_ON_CREATE = [
    Invalid("SFTJob", "spec.model", DELETE, "spec.model: Required value"),
    Invalid("SFTJob", "spec.dataset", DELETE, "spec.dataset: Required value"),
    Invalid("SFTJob", "spec.output", DELETE, "spec.output: Required value"),
    Invalid("SFTJob", "spec", DELETE, "spec: Required value"),
    Invalid("SFTJob", "spec", "train-please", "spec: Invalid value"),
    Invalid("SFTJob", "spec.training.method", "qlora", "spec.training.method: Unsupported value"),
    Invalid("SFTJob", "spec.training.method", "full", "spec.training.lora"),
    Invalid("SFTJob", "spec.training.lora.r", 0, "spec.training.lora.r"),
    Invalid("SFTJob", "spec.training.lora.r", "sixteen", "spec.training.lora.r"),
    Invalid("SFTJob", "spec.training.lora.dropout", 1.5, "spec.training.lora.dropout"),
    Invalid("SFTJob", "spec.training.learningRate", -0.001, "spec.training.learningRate"),
    Invalid("SFTJob", "spec.training.epochs", 0, "spec.training.epochs"),
    Invalid("SFTJob", "spec.training.batchSize", -4, "spec.training.batchSize"),
    Invalid("SFTJob", "spec.training.precision", "fp16", "spec.training.precision: Unsupported value"),
    Invalid("SFTJob", "spec.training.template.lossOn", "everything", "spec.training.template.lossOn"),
    Invalid("SFTJob", "spec.training.template.name", "vicuna", "spec.training.template.name"),
    Invalid("SFTJob", "spec.training.warmupRatio", 1, "spec.training.warmupRatio"),
    Invalid("SFTJob", "spec.training.maxSeqLength", 8, "spec.training.maxSeqLength"),
    Invalid("SFTJob", "spec.training.refusal.ratio", 0.9, "spec.training.refusal.ratio"),
    Invalid("SFTJob", "spec.resources.nodes", 0, "spec.resources.nodes"),
    Invalid("SFTJob", "spec.resources.gpusPerNode", -1, "spec.resources.gpusPerNode"),
    Invalid("SFTJob", "spec.resources", {"nodes": 2, "gpusPerNode": 0}, "spec.resources.nodes"),
    Invalid("SFTJob", "spec.resources.memory", "lots", "spec.resources.memory"),
    Invalid("SFTJob", "spec.resources.tolerations", [{"operator": "Maybe"}], "spec.resources.tolerations[0].operator"),
    Invalid("SFTJob", "spec.model", {}, "spec.model: Invalid value"),
    Invalid("SFTJob", "spec.model.huggingFace", {"repo": "org/model"}, "exactly one of pvc, huggingFace"),
    Invalid("SFTJob", "spec.model.pvc.claimName", "Bad_Name", "spec.model.pvc.claimName"),
    Invalid("SFTJob", "spec.model.pvc", DELETE, "spec.model: Invalid value"),
    Invalid("SFTJob", "spec.dataset.curationRef", {"name": "cur"}, "exactly one of pvc, huggingFace, curationRef"),
    Invalid("SFTJob", "spec.dataset.gates", {"minTaskEntropy": 0.5}, "spec.dataset.gates"),
    Invalid("SFTJob", "spec.dataset", {"curationRef": {"name": "c"}, "gates": {"maxRejectedFraction": 1.5}}, "spec.dataset.gates.maxRejectedFraction"),
    Invalid("SFTJob", "spec.dataset", {"curationRef": {"name": "c"}, "format": "alpaca"}, "spec.dataset.format"),
    Invalid("SFTJob", "spec.dataset.format", "csv", "spec.dataset.format: Unsupported value"),
    Invalid("SFTJob", "spec.output.pvc.path", "runs/../../etc", "spec.output.pvc.path"),
    Invalid("SFTJob", "spec.output.pvc.path", "/etc/passwd", "spec.output.pvc.path"),
    Invalid("SFTJob", "spec.output.pvc", DELETE, "spec.output.pvc: Required value"),
    Invalid("SFTJob", "spec.model", {"huggingFace": {"repo": "not a repo!"}}, "spec.model.huggingFace.repo"),
    Invalid("SFTJob", "spec.model", {"huggingFace": {"repo": "org/m", "tokenSecretRef": {"key": "t"}}}, "spec.model.huggingFace.tokenSecretRef.name"),
    Invalid("SFTJob", "spec.trainig", {"epochs": 1}, 'unknown field "spec.trainig"'),
    Invalid("SFTJob", "spec.training.lr", 0.1, 'unknown field "spec.training.lr"'),
    Invalid("SFTJob", "spec.training", {"method": "full", "exportMerged": True}, "spec.training.exportMerged"),
    Invalid("SFTJob", "spec.lifecycle.backoffLimit", -1, "spec.lifecycle.backoffLimit"),
    Invalid("SFTJob", "spec.lifecycle.queueName", "Team A", "spec.lifecycle.queueName"),
    Invalid("SFTJob", "spec.lifecycle.activeDeadlineSeconds", 0, "spec.lifecycle.activeDeadlineSeconds"),
    Invalid("SFTJob", "spec.lifecycle.suspend", "yes", "spec.lifecycle.suspend"),
    Invalid("SFTJob", "spec.model.sftJobRef", {"name": "general", "use": "merged"}, "exactly one of pvc, huggingFace, sftJobRef"),
    Invalid("SFTJob", "spec.model", {"sftJobRef": {"name": "other/general", "use": "merged"}}, "same namespace only"),
    Invalid("SFTJob", "spec.model", {"sftJobRef": {"name": "General", "use": "merged"}}, "spec.model.sftJobRef.name"),
    Invalid("SFTJob", "spec.model", {"sftJobRef": {"name": "general", "use": "both"}}, "spec.model.sftJobRef.use: Unsupported value"),
    Invalid("SFTJob", "spec.model", {"sftJobRef": {"name": "general"}}, "spec.model.sftJobRef.use: Required value"),
    Invalid("SFTJob", "spec.model.gates", {"requireEvaluationPassed": True}, "gates apply only to an sftJobRef"),
    Invalid("SFTJob", "spec.resources.nodeSelector", {"gpu type": "a100"}, "spec.resources.nodeSelector: Invalid value"),
    Invalid("SFTJob", "spec.resources.nodeSelector", {"gpu": "A100 80GB"}, "spec.resources.nodeSelector.gpu"),
    Invalid("SFTJob", "spec.resources.tolerations", [{"key": "gpu!", "operator": "Exists"}], "spec.resources.tolerations[0].key"),
    Invalid("SFTJob", "spec.resources.tolerations", [{"key": "gpu", "value": "a b"}], "spec.resources.tolerations[0].value"),
    Invalid("SFTJob", "spec.training.lora.targetModules", [], "spec.training.lora.targetModules"),
    Invalid("SFTJob", "spec.training.lora.targetModules", [""], "spec.training.lora.targetModules[0]"),
    Invalid("SFTJob", "metadata.name", "x" * 64, "metadata.name must be at most 63 characters"),
    Invalid("DatasetCuration", "metadata.name", "c" * 64, "metadata.name must be at most 63 characters"),
    # Valid names for the SFTJob, not for the headless Service and pod hostnames of a multi-node run.
    Invalid("SFTJob", "metadata.name", "run.v2", "metadata.name with spec.resources.nodes > 1"),
    Invalid("SFTJob", "metadata.name", "2nd-run", "metadata.name with spec.resources.nodes > 1"),
    Invalid("SFTJob", "metadata.name", "r" * 55, "metadata.name with spec.resources.nodes > 1"),
    Invalid("DatasetCuration", "spec.tokenizer", {"sftJobRef": {"name": "general", "use": "merged"}}, 'unknown field "spec.tokenizer.sftJobRef"'),
    Invalid("DatasetCuration", "spec.source", DELETE, "spec.source: Required value"),
    Invalid("DatasetCuration", "spec.source", {"curationRef": {"name": "x"}}, "spec.source.curationRef"),
    Invalid("DatasetCuration", "spec.source.format", "xml", "spec.source.format: Unsupported value"),
    Invalid("DatasetCuration", "spec.curation.dedup.threshold", 0, "spec.curation.dedup.threshold"),
    Invalid("DatasetCuration", "spec.curation.dedup.permutations", 8, "spec.curation.dedup.permutations"),
    Invalid("DatasetCuration", "spec.curation.balance.targetEntropy", 2, "spec.curation.balance.targetEntropy"),
    Invalid("DatasetCuration", "spec.curation.balance.targetMix", {"coding": 1.0}, "spec.curation.balance.targetMix"),
    Invalid(
        "DatasetCuration",
        "spec.curation.balance.targetMix",
        {"coding": 0.5, "codng": 0.5},
        "balance.targetMix keys must be task types",
    ),
    Invalid(
        "DatasetCuration",
        "spec.curation.selection",
        {"budget": 10, "fraction": 0.5},
        "set selection.budget or selection.fraction, not both",
    ),
    Invalid("DatasetCuration", "spec.curation.balance.method", "vibes", "spec.curation.balance.method"),
    Invalid("DatasetCuration", "spec.curation.gptisms.maxDensity", -1, "spec.curation.gptisms.maxDensity"),
    Invalid("DatasetCuration", "spec.curation.repetition.maxDuplicateLineFraction", 1.2, "spec.curation.repetition.maxDuplicateLineFraction"),
    Invalid("DatasetCuration", "spec.curation.length.maxPromptChars", 0, "spec.curation.length.maxPromptChars"),
    Invalid("DatasetCuration", "spec.resources.nodes", 2, "spec.resources.nodes"),
    Invalid("DatasetCuration", "spec.curation.unknownStep", {}, 'unknown field "spec.curation.unknownStep"'),
]

# Changes to an existing object that the API server must refuse.
INVALID_ON_UPDATE = [
    Invalid("SFTJob", "spec.model.pvc.path", "another-model", "spec.model: Invalid value"),
    Invalid("SFTJob", "spec.dataset.pvc.path", "other.jsonl", "spec.dataset: Invalid value"),
    Invalid("SFTJob", "spec.training", {"method": "full"}, "spec.training.method: Invalid value"),
    Invalid("DatasetCuration", "spec.source.pvc.path", "other.json", "spec.source: Invalid value"),
]
# fmt: on


# A multi-node run, where the name rules of its children bite.
MULTI_NODE = {"nodes": 2, "gpusPerNode": 1}


def mutate(kind: str, field: str, value: Any, name: str) -> dict[str, Any]:
    """A copy of the valid base manifest with one field changed or removed (a name is tried on a multi-node run)."""
    manifest = copy.deepcopy(BASES[kind])
    manifest["metadata"]["name"] = name
    if kind == "SFTJob" and field == "metadata.name":
        manifest["spec"]["resources"] = MULTI_NODE
    *parents, last = field.split(".")
    node = manifest
    for part in parents:
        node = node.setdefault(part, {})
    if value is DELETE:
        node.pop(last, None)
    else:
        node[last] = value
    return manifest


def case_id(case: Invalid) -> str:
    return f"{case.kind}:{case.field}={'<deleted>' if case.value is DELETE else case.value!r}"


def test_base_manifests_are_valid(crds_installed: Kubectl) -> None:
    for manifest in BASES.values():
        result = crds_installed.apply(yaml.safe_dump(manifest), "--dry-run=server")
        assert result.returncode == 0, result.stderr


def test_at_least_40_distinct_invalid_manifests() -> None:
    assert len({case_id(c) for c in INVALID_ON_CREATE + INVALID_ON_UPDATE}) >= 40


@pytest.mark.parametrize("case", INVALID_ON_CREATE, ids=case_id)
def test_invalid_manifest_is_refused_naming_the_field(crds_installed: Kubectl, case: Invalid) -> None:
    manifest = mutate(case.kind, case.field, case.value, "invalid")
    result = crds_installed.apply(yaml.safe_dump(manifest), "--dry-run=server")
    assert result.returncode != 0, f"accepted: {manifest}"
    assert case.error in result.stderr, result.stderr


@pytest.mark.parametrize("case", INVALID_ON_UPDATE, ids=case_id)
def test_immutable_field_change_is_refused(crds_installed: Kubectl, case: Invalid) -> None:
    name = f"immutable-{abs(hash(case_id(case))) % 10**8}"
    original = mutate(case.kind, "metadata.name", name, name)
    crds_installed.apply(yaml.safe_dump(original)).check_returncode()
    try:
        changed = mutate(case.kind, case.field, case.value, name)
        result = crds_installed.apply(yaml.safe_dump(changed), "--dry-run=server")
        assert result.returncode != 0, f"change accepted: {case.field}"
        assert case.error in result.stderr, result.stderr
        assert "immutable" in result.stderr
    finally:
        crds_installed.run("delete", case.kind.lower(), name, "--wait=false")


def sample_files() -> list[Path]:
    return sorted((REPO_ROOT / "crds" / "samples").glob("*.yaml")) + sorted((REPO_ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", sample_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_samples_and_examples_are_accepted(crds_installed: Kubectl, path: Path) -> None:
    result = crds_installed.run("apply", "--dry-run=server", "-f", str(path))
    assert result.returncode == 0, result.stderr


def test_defaults_are_filled_in_by_the_server(crds_installed: Kubectl) -> None:
    manifest = mutate("SFTJob", "metadata.name", "defaults", "defaults")
    result = crds_installed.apply(yaml.safe_dump(manifest), "--dry-run=server", "-o", "json")
    assert result.returncode == 0, result.stderr
    spec = yaml.safe_load(result.stdout)["spec"]
    assert spec["training"]["warmupRatio"] == 0.03
    assert spec["training"]["lrScheduler"] == "cosine"
    assert spec["training"]["template"]["lossOn"] == "assistant"
    assert spec["resources"]["gpusPerNode"] == 1


def test_kubectl_explain_describes_fields(crds_installed: Kubectl) -> None:
    result = crds_installed.run("explain", "sftjob.spec.training")
    assert result.returncode == 0, result.stderr
    assert "How the model is fine-tuned" in result.stdout
    assert "learningRate" in result.stdout and "2e-4 for LoRA" in result.stdout


def test_short_names_and_categories_resolve(crds_installed: Kubectl) -> None:
    for resource in ("sft", "dcur", "sftjobs.sft.trustdoc.io", "datasetcurations.sft.trustdoc.io"):
        result = crds_installed.run("get", resource, "-A")
        assert result.returncode == 0, result.stderr
    # The `trustdoc` category lists both kinds at once; a short name addresses one object.
    crds_installed.apply(yaml.safe_dump(mutate("SFTJob", "metadata.name", "listed", "listed")))
    crds_installed.apply(yaml.safe_dump(mutate("DatasetCuration", "metadata.name", "listed", "listed")))
    try:
        listed = crds_installed.run("get", "trustdoc", "-o", "name", check=True).stdout.split()
        assert "sftjob.sft.trustdoc.io/listed" in listed
        assert "datasetcuration.sft.trustdoc.io/listed" in listed
        for short in ("sft", "dcur"):
            assert crds_installed.run("get", short, "listed", check=True).stdout.count("listed") == 1
    finally:
        crds_installed.run("delete", "sft,dcur", "listed", "--wait=false")


@pytest.mark.parametrize("case", INVALID_ON_CREATE, ids=case_id)
def test_python_models_refuse_what_the_api_server_refuses(case: Invalid) -> None:
    """`sftctl run`, the operator and the pods validate with the models: they must agree with the CRD."""
    from pydantic import ValidationError

    from sft_operator.api import KINDS, object_problems

    manifest = mutate(case.kind, case.field, case.value, "invalid")
    if case.field == "metadata.name":
        assert any(case.error in problem for problem in object_problems(case.kind, manifest))
        return
    with pytest.raises((ValidationError, TypeError, KeyError)):
        KINDS[case.kind].spec.model_validate(manifest["spec"])


@pytest.mark.parametrize("name", ["run.v2", "2nd-run", "r" * 63])
def test_a_name_that_only_a_multi_node_run_cannot_use_is_fine_on_one_node(crds_installed: Kubectl, name: str) -> None:
    manifest = copy.deepcopy(VALID_SFTJOB)
    manifest["metadata"]["name"] = name
    result = crds_installed.apply(yaml.safe_dump(manifest), "--dry-run=server")
    assert result.returncode == 0, result.stderr
    assert object_problems("SFTJob", manifest) == []


def test_the_longest_multi_node_name_is_accepted(crds_installed: Kubectl) -> None:
    manifest = mutate("SFTJob", "metadata.name", "r" * MAX_MULTI_NODE_NAME, "r" * MAX_MULTI_NODE_NAME)
    result = crds_installed.apply(yaml.safe_dump(manifest), "--dry-run=server")
    assert result.returncode == 0, result.stderr
