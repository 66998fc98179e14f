"""Export: the trained weights, always with the tokenizer, the training chat template and the right EOS.

Every exported folder (adapter/, model/, merged/) carries:

* the tokenizer, with `chat_template` set to the template used in training,
  so serving renders prompts exactly as training did;
* `generation_config.json` whose `eos_token_id` lists the template's
  end-of-turn token (and the tokenizer's EOS), so generation stops where the
  model learned to stop.
"""

from __future__ import annotations

import copy
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .templates import ChatTemplate

if TYPE_CHECKING:
    from transformers import GenerationConfig, PreTrainedTokenizerBase

log = logging.getLogger("sft_trainer.training")


def generation_config(
    base_folder: Path, tokenizer: PreTrainedTokenizerBase, end_of_turn_id: int, pad_id: int
) -> GenerationConfig:
    from transformers import GenerationConfig

    try:
        config = GenerationConfig.from_pretrained(base_folder)
    except OSError:
        config = GenerationConfig()
    eos = [end_of_turn_id]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos:
        eos.append(int(tokenizer.eos_token_id))
    config.eos_token_id = eos
    config.pad_token_id = pad_id
    if tokenizer.bos_token_id is not None:
        config.bos_token_id = tokenizer.bos_token_id
    return config


def save_tokenizer_and_generation(
    folder: Path, tokenizer: PreTrainedTokenizerBase, template: ChatTemplate, generation: GenerationConfig
) -> None:
    """The tokenizer with the training template, and the generation config, into `folder`."""
    exported = copy.deepcopy(tokenizer)  # never change the caller's tokenizer
    exported.chat_template = template.source
    exported.save_pretrained(folder)
    generation.save_pretrained(folder)


def _staged(final: Path) -> Path:
    staging = final.with_name(f".tmp-{final.name}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def _publish(staging: Path, final: Path) -> None:
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)


def export_adapter(
    peft_model: Any,
    folder: Path,
    tokenizer: PreTrainedTokenizerBase,
    template: ChatTemplate,
    generation: GenerationConfig,
) -> Path:
    staging = _staged(folder)
    peft_model.save_pretrained(staging)
    save_tokenizer_and_generation(staging, tokenizer, template, generation)
    _publish(staging, folder)
    log.info("Exported the LoRA adapter to %s", folder)
    return folder


def export_full_model(
    model: Any,
    folder: Path,
    tokenizer: PreTrainedTokenizerBase,
    template: ChatTemplate,
    generation: GenerationConfig,
    dtype: Any,
) -> Path:
    staging = _staged(folder)
    model.generation_config = generation
    original = next(model.parameters()).dtype
    model.to(dtype)
    model.save_pretrained(staging, safe_serialization=True)
    model.to(original)
    save_tokenizer_and_generation(staging, tokenizer, template, generation)
    _publish(staging, folder)
    log.info("Exported the fine-tuned model to %s", folder)
    return folder


def export_merged(
    base_folder: Path,
    adapters: Sequence[Path],
    folder: Path,
    tokenizer: PreTrainedTokenizerBase,
    template: ChatTemplate,
    generation: GenerationConfig,
) -> Path:
    """Base weights in bf16 with the adapters merged in, in order: a plain model any server can load.

    `adapters` ends with this run's; before it come those of earlier stages a
    chained run started from (use: adapter), merged as training merged them.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(base_folder, dtype=torch.bfloat16)
    for adapter in adapters:
        merged = PeftModel.from_pretrained(merged, adapter).merge_and_unload()
    staging = _staged(folder)
    merged.generation_config = generation
    merged.save_pretrained(staging, safe_serialization=True)
    save_tokenizer_and_generation(staging, tokenizer, template, generation)
    _publish(staging, folder)
    log.info("Exported the merged bf16 model to %s", folder)
    return folder
