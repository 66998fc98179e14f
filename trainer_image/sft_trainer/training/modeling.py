"""Loading the base model and tokenizer (a folder, or a GGUF file converted once)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..runconfig import ConfigError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .parallel import Parallel

log = logging.getLogger("sft_trainer.training")


def resolve_model_folder(model: str, output_dir: Path, parallel: Parallel) -> Path:
    """A folder transformers can load quickly: `model` itself, or its GGUF expanded under output_dir/base_model.

    The output folder is shared by every process of the run (on every node),
    so the main process alone converts a GGUF, and the others wait for it at a
    barrier (all converting into one folder at once would replace it under
    each other's feet).
    """
    path = Path(model)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model: {model} has no config.json")
        return path
    if path.is_file() and path.suffix == ".gguf":
        from ..modelprep import convert_gguf

        target = output_dir / "base_model"
        if parallel.is_main:
            converted = convert_gguf(path, target)
            log.info("%s %s into %s", "Converted" if converted else "Already converted:", path, target)
        parallel.barrier()
        return target
    raise ConfigError(f"model: {model} is neither a model folder nor a .gguf file")


def load_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if not getattr(tokenizer, "is_fast", False) or getattr(tokenizer, "backend_tokenizer", None) is None:
        raise ConfigError(f"model: the tokenizer in {folder} has no fast (tokenizers) backend, which training needs")
    return tokenizer


def pick_device() -> torch.device:
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    """bf16 on a GPU that supports it, fp32 on CPU (bf16 matmuls are slow there), unless set."""
    import torch

    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_model(folder: Path, dtype: torch.dtype, attention: str, adapters: Sequence[Path] = ()) -> PreTrainedModel:
    """The model in `folder`, with `adapters` (earlier stages of a chain) merged into its weights in order."""
    from transformers import AutoModelForCausalLM

    implementation = "sdpa" if attention == "auto" else attention
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation=implementation)
    except ImportError as err:  # e.g. flash_attention_2 without flash-attn installed
        raise ConfigError(f"training.attention: {err}") from err
    for adapter in adapters:
        from peft import PeftModel

        # Merged in the load dtype: exact up to rounding in fp32 (CPU), bf16-rounded on a GPU.
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        model.requires_grad_(True)  # peft froze the base to load the adapter: give back a freshly loaded model
        log.info("Merged the adapter %s into the model", adapter)
    model.config.use_cache = False  # no KV cache while training (and packed masks need none)
    return model


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """Any id works: padding is masked by position. Prefer the declared pad token."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0
