"""Checkpoints in `<output>/checkpoints/`: write atomically, find the newest, resume, prune.

A checkpoint is a folder `step-000120/` holding:

* `trainable.safetensors`: the trainable parameters only (the adapter for
  LoRA, every weight for full fine-tuning): the frozen base is never copied;
* `optimizer.pt`, `scheduler.pt`, `rng.pt`: everything needed to continue
  exactly where the run stopped (dropout masks included);
* `state.json`: the RunState (step, epoch, position in the epoch, history,
  best eval loss), written last, so a folder without it is incomplete.

It is written under a temporary name and renamed, so a kill -9 at any moment
leaves either the previous checkpoints or a complete new one. `best/` holds
the trainable weights of the best evaluation (it survives pruning).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .loop import RunState

if TYPE_CHECKING:
    import torch

CHECKPOINTS = "checkpoints"
BEST = "best"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train, detached and on CPU, by name."""
    return {name: p.detach().to("cpu").contiguous() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: torch.nn.Module, path: Path) -> None:
    """Copy saved trainable parameters back into the model; every saved name must exist and match."""
    import torch
    from safetensors.torch import load_file

    saved = load_file(str(path))
    params = dict(model.named_parameters())
    missing = [name for name in saved if name not in params]
    if missing:
        raise ValueError(f"{path}: parameters not in the model: {missing[:5]}")
    expected = {name for name, p in params.items() if p.requires_grad}
    if set(saved) != expected:
        raise ValueError(f"{path}: holds {len(saved)} tensors, the model trains {len(expected)}")
    with torch.no_grad():
        for name, tensor in saved.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))


def _write_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path))


def save_checkpoint(output_dir: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any, state: RunState) -> Path:
    import torch

    root = output_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state.step:06d}"
    staging = root / f".tmp-step-{state.step:06d}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    _write_tensors(trainable_state(model), staging / "trainable.safetensors")
    torch.save(optimizer.state_dict(), staging / "optimizer.pt")
    torch.save(scheduler.state_dict(), staging / "scheduler.pt")
    rng = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, staging / "rng.pt")
    (staging / "state.json").write_text(json.dumps(state.to_json()), encoding="utf-8")
    _fsync_dir(staging)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    _fsync_dir(root)
    return final


def save_best(output_dir: Path, model: torch.nn.Module, step: int, eval_loss: float) -> None:
    root = output_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    staging = root / ".tmp-best"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    _write_tensors(trainable_state(model), staging / "trainable.safetensors")
    (staging / "best.json").write_text(json.dumps({"step": step, "evalLoss": eval_loss}), encoding="utf-8")
    shutil.rmtree(root / BEST, ignore_errors=True)
    os.replace(staging, root / BEST)


def best_weights(output_dir: Path) -> Path | None:
    path = output_dir / CHECKPOINTS / BEST / "trainable.safetensors"
    return path if path.is_file() and (path.parent / "best.json").is_file() else None


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    root = output_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / "state.json").is_file():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def newest_checkpoint(output_dir: Path) -> Path | None:
    checkpoints = complete_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> RunState:
    """Restore model, optimiser, scheduler and RNG from `path`; returns the saved RunState."""
    import torch

    load_trainable(model, path / "trainable.safetensors")
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    rng = torch.load(path / "rng.pt", weights_only=False)
    random.setstate(rng["python"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return RunState.from_json(json.loads((path / "state.json").read_text(encoding="utf-8")))


def prune_checkpoints(output_dir: Path, keep: int) -> None:
    """Delete all but the `keep` newest complete checkpoints, and leftovers of interrupted writes."""
    for old in complete_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    root = output_dir / CHECKPOINTS
    for leftover in root.glob(".tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
