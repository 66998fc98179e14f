"""What every curation step shares: a name, counters, timing, notes, and one method.

Four kinds, one per way a step sees the records (the runner in `runner.py`
dispatches on the kind and owns where every record goes):

- `Filter`: one record at a time -> keep, or a reason. Cheap and stateless
  ones (`forkable`) run in forked worker processes.
- `Annotator`: a batch at a time -> measurements (model scores, vectors); stops nothing.
- `SetStep`: the whole set at once -> the positions it stops (duplicates, balance, selection).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np

from ..formats import Conversation

Outcome = Literal["rejected", "review"]


class Step(ABC):
    """A named step; `name` prefixes every reason it reports ("dedup.near_duplicate")."""

    name: ClassVar[str]
    outcome: ClassVar[Outcome] = "rejected"
    """Where a record this step stops goes: the bin (with reasons) or the review queue."""

    def __init__(self) -> None:
        self.seen = 0
        self.drops: Counter[str] = Counter()
        self.seconds = 0.0
        self.notes: list[str] = []
        """What a reader of the report must know about this step's run (skipped parts, fallbacks)."""

    def reason(self, code: str) -> str:
        return f"{self.name}.{code}"

    def report(self) -> dict[str, Any]:
        """Step-specific figures for report.json (clusters found, thresholds used...); JSON-safe."""
        return {}


class Filter(Step):
    """A per-record filter: `check` returns None to keep, or a reason code to stop the record."""

    gate: ClassVar[bool] = False
    """A record this filter stops is not shown to the filters after it in the same pass (validation,
    over-long turns); otherwise every filter runs, so a rejected record lists all its reasons."""
    forkable: ClassVar[bool] = True
    """Stateless across records: may run in forked worker processes (their state is not sent back)."""

    @abstractmethod
    def check(self, conv: Conversation) -> str | None: ...

    def __call__(self, conv: Conversation) -> str | None:
        self.seen += 1
        started = time.perf_counter()
        code = self.check(conv)
        self.seconds += time.perf_counter() - started
        if code is None:
            return None
        reason = self.reason(code)
        self.drops[reason] += 1
        return reason


class Annotator(Step):
    """Computes features for a batch of records and stops none of them.

    Model-based measurements live here (the scorer LM's perplexities, the
    embedder's vectors): JSON-safe numbers go to `conv.meta["scores"]` (they are
    written with the record), vectors to `conv.features` (never written). The
    judges that decide on those numbers are ordinary `Filter`s that run after
    it, so one forward pass serves several judges. The runner calls
    `annotate` with batches of `batch_size` records, in the main process
    unless the step is `forkable`.
    """

    batch_size: ClassVar[int] = 64
    forkable: ClassVar[bool] = False
    """Its numbers come from the record and read-only state alone (no model threads, nothing kept across
    batches but counters): over a large set it may run in forked worker processes, which send back each
    record's `meta` (never its `features`)."""

    @abstractmethod
    def annotate(self, convs: Sequence[Conversation]) -> None: ...

    def __call__(self, convs: Sequence[Conversation]) -> None:
        self.seen += len(convs)
        started = time.perf_counter()
        self.annotate(convs)
        self.seconds += time.perf_counter() - started


class SetStep(Step):
    """A step that must see the whole set (duplicates, balance, token statistics).

    `select` returns {position in `convs`: reason code} for the records it stops.

    A streaming engine (`streaming.py`, `ray_engine.py`) does not hold the
    texts of a large set: it calls `prepare` on batches while the texts are
    there, then `select` on records that keep only `meta`, the `features`
    named in `reads_features`, and their messages only for a step that
    `reads_text`.
    """

    reads_text: ClassVar[bool] = True
    """`select` reads the records' messages (a streaming engine then keeps the survivors' texts for it)."""
    reads_features: ClassVar[tuple[str, ...]] = ()
    """Keys of `conv.features` that `select` reads (what `prepare` writes included)."""

    def prepare(self, convs: Sequence[Conversation]) -> None:  # noqa: B027 - most set steps need nothing
        """Write into `conv.features` the compact features `select` needs from the text."""

    @abstractmethod
    def select(self, convs: Sequence[Conversation]) -> dict[int, str]: ...

    def __call__(self, convs: Sequence[Conversation]) -> dict[int, str]:
        self.seen += len(convs)
        started = time.perf_counter()
        stopped = {i: self.reason(code) for i, code in self.select(convs).items()}
        self.seconds += time.perf_counter() - started
        self.drops.update(stopped.values())
        return stopped


@runtime_checkable
class FeatureColumns(Protocol):
    """Records that hold a feature of every record as one matrix already (a streaming engine's compact records)."""

    def feature_column(self, key: str) -> np.ndarray | None: ...


def feature_matrix(convs: Sequence[Conversation], key: str) -> np.ndarray:
    """Every record's `features[key]` vector as a row of one matrix: compact records hand over the column they
    hold (no second copy of a large set's signatures), a list of records is stacked."""
    column = convs.feature_column(key) if isinstance(convs, FeatureColumns) else None
    return column if column is not None else np.stack([conv.features[key] for conv in convs])
