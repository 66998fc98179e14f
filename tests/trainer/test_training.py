"""Real CPU training of a tiny Llama: outputs contract, live progress, accumulation, schedule, early stopping, errors."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
import torch

from sft_trainer.config import EXIT_CONFIG_ERROR, TrainingConfig, TrainRunConfig
from sft_trainer.training.entrypoint import run_from_config
from support.kube import free_port

FAST_PROBES = {"memorisationPrompts": 2, "maxNewTokens": 8}
# Every suite, at sizes a tiny model answers in seconds (tests/trainer/test_evaluation_after_training.py checks the figures).
FAST_EVALUATION = {
    "ifeval": {"prompts": 2, "maxNewTokens": 8},
    "safety": {"promptsPerSet": 2, "maxNewTokens": 8},
    "reference": {"records": 4},
    "style": {"prompts": 2, "maxNewTokens": 8},
}


def run_config(model: Path, dataset: Path, out: Path, **training) -> TrainRunConfig:
    settings = {
        "maxSeqLength": 1024,
        "batchSize": 4,
        "maxSteps": 8,
        "evalEverySteps": 4,
        "checkpointEverySteps": 4,
        "learningRate": 3e-3,
        "evalFraction": 0.1,
        "probes": FAST_PROBES,
        "evaluation": FAST_EVALUATION,
        **training,
    }
    return TrainRunConfig.model_validate(
        {"model": str(model), "dataset": str(dataset), "outputDir": str(out), "training": settings}
    )


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


# --------------------------------------------------------------- end to end


def test_lora_run_writes_the_output_contract_and_serves_progress(
    tiny_model_dir, alpaca_gpt4_small, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("SFT_PROGRESS_HOST", "127.0.0.1")
    port = free_port()
    cfg = run_config(tiny_model_dir, alpaca_gpt4_small, tmp_path / "out", maxSteps=6, checkpointEverySteps=2)
    cfg = cfg.model_copy(update={"progress_port": port})
    seen: dict[str, object] = {}

    def on_progress(fields: dict) -> None:
        # While training runs, read the live endpoints as the operator and Prometheus would.
        if fields.get("phase") == "training" and fields.get("step") == 3 and "progress" not in seen:
            seen["progress"] = json.loads(fetch(f"http://127.0.0.1:{port}/progress"))
            seen["metrics"] = fetch(f"http://127.0.0.1:{port}/metrics")

    assert run_from_config(cfg, on_progress) == 0
    out = tmp_path / "out"

    live = seen["progress"]
    assert live["phase"] == "training" and live["step"] == 3 and live["totalSteps"] == 6
    for key in ("epoch", "percent", "loss", "learningRate", "tokensPerSecond", "etaSeconds", "updatedAt", "evalLoss"):
        assert key in live, key
    assert live["tokensPerSecond"] > 0 and live["percent"] == pytest.approx(50.0)
    assert "sft_train_step 3.0" in seen["metrics"] and "sft_train_tokens_per_second" in seen["metrics"]

    report = json.loads((out / "train_report.json").read_text())
    progress, metrics = report["status"]["progress"], report["status"]["metrics"]
    assert progress["step"] == 6 and progress["totalSteps"] == 6 and progress["percent"] == 100.0
    assert set(progress) >= {"epoch", "loss", "evalLoss", "learningRate", "tokensPerSecond", "etaSeconds", "updatedAt"}
    assert metrics["optimizerSteps"] == 6 and metrics["finalEvalLoss"] < metrics["initialEvalLoss"]
    assert all(isinstance(v, float) for v in metrics.values())
    assert "memorisationLcsGap" in metrics
    evaluation = report["status"]["evaluation"]
    assert evaluation["passed"] and "forgettingReferenceTextNll" in evaluation["figures"]
    assert "safetyAdvbenchRefusal" in evaluation["figures"]

    html = (out / "train_report.html").read_text()
    for element in ('id="loss-curve"', 'id="lr-curve"', 'id="probes"', "<svg"):
        assert element in html
    assert "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # self-contained

    adapter = out / "adapter"
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "generation_config.json"):
        assert (adapter / name).is_file(), name
    assert "<|im_start|>" in (adapter / "chat_template.jinja").read_text()
    resolved = json.loads((out / "resolved_config.json").read_text())
    assert resolved["training"]["learningRate"] == 3e-3 and resolved["training"]["lora"]["r"] == 16
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert checkpoints == ["best", "step-000004", "step-000006"]  # 2 newest kept, plus the best
    assert (out / "rejected_samples.jsonl").is_file()


def test_full_fine_tuning_exports_a_loadable_model(tiny_model_dir, alpaca_gpt4_small, tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    cfg = run_config(
        tiny_model_dir,
        alpaca_gpt4_small,
        tmp_path / "out",
        method="full",
        learningRate=1e-3,
        probes={"memorisationPrompts": 0},
        evaluation={"enabled": False},
        refusal={"enabled": False},
    )
    assert run_from_config(cfg) == 0
    report = json.loads((tmp_path / "out" / "train_report.json").read_text())
    assert report["method"] == "full"
    assert report["environment"]["trainableParameters"] == report["environment"]["totalParameters"]
    history = report["training"]["history"]
    assert history[-1]["loss"] < history[0]["loss"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "model")
    assert model.generation_config.eos_token_id == [2]


def test_packed_run_trains(tiny_model_dir, alpaca_gpt4_small, tmp_path) -> None:
    cfg = run_config(
        tiny_model_dir,
        alpaca_gpt4_small,
        tmp_path / "out",
        packing=True,
        batchSize=2,
        maxSteps=4,
        probes={"memorisationPrompts": 0},
        evaluation={"enabled": False},
    )
    assert run_from_config(cfg) == 0
    metrics = json.loads((tmp_path / "out" / "train_report.json").read_text())["status"]["metrics"]
    assert metrics["finalEvalLoss"] < metrics["initialEvalLoss"]


# ------------------------------------------------------- gradient accumulation


def test_accumulated_micro_batches_equal_one_big_batch(tiny_model_dir, tiny_tokenizer) -> None:
    """Summed token loss / trained tokens of the whole step: the same gradient as one batch (unlike averaging means)."""
    from transformers import AutoModelForCausalLM

    from sft_trainer.formats import Conversation, Message
    from sft_trainer.training.collate import pad_batch
    from sft_trainer.training.loop import summed_loss, token_losses
    from sft_trainer.training.masking import SampleBuilder
    from sft_trainer.training.templates import resolve_template

    builder = SampleBuilder(tiny_tokenizer, resolve_template(tiny_tokenizer))
    answers = ["Yes.", "No, not at all, and here is a much longer reason why.", "Maybe.", "Four."]
    samples = [
        builder.build(Conversation([Message("user", f"Q{i}"), Message("assistant", a)], i))
        for i, a in enumerate(answers)
    ]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    pad = tiny_tokenizer.pad_token_id

    def grads() -> torch.Tensor:
        g = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        model.zero_grad(set_to_none=True)
        return g

    big = pad_batch(samples, pad)
    (summed_loss(model, big) / big.num_trained).backward()
    reference = grads()

    micro = [pad_batch(samples[:2], pad), pad_batch(samples[2:], pad)]
    total = sum(b.num_trained for b in micro)
    for b in micro:
        (summed_loss(model, b) / total).backward()
    accumulated = grads()
    torch.testing.assert_close(accumulated, reference, rtol=1e-4, atol=1e-6)

    for b in micro:  # the common bug: average of per-micro-batch means
        losses, mask = token_losses(model, b)
        ((losses * mask).sum() / mask.sum() / len(micro)).backward()
    naive = grads()
    assert not torch.allclose(naive, reference, rtol=1e-3, atol=1e-6)


# ------------------------------------------------------------------ schedule


def test_warmup_then_cosine_decay() -> None:
    from sft_trainer.training.loop import lr_factor

    training = TrainingConfig(warmup_ratio=0.1)
    factors = [lr_factor(step, 100, training) for step in range(100)]
    assert factors[0] < factors[5] < factors[9] <= 1.0  # warmup over the first 10 steps
    assert max(factors) == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))  # monotone decay
    assert factors[-1] < 0.01
    assert TrainingConfig().resolved_learning_rate() == 2e-4
    assert TrainingConfig(method="full").resolved_learning_rate() == 1e-5


# ----------------------------------------------------------- early stopping


def test_early_stopping_keeps_the_best_weights(tiny_model_dir, alpaca_gpt4_small, tmp_path) -> None:
    # A learning rate this high makes eval loss climb after the first evaluation.
    cfg = run_config(
        tiny_model_dir,
        alpaca_gpt4_small,
        tmp_path / "out",
        method="full",
        learningRate=0.05,
        maxSteps=20,
        evalEverySteps=1,
        warmupRatio=0.0,
        lrScheduler="constant",
        earlyStopping={"patience": 2},
        probes={"memorisationPrompts": 0},
        evaluation={"enabled": False},
    )
    assert run_from_config(cfg) == 0
    report = json.loads((tmp_path / "out" / "train_report.json").read_text())
    training = report["training"]
    assert training["stoppedEarly"] and len(training["history"]) < 20
    evals = [e["evalLoss"] for e in training["evalHistory"]]
    best = min(evals)
    assert report["status"]["metrics"]["bestEvalLoss"] == pytest.approx(best)
    # The exported model is the best one: its eval loss is the best, not the last.
    from transformers import AutoModelForCausalLM

    from sft_trainer.training.loop import eval_batches, evaluate
    from sft_trainer.training.session import Reporter, open_session

    session = open_session(cfg.model_copy(update={"output_dir": str(tmp_path / "again")}), Reporter())
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "model", dtype=torch.float32)
    result = evaluate(exported, eval_batches(session.data.eval, cfg.training, session.pad_id), torch.device("cpu"))
    assert result is not None and result.loss == pytest.approx(best, rel=1e-3)


# ---------------------------------------------------------------- bad input


def test_missing_dataset_is_a_configuration_error(tiny_model_dir, tmp_path, capsys) -> None:
    cfg = run_config(tiny_model_dir, tmp_path / "nope.jsonl", tmp_path / "out")
    assert run_from_config(cfg) == EXIT_CONFIG_ERROR
    assert "dataset:" in capsys.readouterr().err


def test_model_without_template_needs_a_named_one(tiny_model_dir, alpaca_gpt4_small, tmp_path, capsys) -> None:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    cfg = run_config(model, alpaca_gpt4_small, tmp_path / "out")
    assert run_from_config(cfg) == EXIT_CONFIG_ERROR
    assert "training.template" in capsys.readouterr().err
    named = run_config(
        model,
        alpaca_gpt4_small,
        tmp_path / "out2",
        maxSteps=1,
        template={"name": "chatml"},
        probes={"memorisationPrompts": 0},
        evaluation={"enabled": False},
    )
    assert run_from_config(named) == 0


def test_dataset_with_nothing_trainable_names_the_reasons(tiny_model_dir, tmp_path, capsys) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "only a question"}]}) + "\n")
    assert run_from_config(run_config(tiny_model_dir, data, tmp_path / "out")) == EXIT_CONFIG_ERROR
    err = capsys.readouterr().err
    assert "tokens.no_assistant_turn" in err and "rejected_samples.jsonl" in err


def test_lora_settings_with_full_fine_tuning_are_refused(tmp_path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="only allowed with method: lora"):
        TrainingConfig(method="full", lora={"r": 8})
    with pytest.raises(ValidationError, match="exportMerged"):
        TrainingConfig(method="full", export_merged=True)
