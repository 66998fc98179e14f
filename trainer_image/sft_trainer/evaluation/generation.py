"""Batched greedy generation through the model's chat template, and loading a model to evaluate.

Generation renders each prompt with the training template (as serving does),
left-pads a batch so every prompt ends where generation starts, and decodes
greedily with the KV cache (`decoding.py`: written in place, finished rows
dropped). Prompts are batched in order of length, so a batch holds prompts of
similar length and padding costs little; replies come back in input order.

Two things are counted rather than hidden:

* a prompt whose tokens plus `max_new_tokens` exceed the model's context is
  skipped (`prompt_too_long`), since generating from a cut prompt answers a
  different question;
* a reply that reaches `max_new_tokens` without an end-of-turn or EOS token
  is kept as it is and counted (`hit_cap`): a model that never stops is a
  finding of the evaluation, not an error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..formats import Message
from ..runconfig import ConfigError
from ..training.templates import ChatTemplate, TemplateError, resolve_template

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

    from ..training.masking import SampleBuilder

log = logging.getLogger("sft_trainer.evaluation")

PROMPT_TOO_LONG = "prompt_too_long"


@dataclass(frozen=True, slots=True)
class Generation:
    """One reply: its text, how many tokens it took, and whether it stopped by itself."""

    text: str
    new_tokens: int
    hit_cap: bool
    """No end-of-turn/EOS within max_new_tokens: the text is cut at the cap."""


@dataclass
class GenerationRun:
    """Replies in input order; None where the prompt was skipped (see `skipped`)."""

    replies: list[Generation | None]
    skipped: dict[int, str] = field(default_factory=dict)
    """Input position -> reason code."""
    seconds: float = 0.0

    @property
    def hit_cap(self) -> int:
        return sum(1 for r in self.replies if r is not None and r.hit_cap)

    @property
    def new_tokens(self) -> int:
        return sum(r.new_tokens for r in self.replies if r is not None)


@dataclass
class Generator:
    """Greedy generation with the training template, as serving would prompt the model."""

    model: Any
    tokenizer: PreTrainedTokenizerBase
    template: ChatTemplate
    device: torch.device
    end_of_turn_id: int
    prepend_bos: bool
    pad_id: int
    batch_size: int = 8

    @property
    def context_length(self) -> int:
        config = getattr(self.model, "config", None)
        return int(getattr(config, "max_position_embeddings", 0) or 1 << 30)

    @property
    def stop_ids(self) -> list[int]:
        eos = self.tokenizer.eos_token_id
        return sorted({self.end_of_turn_id, *([int(eos)] if eos is not None else [])})

    def prompt_ids(self, messages: list[Message]) -> list[int]:
        text = self.template.render(messages, add_generation_prompt=True)
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        if self.prepend_bos and (not ids or ids[0] != self.tokenizer.bos_token_id):
            ids = [self.tokenizer.bos_token_id, *ids]
        return list(ids)

    def generate(self, prompts: list[list[Message]], max_new_tokens: int) -> list[str]:
        """Reply texts in input order ("" for a skipped prompt)."""
        return [r.text if r is not None else "" for r in self.run(prompts, max_new_tokens).replies]

    def run(self, prompts: list[list[Message]], max_new_tokens: int) -> GenerationRun:
        """Generate for every prompt; skips and replies that never stopped are counted (module docstring)."""
        import time

        started = time.monotonic()
        result = GenerationRun(replies=[None] * len(prompts))
        encoded: dict[int, list[int]] = {}
        for position, messages in enumerate(prompts):
            ids = self.prompt_ids(messages)
            if len(ids) + max_new_tokens > self.context_length:
                result.skipped[position] = PROMPT_TOO_LONG
            else:
                encoded[position] = ids
        order = sorted(encoded, key=lambda p: len(encoded[p]))
        was_training = self.model.training
        self.model.eval()
        stop = self.stop_ids
        try:
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                rows = self._generate_batch([encoded[p] for p in batch], max_new_tokens, stop)
                for position, row in zip(batch, rows, strict=True):
                    result.replies[position] = row
        finally:
            self.model.train(was_training)
        result.seconds = time.monotonic() - started
        return result

    def left_padded(self, chunk: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask of a batch, padded on the left so every prompt ends where its reply starts."""
        import torch

        width = max(len(ids) for ids in chunk)
        input_ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, ids in enumerate(chunk):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention[row, width - len(ids) :] = 1
        return input_ids.to(self.device), attention.to(self.device)

    def _generate_batch(self, chunk: list[list[int]], max_new_tokens: int, stop: list[int]) -> list[Generation]:
        from .decoding import greedy_tokens

        return [
            self.reply(row, stop) for row in greedy_tokens(self.model, *self.left_padded(chunk), max_new_tokens, stop)
        ]

    def reply(self, tokens: list[int], stop: list[int]) -> Generation:
        """A reply from its generated tokens: cut at the first stop token, or counted as hitting the cap."""
        ends = [tokens.index(t) for t in stop if t in tokens]
        cut = min(ends) if ends else len(tokens)
        return Generation(
            text=self.tokenizer.decode(tokens[:cut], skip_special_tokens=True),
            new_tokens=cut + (1 if ends else 0),
            hit_cap=not ends,
        )


# ---------------------------------------------------------------------------
# Loading a model (and optionally a LoRA adapter) to evaluate
# ---------------------------------------------------------------------------


@dataclass
class EvalModel:
    """A model ready to evaluate: the generator, and the sample builder that scores reference answers."""

    name: str
    generator: Generator
    builder: SampleBuilder

    @property
    def model(self) -> Any:
        return self.generator.model


def generator_for(
    model: Any, tokenizer: PreTrainedTokenizerBase, template: ChatTemplate, builder: SampleBuilder, device: Any
) -> Generator:
    """A generator that prompts exactly as `builder` trains (BOS handling, end-of-turn)."""
    from ..training.modeling import pad_token_id

    return Generator(
        model=model,
        tokenizer=tokenizer,
        template=template,
        device=device,
        end_of_turn_id=builder.end_of_turn_id,
        prepend_bos=builder.model_wants_bos and not builder.template_writes_bos,
        pad_id=pad_token_id(tokenizer),
    )


def load_eval_model(
    model_dir: Path,
    adapter_dir: Path | None = None,
    *,
    template: str = "auto",
    precision: str = "auto",
    batch_size: int = 16,
    max_seq_length: int = 4096,
    name: str | None = None,
    merged_adapters: Sequence[Path] = (),
) -> EvalModel:
    """Load a model folder (and a LoRA adapter folder on top of it) for evaluation.

    `merged_adapters` are a chained stage's earlier adapters (run config `parent.adapters`): merged into the
    folder's weights first, as training did, or the model evaluated is not the one that trained.

    The tokenizer comes from the adapter folder when it has one: an exported
    adapter carries the tokenizer with the template it was trained with.
    Raises ConfigError naming `model`, `adapter` or `template` when they cannot be used.
    """
    from ..training.masking import SampleBuilder
    from ..training.modeling import compute_dtype, load_model, load_tokenizer, pick_device

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"model: {model_dir} is not a model folder (no config.json)")
    tokenizer_dir = model_dir
    if merged_adapters and (Path(merged_adapters[-1]) / "tokenizer_config.json").is_file():
        tokenizer_dir = Path(merged_adapters[-1])  # the parent stage's tokenizer and template
    if adapter_dir is not None:
        adapter_dir = Path(adapter_dir)
        if not (adapter_dir / "adapter_config.json").is_file():
            raise ConfigError(f"adapter: {adapter_dir} is not a LoRA adapter folder (no adapter_config.json)")
        if (adapter_dir / "tokenizer_config.json").is_file():
            tokenizer_dir = adapter_dir
    tokenizer = load_tokenizer(tokenizer_dir)
    try:
        chat_template = resolve_template(tokenizer, template)
        builder = SampleBuilder(tokenizer, chat_template, loss_on="last", max_seq_length=max_seq_length)
    except (TemplateError, ValueError) as err:
        raise ConfigError(f"template: {err}") from err
    device = pick_device()
    model = load_model(model_dir, compute_dtype(precision, device), "auto", [Path(a) for a in merged_adapters])
    model.config.use_cache = True  # generation reuses the KV cache
    if adapter_dir is not None:
        model = _with_adapter(model, adapter_dir, model_dir)
    model.to(device).eval()
    generator = generator_for(model, tokenizer, chat_template, builder, device)
    generator.batch_size = batch_size
    label = name or (f"{model_dir.name}+{adapter_dir.name}" if adapter_dir else model_dir.name)
    return EvalModel(label, generator, builder)


def _with_adapter(model: Any, adapter_dir: Path, model_dir: Path) -> Any:
    from peft import PeftModel

    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    try:
        return PeftModel.from_pretrained(model, adapter_dir, is_trainable=False)
    except (RuntimeError, ValueError, KeyError) as err:
        # Shape mismatches (another model size) and missing target modules (another architecture).
        raise ConfigError(
            f"adapter: {adapter_dir} does not fit the model {model_dir} "
            f"(adapter trained on {config.get('base_model_name_or_path')!r}): {str(err).splitlines()[0][:400]}"
        ) from err
