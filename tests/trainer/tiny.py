"""Tiny models and tokenizers built locally for fast trainer tests (no hub, no download).

The tokenizer is a byte-level BPE trained in a fraction of a second on real
instruction text, with SmolLM2's special-token layout: BOS is `<|im_start|>`,
and EOS and pad are both `<|im_end|>`, the layout where masking labels by pad id
would silently hide every end of turn. A second flavour has a distinct `<s>` BOS
that the tokenizer adds by itself (Llama-2 style) to exercise the double-BOS
guard.
"""

from __future__ import annotations

import json
from pathlib import Path

# SmolLM2-135M-Instruct's own template (default system turn, no generation markers).
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# A template that writes the BOS itself, for a tokenizer that also adds one: the double-BOS trap.
BOS_WRITING_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def training_text(shared_data: Path, limit: int = 300) -> list[str]:
    records = json.loads((shared_data / "lima_llamafactory.json").read_text(encoding="utf-8"))[:limit]
    return [r["instruction"] + "\n" + r["output"] for r in records]


def build_tokenizer(folder: Path, texts: list[str], *, flavour: str = "smollm2", vocab_size: int = 600):
    """Train a byte-level BPE on `texts` and save a transformers tokenizer into `folder`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + (["<s>"] if flavour == "llama" else [])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    if flavour == "llama":
        bos = "<s>"
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
        wrapped = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token=bos,
            eos_token="<|im_end|>",
            pad_token="<|im_end|>",
            unk_token="<|endoftext|>",
            add_bos_token=True,
        )
        wrapped.chat_template = BOS_WRITING_TEMPLATE
    else:
        wrapped = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token="<|im_start|>",
            eos_token="<|im_end|>",
            pad_token="<|im_end|>",
            unk_token="<|endoftext|>",
        )
        wrapped.chat_template = SMOLLM2_TEMPLATE
    folder.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(folder)
    return wrapped


def build_tiny_llama(folder: Path, tokenizer, *, hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """A randomly initialised Llama saved with the tokenizer: a complete model folder."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
