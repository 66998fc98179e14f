"""Pieces both recipes share: the data order, the loss, evaluation, the schedule, and the run state.

The recipes (lora.py, full.py) write their train loop out in full and call
these. Nothing here hides control flow: each function does one thing.
"""

from __future__ import annotations

import functools
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..config import TrainingConfig
from ..progress import utc_now
from .collate import Batch, pack_samples, packed_batch, pad_batch
from .masking import IGNORE_INDEX, Sample

if TYPE_CHECKING:
    import torch


# ---------------------------------------------------------------------------
# Data order
# ---------------------------------------------------------------------------


def epoch_batches(
    samples: list[Sample], training: TrainingConfig, epoch: int, pad_id: int, pad_to_multiple_of: int = 1
) -> list[Batch]:
    """The micro-batches of one epoch, in a seeded order that depends only on (seed, epoch).

    A restarted run rebuilds exactly the same list and skips what it already did.
    """
    order = list(samples)
    random.Random(training.seed * 1_000_003 + epoch).shuffle(order)
    if training.packing:
        rows = pack_samples(order, training.max_seq_length)
        random.Random(training.seed * 1_000_003 + epoch + 1).shuffle(rows)
        return [
            packed_batch(rows[i : i + training.batch_size], pad_id, pad_to_multiple_of)
            for i in range(0, len(rows), training.batch_size)
        ]
    return [
        pad_batch(order[i : i + training.batch_size], pad_id, pad_to_multiple_of)
        for i in range(0, len(order), training.batch_size)
    ]


def eval_batches(samples: list[Sample], training: TrainingConfig, pad_id: int) -> list[Batch]:
    """Eval micro-batches, sorted by length (less padding; the order does not matter for a mean)."""
    ordered = sorted(samples, key=lambda s: len(s.input_ids))
    return [
        pad_batch(ordered[i : i + training.batch_size], pad_id) for i in range(0, len(ordered), training.batch_size)
    ]


def steps_per_epoch(num_micro_batches: int, accumulation: int) -> int:
    return math.ceil(num_micro_batches / accumulation)


def total_optimizer_steps(num_micro_batches: int, micro_batches_per_step: int, training: TrainingConfig) -> int:
    """Optimiser steps for the whole run: epochs (possibly fractional) or max_steps, whichever is less."""
    per_epoch = steps_per_epoch(num_micro_batches, micro_batches_per_step)
    total = math.ceil(training.epochs * per_epoch)
    if training.max_steps is not None:
        total = min(total, training.max_steps)
    return max(total, 1)


def rank_share(group: list[Batch], rank: int, world: int) -> list[tuple[Batch, float]]:
    """This process's micro-batches of one optimiser step, each with its loss weight.

    Every process must run as many forward/backward passes as the others
    (DDP's all-reduce and FSDP's gathers are collectives), so a process short
    of a batch at the end of an epoch repeats one with weight 0.
    """
    mine = [(batch, 1.0) for batch in group[rank::world]]
    per_process = -(-len(group) // world)
    return mine + [(group[0], 0.0)] * (per_process - len(mine))


def step_groups(batches: list[Batch], accumulation: int) -> list[list[Batch]]:
    """Micro-batches grouped into optimiser steps (the last group of an epoch may be shorter)."""
    return [batches[i : i + accumulation] for i in range(0, len(batches), accumulation)]


# ---------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------


def token_losses(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position cross-entropy (0 where masked) and the mask, for predicting token t+1 from t.

    The output head runs only at positions that predict a trained token
    (`logits_to_keep` with a boolean mask): in SFT many positions are prompt,
    and the vocabulary-sized logits are the largest tensors of a step. A
    transformers that cannot slice by a mask (before `slice_logits_to_keep`;
    5.17 indexes only the sequence dimension) computes all logits instead,
    and the trained positions are selected from them: same losses, more memory.
    """
    import torch
    import torch.nn.functional as F

    targets = batch.labels[:, 1:]
    mask = targets != IGNORE_INDEX
    losses = torch.zeros(targets.shape, dtype=torch.float32, device=targets.device)
    if not mask.any():
        return losses, mask
    # Position t predicts token t+1: keep the hidden states of positions whose next token is trained.
    keep = F.pad(mask, (0, 1), value=False)
    if _head_takes_a_mask():
        logits = model(**batch.model_inputs(), use_cache=False, logits_to_keep=keep).logits  # (trained, vocab)
    else:
        logits = model(**batch.model_inputs(), use_cache=False).logits[keep]
    losses[mask] = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets[mask], reduction="none")
    return losses, mask


@functools.cache
def _head_takes_a_mask() -> bool:
    """Whether this transformers slices the output head's input by a boolean (batch, sequence) `logits_to_keep`."""
    from transformers import modeling_utils

    return hasattr(modeling_utils, "slice_logits_to_keep")


def summed_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Sum of the token losses of a micro-batch.

    Summing here and dividing by the trained-token count of the *whole*
    optimiser step (not each micro-batch's mean) is what makes gradient
    accumulation equal to one big batch: every trained token weighs the same.
    """
    losses, mask = token_losses(model, batch)
    return (losses * mask).sum()


@dataclass
class EvalResult:
    loss: float
    tokens: int


def evaluate(model: torch.nn.Module, batches: list[Batch], device: torch.device) -> EvalResult | None:
    """Token-weighted mean loss over the eval batches (None without an eval split)."""
    import torch

    if not batches:
        return None
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            batch = batch.to(device)
            losses, mask = token_losses(model, batch)
            total += float((losses * mask).sum())
            tokens += int(mask.sum())
    model.train(was_training)
    return EvalResult(total / max(tokens, 1), tokens)


# ---------------------------------------------------------------------------
# Optimiser and learning-rate schedule
# ---------------------------------------------------------------------------


def make_optimizer(parameters: list[torch.nn.Parameter], training: TrainingConfig, device: torch.device) -> Any:
    """AdamW over the trainable parameters; on a GPU the fused kernel (one launch for all tensors, FSDP2 shards too)."""
    import torch

    return torch.optim.AdamW(
        parameters,
        lr=training.resolved_learning_rate(),
        weight_decay=training.weight_decay,
        fused=device.type == "cuda",
    )


def lr_factor(step: int, total_steps: int, training: TrainingConfig) -> float:
    """Multiplier of the peak learning rate at optimiser step `step` (0-based): warmup, then decay."""
    warmup = math.ceil(training.warmup_ratio * total_steps)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if training.lr_scheduler == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total_steps - warmup)
    if training.lr_scheduler == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, training: TrainingConfig) -> Any:
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, training))


# ---------------------------------------------------------------------------
# Run state (what a checkpoint saves besides tensors)
# ---------------------------------------------------------------------------


@dataclass
class RunState:
    """Where the run is and what it has seen: saved in every checkpoint, reported at the end."""

    total_steps: int
    step: int = 0
    """Optimiser steps done."""
    epoch: int = 0
    """Current epoch (0-based)."""
    group_in_epoch: int = 0
    """Optimiser steps done inside the current epoch (their micro-batches are skipped on resume)."""
    tokens_seen: int = 0
    """Non-pad tokens processed."""
    train_seconds: float = 0.0
    """Time spent in training steps (excludes evaluation, checkpoints, probes)."""
    best_eval_loss: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    """One entry per optimiser step: step, epoch, loss, learningRate, tokensPerSecond."""
    eval_history: list[dict[str, Any]] = field(default_factory=list)
    """One entry per evaluation: step, evalLoss."""
    resumed_from: list[int] = field(default_factory=list)
    """Steps of the checkpoints this run resumed from (one per restart)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunState:
        return cls(**data)

    def record_eval(self, step: int, loss: float, min_delta: float) -> bool:
        """Store an evaluation; True when it is the best so far."""
        self.eval_history.append({"step": step, "evalLoss": loss})
        if self.best_eval_loss is None or loss < self.best_eval_loss - min_delta:
            self.best_eval_loss, self.best_step = loss, step
            self.evals_without_improvement = 0
            return True
        self.evals_without_improvement += 1
        return False


@dataclass
class Throughput:
    """Tokens/s over a sliding window of recent steps (the whole-run figure is in RunState)."""

    window: int = 20
    _samples: list[tuple[int, float]] = field(default_factory=list)

    def add(self, tokens: int, seconds: float) -> float:
        self._samples.append((tokens, seconds))
        del self._samples[: -self.window]
        spent = sum(s for _, s in self._samples)
        return sum(t for t, _ in self._samples) / spent if spent > 0 else 0.0


def progress_fields(state: RunState, steps_per_epoch_: int, tokens_per_second: float) -> dict[str, Any]:
    """The /progress figures (camelCase, as TrainingProgress in the API) for the current state."""
    last = state.history[-1] if state.history else {}
    done = state.step / state.total_steps if state.total_steps else 0.0
    seconds_per_step = state.train_seconds / state.step if state.step else None
    return {
        "step": state.step,
        "totalSteps": state.total_steps,
        "epoch": round(state.step / steps_per_epoch_, 4) if steps_per_epoch_ else 0.0,
        "percent": round(100.0 * done, 2),
        "loss": last.get("loss"),
        "evalLoss": state.eval_history[-1]["evalLoss"] if state.eval_history else None,
        "learningRate": last.get("learningRate"),
        "tokensPerSecond": round(tokens_per_second, 2),
        "etaSeconds": round(seconds_per_step * (state.total_steps - state.step), 1) if seconds_per_step else None,
        "updatedAt": utc_now(),
    }


class Stopwatch:
    """Wall time of a block, synchronising CUDA so GPU work is counted where it happens."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start = 0.0

    def __enter__(self) -> Stopwatch:
        self._sync()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sync()
        self.seconds = time.perf_counter() - self.start

    def _sync(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)


ProgressCallback = Callable[[dict[str, Any]], None]
