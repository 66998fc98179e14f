"""What a streaming run saves after each phase (under `OUTPUT/.stages/`), and the loader that reads it back safely."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config.curation import CurationRunConfig
from ..formats import Conversation
from .base import Step
from .compact import CompactRecords, Rejections

STAGES = ".stages"


@dataclass
class SetStopped:
    """The records set steps stopped, in source_index order: their meta, and which phase stopped them, how, why."""

    records: CompactRecords = field(default_factory=CompactRecords.empty)
    phase: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int16))
    review: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    """Held for review (else rejected)."""
    reason: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    """Each row's reason: a position in `reasons`."""
    reasons: list[str] = field(default_factory=list)

    def plus(self, phase: int, records: CompactRecords, review: np.ndarray, reasons: list[str]) -> SetStopped:
        """These and the records one more set phase stopped (`review`, `reasons` by row of `records`)."""
        names = list(self.reasons) + sorted(set(reasons) - set(self.reasons))
        codes = np.array([names.index(r) for r in reasons], dtype=np.int32)
        joined = CompactRecords.concat([self.records, records])
        order = np.argsort(joined.source_index, kind="stable")
        return SetStopped(
            joined.take(order),
            np.concatenate([self.phase, np.full(len(records), phase, dtype=np.int16)])[order],
            np.concatenate([self.review, review])[order],
            np.concatenate([self.reason, codes])[order],
            names,
        )

    def between(self, low: int, high: int) -> SetStopped:
        """The rows with low <= source_index < high."""
        first, last = np.searchsorted(self.records.source_index, [low, high])
        rows = np.arange(first, last)
        return SetStopped(self.records.take(rows), self.phase[rows], self.review[rows], self.reason[rows], self.reasons)


@dataclass
class State:
    """Everything a later phase and the report need; saved after each phase (resume)."""

    phase: int = 0
    """The next phase to run."""
    input_count: int = 0
    parsed: int = 0
    alive: CompactRecords = field(default_factory=CompactRecords.empty)
    judged: CompactRecords = field(default_factory=CompactRecords.empty)
    judged_seen: bool = False
    rejected: Rejections = field(default_factory=Rejections)
    """Every rejected record (originals not held)."""
    review: list[tuple[Conversation, list[str]]] = field(default_factory=list)
    set_stopped: SetStopped = field(default_factory=SetStopped)
    """The records a set step stopped: written with their text in the output pass."""
    funnel: list[tuple[str, int]] = field(default_factory=list)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    step_states: list[dict[str, Any]] = field(default_factory=list)
    phase_seconds: dict[str, float] = field(default_factory=dict)


_PLAIN = (int, float, str, bool, list, dict, tuple, Counter, type(None))


def step_state(step: Step) -> dict[str, Any]:
    """A step's counters and figures (not its models): enough to write the report after a resume."""
    return {k: v for k, v in vars(step).items() if isinstance(v, _PLAIN) and _picklable(v)}


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - whatever cannot be saved is rebuilt with the step
        return False
    return True


def fingerprint(cfg: CurationRunConfig, shard_records: int) -> str:
    """Identifies an input and configuration: saved phases of another run are not reused."""
    stat = Path(cfg.input).stat()
    what = [str(Path(cfg.input).resolve()), stat.st_size, stat.st_mtime_ns, cfg.format, cfg.tokenizer, shard_records]
    what.append(cfg.curation.model_dump(mode="json", exclude={"engine"}))
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


class StateUnpickler(pickle.Unpickler):
    """Loads a saved `State` and nothing else: the output volume is writable by others, and a plain pickle
    would run whatever code a planted state file names (as torch.load without weights_only would).

    Allowed: this package's dataclasses, `collections` containers, numpy arrays and scalars, and a few
    harmless builtins. Anything else is an error naming it.
    """

    SAFE_BUILTINS = frozenset({"set", "frozenset", "complex", "slice", "range", "bytearray"})
    NUMPY = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy._core.numeric", "_frombuffer"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        found = super().find_class(module, name) if self._allowed(module, name) else None
        if found is None or (module.startswith("sft_trainer.") and not dataclasses.is_dataclass(found)):
            raise pickle.UnpicklingError(f"a saved curation state may not hold {module}.{name}")
        return found

    def _allowed(self, module: str, name: str) -> bool:
        if module == "builtins":
            return name in self.SAFE_BUILTINS
        if module == "collections":
            return name in {"Counter", "OrderedDict", "defaultdict", "deque"}
        if module.startswith("numpy"):
            return (module, name) in self.NUMPY
        return module.startswith("sft_trainer.")
