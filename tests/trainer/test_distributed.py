"""Several processes on CPU (torchrun + gloo): DDP and FSDP train exactly like one process.

Two processes with no accumulation take the same micro-batches per optimiser
step as one process accumulating two, and the loss is normalised by the
trained tokens of the whole step, so the loss curves must agree. FSDP
checkpoints hold whole tensors (gathered from the shards), and an FSDP run
killed with SIGKILL resumes from them and ends like an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from safetensors import safe_open

from support.kube import free_port

STEPS = 6
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def write_config(
    tmp: Path, name: str, model: Path, dataset: Path, distributed: str, accumulation: int, method: str = "full"
) -> Path:
    config: dict[str, Any] = {
        "model": str(model),
        "dataset": str(dataset),
        "outputDir": str(tmp / name),
        "progressPort": free_port(),  # only rank 0 may bind it: a second bind would fail the run
        "training": {
            "method": method,
            "lora": {"dropout": 0.0} if method == "lora" else None,  # no dropout: same numbers on any process count
            "distributed": distributed,
            "maxSeqLength": 512,
            "batchSize": 2,
            "gradientAccumulationSteps": accumulation,
            "maxSteps": STEPS,
            "evalFraction": 0.1,
            "evalEverySteps": 3,
            "checkpointEverySteps": 2,
            "learningRate": 1e-3,
            "probes": {"memorisationPrompts": 0},
            "evaluation": {"enabled": False},
        },
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def command(config: Path, processes: int) -> list[str]:
    if processes == 1:
        return [sys.executable, "-m", "sft_trainer", "train", str(config)]
    # The image's launcher, as the operator's pods run it (torchrun that keeps the config-error exit code).
    launcher = [sys.executable, "-m", "sft_trainer.launch", "--standalone", f"--nproc-per-node={processes}"]
    return [*launcher, "-m", "sft_trainer", "train", str(config)]


def train(config: Path, processes: int) -> dict[str, Any]:
    done = subprocess.run(command(config, processes), env=ENV, capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stderr[-4000:]
    out = Path(yaml.safe_load(config.read_text())["outputDir"])
    return json.loads((out / "train_report.json").read_text())  # type: ignore[no-any-return]


def losses(report: dict[str, Any]) -> list[float]:
    return [entry["loss"] for entry in report["training"]["history"]]


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (torchrun puts its workers in their own sessions)."""
    parent = psutil.Process(pid)
    for process in [*parent.children(recursive=True), parent]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGKILL)


def newest_step(out: Path) -> int:
    steps = [int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("step-*") if (p / "state.json").exists()]
    return max(steps, default=0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, alpaca_gpt4_small: Path) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("distributed")
    single = write_config(tmp, "single", tiny_model_dir, alpaca_gpt4_small, "ddp", accumulation=2)
    ddp = write_config(tmp, "ddp", tiny_model_dir, alpaca_gpt4_small, "ddp", accumulation=1)
    fsdp = write_config(tmp, "fsdp", tiny_model_dir, alpaca_gpt4_small, "fsdp", accumulation=1)
    return {"tmp": tmp, "single": train(single, 1), "ddp": train(ddp, 2), "fsdp": train(fsdp, 2)}


@pytest.mark.slow
def test_ddp_and_fsdp_on_two_processes_match_one_process_accumulating_two(runs: dict[str, Any]) -> None:
    single, ddp, fsdp = runs["single"], runs["ddp"], runs["fsdp"]
    assert (ddp["environment"]["processes"], ddp["environment"]["strategy"]) == (2, "ddp")
    assert (fsdp["environment"]["processes"], fsdp["environment"]["strategy"]) == (2, "fsdp")
    assert single["environment"]["strategy"] == "single"
    assert len(losses(single)) == len(losses(ddp)) == len(losses(fsdp)) == STEPS
    assert losses(ddp) == pytest.approx(losses(single), rel=1e-4)
    assert losses(fsdp) == pytest.approx(losses(single), rel=1e-4)
    evals = [[e["evalLoss"] for e in r["training"]["evalHistory"]] for r in (single, ddp, fsdp)]
    assert evals[1] == pytest.approx(evals[0], rel=1e-4) and evals[2] == pytest.approx(evals[0], rel=1e-4)
    print(f"\nfinal loss: 1 process {losses(single)[-1]:.6f}, DDP {losses(ddp)[-1]:.6f}, FSDP {losses(fsdp)[-1]:.6f}")


@pytest.mark.slow
def test_fsdp_checkpoints_and_export_hold_whole_tensors(runs: dict[str, Any], tiny_model_dir: Path) -> None:
    out = runs["tmp"] / "fsdp"
    with safe_open(str(tiny_model_dir / "model.safetensors"), "pt") as base:
        shapes = {name: tuple(base.get_slice(name).get_shape()) for name in base.keys()}  # noqa: SIM118
    checkpoint = out / "checkpoints" / f"step-{STEPS:06d}"
    with safe_open(str(checkpoint / "trainable.safetensors"), "pt") as saved:
        saved_shapes = {name: tuple(saved.get_slice(name).get_shape()) for name in saved.keys()}  # noqa: SIM118
    assert {n: s for n, s in saved_shapes.items() if n in shapes} == shapes  # every weight, unsharded
    assert {p.name for p in checkpoint.glob("rng-*.pt")} == {"rng-0.pt", "rng-1.pt"}
    split = json.loads((out / "data_split.json").read_text())  # written by rank 0 alone
    indices = [i for part in ("train", "eval", "rejected") for i in split[part]]
    assert indices and len(indices) == len(set(indices))
    assert (out / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_fsdp_run_killed_mid_way_resumes_and_ends_like_the_uninterrupted_one(
    runs: dict[str, Any], tiny_model_dir: Path, alpaca_gpt4_small: Path
) -> None:
    tmp = runs["tmp"]
    config = write_config(tmp, "fsdp-killed", tiny_model_dir, alpaca_gpt4_small, "fsdp", accumulation=1)
    out = tmp / "fsdp-killed"
    launcher = subprocess.Popen(command(config, 2), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while newest_step(out) < STEPS // 2 and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert launcher.poll() is None, launcher.stderr.read().decode()[-3000:] if launcher.stderr else ""
    kill_tree(launcher.pid)  # the node dies: torchrun and both workers at once
    launcher.wait()
    interrupted_at = newest_step(out)
    assert 0 < interrupted_at < STEPS

    resumed = train(config, 2)
    assert resumed["training"]["resumedFrom"] == [interrupted_at]
    assert [h["step"] for h in resumed["training"]["history"]] == list(range(1, STEPS + 1))
    assert losses(resumed) == pytest.approx(losses(runs["fsdp"]), rel=1e-4)


@pytest.mark.slow
def test_lora_on_fsdp_matches_one_process_and_exports_the_adapter(
    runs: dict[str, Any], tiny_model_dir: Path, alpaca_gpt4_small: Path
) -> None:
    tmp = runs["tmp"]
    single = train(write_config(tmp, "lora-single", tiny_model_dir, alpaca_gpt4_small, "ddp", 2, "lora"), 1)
    fsdp = train(write_config(tmp, "lora-fsdp", tiny_model_dir, alpaca_gpt4_small, "fsdp", 1, "lora"), 2)
    assert fsdp["environment"]["strategy"] == "fsdp"
    assert losses(fsdp) == pytest.approx(losses(single), rel=1e-4)
    assert (tmp / "lora-fsdp" / "adapter" / "adapter_model.safetensors").is_file()


def test_a_config_error_in_the_workers_exits_with_the_config_error_code(tmp_path: Path, tiny_model_dir: Path) -> None:
    """torchrun alone exits 1 here, and the Job would retry a run that cannot work; the launcher exits 42."""
    from sft_trainer.config import EXIT_CONFIG_ERROR

    unreadable = tmp_path / "data.jsonl"
    unreadable.write_bytes(b"\x00\x01 not JSON Lines at all\n")
    config = write_config(tmp_path, "bad-data", tiny_model_dir, unreadable, "ddp", accumulation=1)
    done = subprocess.run(command(config, 2), env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == EXIT_CONFIG_ERROR, done.stderr[-4000:]
    assert f"dataset: {unreadable}" in done.stderr


@pytest.mark.slow
def test_a_gguf_model_is_converted_once_while_the_other_process_waits(tmp_path: Path, alpaca_gpt4_small: Path) -> None:
    """Two processes given the GGUF: rank 0 converts it into the shared output folder, rank 1 loads that."""
    from sft_trainer.modelprep import MARKER, find_gguf

    config = write_config(tmp_path, "gguf", find_gguf(), alpaca_gpt4_small, "ddp", accumulation=1, method="lora")
    run_config = yaml.safe_load(config.read_text())
    run_config["training"].update(maxSteps=1, maxSeqLength=128, evalFraction=0.0, checkpointEverySteps=1)
    config.write_text(yaml.safe_dump(run_config))
    done = subprocess.run(command(config, 2), env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    conversions = [line for line in done.stderr.splitlines() if "Converted " in line and ".gguf into " in line]
    assert len(conversions) == 1, conversions
    assert (tmp_path / "gguf" / "base_model" / MARKER).is_file()
    report = json.loads((tmp_path / "gguf" / "train_report.json").read_text())
    assert report["environment"]["processes"] == 2
