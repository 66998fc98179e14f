"""FSDP2 as the trainer shards (parallel.py), in one process: bf16 all-gather, fp32 gradient reduction.

The sharded model (fp32 master weights, `MixedPrecisionPolicy(param_dtype=bf16,
reduce_dtype=fp32)`) must train like the plain model under bf16 autocast:
the layers see bf16 weights during the forward, the gradients and the
optimizer work on fp32 shards, the per-step losses agree to bf16 precision,
and `gather_trainable` returns whole fp32 tensors.
"""

from __future__ import annotations

import copy
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from sft_trainer.config import TrainingConfig
from sft_trainer.formats import Conversation, Message
from sft_trainer.training.collate import pack_samples, packed_batch
from sft_trainer.training.loop import make_optimizer, summed_loss
from sft_trainer.training.masking import Sample, SampleBuilder
from sft_trainer.training.modeling import load_model
from sft_trainer.training.templates import resolve_template

STEPS = 4


@pytest.fixture
def process_group(device: torch.device) -> Iterator[None]:
    """A one-process group (NCCL on the GPU, gloo on the CPU), as torchrun would set up for rank 0."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def batches(tiny_tokenizer, shared_data: Path, device: torch.device) -> list:  # type: ignore[no-untyped-def]
    import json

    records = json.loads((shared_data / "alpaca_gpt4_en_demo_llamafactory.json").read_text(encoding="utf-8"))[:64]
    builder = SampleBuilder(tiny_tokenizer, resolve_template(tiny_tokenizer), max_seq_length=512)
    conversations = [
        Conversation([Message("user", r["instruction"]), Message("assistant", r["output"])], i)
        for i, r in enumerate(records)
    ]
    rows = pack_samples([s for s in builder.build_many(conversations) if isinstance(s, Sample)], 512)
    assert len(rows) >= 2 * STEPS
    return [packed_batch(rows[i : i + 2], tiny_tokenizer.pad_token_id, 8).to(device) for i in range(0, 2 * STEPS, 2)]


def train_steps(model: torch.nn.Module, data: list, device: torch.device) -> list[float]:  # type: ignore[no-untyped-def]
    training = TrainingConfig.model_validate({"method": "full", "learningRate": 1e-3})
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, training, device)
    losses = []
    for batch in data:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = summed_loss(model, batch) / batch.num_trained
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    return losses


def test_fsdp2_in_one_process_all_gathers_bf16_reduces_fp32_and_trains_like_autocast(
    process_group: None, device: torch.device, tiny_model_dir: Path, tiny_tokenizer, shared_data: Path
) -> None:
    from accelerate import Accelerator
    from torch.distributed.tensor import DTensor

    from sft_trainer.training.parallel import Parallel

    plain = load_model(tiny_model_dir, torch.float32, "sdpa").to(device)
    sharded = copy.deepcopy(plain)
    shapes = {name: tuple(p.shape) for name, p in plain.named_parameters()}
    parallel = Parallel(Accelerator(mixed_precision="bf16", cpu=device.type == "cpu"), "fsdp", bf16=True)
    sharded = parallel.wrap(sharded)
    assert all(isinstance(p, DTensor) and p.dtype == torch.float32 for p in sharded.parameters())

    seen: list[torch.dtype] = []
    projection = sharded.model.layers[0].self_attn.q_proj
    hook = projection.register_forward_pre_hook(lambda module, args: seen.append(module.weight.dtype))
    data = batches(tiny_tokenizer, shared_data, device)
    sharded_losses = train_steps(sharded, data, device)
    hook.remove()
    assert seen and set(seen) == {torch.bfloat16}  # all-gathered in bf16 for the forward
    plain_losses = train_steps(plain, data, device)
    print(f"\nFSDP2 one process on {device}: losses {sharded_losses} vs autocast {plain_losses}")
    assert sharded_losses == pytest.approx(plain_losses, rel=2e-2)
    assert sharded_losses[-1] < sharded_losses[0]

    with torch.autocast(device.type, dtype=torch.bfloat16):
        summed_loss(sharded, data[0]).backward()
    grads = [p.grad for p in sharded.parameters()]
    assert all(g is not None and g.dtype == torch.float32 for g in grads)  # reduced into fp32 shards

    full = parallel.gather_trainable(sharded)
    assert {name: tuple(t.shape) for name, t in full.items()} == shapes
    assert all(t.dtype == torch.float32 for t in full.values())
