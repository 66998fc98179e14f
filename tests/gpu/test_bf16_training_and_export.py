"""bf16 LoRA and full fine-tuning steps on the GPU through the real `train` command, then reload what they export.

LoRA: frozen base in bf16, fp32 adapters, bf16 autocast; the adapter and the
merged bf16 model are exported, and both reload to the same function (the
merge error is small next to what training changed). Full: fp32 master
weights under bf16 autocast; the exported bf16 model reloads to the function
of the last checkpoint's fp32 weights.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

STEPS = 8


def train(tmp: Path, model: Path, dataset: Path, method: str) -> tuple[Path, dict[str, Any]]:
    out = tmp / method
    config = {
        "model": str(model),
        "dataset": str(dataset),
        "outputDir": str(out),
        "training": {
            "method": method,
            "precision": "bf16",  # what `auto` picks on a GPU; set so a CPU dry run takes the same path
            "maxSeqLength": 512,
            "batchSize": 4,
            "maxSteps": STEPS,
            "evalFraction": 0,  # the export is then the last step's weights, as in the last checkpoint
            "checkpointEverySteps": STEPS,
            "learningRate": 2e-3 if method == "lora" else 1e-3,
            "exportMerged": method == "lora",
            "probes": {"memorisationPrompts": 0},
            "evaluation": {"enabled": False},
        },
    }
    path = tmp / f"{method}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "sft_trainer", "train", str(path)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return out, json.loads((out / "train_report.json").read_text())


def assert_trained_in_bf16(report: dict[str, Any], device: torch.device) -> None:
    environment = report["environment"]
    assert environment["device"].startswith(device.type)
    assert environment["dtype"] == "bfloat16"
    losses = [h["loss"] for h in report["training"]["history"]]
    assert len(losses) == STEPS and all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0], losses


def probe_inputs(model_dir: Path, device: torch.device) -> dict[str, torch.Tensor]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Name three primary colours."}, {"role": "assistant", "content": "Red, blue."}],
        tokenize=False,
    )
    return {"input_ids": tokenizer(text, return_tensors="pt").input_ids.to(device)}


def logits(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits.float()


@pytest.mark.slow
def test_bf16_lora_trains_and_its_adapter_and_merged_model_reload_alike(
    tmp_path: Path, tiny_model_dir: Path, alpaca_gpt4_small: Path, device: torch.device
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, report = train(tmp_path, tiny_model_dir, alpaca_gpt4_small, "lora")
    assert_trained_in_bf16(report, device)
    assert report["environment"]["trainableParameters"] < report["environment"]["totalParameters"] / 2

    def base() -> torch.nn.Module:
        return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).to(device).eval()

    inputs = probe_inputs(out / "merged", device)
    untouched = logits(base(), inputs)
    with_adapter = logits(PeftModel.from_pretrained(base(), out / "adapter").eval(), inputs)
    merged_model = AutoModelForCausalLM.from_pretrained(out / "merged", dtype=torch.bfloat16).to(device).eval()
    assert next(merged_model.parameters()).dtype == torch.bfloat16
    merged = logits(merged_model, inputs)
    trained_change = (with_adapter - untouched).abs().max()
    merge_error = (merged - with_adapter).abs().max()
    print(f"\nLoRA on {device}: training moved logits by {trained_change:.4f}, merging by {merge_error:.4f}")
    assert merge_error < trained_change / 4


@pytest.mark.slow
def test_bf16_full_fine_tuning_trains_and_its_export_reloads_to_the_checkpointed_weights(
    tmp_path: Path, tiny_model_dir: Path, alpaca_gpt4_small: Path, device: torch.device
) -> None:
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out, report = train(tmp_path, tiny_model_dir, alpaca_gpt4_small, "full")
    assert_trained_in_bf16(report, device)
    assert report["environment"]["trainableParameters"] == report["environment"]["totalParameters"]

    exported = AutoModelForCausalLM.from_pretrained(out / "model", dtype=torch.bfloat16).to(device).eval()
    master = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    weights = load_file(str(out / "checkpoints" / f"step-{STEPS:06d}" / "trainable.safetensors"))
    missing, unexpected = master.load_state_dict(weights, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # tied to the embedding
    master = master.to(device).eval()
    untouched = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).to(device).eval()

    inputs = probe_inputs(out / "model", device)
    reference = logits(master, inputs)
    trained_change = (reference - logits(untouched, inputs)).abs().max()
    export_error = (logits(exported, inputs) - reference).abs().max()
    print(f"\nfull on {device}: training moved logits by {trained_change:.4f}, the bf16 export by {export_error:.4f}")
    assert export_error < trained_change / 4
