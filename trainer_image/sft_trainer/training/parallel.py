"""How the processes of a run share the model: one process, DDP replicas or FSDP shards.

Everything that touches whole-model state goes through `Parallel`, so the
train loop and the checkpoints never ask which strategy runs:

* `wrap` turns the loaded model into what trains (DDP: accelerate's wrapper;
  FSDP: `fully_shard` on every decoder layer, then the root);
* `gather_trainable` / `gather_optimizer` return the *full* trainable tensors
  and the optimizer state keyed by parameter name on rank 0 (empty elsewhere).
  They are collectives: every rank must call them at the same point;
* `load_trainable` / `load_optimizer` put rank 0's full state back into each
  rank's replica or shard.

Names are the model's own parameter names in every strategy (DDP's `module.`
and FSDP's wrapping never show), so a checkpoint written by 4 FSDP ranks
resumes in one process and the other way round.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator

log = logging.getLogger("sft_trainer.training")

Strategy = Literal["single", "ddp", "fsdp"]


def launched_as_rank_zero() -> bool:
    """Whether torchrun made this process rank 0 (or no launcher did): known before any process group exists.

    Rank 0 alone serves /progress (one port per pod), reads the data into the
    output folder's rejected_samples.jsonl / data_split.json, and writes reports.
    """
    return os.environ.get("RANK", "0") == "0"


@dataclass
class Parallel:
    accelerator: Accelerator
    strategy: Strategy
    bf16: bool
    """Matmuls in bf16 (autocast; FSDP also all-gathers parameters in bf16)."""

    @classmethod
    def start(cls, distributed: str, device: torch.device, dtype: torch.dtype) -> Parallel:
        """Join the process group torchrun/accelerate set up (if any) and pick the strategy."""
        import torch
        from accelerate import Accelerator

        on_gpu = device.type == "cuda"
        bf16 = on_gpu and dtype == torch.bfloat16
        accelerator = Accelerator(mixed_precision="bf16" if bf16 else "no", cpu=not on_gpu)
        strategy: Strategy = "single" if accelerator.num_processes == 1 else "fsdp" if distributed == "fsdp" else "ddp"
        if strategy != "single":
            log.info("%d processes, %s", accelerator.num_processes, strategy.upper())
        return cls(accelerator, strategy, bf16)

    # ------------------------------------------------------------ who am I

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def world(self) -> int:
        return int(self.accelerator.num_processes)

    @property
    def rank(self) -> int:
        return int(self.accelerator.process_index)

    @property
    def is_main(self) -> bool:
        return bool(self.accelerator.is_main_process)

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------ the model

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the loop trains. Build the optimizer *after* this (FSDP replaces the parameters)."""
        if self.strategy == "ddp":
            return self.accelerator.prepare(model)  # type: ignore[no-any-return]
        if self.strategy == "fsdp":
            return _shard(model, self.bf16)
        return model

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The plain module inside DDP (FSDP shards have no plain module: rebuild one instead)."""
        return self.accelerator.unwrap_model(model)  # type: ignore[no-any-return]

    def no_sync(self, model: torch.nn.Module, sync: bool) -> Any:
        """Skip DDP's gradient all-reduce on all but the last micro-batch of a step."""
        import contextlib

        return contextlib.nullcontext() if sync else self.accelerator.no_sync(model)

    # ------------------------------------------------------------ whole-model state

    def gather_trainable(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The full trainable tensors on CPU, by name, on rank 0 ({} elsewhere). A collective."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        trainable = _trainable_names(model)
        full = get_model_state_dict(model, options=self._full_options(offload=True))
        return {name: tensor.contiguous() for name, tensor in full.items() if name in trainable}

    def load_trainable(self, model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        """Rank 0's full tensors into every rank's parameters (frozen ones untouched). A collective."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        options = StateDictOptions(full_state_dict=True, strict=False, broadcast_from_rank0=self.world > 1)
        set_model_state_dict(model, tensors, options=options)

    def gather_optimizer(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The optimizer state keyed by parameter name, full, on rank 0. A collective."""
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(model, optimizer, options=self._full_options(offload=True))  # type: ignore[no-any-return]

    def load_optimizer(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=self.world > 1)
        set_optimizer_state_dict(model, optimizer, optim_state_dict=state, options=options)

    def _full_options(self, offload: bool) -> Any:
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        # cpu_offload gathers onto rank 0 only; in one process there is no rank to ask.
        return StateDictOptions(full_state_dict=True, cpu_offload=offload and self.world > 1)


def _trainable_names(model: torch.nn.Module) -> set[str]:
    """Parameter names as the state-dict API reports them (no DDP `module.` prefix)."""
    inner = getattr(model, "module", model)  # DDP
    return {name for name, p in inner.named_parameters() if p.requires_grad}


def _shard(model: torch.nn.Module, bf16: bool) -> torch.nn.Module:
    """FSDP2: each decoder layer is one shard group (all-gathered just before it runs), then the root."""
    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    # One all-gather dtype per group: a LoRA layer mixes a bf16 base and fp32 adapters.
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
    kwargs = {"mp_policy": policy} if policy is not None else {}
    layer_classes = set(_no_split_modules(model))
    if not layer_classes:
        raise ValueError(f"{type(model).__name__} names no decoder layer class (_no_split_modules): cannot shard it")
    for module in model.modules():
        if type(module).__name__ in layer_classes:
            fully_shard(module, **kwargs)
    fully_shard(model, **kwargs)
    return model


def _no_split_modules(model: torch.nn.Module) -> list[str]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
    return list(getattr(base, "_no_split_modules", None) or [])
