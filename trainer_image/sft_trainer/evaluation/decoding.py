"""Greedy decoding of a left-padded batch: the KV cache written in place, finished rows dropped.

`model.generate` grows each layer's KV cache by concatenation (a copy of the
whole cache at every token: a fifth of a CPU batch's time) and keeps
computing rows that have already stopped until the last one does (on IFEval
a third of the row-steps: most batches hold a reply that runs to the cap).
This loop gives the same greedy tokens without either: each full-attention
layer's cache is one buffer sized for the prompt and the reply, read up to
what is filled, and a row that emits a stop token leaves the batch (its
cache rows with it). `benchmarks/bench_eval.py --decoder generate` measures
the difference on the same prompts.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


class PrefixLayer(DynamicLayer):
    """A layer's KV cache in one buffer of `capacity` positions, handed to attention up to the filled length."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        batch, heads, _, dim = key_states.shape
        self.key_buffer = key_states.new_empty((batch, heads, self.capacity, dim))
        self.value_buffer = value_states.new_empty((batch, heads, self.capacity, value_states.shape[-1]))
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise ValueError(f"the KV cache holds {self.capacity} positions; {end} were written")
        self.key_buffer[:, :, self.length : end] = key_states
        self.value_buffer[:, :, self.length : end] = value_states
        self.length = end
        self._expose()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self.key_buffer = self.key_buffer[indices]
            self.value_buffer = self.value_buffer[indices]
            self._expose()

    def _expose(self) -> None:
        self.keys = self.key_buffer[:, :, : self.length]
        self.values = self.value_buffer[:, :, : self.length]


def prefix_cache(model: Any, capacity: int) -> DynamicCache:
    """The model's dynamic cache with its full-attention layers written in place (sliding-window and other
    layer kinds keep transformers' own behaviour)."""
    cache = DynamicCache(config=model.config)
    cache.layers = [PrefixLayer(capacity) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def _cache_keyword(model: Any) -> str:
    """transformers 5.2x renamed the forward's `past_key_values` to `cache` (the old name warns until 5.40)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT model passes it through
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def greedy_tokens(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int, stop: list[int]
) -> list[list[int]]:
    """Each row's greedy continuation of a left-padded batch: up to and including its first stop token, or
    `max_new_tokens` tokens. The same tokens as `model.generate(do_sample=False)`."""
    rows = len(input_ids)
    replies: list[list[int]] = [[] for _ in range(rows)]
    if max_new_tokens <= 0 or rows == 0:
        return replies
    cache = prefix_cache(model, input_ids.shape[1] + max_new_tokens)
    keyword = _cache_keyword(model)
    # Positions count real tokens only (left padding takes none), as generate computes them.
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    alive = list(range(rows))
    stops = set(stop)
    with torch.no_grad():
        logits = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{keyword: cache},
        ).logits[:, -1]
        next_position = positions[:, -1:] + 1
        for step in range(max_new_tokens):
            tokens = logits.argmax(-1)
            going = []
            for k, (row, token) in enumerate(zip(alive, tokens.tolist(), strict=True)):
                replies[row].append(token)
                if token not in stops:
                    going.append(k)
            if not going or step == max_new_tokens - 1:
                break
            if len(going) < len(alive):
                keep = torch.tensor(going, device=tokens.device)
                cache.batch_select_indices(keep)
                attention_mask, tokens, next_position = attention_mask[keep], tokens[keep], next_position[keep]
                alive = [alive[k] for k in going]
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(alive), 1))], dim=1)
            logits = model(
                input_ids=tokens[:, None],
                attention_mask=attention_mask,
                position_ids=next_position,
                use_cache=True,
                logits_to_keep=1,
                **{keyword: cache},
            ).logits[:, -1]
            next_position = next_position + 1
    return replies
