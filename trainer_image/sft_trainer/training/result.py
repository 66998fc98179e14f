"""What a recipe hands back to the entry point (which writes the reports from it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..formats import Conversation
from .loop import RunState


@dataclass
class RunResult:
    method: str
    state: RunState
    data: dict[str, Any]
    """PreparedData.summary(): records, samples, rejections, token figures."""
    probes: dict[str, Any]
    exports: dict[str, str]
    """Kind (adapter, model, merged) -> folder."""
    environment: dict[str, Any] = field(default_factory=dict)
    """Device, dtype, template, parameter counts."""
    model_folder: str = ""
    """The base model's folder (a GGUF model is converted into one): the evaluation's base."""
    held_out: list[Conversation] = field(default_factory=list)
    """The held-out split's conversations: the reference and style suites' default records."""

    def final_loss(self) -> float | None:
        return self.state.history[-1]["loss"] if self.state.history else None
