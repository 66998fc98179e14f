"""Checkpoints in `<output>/checkpoints/`: write atomically, find the newest, resume, prune.

A checkpoint is a folder `step-000120/` holding:

* `trainable.safetensors`: the full trainable parameters only (the adapter for
  LoRA, every weight for full fine-tuning), by the model's own names: the
  frozen base is never copied;
* `optimizer.pt` (state keyed by parameter name), `scheduler.pt`, and
  `rng-<rank>.pt` for every process: everything needed to continue exactly
  where the run stopped (dropout masks included);
  Resuming loads these with `weights_only`: tensors and plain data only, so a
  file planted on the shared output volume cannot run code in the trainer;
* `state.json`: the RunState (step, epoch, position in the epoch, history,
  best eval loss), written last, so a folder without it is incomplete.

With several processes the tensors are gathered onto rank 0 (FSDP shards
included; see parallel.py), which writes the folder; so a checkpoint does not
depend on how many processes wrote it. Every save and load is a collective:
all ranks call it at the same step.

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

    from .parallel import Parallel

CHECKPOINTS = "checkpoints"
BEST = "best"
TRAINABLE = "trainable.safetensors"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def check_trainable(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Saved tensors must be exactly the parameters the model trains, by name."""
    params = {name: p for name, p in getattr(model, "module", model).named_parameters()}
    unknown = [name for name in tensors if name not in params]
    if unknown:
        raise ValueError(f"{source}: parameters not in the model: {unknown[:5]}")
    expected = {name for name, p in params.items() if p.requires_grad}
    if set(tensors) != expected:
        raise ValueError(f"{source}: holds {len(tensors)} tensors, the model trains {len(expected)}")


def copy_trainable(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Full trainable tensors into a plain (unsharded) model, after checking the names."""
    import torch

    check_trainable(model, tensors, source)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))


def read_trainable(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def load_trainable_file(parallel: Parallel, model: torch.nn.Module, path: Path) -> None:
    """Saved trainable weights into the model (rank 0 reads, every rank receives its part). A collective."""
    tensors: dict[str, torch.Tensor] = {}
    if parallel.is_main:
        tensors = read_trainable(path)
        check_trainable(model, tensors, path)
    parallel.load_trainable(model, tensors)


def _write_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path))


def save_checkpoint(
    output_dir: Path, parallel: Parallel, model: torch.nn.Module, optimizer: Any, scheduler: Any, state: RunState
) -> Path:
    """Write `step-NNNNNN/` (every rank calls this; rank 0 writes all but its own RNG file)."""
    import torch

    tensors = parallel.gather_trainable(model)
    optimizer_state = parallel.gather_optimizer(model, optimizer)
    root = output_dir / CHECKPOINTS
    final = root / f"step-{state.step:06d}"
    staging = root / f".tmp-step-{state.step:06d}"
    if parallel.is_main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        _write_tensors(tensors, staging / TRAINABLE)
        torch.save(optimizer_state, staging / "optimizer.pt")
        torch.save(scheduler.state_dict(), staging / "scheduler.pt")
    parallel.barrier()  # staging exists for everyone
    torch.save(_rng_state(), staging / f"rng-{parallel.rank}.pt")
    parallel.barrier()  # every RNG file is in
    if parallel.is_main:
        (staging / "state.json").write_text(json.dumps(state.to_json()), encoding="utf-8")
        _fsync_dir(staging)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        _fsync_dir(root)
    parallel.barrier()  # nobody goes on (or prunes) before the checkpoint is complete
    return final


def save_best(output_dir: Path, parallel: Parallel, model: torch.nn.Module, step: int, eval_loss: float) -> None:
    """Keep the trainable weights of the best evaluation in `best/`. A collective."""
    tensors = parallel.gather_trainable(model)
    if not parallel.is_main:
        return
    root = output_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    staging = root / ".tmp-best"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    _write_tensors(tensors, staging / TRAINABLE)
    (staging / "best.json").write_text(json.dumps({"step": step, "evalLoss": eval_loss}), encoding="utf-8")
    shutil.rmtree(root / BEST, ignore_errors=True)
    os.replace(staging, root / BEST)


def best_weights(output_dir: Path) -> Path | None:
    path = output_dir / CHECKPOINTS / BEST / TRAINABLE
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


def load_checkpoint(path: Path, parallel: Parallel, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> RunState:
    """Restore model, optimiser, scheduler and this rank's RNG from `path`. A collective."""
    load_trainable_file(parallel, model, path / TRAINABLE)
    legacy = _LEGACY_RNG in {p.name for p in path.iterdir()}  # every rank sees the same folder: all decide alike
    if legacy:
        _load_legacy_optimizer(path, parallel, optimizer)
    else:
        optimizer_state = _load_plain(path / "optimizer.pt") if parallel.is_main else {}
        parallel.load_optimizer(model, optimizer, optimizer_state)
    scheduler.load_state_dict(_load_plain(path / "scheduler.pt"))
    # A run resumed on more processes than wrote the checkpoint seeds the new ranks from rank 0's state.
    own = path / f"rng-{parallel.rank}.pt"
    rng = own if own.is_file() else path / (_LEGACY_RNG if legacy else "rng-0.pt")
    _set_rng_state(_load_plain(rng))
    return RunState.from_json(json.loads((path / "state.json").read_text(encoding="utf-8")))


# Checkpoints written before several processes were supported hold `rng.pt` and the
# optimizer's own state_dict (keyed by parameter position); one process can resume them.
_LEGACY_RNG = "rng.pt"


def _load_legacy_optimizer(path: Path, parallel: Parallel, optimizer: Any) -> None:
    if parallel.world > 1:
        raise ValueError(
            f"{path} was written by an earlier version for one process: resume it with one process, "
            "or delete the checkpoints folder to start over"
        )
    optimizer.load_state_dict(_load_plain(path / "optimizer.pt"))


def _load_plain(path: Path) -> Any:
    """A `.pt` file of tensors and plain data (dicts, lists, numbers), never arbitrary pickled objects.

    The output volume is shared: whoever can write it must not be able to run
    code in the trainer through a crafted checkpoint, which a full unpickle
    allows. Everything a checkpoint holds (optimizer and scheduler state, RNG
    states) is tensors and plain data, so `weights_only` loses nothing.
    """
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} holds more than tensors and plain data, which no checkpoint of this trainer does; "
            f"refusing to unpickle it ({str(err).splitlines()[0]})"
        ) from None


def _rng_state() -> dict[str, Any]:
    import torch

    rng: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def _set_rng_state(rng: dict[str, Any]) -> None:
    import torch

    random.setstate(rng["python"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


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
