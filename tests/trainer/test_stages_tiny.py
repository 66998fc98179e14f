"""Stages on a tiny Llama with real training: three stages across methods, and the parents a run refuses.

The parents are real runs that wrote their lineage.json; each child's run
config is what the operator would write for it (for a refusal, with one thing
wrong: the run must stop with a configuration error before loading a weight).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from sft_trainer.config import EXIT_CONFIG_ERROR, TrainRunConfig
from sft_trainer.training.entrypoint import run_from_config
from sft_trainer.training.templates import CHATML

TRAINING = {
    "maxSeqLength": 512,
    "batchSize": 4,
    "maxSteps": 2,
    "evalEverySteps": 2,
    "evalFraction": 0.1,
    "refusal": {"enabled": False},
    "probes": {"memorisationPrompts": 0},
    "evaluation": {"enabled": False},
}


def config(model: Path, dataset: Path, out: Path, name: str, parent: dict[str, Any] | None = None, **training: Any):
    return TrainRunConfig.model_validate(
        {
            "model": str(model),
            "name": name,
            "parent": parent,
            "dataset": str(dataset),
            "outputDir": str(out),
            "training": {**TRAINING, **training},
        }
    )


@pytest.fixture(scope="module")
def general(tiny_model_dir: Path, alpaca_gpt4_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished LoRA stage `general` that exported its adapter only."""
    out = tmp_path_factory.mktemp("general")
    assert run_from_config(config(tiny_model_dir, alpaca_gpt4_small, out, "general")) == 0
    return out


def child(tiny_model_dir: Path, general: Path, **parent: Any) -> dict[str, Any]:
    """The `parent` section the operator writes for `use: adapter` on `general`, with `parent` overrides."""
    return {
        "name": "general",
        "outputDir": str(general),
        "use": "adapter",
        "adapters": [str(general / "adapter")],
        "baseModel": str(tiny_model_dir),
        **parent,
    }


def refused(cfg: TrainRunConfig, capsys: pytest.CaptureFixture[str]) -> str:
    assert run_from_config(cfg) == EXIT_CONFIG_ERROR
    error = capsys.readouterr().err
    assert not (Path(cfg.output_dir) / "adapter").exists(), "nothing may be trained"
    return error


def test_lineage_json_records_what_the_next_stage_checks(general: Path, tiny_model_dir: Path) -> None:
    lineage = json.loads((general / "lineage.json").read_text())
    assert lineage["stage"] == "general" and lineage["baseModel"] == str(tiny_model_dir)
    assert lineage["exports"] == ["adapter"] and lineage["method"] == "lora"
    assert (lineage["endOfTurn"], lineage["endOfTurnId"]) == ("<|im_end|>", 2)
    assert lineage["stages"][0] == {"baseModel": str(tiny_model_dir)}
    assert lineage["stages"][1]["stage"] == "general" and "finalEvalLoss" in lineage["stages"][1]
    status = json.loads((general / "train_report.json").read_text())["status"]
    assert status["exports"] == ["adapter"]


@pytest.mark.parametrize(
    ("parent", "expected"),
    [
        (
            {"use": "merged", "adapters": []},
            "model.sftJobRef (SFTJob general): use merged needs its merged/ export, which it did not write "
            "(it exported adapter)",
        ),
        ({"name": "domain"}, "is the lineage of stage 'general': another run wrote that output folder"),
        ({"baseModel": "/mnt/volumes/models/llama-3-8b"}, "that stage trained from base model"),
        ({"outputDir": "/nonexistent/sft/general"}, "lineage.json does not exist: the stage did not finish there"),
    ],
    ids=["no-merged-export", "folder-of-another-stage", "another-base-model", "output-removed"],
)
def test_a_parent_it_cannot_build_on_is_a_configuration_error(
    tiny_model_dir: Path,
    alpaca_gpt4_small: Path,
    general: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    parent: dict[str, Any],
    expected: str,
) -> None:
    cfg = config(
        tiny_model_dir, alpaca_gpt4_small, tmp_path / "out", "domain", child(tiny_model_dir, general, **parent)
    )
    assert expected in refused(cfg, capsys)


def test_a_template_with_another_end_of_turn_than_the_parent_trained_is_refused(
    tiny_model_dir: Path, alpaca_gpt4_small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import AutoTokenizer

    # A base model whose own template ends turns with <|endoftext|> (a special token of its vocabulary).
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.chat_template = CHATML.replace("<|im_end|>", "<|endoftext|>")
    tokenizer.save_pretrained(base)
    parent_out = tmp_path / "general"
    assert run_from_config(config(base, alpaca_gpt4_small, parent_out, "general")) == 0
    trained = json.loads((parent_out / "lineage.json").read_text())
    assert trained["endOfTurn"] == "<|endoftext|>"

    parent = {
        "name": "general",
        "outputDir": str(parent_out),
        "use": "adapter",
        "adapters": [str(parent_out / "adapter")],
        "baseModel": str(base),
    }
    kept = config(base, alpaca_gpt4_small, tmp_path / "kept", "kept", parent)
    assert run_from_config(kept) == 0, "the parent's own template (name: auto) travels with it"
    assert json.loads((tmp_path / "kept" / "lineage.json").read_text())["endOfTurn"] == "<|endoftext|>"

    other = config(base, alpaca_gpt4_small, tmp_path / "out", "domain", parent, template={"name": "chatml"})
    error = refused(other, capsys)
    assert "training.template: this run's template ends turns with '<|im_end|>'" in error
    assert "but SFTJob general (model.sftJobRef) trained '<|endoftext|>'" in error


def test_three_stages_lora_then_full_from_its_adapter_then_lora_from_the_full_model(
    tiny_model_dir: Path, alpaca_gpt4_small: Path, general: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """general (LoRA) -adapter-> domain (full) -merged-> safety (LoRA): each starts where the last one ended."""
    domain, safety = tmp_path / "domain", tmp_path / "safety"
    parent = child(tiny_model_dir, general)
    assert run_from_config(config(tiny_model_dir, alpaca_gpt4_small, domain, "domain", parent, method="full")) == 0
    full_parent = {"name": "domain", "outputDir": str(domain), "use": "merged", "baseModel": str(tiny_model_dir)}
    assert run_from_config(config(domain / "model", alpaca_gpt4_small, safety, "safety", full_parent)) == 0

    def metrics(out: Path) -> dict[str, float]:
        return json.loads((out / "train_report.json").read_text())["status"]["metrics"]

    # fp32 on CPU throughout: the adapter merge and the full model's export change nothing but rounding.
    assert metrics(domain)["initialEvalLoss"] == pytest.approx(metrics(general)["finalEvalLoss"], abs=1e-4)
    assert metrics(safety)["initialEvalLoss"] == pytest.approx(metrics(domain)["finalEvalLoss"], abs=1e-4)
    lineage = json.loads((safety / "lineage.json").read_text())
    assert [(s.get("stage"), s.get("use"), s.get("method")) for s in lineage["stages"]] == [
        (None, None, None),
        ("general", None, "lora"),
        ("domain", "adapter", "full"),
        ("safety", "merged", "lora"),
    ]
    assert lineage["baseModel"] == str(tiny_model_dir)
    # A full stage has no adapter to start from.
    no_adapter = config(tiny_model_dir, alpaca_gpt4_small, tmp_path / "x", "x", {**full_parent, "use": "adapter"})
    assert "use adapter needs its adapter/ export, which it did not write (it exported model)" in refused(
        no_adapter, capsys
    )
