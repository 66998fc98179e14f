"""Recipe: full fine-tuning (every weight trains), from setup to export.

    setup     session (tokenizer, template, verified data), the model in fp32,
    train     fit.py: resume, the train loop, evaluation, checkpoints
    finish    best weights back in, memorisation probe, export the whole model
              (the evaluation of base vs tuned runs on the export: entrypoint.py)

Differences from lora.py: no adapters, the default peak learning rate is
1e-5 (full updates move the model much further per step), weights are kept
in fp32 (master weights) with bf16 autocast on a GPU, and the export is the
whole model (in the compute dtype: bf16 on GPU). Models whose weights,
gradients and optimizer state do not fit one GPU run with
`training.distributed: fsdp` on several processes (torchrun): parameters,
gradients and AdamW state are sharded across them.
"""

from __future__ import annotations

import logging

from ..config import TrainRunConfig
from .export import export_full_model, generation_config
from .fit import final_model, fit, run_result
from .guards import probes_after
from .modeling import load_model
from .result import RunResult
from .session import Reporter, open_session

log = logging.getLogger("sft_trainer.training")


def run(cfg: TrainRunConfig, reporter: Reporter) -> RunResult:
    import torch

    # ------------------------------------------------------------------ setup
    session = open_session(cfg, reporter)
    training = cfg.training
    parallel = session.parallel
    torch.manual_seed(training.seed)

    def build() -> torch.nn.Module:
        # fp32 master weights; bf16 autocast does the matmuls on a GPU.
        return load_model(session.model_folder, torch.float32, training.attention, session.adapters).to(parallel.device)

    model = build()

    # ------------------------------------------------------------------ train
    fitted = fit(session, parallel, model)

    # ----------------------------------------------------------------- finish
    exports: dict[str, str] = {}
    probe_results: dict[str, object] = {}
    export = final_model(session, parallel, fitted, build)
    if export is not None:
        probe_results = probes_after(session, export)
        reporter.phase("exporting")
        generation = generation_config(
            session.model_folder, session.tokenizer, session.builder.end_of_turn_id, session.pad_id
        )
        folder = export_full_model(
            export, session.output_dir / "model", session.tokenizer, session.template, generation, session.dtype
        )
        exports["model"] = str(folder)
    return run_result("full", session, parallel, fitted, probe_results, exports)
