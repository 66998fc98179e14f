"""Recipe: LoRA fine-tuning (peft), from setup to export.

    setup     session (tokenizer, template, verified data), frozen base model,
              adapters on every linear layer
    train     fit.py: resume, the train loop, evaluation, checkpoints
    finish    best adapter weights back in, memorisation probe, export adapter (+ merged)
              (the evaluation of base vs tuned runs on the export: entrypoint.py)

Precision: on a GPU the frozen base is held in bf16 and the adapters in fp32
under bf16 autocast; on CPU everything is fp32. Several processes (torchrun)
each take their share of every optimiser step's micro-batches, with the base
replicated (`training.distributed: ddp`, the default) or sharded (`fsdp`, for
a base that does not fit one GPU).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..config import TrainRunConfig
from .export import export_adapter, export_merged, generation_config
from .fit import final_model, fit, run_result
from .guards import probes_after
from .modeling import load_model
from .result import RunResult
from .session import Reporter, open_session

if TYPE_CHECKING:
    import torch

log = logging.getLogger("sft_trainer.training")


def run(cfg: TrainRunConfig, reporter: Reporter) -> RunResult:
    import torch
    from peft import LoraConfig, get_peft_model

    # ------------------------------------------------------------------ setup
    session = open_session(cfg, reporter)
    training, lora = cfg.training, cfg.training.resolved_lora()
    assert lora is not None
    parallel = session.parallel
    torch.manual_seed(training.seed)
    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules="all-linear" if lora.target_modules == ["all-linear"] else lora.target_modules,
        use_rslora=lora.rslora,
        use_dora=lora.dora,
        task_type="CAUSAL_LM",
    )

    def load_base() -> torch.nn.Module:
        return load_model(session.model_folder, session.dtype, training.attention, session.adapters).to(parallel.device)

    def with_adapters(base: torch.nn.Module) -> torch.nn.Module:
        return get_peft_model(base, peft_config)  # adapters are created in fp32 (autocast_adapter_dtype)

    base = load_base()
    model = with_adapters(base)

    # ------------------------------------------------------------------ train
    fitted = fit(session, parallel, model)

    # ----------------------------------------------------------------- finish
    exports: dict[str, str] = {}
    probe_results: dict[str, object] = {}
    export = final_model(session, parallel, fitted, lambda: with_adapters(load_base()))
    if export is not None:
        probe_results = probes_after(session, export)
        reporter.phase("exporting")
        generation = generation_config(
            session.model_folder, session.tokenizer, session.builder.end_of_turn_id, session.pad_id
        )
        adapter = export_adapter(
            export, session.output_dir / "adapter", session.tokenizer, session.template, generation
        )
        exports["adapter"] = str(adapter)
        if training.export_merged:
            merged = export_merged(
                session.model_folder,
                [*session.adapters, adapter],
                session.output_dir / "merged",
                session.tokenizer,
                session.template,
                generation,
            )
            exports["merged"] = str(merged)
    return run_result("lora", session, parallel, fitted, probe_results, exports)
