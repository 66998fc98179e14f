"""Recipe: full fine-tuning (every weight trains), written out from setup to export.

    setup     session (tokenizer, template, verified data), the model,
              probes on the untouched model
    resume    from the newest checkpoint in <output>/checkpoints, if any
    train     the loop below: micro-batches -> summed token loss / trained
              tokens of the whole step -> clip -> AdamW -> schedule; eval,
              early stopping, best weights and checkpoints every N steps
    finish    best weights back in, probes after, export the model

Differences from lora.py: no adapters, the default peak learning rate is
1e-5 (full updates move the model much further per step), weights are kept
in fp32 (master weights) with bf16 autocast on a GPU, and the export is the
whole model (in the compute dtype: bf16 on GPU). Models that do not fit one
GPU run under FSDP: `accelerate launch --config_file fsdp.yaml -m
sft_trainer train CONFIG`; accelerate.prepare shards the model.
"""

from __future__ import annotations

import contextlib
import logging

from ..config import TrainRunConfig
from . import checkpoints as ckpt
from .export import export_full_model, generation_config
from .guards import flat_metrics, probes_after, probes_before
from .loop import (
    RunState,
    Stopwatch,
    Throughput,
    epoch_batches,
    eval_batches,
    evaluate,
    make_scheduler,
    progress_fields,
    step_groups,
    steps_per_epoch,
    summed_loss,
    total_optimizer_steps,
)
from .modeling import load_model
from .result import RunResult
from .session import Reporter, open_session

log = logging.getLogger("sft_trainer.training")


def run(cfg: TrainRunConfig, reporter: Reporter) -> RunResult:
    import torch
    from accelerate import Accelerator

    # ------------------------------------------------------------------ setup
    session = open_session(cfg, reporter)
    training = cfg.training
    on_gpu = session.device.type == "cuda"
    accelerator = Accelerator(
        mixed_precision="bf16" if on_gpu and session.dtype == torch.bfloat16 else "no", cpu=not on_gpu
    )
    device, world, rank = accelerator.device, accelerator.num_processes, accelerator.process_index
    torch.manual_seed(training.seed)

    # fp32 master weights; bf16 autocast does the matmuls on a GPU.
    model = load_model(session.model_folder, torch.float32, training.attention).to(device)
    before = probes_before(session, model) if accelerator.is_main_process else {}
    if training.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    trainable = [p for p in model.parameters() if p.requires_grad]
    trainable_count = sum(p.numel() for p in trainable)
    total_count = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(trainable, lr=training.resolved_learning_rate(), weight_decay=training.weight_decay)

    pad_multiple = 8 if on_gpu else 1
    first_epoch = epoch_batches(session.data.train, training, 0, session.pad_id, pad_multiple)
    per_step = training.gradient_accumulation_steps * world
    total_steps = total_optimizer_steps(len(first_epoch), per_step, training)
    epoch_steps = steps_per_epoch(len(first_epoch), per_step)
    scheduler = make_scheduler(optimizer, total_steps, training)
    model, optimizer = accelerator.prepare(model, optimizer)
    evals = eval_batches(session.data.eval, training, session.pad_id)

    # ----------------------------------------------------------------- resume
    state = RunState(total_steps=total_steps)
    newest = ckpt.newest_checkpoint(session.output_dir)
    if newest is not None:
        state = ckpt.load_checkpoint(newest, accelerator.unwrap_model(model), optimizer, scheduler)
        state.resumed_from.append(state.step)
        log.info("Resumed from %s (step %d of %d)", newest, state.step, total_steps)
    elif evals:
        initial = evaluate(model, evals, device)
        assert initial is not None
        state.record_eval(0, initial.loss, training.early_stopping.min_delta)
        ckpt.save_best(session.output_dir, accelerator.unwrap_model(model), 0, initial.loss)

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
        groups = step_groups(batches, per_step)
        for group in groups[state.group_in_epoch :]:
            if state.step >= total_steps or state.stopped_early:
                break
            mine = group[rank::world]  # this process's micro-batches of the step
            with Stopwatch(device) as watch:
                # Normalise by the trained tokens of the whole step on all processes,
                # so accumulation and data parallelism equal one big batch.
                trained = accelerator.reduce(
                    torch.tensor(sum(b.num_trained for b in group[rank::world]), device=device)
                )
                step_trained = max(int(trained), 1)
                step_loss = 0.0
                for i, batch in enumerate(mine):
                    batch = batch.to(device)
                    last = i == len(mine) - 1
                    with accelerator.no_sync(model) if not last else contextlib.nullcontext():
                        with accelerator.autocast():
                            loss = summed_loss(model, batch) * (world / step_trained)
                        accelerator.backward(loss)
                    step_loss += float(loss.detach()) / world
                accelerator.clip_grad_norm_(trainable, training.max_grad_norm)
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
                    "loss": float(accelerator.reduce(torch.tensor(step_loss, device=device))),
                    "learningRate": scheduler.get_last_lr()[0],
                    "tokensPerSecond": tokens / watch.seconds if watch.seconds > 0 else 0.0,
                }
            )
            reporter.update(**progress_fields(state, epoch_steps, throughput.add(tokens, watch.seconds)))

            last_step = state.step >= total_steps
            if evals and (state.step % training.eval_every_steps == 0 or last_step):
                result = evaluate(model, evals, device)
                assert result is not None
                if state.record_eval(state.step, result.loss, training.early_stopping.min_delta):
                    if accelerator.is_main_process:
                        ckpt.save_best(session.output_dir, accelerator.unwrap_model(model), state.step, result.loss)
                elif (
                    training.early_stopping.enabled
                    and state.evals_without_improvement >= training.early_stopping.patience
                ):
                    state.stopped_early = True
                    log.info(
                        "Stopped early at step %d: eval loss has not improved for %d evaluations",
                        state.step,
                        state.evals_without_improvement,
                    )
                reporter.update(**progress_fields(state, epoch_steps, throughput.add(0, 0.0)))
            if accelerator.is_main_process and (
                state.step % training.checkpoint_every_steps == 0 or last_step or state.stopped_early
            ):
                ckpt.save_checkpoint(session.output_dir, accelerator.unwrap_model(model), optimizer, scheduler, state)
                ckpt.prune_checkpoints(session.output_dir, training.checkpoints_to_keep)
        else:
            state.epoch += 1
            state.group_in_epoch = 0
    accelerator.wait_for_everyone()

    # ----------------------------------------------------------------- finish
    model = accelerator.unwrap_model(model)
    best = ckpt.best_weights(session.output_dir)
    if best is not None:
        ckpt.load_trainable(model, best)
        log.info("Loaded the weights of the best evaluation (step %s)", state.best_step)
    exports: dict[str, str] = {}
    probe_results: dict[str, object] = {}
    if accelerator.is_main_process:
        model.eval()
        probe_results = probes_after(session, model, before)
        reporter.phase("exporting")
        generation = generation_config(
            session.model_folder, session.tokenizer, session.builder.end_of_turn_id, session.pad_id
        )
        folder = export_full_model(
            model, session.output_dir / "model", session.tokenizer, session.template, generation, session.dtype
        )
        exports["model"] = str(folder)
    return RunResult(
        method="full",
        state=state,
        data=session.data.summary(),
        probes={**probe_results, "metrics": flat_metrics(probe_results)},
        exports=exports,
        environment={
            "device": str(device),
            "processes": world,
            "dtype": str(session.dtype).removeprefix("torch."),
            "template": session.template.name,
            "endOfTurn": session.template.end_of_turn,
            "trainableParameters": trainable_count,
            "totalParameters": total_count,
        },
    )
