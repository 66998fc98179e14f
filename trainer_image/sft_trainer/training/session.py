"""Setup both recipes share: device, tokenizer, template, verified data; and the reporter.

A recipe calls `open_session(cfg, reporter)` first, and gets everything it
needs to build its model and run its loop. Anything wrong with the
configuration (missing model, no chat template, an unusable dataset) raises
ConfigError here, before a single weight is loaded onto a GPU.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import TrainRunConfig
from ..runconfig import ConfigError
from .data import PreparedData, prepare_data
from .lineage import check_end_of_turn, read_parent, tokenizer_folder
from .masking import SampleBuilder
from .modeling import compute_dtype, load_tokenizer, pad_token_id, pick_device, resolve_model_folder
from .parallel import Parallel, launched_as_rank_zero
from .templates import ChatTemplate, TemplateError, resolve_template

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

    from ..progress import ProgressServer

log = logging.getLogger("sft_trainer.training")

RESOLVED_CONFIG = "resolved_config.json"


@dataclass
class Reporter:
    """Sends progress to the /progress server and to the caller's callback (sftctl's live view)."""

    server: ProgressServer | None = None
    callback: Callable[[dict[str, Any]], None] | None = None
    latest: dict[str, Any] = field(default_factory=dict)

    def update(self, **fields: Any) -> None:
        self.latest.update({k: v for k, v in fields.items() if v is not None})
        if self.server is not None:
            self.server.update(**fields)
        if self.callback is not None:
            self.callback(dict(self.latest))

    def phase(self, name: str) -> None:
        log.info("Phase %s", name)
        self.update(phase=name)


@dataclass
class Session:
    cfg: TrainRunConfig
    output_dir: Path
    model_folder: Path
    device: torch.device
    dtype: torch.dtype
    tokenizer: PreTrainedTokenizerBase
    template: ChatTemplate
    builder: SampleBuilder
    data: PreparedData
    pad_id: int
    reporter: Reporter
    parallel: Parallel
    adapters: list[Path] = field(default_factory=list)
    """Adapters merged into the model, in order, before training (a stage chained with use: adapter)."""

    @property
    def training(self):  # type: ignore[no-untyped-def]
        return self.cfg.training


def save_resolved_config(cfg: TrainRunConfig, output_dir: Path, extra: dict[str, Any]) -> None:
    """The config as run (defaults filled in, per-method defaults applied), next to the checkpoints."""
    wire = cfg.to_wire()
    wire["training"]["learningRate"] = cfg.training.resolved_learning_rate()
    lora = cfg.training.resolved_lora()
    if lora is not None:
        wire["training"]["lora"] = lora.to_wire()
    wire["resolved"] = extra
    (output_dir / RESOLVED_CONFIG).write_text(json.dumps(wire, indent=2) + "\n", encoding="utf-8")


def open_session(cfg: TrainRunConfig, reporter: Reporter) -> Session:
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    training = cfg.training
    reporter.phase("preparing")
    device = pick_device()
    dtype = compute_dtype(training.precision, device)
    # The process group comes first: a GGUF model is converted by rank 0 while the others wait for it.
    parallel = Parallel.start(training.distributed, device, dtype)
    model_folder = resolve_model_folder(cfg.model, output_dir, parallel)
    # A chained run checks its parent stage before loading a weight, and takes its tokenizer and template.
    parent = read_parent(cfg.parent) if cfg.parent else None
    tokenizer = load_tokenizer(tokenizer_folder(cfg.parent, parent) if cfg.parent and parent else model_folder)
    try:
        template = resolve_template(tokenizer, training.template.name)
        builder = SampleBuilder(
            tokenizer,
            template,
            loss_on=training.template.loss_on,
            max_seq_length=training.max_seq_length,
            overlong=training.template.overlong,
        )
    except (TemplateError, ValueError) as err:
        raise ConfigError(f"training.template: {err}") from err
    if cfg.parent and parent:
        check_end_of_turn(cfg.parent, parent, template.end_of_turn, builder.end_of_turn_id)
    # Every process builds the same samples; one writes the record accounting.
    data = prepare_data(cfg.dataset, cfg.format, training, builder, output_dir if launched_as_rank_zero() else None)
    if device.type == "cpu" and training.precision == "bf16":
        log.warning("bf16 requested on CPU: it runs, but far slower than fp32")
    if launched_as_rank_zero():
        resolved = {
            "template": template.name,
            "endOfTurn": template.end_of_turn,
            "device": str(device),
            "dtype": str(dtype).removeprefix("torch."),
            "modelFolder": str(model_folder),
            "adaptersMergedBeforeTraining": list(cfg.parent.adapters) if cfg.parent else [],
        }
        save_resolved_config(cfg, output_dir, resolved)
    log.info(
        "Prepared %d train and %d eval samples (%d refusals mixed in, %d records rejected)",
        len(data.train),
        len(data.eval),
        data.refusals_mixed,
        sum(data.rejected_by_reason.values()),
    )
    return Session(
        cfg,
        output_dir,
        model_folder,
        device,
        dtype,
        tokenizer,
        template,
        builder,
        data,
        pad_token_id(tokenizer),
        reporter,
        parallel,
        adapters=[Path(adapter) for adapter in cfg.parent.adapters] if cfg.parent else [],
    )
