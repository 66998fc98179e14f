"""Phases of a streaming run: passes of per-record stages over the input's shards, and set phases.

A pass over one shard (`run_pass_on_shard`, in this process or in a Ray
worker) gives each record still in the running the meta and features it had,
runs the pass's stages, writes the records it stops to part files with their
text, and keeps of each survivor a compact record (`Keep` says what).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..formats import Conversation
from .base import SetStep, Step
from .compact import CompactRecords
from .parts import part_path, rejection_record, review_record, write_part
from .runner import Rejection, Runner
from .shards import Item

# -- phases ------------------------------------------------------------------------


@dataclass
class Phase:
    """A pass (per-record stages over the input) or one set step over the compact records."""

    index: int
    steps: list[Step]
    per_record: bool

    @property
    def name(self) -> str:
        return "pass" if self.per_record else self.steps[0].name


def phases_of(steps: Sequence[Step]) -> list[Phase]:
    phases: list[Phase] = []
    for step in steps:
        if isinstance(step, SetStep):
            phases.append(Phase(len(phases), [step], False))
        elif phases and phases[-1].per_record:
            phases[-1].steps.append(step)
        else:
            phases.append(Phase(len(phases), [step], True))
    return phases


def plan_phases(steps: Sequence[Step]) -> list[Phase]:
    """The phases of a step list, always starting with a pass (it routes the records that could not be parsed)."""
    phases = phases_of(steps)
    if phases and phases[0].per_record:
        return phases
    return [Phase(0, [], True)] + [Phase(p.index + 1, p.steps, p.per_record) for p in phases]


@dataclass(frozen=True)
class Keep:
    """What a compact record keeps after a pass: for the set steps that follow it."""

    text: bool
    features: frozenset[str]
    prepare: tuple[int, ...]
    """Positions (in the step list) of the set steps whose `prepare` runs on the pass's survivors."""


def keep_after(phases: list[Phase], index: int, steps: Sequence[Step]) -> Keep:
    later = [p.steps[0] for p in phases[index + 1 :] if not p.per_record]
    upcoming: list[int] = []
    for phase in phases[index + 1 :]:
        if phase.per_record:
            break
        upcoming.append(next(i for i, s in enumerate(steps) if s is phase.steps[0]))
    return Keep(
        text=any(isinstance(s, SetStep) and s.reads_text for s in later),
        features=frozenset(key for s in later if isinstance(s, SetStep) for key in s.reads_features),
        prepare=tuple(upcoming),
    )


def compact(convs: Sequence[Conversation], keep: Keep) -> CompactRecords:
    """The records as the set steps need them: meta, the kept features, the messages only if a later step reads text."""
    return CompactRecords.of(convs, keep.features, keep.text)


def plain(conv: Conversation) -> Conversation:
    """A record held for review, as the report needs it: where it came from and its meta (a copy)."""
    return Conversation([], conv.source_index, dict(conv.meta))


# -- one pass over one shard (in this process, or in a Ray worker) ------------------


@dataclass
class StepCounters:
    seen: int
    drops: Counter[str]
    seconds: float
    notes: list[str]


@dataclass
class ShardOutcome:
    """What a pass over one shard sends back; picklable (a Ray worker returns it)."""

    shard: int
    parsed: int
    survivors: CompactRecords
    judged: CompactRecords | None
    """The records that passed the gates, meta only (the report's "before" figures)."""
    rejected: list[Rejection]
    """Without the originals: those are in the part files already."""
    review: list[tuple[Conversation, list[str]]]
    funnel: list[tuple[str, int]]
    examples: dict[str, list[dict[str, Any]]]
    counters: list[StepCounters] = field(default_factory=list)
    """Per step of the pass: what this shard added."""


def run_pass_on_shard(
    runner: Runner,
    phase: Phase,
    keep: Keep,
    steps: Sequence[Step],
    items: list[Item],
    shard: int,
    alive: CompactRecords | None,
    out: Path,
) -> ShardOutcome:
    """Run a pass's stages over one shard: `alive` (None in the first pass) says which records are still in the
    running and holds their compact state; stopped records go to the phase's part files with their text."""
    before = [(s.seen, Counter(s.drops), s.seconds, len(s.notes)) for s in phase.steps]
    if alive is None:
        convs = runner.take_parsed(items)
    else:
        convs = [restored(item, alive, row) for item in items if (row := alive.find(item.source_index)) is not None]
    parsed = len(convs)
    advance = runner.advance(convs)
    for position in keep.prepare:
        step = steps[position]
        assert isinstance(step, SetStep)
        step.prepare(advance.survivors)
    rejected, review = runner.take_routed()
    rejected.sort(key=lambda r: r.source_index)  # routed stage by stage; the merge reads each part in index order
    write_part(part_path(out, phase.index, shard, "rejected"), (rejection_record(r) for r in rejected))
    write_part(part_path(out, phase.index, shard, "review"), (review_record(c, r) for c, r in review))
    judged = compact(advance.judged, Keep(False, frozenset(), ())) if advance.judged is not None else None
    counters = [
        StepCounters(s.seen - seen, Counter(s.drops) - drops, s.seconds - seconds, s.notes[notes:])
        for s, (seen, drops, seconds, notes) in zip(phase.steps, before, strict=True)
    ]
    return ShardOutcome(
        shard,
        parsed,
        compact(advance.survivors, keep),
        judged,
        [Rejection(r.source_index, r.reasons, None, r.detail) for r in rejected],
        [(plain(c), reasons) for c, reasons in review],
        advance.funnel,
        dict(runner.examples),
        counters,
    )


def restored(item: Item, alive: CompactRecords, row: int) -> Conversation:
    """A record read again, given back the meta and features it had."""
    assert isinstance(item, Conversation), f"record {item.source_index} could not be parsed, yet is in the running"
    item.meta = alive.meta(row)
    item.features.update(alive.features_of(row))
    return item
