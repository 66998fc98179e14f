"""Samples -> micro-batches: padded, or packed without cross-sample attention.

Padding is masked by *position*: every position past a sample's length gets
label IGNORE_INDEX and attention-mask 0, whatever token id fills it. (Masking
by pad id would also hide every EOS of a model whose pad token is its EOS,
which is SmolLM2's case.)

Packing concatenates several samples into one row and restarts the position
ids at 0 for each sample, with no 2-D attention mask. transformers then
derives the sample boundaries from the position ids: SDPA/eager attention get
a block-diagonal causal mask, FlashAttention gets varlen sequence offsets. A
sample can therefore never attend to the sample before it, and since every
sample's first label is IGNORE_INDEX (builder), no token is trained to
predict across a boundary. tests/trainer/test_packing.py shows a packed batch
gives the same per-token losses as the same samples unpacked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .masking import IGNORE_INDEX, Sample

if TYPE_CHECKING:
    import torch


@dataclass
class Batch:
    """Model inputs for one micro-batch plus what the loop needs to count."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    attention_mask: torch.Tensor | None
    position_ids: torch.Tensor | None
    num_tokens: int
    """Real (non-pad) tokens."""
    num_trained: int
    """Tokens that carry loss (labels != IGNORE_INDEX after the shift)."""

    def model_inputs(self) -> dict[str, torch.Tensor]:
        inputs = {"input_ids": self.input_ids}
        if self.attention_mask is not None:
            inputs["attention_mask"] = self.attention_mask
        if self.position_ids is not None:
            inputs["position_ids"] = self.position_ids
        return inputs

    def to(self, device: torch.device) -> Batch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(
            self.input_ids.to(device, non_blocking=True),
            self.labels.to(device, non_blocking=True),
            move(self.attention_mask),
            move(self.position_ids),
            self.num_tokens,
            self.num_trained,
        )


def _round_up(length: int, multiple: int) -> int:
    return -(-length // multiple) * multiple


def pad_batch(samples: Sequence[Sample], pad_id: int, pad_to_multiple_of: int = 1) -> Batch:
    """Right-padded batch; pad positions are masked by position, never by id."""
    import torch

    width = _round_up(max(len(s.input_ids) for s in samples), pad_to_multiple_of)
    input_ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(samples), width), dtype=torch.long)
    for row, sample in enumerate(samples):
        length = len(sample.input_ids)
        input_ids[row, :length] = torch.tensor(sample.input_ids)
        labels[row, :length] = torch.tensor(sample.labels)
        attention_mask[row, :length] = 1
    return Batch(
        input_ids,
        labels,
        attention_mask,
        None,
        num_tokens=sum(len(s.input_ids) for s in samples),
        num_trained=int((labels[:, 1:] != IGNORE_INDEX).sum()),
    )


def pack_samples(samples: Sequence[Sample], max_length: int) -> list[list[Sample]]:
    """Group samples into rows of at most `max_length` tokens (first-fit decreasing, deterministic).

    Order within the input is kept for equal lengths, so the result depends
    only on the (seeded) input order.
    """
    order = sorted(range(len(samples)), key=lambda i: -len(samples[i].input_ids))
    rows: list[list[Sample]] = []
    free: list[int] = []
    for index in order:
        length = len(samples[index].input_ids)
        if length > max_length:
            raise ValueError(f"sample {samples[index].source_index} has {length} tokens > {max_length}")
        for row, space in enumerate(free):
            if space >= length:
                rows[row].append(samples[index])
                free[row] -= length
                break
        else:
            rows.append([samples[index]])
            free.append(max_length - length)
    return rows


def packed_batch(rows: Sequence[Sequence[Sample]], pad_id: int, pad_to_multiple_of: int = 1) -> Batch:
    """Rows of packed samples with position ids restarting at 0 per sample (and for the pad tail)."""
    import torch

    width = _round_up(max(sum(len(s.input_ids) for s in row) for row in rows), pad_to_multiple_of)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    num_tokens = 0
    for r, row in enumerate(rows):
        start = 0
        for sample in row:
            length = len(sample.input_ids)
            input_ids[r, start : start + length] = torch.tensor(sample.input_ids)
            labels[r, start : start + length] = torch.tensor(sample.labels)
            position_ids[r, start : start + length] = torch.arange(length)
            start += length
        num_tokens += start
        # The pad tail is its own "sequence" (positions restart), so it is never
        # attended to by real tokens; its labels stay IGNORE_INDEX.
        position_ids[r, start:] = torch.arange(width - start)
    return Batch(
        input_ids,
        labels,
        None,
        position_ids,
        num_tokens=num_tokens,
        num_trained=int((labels[:, 1:] != IGNORE_INDEX).sum()),
    )
