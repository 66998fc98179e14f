"""The one loop: records through a flat list of steps, every verdict routed, counted, timed and accounted for.

The runner knows three kinds of step (see `base.py`) and nothing about what
any step judges:

- consecutive `Filter`s form one pass: each record is shown to them in order,
  a `gate` that stops it ends its pass, otherwise every filter runs so that a
  rejected record lists all its reasons;
- an `Annotator` sees the surviving records in batches and stops none;
- a `SetStep` sees all surviving records at once.

Consecutive filter passes and `forkable` annotators form a `Segment` that
each chunk of records walks in turn. Over a large set whose steps are all
`forkable`, forked worker processes walk the chunks: a worker inherits the
records and the steps from the parent (nothing is pickled on the way in) and
sends back, once per segment, each record's meta, where it stopped and its
steps' counters, in input order, so the outputs are the same whatever the
number of workers (a test checks). A model's annotator runs in this process.

A step's `outcome` says where the records it stops go: rejected (with the
reasons) or held for review. Every input record ends in exactly one of
curated, rejected and review; `run` checks that before returning.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import threadpoolctl

from ..formats import Conversation, RejectedRecord
from .base import Annotator, Filter, SetStep, Step
from .text import last_response, prompt_text

Progress = Callable[[str, int, int], None]
EXAMPLES_PER_REASON = 3
CHUNK = 1000
"""Records per worker task: large enough that sending verdicts back is cheap, small enough for live progress."""
MIN_RECORDS_PER_WORKER = 2000
"""Below this, starting processes costs more than it saves. (At 5,000, a streaming shard of 10,000 records
that lost a few to validation ran every later step in one process.)"""


class AccountingError(RuntimeError):
    """Some input record is missing from the outputs, or is in more than one."""


@dataclass
class Rejection:
    """A rejected record: its reasons (the first one is the one counted) and the original."""

    source_index: int
    reasons: list[str]
    raw: Any
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepTiming:
    """What one step cost: for report.json and report.html."""

    name: str
    kind: str
    seen: int
    seconds: float

    @property
    def records_per_second(self) -> float | None:
        return round(self.seen / self.seconds, 1) if self.seconds > 0 else None


@dataclass
class RunResult:
    """Where every record went, and what each step did."""

    input_count: int
    curated: Sequence[Conversation]
    rejected: Sequence[Rejection]
    review: list[tuple[Conversation, list[str]]]
    funnel: list[tuple[str, int]]
    """Records still in the running after each stage (the report's funnel)."""
    steps: list[Step]
    examples: dict[str, list[dict[str, Any]]]
    """A few rejected records per first reason."""
    judged: Sequence[Conversation]
    """The records that passed the first gates (parsed, not over-long, valid): the "before" population."""
    timings: list[StepTiming]

    def drops_by_reason(self) -> Counter[str]:
        """Rejected records per first reason: sums to the number rejected."""
        return Counter(r.reasons[0] for r in self.rejected)

    def flags_by_reason(self) -> Counter[str]:
        """Every reason of every rejected record (a record can have several)."""
        return Counter(reason for r in self.rejected for reason in r.reasons)


RESPONSE_WORDS = "response_words"
"""A compact record's feature: its response's word count (the report's length histograms)."""


def response_words(conv: Conversation) -> int:
    """The response's word count: kept by a compact record (streaming), counted from the text otherwise."""
    stored = conv.features.get(RESPONSE_WORDS)
    return int(stored) if stored is not None else len(last_response(conv).split())


def safe_text(text: str) -> str:
    """Text that can be written as UTF-8: invalid bytes read from the input become '?'."""
    return text.encode("utf-8", "replace").decode("utf-8")


def example(conv: Conversation) -> dict[str, Any]:
    """A short, printable view of a record for the report."""
    return {
        "source_index": conv.source_index,
        "prompt": safe_text(prompt_text(conv)[:200]),
        "response": safe_text(last_response(conv)[:200]),
    }


# -- a pass of filters --------------------------------------------------------


@dataclass
class Verdict:
    reasons: list[str]
    """Empty: the record goes on."""
    passed_gates: bool
    meta: dict[str, Any]
    """The record's meta after judging (filters may add scores): workers judge copies."""


class FilterPass:
    """Consecutive filters applied to one record at a time."""

    def __init__(self, filters: list[Filter]) -> None:
        self.filters = filters

    def judge(self, conv: Conversation) -> Verdict:
        reasons: list[str] = []
        passed_gates = True
        for f in self.filters:
            if f.gate and not passed_gates:
                continue
            reason = f(conv)
            if reason is None:
                continue
            reasons.append(reason)
            if f.gate:
                return Verdict(reasons, False, conv.meta)
        return Verdict(reasons, passed_gates, conv.meta)


Counters = list[tuple[int, Counter[str], float]]
"""Per step: records seen, drops by reason, seconds."""


def counters(steps: Sequence[Step]) -> Counters:
    return [(s.seen, Counter(s.drops), s.seconds) for s in steps]


def counters_since(steps: Sequence[Step], before: Counters) -> Counters:
    """What `steps` counted since `before` (an earlier `counters(steps)`)."""
    return [
        (seen - seen0, drops - drops0, seconds - seconds0)
        for (seen, drops, seconds), (seen0, drops0, seconds0) in zip(counters(steps), before, strict=True)
    ]


def add_counters(steps: Sequence[Step], counted: Counters) -> None:
    for step, (seen, drops, seconds) in zip(steps, counted, strict=True):
        step.seen += seen
        step.drops.update(drops)
        step.seconds += seconds


# What a forked worker runs, and over which records: set by the parent just before the pool starts.
_WORK: tuple[Callable[[Sequence[Conversation]], Any], Sequence[Conversation]] | None = None


def _run_chunk(bounds: tuple[int, int]) -> Any:
    assert _WORK is not None, "a worker runs only inside in_chunks"
    work, convs = _WORK
    return work(convs[bounds[0] : bounds[1]])


def _one_numeric_thread() -> None:
    """A worker's BLAS/OpenMP pools get one thread: the workers already fill the CPUs, and a forked task
    labeller whose BLAS threads competed with the other worker's ran 2.6x slower than in one process."""
    threadpoolctl.threadpool_limits(1)


def in_chunks(
    work: Callable[[Sequence[Conversation]], Any],
    convs: Sequence[Conversation],
    workers: int,
    progress: Callable[[int], None],
) -> tuple[list[Any], bool]:
    """(`work(chunk)` for each CHUNK of `convs` in order, whether forked workers ran it). Workers run it when
    `workers` > 1 and the set is large enough to pay for them: each inherits `work` and the records from the
    parent (nothing is pickled on the way in) and sends back only what `work` returns; what `work` changed
    in its copies of the records and steps stays there, so the caller applies the returned results."""
    global _WORK
    bounds = [(start, min(start + CHUNK, len(convs))) for start in range(0, len(convs), CHUNK)]
    workers = min(workers, len(convs) // MIN_RECORDS_PER_WORKER)
    out: list[Any] = []
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        for start, end in bounds:
            progress(start)
            out.append(work(convs[start:end]))
        return out, False
    _WORK = (work, convs)
    try:
        with multiprocessing.get_context("fork").Pool(workers, initializer=_one_numeric_thread) as pool:
            for (start, _), result in zip(bounds, pool.imap(_run_chunk, bounds), strict=True):
                progress(start)
                out.append(result)
    finally:
        _WORK = None
    return out, True


@dataclass
class Stop:
    """Where a record's walk through a segment ended: the stage that stopped it and why."""

    stage: int
    reasons: list[str]
    passed_gates: bool


@dataclass
class ChunkWalk:
    """What walking one chunk through a segment left: every record's meta, the records stopped (by position in
    the chunk) and the steps' counts."""

    metas: list[dict[str, Any]]
    stops: dict[int, Stop]
    counted: Counters


class Segment:
    """Consecutive per-record stages (filter passes and annotators) that each chunk of records walks in turn.

    A record a filter pass stops is not shown to the stages after it, as if the stages ran one after another
    over the whole set. When every step is `forkable` and the set is large, forked workers walk the chunks
    (`in_chunks`) and send back, once for the whole segment, each record's meta, where it stopped and their
    counts: one pool and one trip of the metas per segment rather than per stage.
    """

    def __init__(self, stages: list[Stage]) -> None:
        self.stages = stages
        self.passes = [
            FilterPass([s for s in stage.steps if isinstance(s, Filter)])
            if isinstance(stage.steps[0], Filter)
            else None
            for stage in stages
        ]
        self.steps = [step for stage in stages for step in stage.steps]

    @property
    def forkable(self) -> bool:
        return all(map(stage_forkable, self.stages))

    def walk(self, chunk: Sequence[Conversation]) -> ChunkWalk:
        before = counters(self.steps)
        stops: dict[int, Stop] = {}
        alive = list(range(len(chunk)))
        for k, (stage, judges) in enumerate(zip(self.stages, self.passes, strict=True)):
            if judges is None:
                annotator = stage.steps[0]
                assert isinstance(annotator, Annotator)
                size = max(1, annotator.batch_size)
                for start in range(0, len(alive), size):
                    annotator([chunk[i] for i in alive[start : start + size]])
                continue
            going_on = []
            for i in alive:
                verdict = judges.judge(chunk[i])
                if verdict.reasons:
                    stops[i] = Stop(k, verdict.reasons, verdict.passed_gates)
                else:
                    going_on.append(i)
            alive = going_on
        return ChunkWalk([conv.meta for conv in chunk], stops, counters_since(self.steps, before))

    def run(self, convs: Sequence[Conversation], workers: int, progress: Callable[[int], None]) -> dict[int, Stop]:
        """Walk `convs` (in workers when forkable and large); the records' meta and the steps' counts are
        updated. Returns the records stopped, by position in `convs`."""
        walks, forked = in_chunks(self.walk, convs, workers if self.forkable else 1, progress)
        stops: dict[int, Stop] = {}
        offset = 0
        for walk in walks:
            if forked:  # the workers walked copies
                for conv, meta in zip(convs[offset : offset + len(walk.metas)], walk.metas, strict=True):
                    conv.meta = meta
                add_counters(self.steps, walk.counted)
            stops.update((offset + i, stop) for i, stop in walk.stops.items())
            offset += len(walk.metas)
        return stops


# -- the runner -----------------------------------------------------------------


@dataclass
class Stage:
    """A run of the step list the runner executes as one unit: a filter pass, or one other step."""

    steps: list[Step]
    label: str
    """Progress label ("filter", "dedup", ...)."""


def stages_of(steps: Sequence[Step], labels: dict[int, str]) -> list[Stage]:
    """Consecutive filters with the same outcome and label become one pass; other steps stand alone."""
    stages: list[Stage] = []
    for step in steps:
        label = labels.get(id(step), step.name)
        last = stages[-1] if stages else None
        if (
            isinstance(step, Filter)
            and last is not None
            and isinstance(last.steps[-1], Filter)
            and last.steps[-1].outcome == step.outcome
            and last.label == label
        ):
            last.steps.append(step)
        else:
            stages.append(Stage([step], label))
    return stages


def stage_forkable(stage: Stage) -> bool:
    """Whether every step of a per-record stage may run in forked workers."""
    return all(getattr(step, "forkable", False) for step in stage.steps)


def groups_of(stages: Sequence[Stage]) -> list[Segment | Stage]:
    """What the runner runs as one unit: a `Segment` of consecutive per-record stages that all fork or all do
    not (filter passes, forkable annotators), or a stage of its own (a model's annotator, a set step)."""
    groups: list[Segment | Stage] = []
    for stage in stages:
        first = stage.steps[0]
        if not isinstance(first, Filter) and not (isinstance(first, Annotator) and first.forkable):
            groups.append(stage)
            continue
        last = groups[-1] if groups else None
        if isinstance(last, Segment) and last.forkable == stage_forkable(stage):
            groups[-1] = Segment([*last.stages, stage])
        else:
            groups.append(Segment([stage]))
    return groups


@dataclass
class Advance:
    """What running the stages over some records left: the survivors and the figures to add up."""

    survivors: list[Conversation]
    judged: list[Conversation] | None
    """The records that passed the gates among these stages; None when they hold no gate."""
    funnel: list[tuple[str, int]]
    """Records still in the running after each stage."""
    timings: list[StepTiming]


class Runner:
    """Runs a step list over parsed records; `labels` names steps for progress ("filter", "tokens"...).

    `run` takes a whole set. A streaming engine calls `advance` on shards (a
    runner per run of per-record stages, reused shard after shard); routed
    records gather in `rejected`, `review` and `examples` until it takes them
    (`take_routed`). It runs a set step on its compact survivors itself and
    routes what the step stops as columns (`StreamingEngine._set_phase`).
    """

    def __init__(
        self,
        steps: Sequence[Step],
        *,
        labels: dict[int, str] | None = None,
        workers: int = 1,
        on_progress: Progress | None = None,
    ) -> None:
        self.steps = list(steps)
        self.stages = stages_of(self.steps, labels or {})
        self.groups = groups_of(self.stages)
        self.workers = workers
        self.progress = on_progress or (lambda stage, done, total: None)
        self.rejected: list[Rejection] = []
        self.review: list[tuple[Conversation, list[str]]] = []
        self.examples: dict[str, list[dict[str, Any]]] = {}

    def run(self, items: Iterable[Conversation | RejectedRecord]) -> RunResult:
        items = list(items)
        parsed = self.take_parsed(items)
        advance = self.advance(parsed)
        self.rejected.sort(key=lambda r: r.source_index)
        result = RunResult(
            len(items),
            advance.survivors,
            self.rejected,
            self.review,
            _merge_funnel([("input", len(items)), ("parsed", len(parsed)), *advance.funnel]),
            self.steps,
            self.examples,
            advance.judged if advance.judged is not None else list(advance.survivors),
            advance.timings,
        )
        check_partition(result)
        return result

    def take_parsed(self, items: Iterable[Conversation | RejectedRecord]) -> list[Conversation]:
        """The parsed records; those that could not be parsed are routed to rejected."""
        parsed: list[Conversation] = []
        for item in items:
            if isinstance(item, RejectedRecord):
                self._reject_unparsed(item)
            else:
                parsed.append(item)
        return parsed

    def advance(self, survivors: list[Conversation]) -> Advance:
        """Run every stage over `survivors`; the records stopped are routed."""
        judged: list[Conversation] | None = None
        funnel: list[tuple[str, int]] = []
        before = counters(self.steps)
        for group in self.groups:
            if isinstance(group, Segment):
                survivors, passed_gates, counts = self._run_segment(group, survivors)
                funnel += counts
            else:
                survivors, passed_gates = self._run_stage(group, survivors)
                funnel.append((group.label, len(survivors)))
            if judged is None and passed_gates is not None:
                judged = passed_gates
        timings = [
            StepTiming(step.name, _kind(step), seen, round(seconds, 4))
            for step, (seen, _, seconds) in zip(self.steps, counters_since(self.steps, before), strict=True)
        ]
        return Advance(survivors, judged, funnel, timings)

    def take_routed(self) -> tuple[list[Rejection], list[tuple[Conversation, list[str]]]]:
        """The records routed since the last call (rejected, review); `examples` keeps accumulating."""
        routed = self.rejected, self.review
        self.rejected, self.review = [], []
        return routed

    def _run_stage(
        self, stage: Stage, convs: list[Conversation]
    ) -> tuple[list[Conversation], list[Conversation] | None]:
        first = stage.steps[0]
        if isinstance(first, Annotator):
            self._run_annotator(first, stage.label, convs)
            return convs, None
        if isinstance(first, SetStep):
            stopped = self.run_set_step(first, stage.label, convs)
            return [c for i, c in enumerate(convs) if i not in stopped], None
        raise TypeError(f"{type(first).__name__} is not a Filter, Annotator or SetStep")

    def run_set_step(self, step: SetStep, label: str, convs: Sequence[Conversation]) -> dict[int, str]:
        """A set step over `convs`; the records it stops are routed, and returned by position."""
        self.progress(label, 0, len(convs))
        stopped = step(convs)
        self.progress(label, len(convs), len(convs))
        for i, reason in sorted(stopped.items()):
            self._route(step, convs[i], [reason])
        return stopped

    def _run_segment(
        self, segment: Segment, convs: list[Conversation]
    ) -> tuple[list[Conversation], list[Conversation] | None, list[tuple[str, int]]]:
        """(survivors, the records that passed the first gates among these stages or None, the funnel rows);
        the records stopped are routed stage by stage, in input order, as if each stage ran on its own."""
        labels = [stage.label for stage in segment.stages]
        stops = segment.run(convs, self.workers, lambda done: self.progress(labels[0], done, len(convs)))
        passed_gates: list[Conversation] | None = None
        funnel: list[tuple[str, int]] = []
        alive = len(convs)
        for k, stage in enumerate(segment.stages):
            self.progress(stage.label, len(convs), len(convs))
            stopped_here = sorted(i for i, stop in stops.items() if stop.stage == k)
            if passed_gates is None and any(getattr(s, "gate", False) for s in stage.steps):
                passed_gates = [
                    c
                    for i, c in enumerate(convs)
                    if i not in stops or stops[i].stage > k or (stops[i].stage == k and stops[i].passed_gates)
                ]
            for i in stopped_here:
                self._route(stage.steps[0], convs[i], stops[i].reasons)
            alive -= len(stopped_here)
            funnel.append((stage.label, alive))
        return [c for i, c in enumerate(convs) if i not in stops], passed_gates, funnel

    def _run_annotator(self, step: Annotator, label: str, convs: list[Conversation]) -> None:
        """A model's batches in this process, progress after each (they are slow)."""
        size = max(1, step.batch_size)
        for start in range(0, len(convs), size):
            self.progress(label, start, len(convs))
            step(convs[start : start + size])
        self.progress(label, len(convs), len(convs))

    def _route(self, step: Step, conv: Conversation, reasons: list[str]) -> None:
        if step.outcome == "review":
            self.review.append((conv, reasons))
            return
        self.rejected.append(Rejection(conv.source_index, reasons, conv.raw, extra=rejection_extra(conv.meta)))
        bucket = self.examples.setdefault(reasons[0], [])
        if len(bucket) < EXAMPLES_PER_REASON:
            bucket.append(example(conv))

    def _reject_unparsed(self, item: RejectedRecord) -> None:
        self.rejected.append(Rejection(item.source_index, list(item.reasons), item.raw, item.detail))
        bucket = self.examples.setdefault(item.reasons[0], [])
        if len(bucket) < EXAMPLES_PER_REASON:
            bucket.append(
                {
                    "source_index": item.source_index,
                    "detail": safe_text(item.detail),
                    "prompt": safe_text(str(item.raw)[:200]),
                    "response": "",
                }
            )


def rejection_extra(meta: dict[str, Any]) -> dict[str, Any]:
    """What a rejected record's line carries of its meta: cluster, task, selection and scores."""
    extra = {k: meta[k] for k in ("dup_cluster", "duplicate_of", "task", "selection") if k in meta}
    if "scores" in meta:
        extra["scores"] = meta["scores"]
    return extra


def _kind(step: Step) -> str:
    if isinstance(step, Annotator):
        return "annotator"
    return "set" if isinstance(step, SetStep) else "filter"


def _merge_funnel(funnel: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """One row per stage label: the count after the label's last stage."""
    merged: dict[str, int] = {}
    for label, count in funnel:
        merged.pop(label, None)
        merged[label] = count
    return list(merged.items())


def check_partition(result: RunResult) -> None:
    """Every source_index of the input in exactly one of curated, rejected, review (in memory, before writing)."""
    where: Counter[int] = Counter()
    where.update(c.source_index for c in result.curated)
    where.update(r.source_index for r in result.rejected)
    where.update(c.source_index for c, _ in result.review)
    doubled = sorted(i for i, n in where.items() if n > 1)
    missing = sorted(set(range(result.input_count)) - set(where))
    if doubled or missing:
        raise AccountingError(f"records in two outputs: {doubled[:5]}; records in none: {missing[:5]}")
