"""Llama-architecture models built from a config for the training benchmark (random weights, real tokenizer)."""

from __future__ import annotations

import json
from pathlib import Path

# name: architecture + the default sequence length and batch size the benchmark uses for it.
SIZES: dict[str, dict[str, int]] = {
    # CPU: small enough that a few steps take seconds on two cores.
    "small": {"hidden": 256, "layers": 4, "heads": 4, "kv_heads": 2, "intermediate": 704, "seq": 512, "batch": 4},
    # 1B class (Llama-3.2-1B shape; SmolLM2's 49k vocabulary).
    "1b": {"hidden": 2048, "layers": 16, "heads": 32, "kv_heads": 8, "intermediate": 8192, "seq": 2048, "batch": 4},
    # 8B class (Llama-3-8B shape); LoRA only on one GPU.
    "8b": {"hidden": 4096, "layers": 32, "heads": 32, "kv_heads": 8, "intermediate": 14336, "seq": 2048, "batch": 2},
}


def build_model(folder: Path, size: str, tokenizer_dir: Path, bf16: bool) -> Path:
    """Save a randomly initialised Llama of `size` with the tokenizer (and chat template) from `tokenizer_dir`."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    spec = SIZES[size]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec["hidden"],
        intermediate_size=spec["intermediate"],
        num_hidden_layers=spec["layers"],
        num_attention_heads=spec["heads"],
        num_key_value_heads=spec["kv_heads"],
        max_position_embeddings=8192,
        tie_word_embeddings=size == "small",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config).to(torch.bfloat16 if bf16 else torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.eos_token_id], pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    return folder


def matmul_parameters(folder: Path) -> int:
    """Parameters that take part in matmuls: all but an untied input embedding (a lookup, not a matmul)."""
    config = json.loads((folder / "config.json").read_text())
    h, n, v = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = h // heads
    attention = h * h * 2 + h * kv * head_dim * 2  # q, o + k, v
    mlp = 3 * h * config["intermediate_size"]
    return n * (attention + mlp) + v * h  # + the output head
