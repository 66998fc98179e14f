"""The real small model: a few LoRA steps of SmolLM2-135M-Instruct on CPU on a LIMA subset.

Eval loss goes down; the adapter is saved, reloaded on a fresh base, and
generates text that ends with the end-of-turn token the template trained.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sft_trainer.config import TrainRunConfig
from sft_trainer.training.entrypoint import run_from_config


@pytest.fixture(scope="module")
def lima_subset(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """36 single-turn LIMA records with short answers (human-written, curated)."""
    records = json.loads((shared_data / "lima_llamafactory.json").read_text(encoding="utf-8"))
    short = [r for r in records if not r.get("history") and len(r["output"]) < 700 and len(r["instruction"]) < 400]
    path = tmp_path_factory.mktemp("lima") / "lima_short.json"
    path.write_text(json.dumps(short[:36]), encoding="utf-8")
    return path


@pytest.mark.slow
def test_lora_on_smollm2_lowers_eval_loss_and_the_adapter_generates_to_eos(smollm2_dir, lima_subset, tmp_path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "out"
    cfg = TrainRunConfig.model_validate(
        {
            "model": str(smollm2_dir),
            "dataset": str(lima_subset),
            "outputDir": str(out),
            "training": {
                "maxSeqLength": 384,
                "batchSize": 4,
                "maxSteps": 4,
                "evalEverySteps": 4,
                "learningRate": 5e-4,
                "evalFraction": 0.15,
                "refusal": {"enabled": False},
                "probes": {"memorisationPrompts": 0},
                "evaluation": {"enabled": False},
            },
        }
    )
    assert run_from_config(cfg) == 0
    metrics = json.loads((out / "train_report.json").read_text())["status"]["metrics"]
    print(f"\nSmolLM2 LoRA: eval loss {metrics['initialEvalLoss']:.4f} -> {metrics['finalEvalLoss']:.4f}")
    assert metrics["finalEvalLoss"] < metrics["initialEvalLoss"]

    adapter = out / "adapter"
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    base = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter).eval()
    assert model.generation_config.eos_token_id == [2] or model.generation_config.eos_token_id == 2
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    from transformers import GenerationConfig

    generation = GenerationConfig.from_pretrained(adapter)
    with torch.no_grad():
        output = model.generate(**prompt, generation_config=generation, max_new_tokens=48, do_sample=False)
    new_tokens = output[0, prompt["input_ids"].shape[1] :].tolist()
    text = tokenizer.decode(new_tokens)
    print(f"SmolLM2 + adapter: {text!r}")
    assert new_tokens[-1] in generation.eos_token_id, text  # stopped on its own, at the trained end of turn
    assert len(tokenizer.decode(new_tokens, skip_special_tokens=True).strip()) > 0
