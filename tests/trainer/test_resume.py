"""kill -9 a CPU run mid-way, start it again: it resumes by itself and ends like an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

STEPS = 24


def write_config(path: Path, model: Path, dataset: Path, out: Path) -> Path:
    config = {
        "model": str(model),
        "dataset": str(dataset),
        "outputDir": str(out),
        "training": {
            "maxSeqLength": 1024,
            "batchSize": 2,
            "gradientAccumulationSteps": 2,
            "maxSteps": STEPS,
            "evalEverySteps": 6,
            "checkpointEverySteps": 3,
            "learningRate": 2e-3,
            "evalFraction": 0.1,
            "lora": {"dropout": 0.1},  # dropout draws random numbers: resume must restore the RNG too
            "probes": {"memorisationPrompts": 0},
            "evaluation": {"enabled": False},
        },
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def train_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "sft_trainer", "train", str(config)]


def newest_step(out: Path) -> int:
    steps = [int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("step-*") if (p / "state.json").exists()]
    return max(steps, default=0)


@pytest.mark.slow
def test_kill_9_then_restart_matches_an_uninterrupted_run(tiny_model_dir, alpaca_gpt4_small, tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference_out, killed_out = tmp_path / "reference", tmp_path / "killed"
    reference_cfg = write_config(tmp_path / "reference.yaml", tiny_model_dir, alpaca_gpt4_small, reference_out)
    killed_cfg = write_config(tmp_path / "killed.yaml", tiny_model_dir, alpaca_gpt4_small, killed_out)

    # The interrupted run: kill -9 once a mid-way checkpoint exists.
    process = subprocess.Popen(train_command(killed_cfg), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while newest_step(killed_out) < STEPS // 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read().decode()[-2000:] if process.stderr else ""
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted_at = newest_step(killed_out)
    assert 0 < interrupted_at < STEPS
    assert not (killed_out / "train_report.json").exists()

    # Started again with the same command: resumes from the newest checkpoint by itself.
    resumed = subprocess.run(train_command(killed_cfg), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from" in resumed.stderr

    reference = subprocess.run(train_command(reference_cfg), env=env, capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr[-3000:]

    killed_report = json.loads((killed_out / "train_report.json").read_text())
    reference_report = json.loads((reference_out / "train_report.json").read_text())
    assert killed_report["training"]["resumedFrom"] == [interrupted_at]
    killed_steps = [h["step"] for h in killed_report["training"]["history"]]
    assert killed_steps == list(range(1, STEPS + 1))  # every optimiser step exactly once
    assert (
        killed_report["status"]["metrics"]["optimizerSteps"]
        == reference_report["status"]["metrics"]["optimizerSteps"]
        == STEPS
    )
    final_killed = killed_report["status"]["metrics"]["finalLoss"]
    final_reference = reference_report["status"]["metrics"]["finalLoss"]
    assert final_killed == pytest.approx(final_reference, rel=1e-3)
    assert killed_report["status"]["metrics"]["finalEvalLoss"] == pytest.approx(
        reference_report["status"]["metrics"]["finalEvalLoss"], rel=1e-3
    )
    print(
        f"\nkill -9 at step {interrupted_at}: final loss {final_killed:.6f} resumed vs {final_reference:.6f} uninterrupted"
    )


def test_a_checkpoint_from_before_multi_process_support_still_resumes(tiny_model_dir, tmp_path) -> None:
    """Session-1 checkpoints (optimizer state by position, one rng.pt) resume in one process."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    from sft_trainer.training import checkpoints as ckpt
    from sft_trainer.training.loop import RunState
    from sft_trainer.training.parallel import Parallel

    def model_and_optimizer():  # type: ignore[no-untyped-def]
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        return model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    model, optimizer, scheduler = model_and_optimizer()
    batch = torch.randint(0, model.config.vocab_size, (2, 16))
    model(input_ids=batch, labels=batch).loss.backward()
    optimizer.step()
    scheduler.step()
    old = tmp_path / "checkpoints" / "step-000001"
    old.mkdir(parents=True)
    save_file({n: p.detach().contiguous() for n, p in model.named_parameters()}, str(old / "trainable.safetensors"))
    torch.save(optimizer.state_dict(), old / "optimizer.pt")
    torch.save(scheduler.state_dict(), old / "scheduler.pt")
    torch.save(ckpt._rng_state(), old / "rng.pt")
    (old / "state.json").write_text(json.dumps(RunState(total_steps=4, step=1).to_json()))

    fresh, fresh_optimizer, fresh_scheduler = model_and_optimizer()
    parallel = Parallel.start("ddp", torch.device("cpu"), torch.float32)
    state = ckpt.load_checkpoint(old, parallel, fresh, fresh_optimizer, fresh_scheduler)
    assert state.step == 1
    for (name, before), after in zip(model.named_parameters(), fresh.parameters(), strict=True):
        assert torch.equal(before, after), name
        moments = optimizer.state[before], fresh_optimizer.state[after]
        assert torch.equal(moments[0]["exp_avg"], moments[1]["exp_avg"]), name


class _RunsCode:
    """Unpickling this creates a file: what a full unpickle of a planted checkpoint file would let anyone do."""

    def __init__(self, witness: Path) -> None:
        self.witness = witness

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.witness,))


@pytest.mark.parametrize("planted", ["optimizer.pt", "scheduler.pt", "rng-0.pt"])
def test_a_checkpoint_file_that_would_run_code_is_refused_unrun(tiny_model_dir, tmp_path, planted) -> None:
    """Anyone who can write the output volume could otherwise run code in the trainer on its next resume."""
    import torch
    from transformers import AutoModelForCausalLM

    from sft_trainer.training import checkpoints as ckpt
    from sft_trainer.training.loop import RunState
    from sft_trainer.training.parallel import Parallel

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    parallel = Parallel.start("ddp", torch.device("cpu"), torch.float32)
    saved = ckpt.save_checkpoint(tmp_path, parallel, model, optimizer, scheduler, RunState(total_steps=4, step=1))
    assert ckpt.load_checkpoint(saved, parallel, model, optimizer, scheduler).step == 1  # as written, it loads

    witness = tmp_path / "code-ran"
    torch.save({"state": _RunsCode(witness)}, saved / planted)
    with pytest.raises(ValueError, match=f"{planted} holds more than tensors and plain data"):
        ckpt.load_checkpoint(saved, parallel, model, optimizer, scheduler)
    assert not witness.exists()
