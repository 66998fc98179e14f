"""Settings of a fine-tuning run.

These models are both `spec.training` of an `SFTJob` and the training section
of the run config the trainer pod reads. Defaults protect the base model:
LoRA at 2e-4 (full fine-tuning at 1e-5), warmup 3%, cosine decay, at most three
epochs, early stopping on eval loss.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .base import Rule, TemplateName, WireModel, immutable, model_rules
from .evaluation import EvaluationConfig

Method = Literal["lora", "full"]

DEFAULT_LEARNING_RATE: dict[str, float] = {"lora": 2e-4, "full": 1e-5}


class LoraSettings(WireModel):
    r: int = Field(default=16, ge=1, le=1024)
    """Rank of the adapter matrices."""
    alpha: int = Field(default=32, ge=1)
    """Scaling numerator; the update is scaled by alpha/r (alpha/sqrt(r) with rsLoRA)."""
    dropout: float = Field(default=0.05, ge=0, lt=1)
    """Dropout on the adapter input."""
    target_modules: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=lambda: ["all-linear"], min_length=1
    )
    """Modules that get adapters (at least one); `all-linear` means every linear layer but the output head."""
    rslora: bool = False
    """Use rank-stabilised scaling (alpha/sqrt(r))."""
    dora: bool = False
    """Use weight-decomposed LoRA (DoRA)."""


class TemplateSettings(WireModel):
    name: TemplateName = "auto"
    """Chat template: `auto` uses the model tokenizer's own, else a named built-in."""
    loss_on: Literal["assistant", "all", "last"] = "assistant"
    """Which turns are trained: every assistant turn, all turns, or only the last assistant turn."""
    overlong: Literal["reject", "truncate_prompt"] = "reject"
    """What happens to a record longer than maxSeqLength: rejected, or truncated from the prompt side."""


class EarlyStopping(WireModel):
    enabled: bool = True
    """Stop when eval loss has not improved for `patience` evaluations; the best checkpoint is kept."""
    patience: int = Field(default=3, ge=1)
    """Evaluations without improvement before stopping."""
    min_delta: float = Field(default=0.0, ge=0)
    """Smallest decrease of eval loss that counts as an improvement."""


class RefusalConditioning(WireModel):
    enabled: bool = True
    """Mix refusals of harmful requests into training for a safety baseline."""
    ratio: float = Field(default=0.03, ge=0, le=0.5)
    """Fraction of training examples that are refusals."""
    dataset: str | None = None
    """Refusal examples to mix in; unset: the built-in set."""


class Probes(WireModel):
    memorisation_prompts: int = Field(default=16, ge=0)
    """K training and K held-out prompts generated from to measure verbatim recall (0: off)."""
    max_new_tokens: int = Field(default=64, ge=1, le=1024)
    """Longest greedy generation in the memorisation probe."""


class TrainingConfig(WireModel):
    """How the model is fine-tuned."""

    model_config = model_rules(
        Rule(
            "!has(self.lora) || self.method == 'lora'",
            "lora settings are only allowed with method: lora",
            ".lora",
            check=lambda t: t.lora is None or t.method == "lora",
        ),
        Rule(
            "!has(self.exportMerged) || !self.exportMerged || self.method == 'lora'",
            "exportMerged applies only to method: lora",
            ".exportMerged",
            check=lambda t: not t.export_merged or t.method == "lora",
        ),
    )

    method: Method = Field(default="lora", json_schema_extra=immutable("method"))
    """`lora` trains low-rank adapters; `full` updates every weight."""
    lora: LoraSettings | None = None
    """LoRA settings (only with method: lora); unset: the defaults."""
    learning_rate: float | None = Field(default=None, gt=0, le=1)
    """Peak learning rate; unset: 2e-4 for LoRA, 1e-5 for full fine-tuning."""
    epochs: float = Field(default=3, gt=0, le=20)
    """Passes over the training split; more than 3 risks memorising the set."""
    max_steps: int | None = Field(default=None, ge=1)
    """Stop after this many optimiser steps, whatever the epochs."""
    batch_size: int = Field(default=4, ge=1)
    """Sequences per device per micro-batch."""
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    """Micro-batches per optimiser step."""
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    """Fraction of steps spent warming the learning rate up."""
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    """Decay after warmup."""
    weight_decay: float = Field(default=0.0, ge=0)
    """AdamW weight decay."""
    max_grad_norm: float = Field(default=1.0, gt=0)
    """Gradient clipping norm."""
    max_seq_length: int = Field(default=2048, ge=16)
    """Longest training sequence in tokens."""
    packing: bool = False
    """Pack several samples into one sequence without letting them attend to each other."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """Numeric precision: `auto` is bf16 on GPU and fp32 on CPU."""
    gradient_checkpointing: bool = False
    """Trade compute for memory by recomputing activations."""
    attention: Literal["auto", "sdpa", "eager", "flash_attention_2"] = "auto"
    """Attention kernel: `auto` is SDPA (FlashAttention 2 must be installed to be chosen)."""
    distributed: Literal["ddp", "fsdp"] = "ddp"
    """With several processes: `ddp` keeps a whole model on each; `fsdp` shards parameters, gradients and optimizer state across them (for models that do not fit one GPU). Ignored in one process."""
    eval_fraction: float = Field(default=0.05, ge=0, lt=1)
    """Share of the dataset held out for evaluation."""
    eval_every_steps: int = Field(default=50, ge=1)
    """Evaluate every N optimiser steps."""
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    """Early stopping on eval loss; with an eval split the exported weights are those of the best evaluation."""
    checkpoint_every_steps: int = Field(default=50, ge=1)
    """Write a checkpoint every N optimiser steps; a restarted run resumes from the newest."""
    checkpoints_to_keep: int = Field(default=2, ge=1)
    """Newest checkpoints kept on disk (the best one is kept in addition)."""
    template: TemplateSettings = Field(default_factory=TemplateSettings)
    """Chat template and loss masking."""
    refusal: RefusalConditioning = Field(default_factory=RefusalConditioning)
    """Refusal conditioning."""
    probes: Probes = Field(default_factory=Probes)
    """The memorisation probe (forgetting and safety are evaluation suites)."""
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    """Evaluation of base vs tuned after training: suites, sizes and gates."""
    export_merged: bool = False
    """Also export the adapter merged into a bf16 copy of the base model (LoRA only)."""
    seed: int = 42
    """Seed for data order, splits and initialisation."""

    @model_validator(mode="after")
    def _lora_settings_need_lora(self) -> TrainingConfig:
        # The same rules the CRD enforces with CEL, for run configs that never meet the API server.
        if self.method != "lora" and self.lora is not None:
            raise ValueError("lora settings are only allowed with method: lora")
        if self.method != "lora" and self.export_merged:
            raise ValueError("exportMerged applies only to method: lora")
        return self

    def resolved_learning_rate(self) -> float:
        """The peak learning rate, with the per-method default applied."""
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LEARNING_RATE[self.method]

    def resolved_lora(self) -> LoraSettings | None:
        """LoRA settings with defaults, or None for full fine-tuning."""
        if self.method != "lora":
            return None
        return self.lora or LoraSettings()


class ParentStage(WireModel):
    """The stage a chained run starts from: an SFTJob's `spec.model.sftJobRef`, resolved by the operator."""

    name: str
    """Name of the SFTJob whose result this run starts from; its lineage.json must name the same stage."""
    output_dir: str
    """That SFTJob's output folder (lineage.json, adapter/, merged/ or model/), mounted read-only."""
    use: Literal["merged", "adapter"]
    """`merged`: `model` is its merged (or fully fine-tuned) export; `adapter`: its own start plus its adapter."""
    adapters: list[str] = Field(default_factory=list)
    """Adapter folders merged into `model`, in this order, before training starts (the parent's adapter last)."""
    base_model: str
    """The chain's first base model, as its root stage named it; the parent's lineage.json must name the same."""


class TrainRunConfig(WireModel):
    """The file the trainer pod reads: model, data, output and how to train."""

    model: str
    """Folder of the base model (config, weights, tokenizer), or a GGUF file; for a chained run, where it starts."""
    name: str | None = None
    """Name of the run (the SFTJob), written into lineage.json so a later stage can check what it starts from."""
    parent: ParentStage | None = None
    """The stage this run starts from (its tokenizer, template and end of turn travel with it); unset: a base model."""
    dataset: str
    """Path of the training data (any format curation reads, or curated.jsonl)."""
    format: Literal["auto", "alpaca", "sharegpt", "messages"] = "auto"
    """Record format of the dataset; `auto` detects it."""
    output_dir: str
    """Folder for checkpoints, the adapter or model, and reports."""
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    """The training settings."""
    progress_port: int | None = Field(default=None, ge=1, le=65535)
    """Port of the /progress and /metrics server; unset: none."""
