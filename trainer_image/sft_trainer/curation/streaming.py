"""One pod, bounded memory: the step list run over the input shard by shard, only compact features kept.

The step list (`pipeline.build_steps`) splits into phases: a *pass* is a run
of per-record stages (filters and annotators), a *set phase* one `SetStep`.

- A pass reads the input again, shard by shard (`InputShards`), gives each
  record still in the running back the `meta` and features it had, runs the
  pass's stages on the shard (`run_pass_on_shard`), writes the records it
  stops to part files at once (with their text), asks the set steps that come
  next to `prepare` their features while the texts are there, and keeps of
  each survivor only a compact record: `meta`, the features a later set step
  reads, the response's word count, and the messages only when a later set
  step reads text (semantic dedup, rare tokens).
- A set phase runs its step on the compact survivors, as the one-pod runner does.
- The output pass reads the input a last time and writes the curated records,
  those a set step stopped and the selection's control, with their text.

The part files are merged into the same five outputs the in-memory pipeline
writes (rejected sorted by source_index, curated in input order), and the
caller checks the accounting on the written files as before. Peak memory is
one shard of texts plus the compact records: it grows with the features, not
with the texts.

Resume: when a phase is finished its state (the compact records, where every
stopped record went, the figures) is saved under `.stages/` in the output
folder with a marker; a restarted run with the same input and configuration
starts after the last finished phase. The engines (this module's
`StreamingEngine` and `ray_engine.RayEngine`) share all of it and differ only
in how a pass's shards are run and how duplicates are grouped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import json
import pickle
import re
import shutil
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config.curation import CurationRunConfig
from ..formats import (
    BadLine,
    Conversation,
    DatasetReadError,
    RejectedRecord,
    parse_record,
    read_dataset,
    record_to_conversation,
)
from .base import SetStep, Step
from .compact import CompactRecords, Rejections
from .dedup import NearDedup
from .runner import (
    EXAMPLES_PER_REASON,
    AccountingError,
    Progress,
    Rejection,
    Runner,
    RunResult,
    StepTiming,
    _kind,
    _merge_funnel,
    check_partition,
    example,
    rejection_extra,
)

if TYPE_CHECKING:
    from .pipeline import CurationResult
    from .tokens import TokenizerView

SHARD_RECORDS = 10_000
"""Records per shard: the texts held at once (about 10 KB each), and the unit a Ray worker is given."""
PARTS = ".parts"
STAGES = ".stages"

Item = Conversation | RejectedRecord


# -- reading the input in shards --------------------------------------------------


class InputShards:
    """The input file as numbered shards of `shard_records` records, each readable on its own.

    JSON Lines (`.jsonl`, `.ndjson`, UTF-8, a first line that parses) is read
    line by line: a first scan counts the records and notes where each shard
    starts, and a shard is read by seeking there, so memory holds one shard.
    Other inputs (a JSON array, Parquet, a file `read_dataset` must judge
    whole) are read whole once and kept: convert a large set to JSON Lines.
    """

    def __init__(self, path: str, format: str, shard_records: int = SHARD_RECORDS, max_records: int | None = None):
        self.path, self.format = Path(path), format
        self.shard_records, self.max_records = shard_records, max_records
        self.starts: list[tuple[int, int]] = []
        """(byte offset, line number) where each shard starts (JSON Lines)."""
        self.whole: list[Item] | None = None
        self.count = 0
        self._scan()

    @property
    def streams(self) -> bool:
        return self.whole is None

    @property
    def shards(self) -> int:
        return -(-self.count // self.shard_records)

    def shard_bounds(self, shard: int) -> tuple[int, int]:
        """The source_index range [start, end) of a shard."""
        start = shard * self.shard_records
        return start, min(start + self.shard_records, self.count)

    def _scan(self) -> None:
        if not self._streamable():
            self._read_whole()
            return
        count, offset = 0, 0
        with self.path.open("rb") as handle:
            for line_no, line in enumerate(handle, start=1):
                if line.strip():
                    if self.max_records is not None and count >= self.max_records:
                        break
                    first = _decode_line(line, at_file_start=offset == 0)
                    if count == 0 and isinstance(parse_record(first, "line 1"), BadLine):
                        # A pretty-printed object, or not JSON Lines at all: the whole-file reader decides.
                        self._read_whole()
                        return
                    if count % self.shard_records == 0:
                        self.starts.append((offset, line_no))
                    count += 1
                offset += len(line)
        self.count = count

    def _read_whole(self) -> None:
        items = list(read_dataset(self.path, self.format))
        self.whole = items[: self.max_records] if self.max_records is not None else items
        self.count = len(self.whole)
        self.starts = []

    def _streamable(self) -> bool:
        """A regular UTF-8 file named .jsonl or .ndjson (anything else gets the whole-file reader and its errors)."""
        if self.path.suffix.lower() not in (".jsonl", ".ndjson"):
            return False
        try:
            if not stat.S_ISREG(self.path.stat().st_mode):
                return False
        except OSError:
            return False
        return self._utf8()

    def _utf8(self) -> bool:
        try:
            with self.path.open("rb") as handle:
                head = handle.read(4)
        except OSError as err:
            raise DatasetReadError(f"{self.path}: cannot read: {err.strerror or err}") from err
        return json.detect_encoding(head).startswith("utf-8")

    def read(self, shard: int) -> list[Item]:
        """The items of one shard, in order, with their source_index (what `read_dataset` gives for them)."""
        start, end = self.shard_bounds(shard)
        if self.whole is not None:
            return self.whole[start:end]
        offset, line_no = self.starts[shard]
        items: list[Item] = []
        index = start
        with self.path.open("rb") as handle:
            handle.seek(offset)
            for line in handle:
                if index >= end:
                    break
                if line.strip():
                    record = parse_record(_decode_line(line, at_file_start=offset == 0), f"line {line_no}")
                    if isinstance(record, BadLine):
                        items.append(RejectedRecord(index, [record.reason], record.text, record.detail))
                    else:
                        items.append(record_to_conversation(record, index, self.format))
                    index += 1
                line_no += 1
                offset += len(line)
        return items


def _decode_line(line: bytes, *, at_file_start: bool) -> str:
    """One JSON Lines line as `read_dataset` decodes it: invalid UTF-8 kept as surrogates, and a BOM skipped
    only where the file starts (a BOM mid-file, from concatenated files, leaves its line invalid JSON there too)."""
    if at_file_start:
        line = line.removeprefix(b"\xef\xbb\xbf")
    return line.decode("utf-8", errors="surrogateescape").rstrip("\r\n")


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


def part_path(out: Path, phase: int, shard: int, kind: str) -> Path:
    return out / PARTS / f"phase{phase:02d}" / f"shard{shard:06d}.{kind}.jsonl"


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


# -- writing --------------------------------------------------------------------------


def rejection_record(r: Rejection) -> dict[str, Any]:
    """A line of rejected.jsonl (the one format both the in-memory and the streaming writers use)."""
    return {
        "source_index": r.source_index,
        "reasons": r.reasons,
        **({"detail": r.detail} if r.detail else {}),
        **r.extra,
        "record": r.raw,
    }


def review_record(conv: Conversation, reasons: list[str]) -> dict[str, Any]:
    return {**conv.to_record(), "reasons": reasons}


def record_line(record: dict[str, Any]) -> str:
    # default=str: a Parquet input can hand us bytes, timestamps and decimals,
    # which a rejected record must still be written with.
    try:
        line = json.dumps(record, ensure_ascii=False, default=str)
        line.encode("utf-8")  # invalid UTF-8 read from the input survives as lone surrogates
        return line
    except UnicodeEncodeError:
        return json.dumps(record, ensure_ascii=True, default=str)


def write_part(path: Path, records: Iterator[dict[str, Any]]) -> None:
    """A part file, written whole or not at all (a restarted pass rewrites it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(record_line(record) + "\n")
    temporary.replace(path)


_SOURCE_INDEX = re.compile(r'^\{"source_index": (\d+)')


def merge_parts(out: Path) -> None:
    """The part files -> curated.jsonl (input order), rejected.jsonl (by source_index), review.jsonl (phase order)."""
    parts = out / PARTS
    curated = sorted(parts.glob("output/shard*.curated.jsonl"))
    _concatenate(curated, out / "curated.jsonl")
    review = sorted(p for p in parts.glob("phase*/shard*.review.jsonl"))
    _concatenate(review, out / "review.jsonl")
    rejected = sorted(parts.glob("phase*/shard*.rejected.jsonl"))
    handles = [p.open(encoding="utf-8") for p in rejected]
    try:
        with (out / "rejected.jsonl").open("w", encoding="utf-8") as target:
            target.writelines(heapq.merge(*handles, key=_line_index))
    finally:
        for handle in handles:
            handle.close()


def _line_index(line: str) -> int:
    match = _SOURCE_INDEX.match(line)
    assert match, f"a part line without a leading source_index: {line[:80]!r}"
    return int(match.group(1))


def _concatenate(paths: list[Path], target: Path) -> None:
    with target.open("wb") as handle:
        for path in paths:
            with path.open("rb") as part:
                shutil.copyfileobj(part, handle)


# -- the engine ------------------------------------------------------------------------


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


class StreamingEngine:
    """Runs a step list over `shards` phase by phase; a subclass changes how a pass's shards run (`run_pass`)."""

    engine = "local"

    def __init__(
        self,
        cfg: CurationRunConfig,
        steps: list[Step],
        labels: dict[int, str],
        shards: InputShards,
        *,
        workers: int = 1,
        on_progress: Progress | None = None,
    ) -> None:
        self.cfg, self.steps, self.labels, self.shards = cfg, steps, labels, shards
        self.out = Path(cfg.output_dir)
        self.phases = plan_phases(steps)
        self.workers = workers
        self.progress = on_progress or (lambda stage, done, total: None)
        self.fingerprint = fingerprint(cfg, shards.shard_records)
        self.resumed_phases: list[str] = []
        self.phase_seconds: dict[str, float] = {}

    def describe(self) -> dict[str, Any]:
        """Which engine ran, on how many workers, and what each phase cost: for report.json and report.html."""
        return {
            "type": self.engine,
            "workers": self.workers,
            "shards": self.shards.shards,
            "shardRecords": self.shards.shard_records,
            "streamedInput": self.shards.streams,
            "phaseSeconds": self.phase_seconds,
            "resumedPhases": self.resumed_phases,
        }

    # resume ----------------------------------------------------------------------------

    def _stage_dir(self) -> Path:
        return self.out / STAGES

    def load(self) -> State:
        """The state after the last finished phase of this same run, or a fresh one."""
        marker = self._stage_dir() / "latest.json"
        if marker.exists():
            saved = json.loads(marker.read_text(encoding="utf-8"))
            state_file = self._stage_dir() / saved["state"]
            if saved.get("fingerprint") == self.fingerprint and state_file.exists():
                with state_file.open("rb") as handle:
                    state = StateUnpickler(handle).load()
                for step, saved_state in zip(self.steps, state.step_states, strict=True):
                    vars(step).update(saved_state)
                self.resumed_phases = [p["name"] for p in saved["finished"]]
                return state
        shutil.rmtree(self._stage_dir(), ignore_errors=True)
        shutil.rmtree(self.out / PARTS, ignore_errors=True)
        return State(input_count=self.shards.count)

    def save(self, state: State, finished: Phase, seconds: float) -> None:
        """Mark a phase done: its state first, then the marker that points to it."""
        state.step_states = [step_state(s) for s in self.steps]
        directory = self._stage_dir()
        directory.mkdir(parents=True, exist_ok=True)
        name = f"state-{finished.index:02d}.pkl"
        temporary = directory / (name + ".tmp")
        with temporary.open("wb") as handle:
            pickle.dump(state, handle, protocol=pickle.HIGHEST_PROTOCOL)
        temporary.replace(directory / name)
        marker = directory / "latest.json"
        done = json.loads(marker.read_text(encoding="utf-8"))["finished"] if marker.exists() else []
        done.append({"phase": finished.index, "name": finished.name, "seconds": round(seconds, 3)})
        (directory / f"{finished.index:02d}-{finished.name}.done").write_text(json.dumps(done[-1]) + "\n")
        body = {"fingerprint": self.fingerprint, "state": name, "finished": done}
        (directory / "latest.json.tmp").write_text(json.dumps(body, indent=2), encoding="utf-8")
        (directory / "latest.json.tmp").replace(marker)
        for old in directory.glob("state-*.pkl"):
            if old.name != name:
                old.unlink()

    # running -----------------------------------------------------------------------------

    def run(self) -> tuple[RunResult, State]:
        state = self.load()
        for phase in self.phases[state.phase :]:
            started = time.perf_counter()
            if phase.per_record:
                self._pass(phase, state)
            else:
                self._set_phase(phase, state)
            state.phase = phase.index + 1
            seconds = time.perf_counter() - started
            state.phase_seconds[f"{phase.index:02d}-{phase.name}"] = round(seconds, 3)
            self.save(state, phase, seconds)
        self.phase_seconds = state.phase_seconds
        return self._result(state), state

    def run_pass(
        self, phase: Phase, keep: Keep, alive_of: Callable[[int], CompactRecords | None]
    ) -> Iterator[ShardOutcome]:
        """The pass over every shard, here, one shard at a time (shard order); `alive_of(shard)` is what is still
        in the running there (None in the first pass)."""
        start = 0

        def stage_progress(stage: str, done: int, total: int) -> None:
            """Each stage's progress within the shard, counted in records of the whole input."""
            self.progress(stage, start + done, self.shards.count)

        runner = Runner(phase.steps, labels=self.labels, workers=self.workers, on_progress=stage_progress)
        for shard in range(self.shards.shards):
            start = self.shards.shard_bounds(shard)[0]
            self.progress(self._label(phase), start, self.shards.count)
            items = self.shards.read(shard)
            yield run_pass_on_shard(runner, phase, keep, self.steps, items, shard, alive_of(shard), self.out)
            runner.examples.clear()

    def _label(self, phase: Phase) -> str:
        return self.labels.get(id(phase.steps[0]), phase.name) if phase.steps else "read"

    def _alive_of(self, state: State, first: bool) -> Callable[[int], CompactRecords | None]:
        def alive_of(shard: int) -> CompactRecords | None:
            return None if first else state.alive.between(*self.shards.shard_bounds(shard))

        return alive_of

    def _pass(self, phase: Phase, state: State) -> None:
        first = phase.index == 0
        keep = keep_after(self.phases, phase.index, self.steps)
        outcomes = sorted(self.run_pass(phase, keep, self._alive_of(state, first)), key=lambda o: o.shard)
        self.progress(self._label(phase), self.shards.count, self.shards.count)
        funnel: list[tuple[str, int]] = []
        judged: list[CompactRecords] = []
        for outcome in outcomes:
            if first:
                state.parsed += outcome.parsed
            if outcome.judged is not None and not state.judged_seen:
                judged.append(outcome.judged)
            state.rejected.add(outcome.rejected)
            state.review += outcome.review
            _add_examples(state.examples, outcome.examples)
            funnel = [(label, n + (funnel[k][1] if funnel else 0)) for k, (label, n) in enumerate(outcome.funnel)]
            self.absorb(phase, outcome)
        if first:
            state.funnel = [("input", state.input_count), ("parsed", state.parsed)]
        if judged:
            state.judged = CompactRecords.concat(judged)
        if any(o.judged is not None for o in outcomes):
            state.judged_seen = True
        state.funnel += funnel
        state.alive = CompactRecords.concat([o.survivors for o in outcomes])

    def absorb(self, phase: Phase, outcome: ShardOutcome) -> None:
        """Add a shard's counters to the steps: nothing to do here, the steps that ran are these ones."""

    def _set_phase(self, phase: Phase, state: State) -> None:
        step = phase.steps[0]
        label = self.labels.get(id(step), step.name)
        assert isinstance(step, SetStep)
        runner = Runner([step], labels=self.labels, on_progress=self.progress)
        records = state.alive
        verdicts = runner.run_set_step(step, label, records)
        rejected, review = runner.take_routed()
        stopped = np.array(sorted(verdicts), dtype=np.int64)
        state.set_stopped = state.set_stopped.plus(
            phase.index,
            records.take(stopped, frozenset(), text=False),
            np.full(len(stopped), step.outcome == "review"),
            [verdicts[i] for i in stopped.tolist()],
        )
        state.rejected.add(rejected)
        state.review += [(plain(c), reasons) for c, reasons in review]
        _add_examples(state.examples, runner.examples)
        kept = np.setdiff1d(np.arange(len(records)), stopped)
        state.funnel.append((label, len(kept)))
        keep = keep_after(self.phases, phase.index, self.steps)
        state.alive = records.take(kept, keep.features, keep.text)

    def _result(self, state: State) -> RunResult:
        timings = [StepTiming(s.name, _kind(s), s.seen, round(s.seconds, 4)) for s in self.steps]
        result = RunResult(
            state.input_count,
            state.alive,
            state.rejected.in_order(),
            state.review,
            _merge_funnel(state.funnel),
            self.steps,
            state.examples,
            state.judged if state.judged_seen else state.alive,
            timings,
        )
        check_partition(result)
        return result

    # the output pass ------------------------------------------------------------------------

    def write_outputs(
        self, state: State, control: Sequence[Conversation], wanted: set[int]
    ) -> dict[int, dict[str, Any]]:
        """Read the input a last time: curated records and the records set steps stopped, with their text; then merge.

        Returns the printable examples (`runner.example`) of the `wanted` records (the report's samples).
        """
        control_at = {c.source_index: k for k, c in enumerate(control)}
        control_records: list[dict[str, Any] | None] = [None] * len(control)
        examples: dict[int, dict[str, Any]] = {}
        set_phases = sorted(set(state.set_stopped.phase.tolist()))
        for shard in range(self.shards.shards):
            self.progress("write", self.shards.shard_bounds(shard)[0], self.shards.count)
            alive = state.alive.between(*self.shards.shard_bounds(shard))
            stops = state.set_stopped.between(*self.shards.shard_bounds(shard))
            curated: list[dict[str, Any]] = []
            stopped: dict[tuple[int, str], list[dict[str, Any]]] = {}
            for item in self.shards.read(shard):
                index = item.source_index
                if not isinstance(item, Conversation):
                    continue
                if index in wanted:
                    examples[index] = example(item)
                if index in control_at:
                    item.meta = control[control_at[index]].meta
                    control_records[control_at[index]] = item.to_record()
                if (row := alive.find(index)) is not None:
                    item.meta = alive.meta(row)
                    curated.append(item.to_record())
                elif (row := stops.records.find(index)) is not None:
                    item.meta = stops.records.meta(row)
                    reasons = [stops.reasons[stops.reason[row]]]
                    if stops.review[row]:
                        line, outcome = review_record(item, reasons), "review"
                    else:
                        extra = rejection_extra(item.meta)
                        line, outcome = rejection_record(Rejection(index, reasons, item.raw, extra=extra)), "rejected"
                    stopped.setdefault((int(stops.phase[row]), outcome), []).append(line)
            write_part(self.out / PARTS / "output" / f"shard{shard:06d}.curated.jsonl", iter(curated))
            for phase in set_phases:
                for outcome in ("rejected", "review"):
                    write_part(part_path(self.out, phase, shard, outcome), iter(stopped.get((phase, outcome), [])))
        self.progress("write", self.shards.count, self.shards.count)
        merge_parts(self.out)
        control_path = self.out / "control.jsonl"
        if control:
            missing = [c.source_index for c, r in zip(control, control_records, strict=True) if r is None]
            if missing:
                raise AccountingError(f"control records not found in the input: {missing[:5]}")
            write_part(control_path, (r for r in control_records if r is not None))
        else:
            control_path.unlink(missing_ok=True)  # a control left by an earlier run with a selection would mislead
        return examples

    def clean_up(self) -> None:
        """After the outputs are checked: the parts and the saved phases are no longer needed."""
        shutil.rmtree(self.out / PARTS, ignore_errors=True)
        shutil.rmtree(self._stage_dir(), ignore_errors=True)


def _add_examples(target: dict[str, list[dict[str, Any]]], new: dict[str, list[dict[str, Any]]]) -> None:
    for reason, entries in new.items():
        bucket = target.setdefault(reason, [])
        bucket += entries[: EXAMPLES_PER_REASON - len(bucket)]


def curate_in_shards(
    cfg: CurationRunConfig,
    shards: InputShards,
    tokenizer: TokenizerView | None = None,
    on_progress: Progress | None = None,
    workers: int = 1,
    engine_class: type[StreamingEngine] = StreamingEngine,
) -> tuple[CurationResult, StreamingEngine]:
    """Curate the input `shards` into `cfg.output_dir` phase by phase; the outputs are written (not yet checked)."""
    from .pipeline import CurationResult, build_steps, run_notes, run_stats, selection_control

    progress = on_progress or (lambda stage, done, total: None)
    steps, labels, skipped = build_steps(cfg.curation, tokenizer, records=shards.count)
    engine = engine_class(cfg, steps, labels, shards, workers=workers, on_progress=progress)
    run, state = engine.run()
    stats = run_stats(run, steps)
    control = selection_control(steps)
    near = next((s for s in steps if isinstance(s, NearDedup)), None)
    samples = [members[:4] for members in near.cluster_sources[:10]] if near is not None else []
    blank = {e["source_index"] for entries in run.examples.values() for e in entries if not e.get("prompt")}
    texts = engine.write_outputs(state, control, {i for members in samples for i in members} | blank)
    stats["dup_clusters"] = [[texts[i] for i in members if i in texts] for members in samples]
    for entries in run.examples.values():
        entries[:] = [texts.get(e["source_index"], e) if not e.get("prompt") else e for e in entries]
    return CurationResult(run, stats, run_notes(cfg.curation, steps, skipped, tokenizer), control), engine
