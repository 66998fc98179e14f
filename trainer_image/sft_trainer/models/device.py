"""Where a scoring model runs and in which precision.

One rule for every model curation loads: the first GPU when there is one,
in bf16 where the GPU supports it (half the memory, no loss that changes a
judge's verdict); otherwise the CPU in fp32 (CPU bf16 matmuls are slower than
fp32 on most machines, and fp32 is what the thresholds were calibrated in).
The choice is the trainer's own (`training.modeling`), so a curation and the
training after it agree about the machine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..training.modeling import compute_dtype, pick_device

if TYPE_CHECKING:
    import torch


def inference_device() -> tuple[torch.device, torch.dtype]:
    """(device, dtype) for a scoring model on this machine."""
    device = pick_device()
    return device, compute_dtype("auto", device)


def is_slow(device: torch.device) -> bool:
    """True where model scoring is slow enough that large sets need the user's consent (no GPU)."""
    return device.type == "cpu"
