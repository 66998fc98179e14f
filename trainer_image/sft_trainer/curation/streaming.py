"""One pod, bounded memory: the step list run over the input shard by shard, only compact features kept.

The step list (`pipeline.build_steps`) splits into phases: a *pass* is a run
of per-record stages (filters and annotators), a *set phase* one `SetStep`.

- A pass reads the input again, shard by shard (`shards.InputShards`), gives
  each record still in the running back the `meta` and features it had, runs
  the pass's stages on the shard (`phases.run_pass_on_shard`), writes the
  records it stops to part files at once (with their text, `parts.py`), asks
  the set steps that come next to `prepare` their features while the texts
  are there, and keeps of each survivor only a compact record
  (`compact.CompactRecords`, columns): `meta`, the features a later set step
  reads, the response's word count, and the messages only when a later set
  step reads text (semantic dedup, rare tokens).
- A set phase runs its step on the compact survivors, as the one-pod runner
  does: the step reads them as a sequence of records built as it reads them.
- The output pass reads the input a last time and writes the curated records,
  those a set step stopped and the selection's control, with their text.

The part files are merged into the same five outputs the in-memory pipeline
writes (rejected sorted by source_index, curated in input order), and the
caller checks the accounting on the written files as before. Peak memory is
one shard of texts plus the compact records: it grows with the features, not
with the texts.

Resume (`resume.py`): when a phase is finished its state (the compact records, where every
stopped record went, the figures) is saved under `.stages/` in the output
folder with a marker; a restarted run with the same input and configuration
starts after the last finished phase. The engines (this module's
`StreamingEngine` and `ray_engine.RayEngine`) share all of it and differ only
in how a pass's shards are run and how duplicates are grouped.
"""

from __future__ import annotations

import json
import pickle
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config.curation import CurationRunConfig
from ..formats import Conversation
from .base import SetStep, Step
from .compact import CompactRecords
from .dedup import NearDedup
from .parts import PARTS, merge_parts, part_path, rejection_record, review_record, write_part
from .phases import Keep, Phase, ShardOutcome, keep_after, plain, plan_phases, run_pass_on_shard
from .resume import STAGES, State, StateUnpickler, fingerprint, step_state
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
from .shards import InputShards

if TYPE_CHECKING:
    from .pipeline import CurationResult
    from .tokens import TokenizerView


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
                    state: State = StateUnpickler(handle).load()
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
        """The phase's set step on the compact survivors. The records it stops are routed as columns (a dedup
        phase can stop a quarter of a large set: a record and a Rejection built for each held ~1 KB a record);
        the output pass writes them with their text and meta from `state.set_stopped`."""
        step = phase.steps[0]
        label = self.labels.get(id(step), step.name)
        assert isinstance(step, SetStep)
        records = state.alive
        self.progress(label, 0, len(records))
        verdicts = step(records)
        self.progress(label, len(records), len(records))
        stopped = np.array(sorted(verdicts), dtype=np.int64)
        reasons = [verdicts[i] for i in stopped.tolist()]
        state.set_stopped = state.set_stopped.plus(
            phase.index,
            records.take(stopped, frozenset(), text=False),
            np.full(len(stopped), step.outcome == "review"),
            reasons,
        )
        if step.outcome == "review":
            state.review += [(plain(records[i]), [reason]) for i, reason in zip(stopped.tolist(), reasons, strict=True)]
        else:
            state.rejected.add_rows(records.source_index[stopped], [(reason,) for reason in reasons])
            _add_stopped_examples(state.examples, records, stopped.tolist(), reasons)
        kept = np.setdiff1d(np.arange(len(records)), stopped)
        state.funnel.append((label, len(kept)))
        keep = keep_after(self.phases, phase.index, self.steps)
        state.alive = records.take(kept, keep.features, keep.text, in_place=True)

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


def _add_stopped_examples(
    target: dict[str, list[dict[str, Any]]], records: CompactRecords, rows: list[int], reasons: list[str]
) -> None:
    """The report's examples of a set phase's stopped rows: the first few of each reason, as the runner picks them
    (their text, when the records hold none, is read in the output pass). Only those rows are built."""
    for row, reason in zip(rows, reasons, strict=True):
        bucket = target.setdefault(reason, [])
        if len(bucket) < EXAMPLES_PER_REASON:
            bucket.append(example(records[row]))


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
