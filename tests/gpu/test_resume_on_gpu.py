"""kill -9 a bf16 LoRA run on the GPU mid-way, start it again: it resumes (CUDA RNG for dropout, fused AdamW state
included) and ends like an uninterrupted run.

The config and helpers are tests/trainer/test_resume.py's; on the GPU the run
is longer (a step takes milliseconds there, so the kill needs a wider window).
CUDA's attention backward accumulates with atomics, so two GPU runs are not
bit-identical: the losses after the restart must agree to 1% (0.1% on CPU,
as in the CPU test).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_resume import newest_step, train_command, write_config


def run_length(device: torch.device) -> tuple[int, int]:
    """(steps, kill after this checkpoint): the CPU test's 24 and 12 on the CPU; on the GPU a wider window."""
    return (90, 30) if device.type == "cuda" else (24, 12)


def config(tmp: Path, name: str, model: Path, dataset: Path, steps: int) -> Path:
    path = write_config(tmp / f"{name}.yaml", model, dataset, tmp / name)
    wire = yaml.safe_load(path.read_text())
    wire["training"]["maxSteps"] = steps
    wire["training"]["earlyStopping"] = {"enabled": False}  # 90 tiny-model steps plateau: run them all
    path.write_text(yaml.safe_dump(wire), encoding="utf-8")
    return path


@pytest.mark.slow
def test_kill_9_on_the_gpu_then_restart_matches_an_uninterrupted_run(
    tiny_model_dir: Path, alpaca_gpt4_small: Path, tmp_path: Path, device: torch.device
) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    steps, kill_after = run_length(device)
    killed_cfg = config(tmp_path, "killed", tiny_model_dir, alpaca_gpt4_small, steps)
    reference_cfg = config(tmp_path, "reference", tiny_model_dir, alpaca_gpt4_small, steps)
    killed_out, reference_out = tmp_path / "killed", tmp_path / "reference"

    process = subprocess.Popen(train_command(killed_cfg), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while newest_step(killed_out) < kill_after and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, process.stderr.read().decode()[-2000:] if process.stderr else ""
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted_at = newest_step(killed_out)
    assert 0 < interrupted_at < steps

    for cfg in (killed_cfg, reference_cfg):
        done = subprocess.run(train_command(cfg), env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]

    killed = json.loads((killed_out / "train_report.json").read_text())
    reference = json.loads((reference_out / "train_report.json").read_text())
    assert killed["environment"]["device"].startswith(device.type)
    assert killed["training"]["resumedFrom"] == [interrupted_at]
    assert [h["step"] for h in killed["training"]["history"]] == list(range(1, steps + 1))
    tolerance = 1e-2 if device.type == "cuda" else 1e-3
    after = slice(interrupted_at, steps)
    resumed_losses = [h["loss"] for h in killed["training"]["history"]][after]
    reference_losses = [h["loss"] for h in reference["training"]["history"]][after]
    assert resumed_losses == pytest.approx(reference_losses, rel=tolerance)
    metrics = killed["status"]["metrics"], reference["status"]["metrics"]
    assert metrics[0]["finalEvalLoss"] == pytest.approx(metrics[1]["finalEvalLoss"], rel=tolerance)
    print(f"\nkill -9 at step {interrupted_at} on {device}: final eval loss {metrics[0]['finalEvalLoss']:.5f}")
