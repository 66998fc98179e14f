"""`sftctl lint` on real data, `sftctl train` flags, and the SmolLM2 conversion's validity checks."""

from __future__ import annotations

import json
import shutil

import pytest

from sftctl.cli import main as sftctl


def test_lint_shows_samples_and_the_summary(tiny_model_dir, alpaca_gpt4_small, capsys) -> None:
    code = sftctl(
        ["lint", str(alpaca_gpt4_small), "--model", str(tiny_model_dir), "-n", "2", "--max-seq-length", "300"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("tokens,") >= 2 and "trained" in out
    for line in ("template", "trained tokens", "BOS violations", "EOS violations", "truncated"):
        assert line in out
    assert "template.overlong" in out  # some records are over 300 tokens with this tiny vocabulary


def test_lint_json_summary_counts_every_record(tiny_model_dir, alpaca_gpt4_small, capsys) -> None:
    code = sftctl(
        [
            "lint",
            str(alpaca_gpt4_small),
            "--model",
            str(tiny_model_dir),
            "--json",
            "--max-seq-length",
            "300",
            "--overlong",
            "truncate_prompt",
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert summary["records"] == 60 == summary["samples"] + summary["rejected"]
    assert 0 < summary["trainedFraction"] < 1
    assert summary["bosViolations"] == 0 and summary["eosViolations"] == 0
    assert summary["template"] == "auto" and summary["endOfTurn"] == "<|im_end|>"


def test_train_command_rejects_missing_flags(capsys) -> None:
    assert sftctl(["train", "--model", "m"]) == 42
    assert "--dataset" in capsys.readouterr().err


def test_train_command_runs_from_flags(tiny_model_dir, alpaca_gpt4_small, tmp_path) -> None:
    out = tmp_path / "out"
    code = sftctl(
        [
            "train",
            "--model",
            str(tiny_model_dir),
            "--dataset",
            str(alpaca_gpt4_small),
            "--output",
            str(out),
            "--max-steps",
            "2",
            "--max-seq-length",
            "1024",
            "--no-probes",
        ]
    )
    assert code == 0
    assert json.loads((out / "train_report.json").read_text())["status"]["metrics"]["optimizerSteps"] == 2


def test_smollm2_conversion_is_valid_and_idempotent(smollm2_dir, tmp_path) -> None:
    from sft_trainer.modelprep import find_gguf, is_converted, prepare, source_fingerprint

    fingerprint = source_fingerprint(find_gguf())
    assert is_converted(smollm2_dir, fingerprint)
    assert prepare(smollm2_dir) is False  # already there: nothing redone
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["architectures"] == ["LlamaForCausalLM"]
    generation = json.loads((smollm2_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [2]
    # A folder that still claims to be GGUF is not accepted as converted.
    copy = tmp_path / "copy"
    shutil.copytree(smollm2_dir, copy, ignore=shutil.ignore_patterns("model.safetensors"))
    (copy / "model.safetensors").symlink_to(smollm2_dir / "model.safetensors")
    assert is_converted(copy, fingerprint)
    (copy / "config.json").write_text(json.dumps({**config, "quantization_config": {"quant_method": "gguf"}}))
    assert not is_converted(copy, fingerprint)


@pytest.mark.slow
def test_smollm2_loads_and_its_template_is_as_documented(smollm2_dir) -> None:
    from transformers import AutoTokenizer

    from sft_trainer.training.templates import resolve_template

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (1, 2, 2)
    assert resolve_template(tokenizer).end_of_turn == "<|im_end|>"
