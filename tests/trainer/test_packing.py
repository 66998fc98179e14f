"""Packed samples never attend to each other: same per-token losses packed and unpacked."""

from __future__ import annotations

import pytest
import torch

from sft_trainer.formats import Conversation, Message
from sft_trainer.training.collate import pack_samples, packed_batch, pad_batch
from sft_trainer.training.loop import token_losses
from sft_trainer.training.masking import IGNORE_INDEX, Sample, SampleBuilder
from sft_trainer.training.templates import resolve_template

PAIRS = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("Give me a synonym for happy.", "Joyful."),
    ("Write a haiku about rain.", "Soft rain on the roof\nthe garden drinks in silence\nclouds move slowly on"),
    ("Add 17 and 25.", "17 + 25 = 42."),
    ("Name three primary colours.", "Red, yellow and blue."),
]


@pytest.fixture(scope="module")
def model_and_samples(tiny_model_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    builder = SampleBuilder(tiny_tokenizer, resolve_template(tiny_tokenizer))
    samples = [
        builder.build(Conversation([Message("user", q), Message("assistant", a)], i)) for i, (q, a) in enumerate(PAIRS)
    ]
    assert all(isinstance(s, Sample) for s in samples)
    return model, samples


def per_sample_losses(model, samples: list[Sample], pad_id: int) -> dict[int, list[float]]:
    """Reference: each sample alone, padded (on the model's device: tests/gpu reuses this)."""
    out = {}
    with torch.no_grad():
        for sample in samples:
            losses, mask = token_losses(model, pad_batch([sample], pad_id).to(model.device))
            out[sample.source_index] = losses[0][mask[0]].tolist()
    return out


def packed_losses(model, rows: list[list[Sample]], batch) -> dict[int, list[float]]:
    with torch.no_grad():
        losses, mask = token_losses(model, batch.to(model.device))
    out = {}
    for r, row in enumerate(rows):
        start = 0
        for sample in row:
            end = start + len(sample.input_ids)
            # positions start..end-1 predict labels shifted by one: loss index t predicts token t+1
            window_losses = losses[r, start : end - 1]
            window_mask = mask[r, start : end - 1]
            out[sample.source_index] = window_losses[window_mask].tolist()
            start = end
    return out


def test_packed_batch_gives_the_same_per_token_loss_as_unpacked(model_and_samples, tiny_tokenizer) -> None:
    model, samples = model_and_samples
    pad_id = tiny_tokenizer.pad_token_id
    reference = per_sample_losses(model, samples, pad_id)
    rows = pack_samples(samples, max_length=sum(len(s.input_ids) for s in samples[:3]))
    assert any(len(row) > 1 for row in rows)  # something is actually packed
    batch = packed_batch(rows, pad_id, pad_to_multiple_of=16)
    packed = packed_losses(model, rows, batch)
    assert packed.keys() == reference.keys()
    for index in reference:
        assert packed[index] == pytest.approx(reference[index], abs=2e-5), f"sample {index}"
    assert batch.num_trained == sum(s.num_trained for s in samples)


def test_without_position_reset_samples_would_leak(model_and_samples, tiny_tokenizer) -> None:
    """Control: the same packed rows with ordinary causal attention give different losses, so the test above can fail."""
    model, samples = model_and_samples
    pad_id = tiny_tokenizer.pad_token_id
    reference = per_sample_losses(model, samples, pad_id)
    rows = pack_samples(samples, max_length=sum(len(s.input_ids) for s in samples))
    batch = packed_batch(rows, pad_id)
    batch.position_ids = None
    batch.attention_mask = torch.ones_like(batch.input_ids)
    leaked = packed_losses(model, rows, batch)
    later = [s.source_index for s in rows[0][1:]]
    assert any(leaked[i] != pytest.approx(reference[i], abs=2e-5) for i in later)


def test_first_token_of_each_packed_sample_is_never_a_target(model_and_samples, tiny_tokenizer) -> None:
    _, samples = model_and_samples
    rows = pack_samples(samples, max_length=10_000)
    batch = packed_batch(rows, tiny_tokenizer.pad_token_id)
    start = 0
    for sample in rows[0]:
        assert batch.labels[0, start] == IGNORE_INDEX
        assert batch.position_ids[0, start] == 0
        start += len(sample.input_ids)
    assert (batch.labels[0, start:] == IGNORE_INDEX).all()


def test_packing_is_deterministic_and_fits(model_and_samples) -> None:
    _, samples = model_and_samples
    limit = max(len(s.input_ids) for s in samples) + 5
    first, second = pack_samples(samples, limit), pack_samples(samples, limit)
    assert [[s.source_index for s in row] for row in first] == [[s.source_index for s in row] for row in second]
    assert all(sum(len(s.input_ids) for s in row) <= limit for row in first)
    assert sorted(s.source_index for row in first for s in row) == list(range(len(samples)))


def test_token_losses_equal_cross_entropy_over_all_logits_at_the_trained_positions(
    model_and_samples, tiny_tokenizer
) -> None:
    """What a transformers without boolean `logits_to_keep` computes (loop.py's fallback) is the same loss."""
    import torch.nn.functional as F

    model, samples = model_and_samples
    rows = pack_samples(samples, max_length=sum(len(s.input_ids) for s in samples[:3]))
    batch = packed_batch(rows, tiny_tokenizer.pad_token_id)
    losses, mask = token_losses(model, batch)
    with torch.no_grad():
        every_logit = model(**batch.model_inputs(), use_cache=False).logits[:, :-1]
    expected = F.cross_entropy(every_logit[mask].float(), batch.labels[:, 1:][mask], reduction="none")
    assert losses[mask].tolist() == pytest.approx(expected.tolist(), abs=2e-5)
    assert (losses[~mask] == 0).all()
