"""The train loop both recipes run: resume, optimiser steps, evaluation, early stopping, checkpoints.

    resume    from the newest checkpoint in <output>/checkpoints, if any
              (otherwise evaluate the untouched model: the first "best")
    train     micro-batches -> summed token loss / trained tokens of the whole
              step on all processes -> clip -> AdamW -> schedule; every N
              steps evaluate (keeping the best weights, stopping early when
              eval loss stalls) and checkpoint
    finish    the weights to export: the best evaluation's, or the last

A recipe (lora.py, full.py) builds its model, calls `fit` (which wraps it for
the processes and owns the optimizer), then `final_model`, and exports. Every process runs this same code; the parts that
need all of them at once (checkpoints, best weights, FSDP forwards) are
reached by all ranks at the same step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import checkpoints as ckpt
from .guards import flat_metrics
from .loop import (
    RunState,
    Stopwatch,
    Throughput,
    epoch_batches,
    eval_batches,
    evaluate,
    make_optimizer,
    make_scheduler,
    progress_fields,
    rank_share,
    step_groups,
    steps_per_epoch,
    summed_loss,
    total_optimizer_steps,
)
from .parallel import Parallel
from .result import RunResult
from .session import Session

if TYPE_CHECKING:
    import torch

log = logging.getLogger("sft_trainer.training")


@dataclass
class Fitted:
    state: RunState
    model: torch.nn.Module
    """The module that trained (wrapped for DDP/FSDP)."""
    trainable_parameters: int
    total_parameters: int
    """Counted before wrapping: FSDP leaves each process only its shards."""


def fit(session: Session, parallel: Parallel, model: torch.nn.Module) -> Fitted:
    """Train `model` (whole, on this process's device) as configured; the optimizer lives only in here."""
    import torch

    training, device, reporter = session.training, parallel.device, session.reporter
    world, rank = parallel.world, parallel.rank
    if training.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    trainable_count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total_count = sum(p.numel() for p in model.parameters())
    model = parallel.wrap(model)
    trainable = [p for p in model.parameters() if p.requires_grad]  # after wrapping: FSDP replaces them
    optimizer = make_optimizer(trainable, training, device)
    pad_multiple = 8 if device.type == "cuda" else 1
    first_epoch = epoch_batches(session.data.train, training, 0, session.pad_id, pad_multiple)
    per_step = training.gradient_accumulation_steps * world
    total_steps = total_optimizer_steps(len(first_epoch), per_step, training)
    epoch_steps = steps_per_epoch(len(first_epoch), per_step)
    scheduler = make_scheduler(optimizer, total_steps, training)
    evals = eval_batches(session.data.eval, training, session.pad_id)

    # ----------------------------------------------------------------- resume
    state = RunState(total_steps=total_steps)
    newest = ckpt.newest_checkpoint(session.output_dir)
    if newest is not None:
        state = ckpt.load_checkpoint(newest, parallel, model, optimizer, scheduler)
        state.resumed_from.append(state.step)
        log.info("Resumed from %s (step %d of %d)", newest, state.step, total_steps)
    elif evals:
        initial = evaluate(model, evals, device)
        assert initial is not None
        state.record_eval(0, initial.loss, training.early_stopping.min_delta)
        ckpt.save_best(session.output_dir, parallel, model, 0, initial.loss)

    # ------------------------------------------------------------------ train
    reporter.phase("training")
    throughput = Throughput()
    model.train()
    while state.step < total_steps and not state.stopped_early:
        batches = (
            first_epoch
            if state.epoch == 0
            else epoch_batches(session.data.train, training, state.epoch, session.pad_id, pad_multiple)
        )
        for group in step_groups(batches, per_step)[state.group_in_epoch :]:
            if state.step >= total_steps or state.stopped_early:
                break
            share = rank_share(group, rank, world)
            with Stopwatch(device) as watch:
                # Normalise by the trained tokens of the whole step on all processes,
                # so accumulation and data parallelism equal one big batch.
                trained = parallel.accelerator.reduce(
                    torch.tensor(sum(b.num_trained * w for b, w in share), device=device)
                )
                scale = world / max(int(trained), 1)
                step_loss = 0.0
                for i, (batch, weight) in enumerate(share):
                    with parallel.no_sync(model, sync=i == len(share) - 1):
                        with parallel.accelerator.autocast():
                            loss = summed_loss(model, batch.to(device)) * (scale * weight)
                        loss.backward()
                    step_loss += float(loss.detach()) / world
                torch.nn.utils.clip_grad_norm_(trainable, training.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            tokens = sum(b.num_tokens for b in group)
            state.step += 1
            state.group_in_epoch += 1
            state.tokens_seen += tokens
            state.train_seconds += watch.seconds
            state.history.append(
                {
                    "step": state.step,
                    "epoch": round(state.step / epoch_steps, 4),
                    "loss": float(parallel.accelerator.reduce(torch.tensor(step_loss, device=device))),
                    "learningRate": scheduler.get_last_lr()[0],
                    "tokensPerSecond": tokens / watch.seconds if watch.seconds > 0 else 0.0,
                }
            )
            reporter.update(**progress_fields(state, epoch_steps, throughput.add(tokens, watch.seconds)))

            last_step = state.step >= total_steps
            if evals and (state.step % training.eval_every_steps == 0 or last_step):
                _evaluate_and_keep_best(session, parallel, model, evals, state)
                reporter.update(**progress_fields(state, epoch_steps, throughput.add(0, 0.0)))
            if state.step % training.checkpoint_every_steps == 0 or last_step or state.stopped_early:
                ckpt.save_checkpoint(session.output_dir, parallel, model, optimizer, scheduler, state)
                if parallel.is_main:
                    ckpt.prune_checkpoints(session.output_dir, training.checkpoints_to_keep)
        else:
            state.epoch += 1
            state.group_in_epoch = 0
    parallel.barrier()
    return Fitted(state, model, trainable_count, total_count)


def _evaluate_and_keep_best(
    session: Session, parallel: Parallel, model: torch.nn.Module, evals: list[Any], state: RunState
) -> None:
    training = session.training
    result = evaluate(model, evals, parallel.device)
    assert result is not None
    if state.record_eval(state.step, result.loss, training.early_stopping.min_delta):
        ckpt.save_best(session.output_dir, parallel, model, state.step, result.loss)
    elif training.early_stopping.enabled and state.evals_without_improvement >= training.early_stopping.patience:
        state.stopped_early = True
        log.info(
            "Stopped early at step %d: eval loss has not improved for %d evaluations",
            state.step,
            state.evals_without_improvement,
        )


def final_model(
    session: Session, parallel: Parallel, fitted: Fitted, rebuild: Callable[[], torch.nn.Module]
) -> torch.nn.Module | None:
    """The plain model with the weights to export (the best evaluation's, else the last), on rank 0.

    Other ranks get None. DDP and one process keep a whole model in memory;
    FSDP leaves only shards, so rank 0 rebuilds the model with the recipe's
    `rebuild` and loads the gathered weights into it.
    """
    best = ckpt.best_weights(session.output_dir)
    if best is None:
        if parallel.strategy != "fsdp":
            return parallel.unwrap(fitted.model).eval() if parallel.is_main else None  # the last weights, in place
        tensors = parallel.gather_trainable(fitted.model)  # a collective: every rank takes part
    else:
        log.info("Exporting the weights of the best evaluation (step %s)", fitted.state.best_step)
        tensors = ckpt.read_trainable(best) if parallel.is_main else {}
    if not parallel.is_main:
        return None
    model = rebuild() if parallel.strategy == "fsdp" else parallel.unwrap(fitted.model)
    ckpt.copy_trainable(model, tensors, best or session.output_dir)
    return model.eval()


def environment(session: Session, parallel: Parallel, fitted: Fitted) -> dict[str, Any]:
    """Where and how the run trained, for train_report.json."""
    return {
        "device": str(parallel.device),
        "processes": parallel.world,
        "strategy": parallel.strategy,
        "dtype": str(session.dtype).removeprefix("torch."),
        "template": session.template.name,
        "endOfTurn": session.template.end_of_turn,
        "endOfTurnId": session.builder.end_of_turn_id,
        "trainableParameters": fitted.trainable_parameters,
        "totalParameters": fitted.total_parameters,
    }


def run_result(
    method: str, session: Session, parallel: Parallel, fitted: Fitted, probes: dict[str, Any], exports: dict[str, str]
) -> RunResult:
    """What a recipe hands back once it has trained, probed and exported: the same fields for full and LoRA."""
    return RunResult(
        method=method,
        state=fitted.state,
        data=session.data.summary(),
        probes={**probes, "metrics": flat_metrics(probes)},
        exports=exports,
        environment=environment(session, parallel, fitted),
        model_folder=str(session.model_folder),
        held_out=list(session.data.eval_conversations),
    )
