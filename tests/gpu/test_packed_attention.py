"""Packed rows on the GPU: the same per-token losses as each sample alone (SDPA, and FlashAttention's varlen path).

The trainer packs with position ids restarting at 0 per sample and no
attention mask (collate.py); transformers turns that into a block-diagonal
mask for SDPA and into varlen sequence offsets for FlashAttention-2. On CPU
this is tests/trainer/test_packing.py; its helpers are reused here with the
model on the GPU. In fp32 the losses must agree to kernel rounding; in bf16
the packed losses must be no further from the fp32 truth than bf16 itself
is when nothing is packed (three times that distance at most: both are maxima
over a few hundred tokens of kernels that round differently).
"""

from __future__ import annotations

import pytest
import torch
from test_packing import PAIRS, packed_losses, per_sample_losses

from sft_trainer.formats import Conversation, Message
from sft_trainer.training.collate import pack_samples, packed_batch
from sft_trainer.training.masking import Sample, SampleBuilder
from sft_trainer.training.templates import resolve_template


@pytest.fixture(scope="module")
def samples(tiny_tokenizer) -> list[Sample]:  # type: ignore[no-untyped-def]
    builder = SampleBuilder(tiny_tokenizer, resolve_template(tiny_tokenizer))
    built = [
        builder.build(Conversation([Message("user", q), Message("assistant", a)], i)) for i, (q, a) in enumerate(PAIRS)
    ]
    assert all(isinstance(s, Sample) for s in built)
    return built  # type: ignore[return-value]


def load(model_dir, dtype: torch.dtype, attention: str, device: torch.device) -> torch.nn.Module:  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation=attention).to(device).eval()


def packed(model: torch.nn.Module, samples: list[Sample], pad_id: int) -> dict[int, list[float]]:
    rows = pack_samples(samples, max_length=sum(len(s.input_ids) for s in samples[:3]))
    assert any(len(row) > 1 for row in rows)  # something is actually packed
    return packed_losses(model, rows, packed_batch(rows, pad_id, pad_to_multiple_of=16))


def largest_gap(a: dict[int, list[float]], b: dict[int, list[float]]) -> float:
    assert a.keys() == b.keys()
    return max(abs(x - y) for i in a for x, y in zip(a[i], b[i], strict=True))


def test_packed_equals_unpacked_in_fp32_with_sdpa(tiny_model_dir, tiny_tokenizer, samples, device) -> None:  # type: ignore[no-untyped-def]
    model = load(tiny_model_dir, torch.float32, "sdpa", device)
    pad_id = tiny_tokenizer.pad_token_id
    reference = per_sample_losses(model, samples, pad_id)
    assert largest_gap(packed(model, samples, pad_id), reference) < 1e-4

    # Control: the same rows with one causal mask over the whole row leak between samples.
    rows = pack_samples(samples, max_length=sum(len(s.input_ids) for s in samples))
    batch = packed_batch(rows, pad_id)
    batch.position_ids, batch.attention_mask = None, torch.ones_like(batch.input_ids)
    leaked = packed_losses(model, rows, batch)
    later = [s.source_index for s in rows[0][1:]]
    assert any(abs(x - y) > 1e-4 for i in later for x, y in zip(leaked[i], reference[i], strict=True))


@pytest.mark.parametrize("attention", ["sdpa", "flash_attention_2"])
def test_packed_bf16_is_as_close_to_fp32_as_unpacked_bf16(
    tiny_model_dir, tiny_tokenizer, samples, device, attention: str
) -> None:  # type: ignore[no-untyped-def]
    if attention == "flash_attention_2":
        from transformers.utils import is_flash_attn_2_available

        if device.type != "cuda" or not is_flash_attn_2_available():
            pytest.skip("flash-attn is not installed (SDPA serves packing with a block-diagonal mask)")
    pad_id = tiny_tokenizer.pad_token_id
    truth = per_sample_losses(load(tiny_model_dir, torch.float32, "sdpa", device), samples, pad_id)
    model = load(tiny_model_dir, torch.bfloat16, attention, device)
    bf16_noise = largest_gap(per_sample_losses(model, samples, pad_id), truth)
    packed_gap = largest_gap(packed(model, samples, pad_id), truth)
    print(f"\n{attention} bf16 on {device}: unpacked {bf16_noise:.5f}, packed {packed_gap:.5f} from fp32")
    assert packed_gap <= 3 * bf16_noise
