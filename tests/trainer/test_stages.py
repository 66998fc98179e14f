"""Stages on the real small model: a chain of SFTJobs run by `sftctl run`'s executor, on CPU.

One manifest holds three SFTJobs, children first: `general` trains LoRA on
SmolLM2-135M-Instruct and exports its adapter and a merged model; `from-adapter`
starts from its adapter (`use: adapter`: base + adapter merged in memory),
`from-merged` from its merged export (`use: merged`). Both children train on
the same data with the same seed, so their held-out split is `general`'s, and
their first evaluation (step 0, before any update; new LoRA adapters start at
zero) must give `general`'s final eval loss: the weights really carried over.

Tolerances: `use: adapter` merges in fp32 on CPU, which only reorders sums
(W x + B A x becomes (W + B A) x): measured 2e-7, allowed 1e-4 absolute.
`use: merged` starts from the merged export, which is bf16 (about 3
significant digits per weight): measured 4.7e-3, allowed 1e-2 absolute, and
the start must lie at least five times nearer `general`'s end than its start
(its three steps moved the loss by 0.054).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sft_operator.local_executor import LocalExecutor

TRAINING = {
    "maxSeqLength": 256,
    "batchSize": 4,
    "learningRate": 2e-3,
    "evalFraction": 0.25,
    "refusal": {"enabled": False},
    "probes": {"memorisationPrompts": 0},
    "evaluation": {"enabled": False},
}


def sftjob(name: str, model: dict, **training: object) -> dict:
    return {
        "apiVersion": "sft.trustdoc.io/v1alpha1",
        "kind": "SFTJob",
        "metadata": {"name": name},
        "spec": {
            "model": model,
            "dataset": {"pvc": {"claimName": "datasets", "path": "lima_short.json"}},
            "output": {"pvc": {"claimName": "outputs", "path": f"sft/{name}"}},
            "training": {**TRAINING, **training},
            "resources": {"gpusPerNode": 0},
        },
    }


@pytest.fixture(scope="module")
def lima_folder(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 single-turn LIMA records with short answers (12 train, 4 held out): minutes on two busy cores."""
    records = json.loads((shared_data / "lima_llamafactory.json").read_text(encoding="utf-8"))
    short = [r for r in records if not r.get("history") and len(r["output"]) < 400 and len(r["instruction"]) < 200]
    folder = tmp_path_factory.mktemp("datasets")
    (folder / "lima_short.json").write_text(json.dumps(short[:16]), encoding="utf-8")
    return folder


@pytest.mark.slow
def test_a_chain_of_stages_carries_the_weights_over_in_both_use_modes(
    smollm2_dir: Path, lima_folder: Path, tmp_path: Path
) -> None:
    general = sftjob(
        "general",
        {"pvc": {"claimName": "models", "path": smollm2_dir.name}},
        maxSteps=3,
        evalEverySteps=3,
        exportMerged=True,
    )
    from_adapter = sftjob("from-adapter", {"sftJobRef": {"name": "general", "use": "adapter"}}, maxSteps=1)
    from_merged = sftjob("from-merged", {"sftJobRef": {"name": "general", "use": "merged"}}, maxSteps=1)
    manifest = tmp_path / "stages.yaml"
    manifest.write_text(yaml.safe_dump_all([from_adapter, from_merged, general]))  # children first on purpose
    outputs = tmp_path / "outputs"
    executor = LocalExecutor(
        tmp_path / "runs", {"models": smollm2_dir.parent, "datasets": lima_folder, "outputs": outputs}
    )
    resources = executor.load(manifest)
    assert [r.name for r in executor.ordered(resources)] == ["general", "from-adapter", "from-merged"]

    runs = {run.resource.name: run for run in executor.run_all(resources)}
    for name, run in runs.items():
        assert run.succeeded, f"{name}: {run.status} {run.log.read_text()[-3000:]}"

    def metrics(name: str) -> dict[str, float]:
        return json.loads((outputs / "sft" / name / "train_report.json").read_text())["status"]["metrics"]

    parent = metrics("general")
    assert parent["finalEvalLoss"] == parent["bestEvalLoss"], "the exported weights are the last evaluation's"
    moved = parent["initialEvalLoss"] - parent["finalEvalLoss"]
    child_adapter, child_merged = metrics("from-adapter"), metrics("from-merged")
    print(
        f"\nSmolLM2 chain: general eval loss {parent['initialEvalLoss']:.5f} -> {parent['finalEvalLoss']:.5f}; "
        f"from-adapter starts at {child_adapter['initialEvalLoss']:.5f}, "
        f"from-merged at {child_merged['initialEvalLoss']:.5f}"
    )
    assert moved > 0.02, "general must move the loss clearly for the comparison to mean anything"
    assert child_adapter["initialEvalLoss"] == pytest.approx(parent["finalEvalLoss"], abs=1e-4)
    assert child_merged["initialEvalLoss"] == pytest.approx(parent["finalEvalLoss"], abs=1e-2)
    assert abs(child_merged["initialEvalLoss"] - parent["finalEvalLoss"]) < moved / 5  # bf16 rounding, not drift

    # Status: exports, and the lineage down to the base model with each stage's final eval loss.
    assert runs["general"].status["exports"] == ["adapter", "merged"]
    base = {"model": {"pvc": {"claimName": "models", "path": smollm2_dir.name}}}
    assert runs["general"].status["lineage"] == [base]
    assert runs["from-adapter"].status["lineage"] == [
        {
            "sftJob": "general",
            "use": "adapter",
            "method": "lora",
            "finalEvalLoss": parent["finalEvalLoss"],
            "output": {"claimName": "outputs", "path": "sft/general"},
        },
        base,
    ]
    assert runs["from-merged"].status["lineage"][0]["use"] == "merged"

    # What each child loaded, and what it tells the next stage.
    resolved = json.loads((outputs / "sft" / "from-adapter" / "resolved_config.json").read_text())
    assert resolved["resolved"]["adaptersMergedBeforeTraining"] == [str(outputs / "sft" / "general" / "adapter")]
    assert resolved["resolved"]["modelFolder"] == str(smollm2_dir)
    merged_resolved = json.loads((outputs / "sft" / "from-merged" / "resolved_config.json").read_text())
    assert merged_resolved["resolved"]["modelFolder"] == str(outputs / "sft" / "general" / "merged")
    lineage = json.loads((outputs / "sft" / "from-adapter" / "lineage.json").read_text())
    assert lineage["stage"] == "from-adapter" and lineage["baseModel"] == str(smollm2_dir)
    assert lineage["endOfTurn"] == "<|im_end|>" and lineage["endOfTurnId"] == 2
    assert [s.get("stage") for s in lineage["stages"]] == [None, "general", "from-adapter"]
    assert lineage["stages"][1]["finalEvalLoss"] == parent["finalEvalLoss"]
    report = (outputs / "sft" / "from-adapter" / "train_report.html").read_text()
    assert 'id="lineage"' in report and "<th>general</th>" in report and "<th>from-adapter</th>" in report
