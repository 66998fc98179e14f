"""Evaluation after training, as an SFTJob's pod runs it: real training, real SmolLM2-135M, tiny suite sizes.

One LoRA run on LIMA answers evaluates base vs tuned with every suite and two
gates (one set to fail), and hands its summary to the operator through the
termination message. A run whose evaluation cannot work keeps its artifacts
and says why.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from sft_trainer.config import TrainRunConfig
from sft_trainer.termination import LIMIT_BYTES
from sft_trainer.training.entrypoint import run_from_config
from sftctl.commands.run import print_evaluation as print_run_evaluation

TINY_SUITES = {
    "ifeval": {"prompts": 4, "maxNewTokens": 24},
    "safety": {"promptsPerSet": 3, "maxNewTokens": 24},
    "reference": {"records": 6},
    "style": {"prompts": 3, "maxNewTokens": 24},
    "batchSize": 8,
}


@pytest.fixture(scope="module")
def lima_subset(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 single-turn LIMA records with short answers (human-written)."""
    records = json.loads((shared_data / "lima_llamafactory.json").read_text(encoding="utf-8"))
    short = [r for r in records if not r.get("history") and len(r["output"]) < 600 and len(r["instruction"]) < 300]
    path = tmp_path_factory.mktemp("lima") / "lima_short.json"
    path.write_text(json.dumps(short[:40]), encoding="utf-8")
    return path


def _config(model: Path, dataset: Path, out: Path, evaluation: dict, **training: object) -> TrainRunConfig:
    return TrainRunConfig.model_validate(
        {
            "model": str(model),
            "dataset": str(dataset),
            "outputDir": str(out),
            "training": {
                "maxSeqLength": 320,
                "batchSize": 4,
                "maxSteps": 2,
                "evalEverySteps": 2,
                "learningRate": 5e-4,
                "evalFraction": 0.2,
                "refusal": {"enabled": False},
                "probes": {"memorisationPrompts": 0},
                "evaluation": evaluation,
                **training,
            },
        }
    )


@pytest.mark.slow
def test_sftjob_run_ends_with_base_vs_tuned_evaluation_gates_and_status(
    smollm2_dir: Path, lima_subset: Path, shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    termination = tmp_path / "termination-log"
    monkeypatch.setenv("SFT_TERMINATION_LOG", str(termination))
    out = tmp_path / "out"
    gates = {"minIFEvalDelta": 0.5, "maxOverRefusal": 1.0}  # the first cannot pass on 4 prompts, the second must
    cfg = _config(smollm2_dir, lima_subset, out, {**TINY_SUITES, "gates": gates})
    assert run_from_config(cfg) == 0
    assert (out / "adapter" / "adapter_model.safetensors").is_file()

    # Every generation saved, one {"prompt", "response"} per line in input order, for base and tuned.
    source = [json.loads(line) for line in (shared_data / "eval" / "ifeval_input_data.jsonl").read_text().splitlines()]
    step = len(source) // 4
    for role in ("base", "tuned"):
        rows = [json.loads(line) for line in (out / "eval" / role / "ifeval_responses.jsonl").read_text().splitlines()]
        assert [r["prompt"] for r in rows] == [s["prompt"] for s in source[::step][:4]]
        assert all(set(r) == {"prompt", "response"} and r["response"] for r in rows)

    report = json.loads((out / "eval" / "eval_report.json").read_text())
    assert list(report["suites"]) == ["ifeval", "safety", "reference", "style", "forgetting"]
    for suite, entry in report["suites"].items():
        assert not entry["error"], (suite, entry["error"])
        assert entry["figures"], suite
        for row in entry["figures"]:
            for role in ("base", "tuned"):
                estimate = row[role]
                assert estimate["low"] <= estimate["value"] <= estimate["high"], (suite, row["key"], role)
            delta = row["delta"]
            assert delta["value"] == pytest.approx(row["tuned"]["value"] - row["base"]["value"], abs=1e-3)
    assert report["suites"]["safety"]["counts"]["base"]["xstest_safePrompts"] == 3
    assert report["suites"]["reference"]["counts"]["tuned"]["records"] == 6
    assert report["suites"]["style"]["examples"] and "base" in report["suites"]["style"]["examples"][0]
    # Two steps on LIMA's human answers move the reference NLL of held-out LIMA answers.
    assert report["suites"]["reference"]["figures"][0]["delta"]["value"] != 0

    status = json.loads((out / "train_report.json").read_text())["status"]
    evaluation = status["evaluation"]
    assert evaluation["passed"] is False and evaluation["promoted"] is False
    assert evaluation["gatesChecked"] == 2 and len(evaluation["failedGates"]) == 1
    assert evaluation["failedGates"][0].startswith("minIFEvalDelta:") and " by " in evaluation["failedGates"][0]
    assert set(evaluation["figures"]) >= {
        "ifevalPromptLevelStrict",
        "safetyXstestSafeOverRefusal",
        "referenceReferenceNll",
        "styleAssistantStyle",
        "forgettingReferenceTextNll",
    }
    marker = json.loads((out / "NOT_PROMOTED").read_text())
    assert marker["reasons"] == evaluation["failedGates"]

    # The operator's copy: the termination message holds the same summary within Kubernetes' 4 KiB.
    summary = json.loads(termination.read_text())
    assert len(termination.read_bytes()) <= LIMIT_BYTES
    assert summary["evaluation"] == evaluation

    html = (out / "train_report.html").read_text()
    assert 'id="evaluation"' in html and "eval/eval_report.html" in html and "minIFEvalDelta" in html

    # `sftctl run` prints the figures as a person reads them (labels, rates in %), not the status keys.
    console = Console(record=True, width=200)
    print_run_evaluation(console, "default/sft", str(out), evaluation)
    printed = console.export_text()
    assert "Prompts with every instruction followed (strict)" in printed and "ifevalPromptLevelStrict" not in printed
    assert "failed minIFEvalDelta" in printed and "default/sft: 2 gates checked, not promoted" in printed


def test_evaluation_that_cannot_run_keeps_the_trained_artifacts(
    tiny_model_dir: Path, alpaca_gpt4_small: Path, tmp_path: Path
) -> None:
    """A suite file that does not exist: the run succeeds, the adapter is there, the error names the field."""
    out = tmp_path / "out"
    missing = tmp_path / "nowhere" / "input_data.jsonl"
    cfg = _config(tiny_model_dir, alpaca_gpt4_small, out, {**TINY_SUITES, "ifeval": {"data": str(missing)}})
    assert run_from_config(cfg) == 0
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    evaluation = json.loads((out / "train_report.json").read_text())["status"]["evaluation"]
    assert evaluation["passed"] is False and evaluation["promoted"] is False
    assert "evaluation.ifeval.data" in evaluation["error"] and str(missing) in evaluation["error"]
    assert (out / "NOT_PROMOTED").is_file()


def test_malformed_suite_file_and_empty_held_out_split_are_counted_not_fatal(
    tiny_model_dir: Path, alpaca_gpt4_small: Path, tmp_path: Path
) -> None:
    """A garbage IFEval file makes that suite 'not run' (named); no held-out split skips reference and style."""
    out = tmp_path / "out"
    garbage = tmp_path / "ifeval.jsonl"
    garbage.write_text('{"key": 1}\nnot json\n', encoding="utf-8")
    evaluation_config = {
        **TINY_SUITES,
        "ifeval": {"data": str(garbage)},
        "safety": {"promptsPerSet": 1, "maxNewTokens": 4},
    }
    cfg = _config(tiny_model_dir, alpaca_gpt4_small, out, evaluation_config, evalFraction=0.0)  # no held-out split
    assert run_from_config(cfg) == 0
    evaluation = json.loads((out / "train_report.json").read_text())["status"]["evaluation"]
    assert "error" not in evaluation
    assert str(garbage) in evaluation["notRun"]["ifeval"]
    assert "held-out split is empty" in evaluation["notRun"]["reference"]
    assert "held-out split is empty" in evaluation["notRun"]["style"]
    assert (
        "safetyXstestSafeOverRefusal" in evaluation["figures"] and "forgettingReferenceTextNll" in evaluation["figures"]
    )
    assert evaluation["passed"] is True  # no gate set: what ran stands, what did not is named
