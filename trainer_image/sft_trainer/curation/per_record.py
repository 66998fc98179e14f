"""The per-record steps: which ones a configuration enables, and judging every record with them.

Each record is judged on its own (length bounds, validation, task label,
quality filters, scores), so the records are cut into chunks and judged in
forked worker processes. A worker inherits the records and the filters from
the parent (fork: nothing is pickled on the way in) and sends back only the
verdicts and its filters' counters. The verdicts come back in input order, so
every output is the same whatever the number of workers (a test checks).
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.curation import CurationConfig
from ..formats import Conversation
from .artifacts import Artifacts
from .base import Filter, Step
from .decontamination import Decontamination
from .gptisms import Gptisms, response_density
from .length import Length
from .repetition import Repetition
from .tasks import label
from .text import last_response
from .validation import Validation

CHUNK = 2000
"""Records per task: large enough that sending verdicts back is cheap, small enough for live progress."""
MIN_RECORDS_PER_WORKER = 5000
"""Below this, starting processes costs more than it saves."""


def quality_score(conv: Conversation, max_density: float) -> float:
    """In [0, 1]: fuller answers and fewer GPT-isms score higher. Ranks survivors in dedup and balance."""
    words = len(last_response(conv).split())
    fullness = min(1.0, math.log1p(words) / math.log1p(300))
    density = conv.meta.get("scores", {}).get("gptism_density", 0.0)
    style = 1.0 - min(1.0, density / max_density) if max_density > 0 else 1.0
    return round(0.6 * fullness + 0.4 * style, 4)


def build_record_filters(cfg: CurationConfig) -> tuple[Validation | None, list[Filter]]:
    """The per-record steps the spec enables: validation, then the quality filters."""
    validation = (
        Validation(
            reject_placeholders=cfg.validation.reject_placeholders,
            reject_unseeable_inputs=cfg.validation.reject_unseeable_inputs,
        )
        if cfg.validation.enabled
        else None
    )
    filters: list[Filter] = []
    if cfg.length.enabled:
        filters.append(
            Length(
                min_prompt_chars=cfg.length.min_prompt_chars,
                max_prompt_chars=cfg.length.max_prompt_chars,
                min_response_chars=cfg.length.min_response_chars,
                max_response_chars=cfg.length.max_response_chars,
            )
        )
    if cfg.repetition.enabled:
        filters.append(
            Repetition(
                max_duplicate_line_fraction=cfg.repetition.max_duplicate_line_fraction,
                max_duplicate_ngram_fraction=cfg.repetition.max_duplicate_ngram_fraction,
                max_top_ngram_share=cfg.repetition.max_top_ngram_share,
                exempt_code_and_lists=cfg.repetition.exempt_code_and_lists,
            )
        )
    if cfg.artifacts.enabled:
        filters.append(Artifacts())
    if cfg.gptisms.enabled:
        filters.append(Gptisms(max_density=cfg.gptisms.max_density, prior_words=cfg.gptisms.prior_words))
    if cfg.decontamination.eval_sets:
        filters.append(Decontamination(cfg.decontamination.eval_sets, ngram=cfg.decontamination.ngram))
    return validation, filters


@dataclass
class Verdict:
    """What the per-record filters decided about one record."""

    reasons: list[str]
    """Empty: the record goes on to the whole-set steps."""
    validated: bool
    """It passed the length bounds and validation (so it counts in the before-curation statistics)."""
    meta: dict[str, Any]
    """The record's meta after judging: task label and scores."""


class RecordJudge:
    """The per-record steps of a configuration, applied to one record at a time."""

    def __init__(self, cfg: CurationConfig) -> None:
        self.cfg = cfg
        self.validation: Validation | None
        self.filters: list[Filter]
        self.validation, self.filters = build_record_filters(cfg)
        self.length = next((f for f in self.filters if isinstance(f, Length)), None)

    @property
    def steps(self) -> list[Step]:
        return ([self.validation] if self.validation else []) + list(self.filters)

    def judge(self, conv: Conversation) -> Verdict:
        # Over-long records stop here: every other filter scans the whole text,
        # and one 100 MB record took 45 s and 3 GB of memory in them.
        if self.length is not None and self.length.exceeds(conv):
            too_long = self.length(conv)
            if too_long:
                return Verdict([too_long], False, conv.meta)
        if self.validation is not None:
            reason = self.validation(conv)
            if reason:
                return Verdict([reason], False, conv.meta)
        conv.meta["task"] = label(conv)
        reasons = [r for r in (f(conv) for f in self.filters) if r]
        scores = conv.meta.setdefault("scores", {})
        if "gptism_density" not in scores:
            scores["gptism_density"] = round(response_density(conv, self.cfg.gptisms.prior_words), 3)
        scores["quality"] = quality_score(conv, self.cfg.gptisms.max_density)
        return Verdict(reasons, True, conv.meta)

    def counters(self) -> list[tuple[int, Counter[str]]]:
        return [(step.seen, Counter(step.drops)) for step in self.steps]

    def reset_counters(self) -> None:
        for step in self.steps:
            step.seen, step.drops = 0, Counter()

    def add_counters(self, counters: list[tuple[int, Counter[str]]]) -> None:
        for step, (seen, drops) in zip(self.steps, counters, strict=True):
            step.seen += seen
            step.drops.update(drops)


# What a forked worker judges: set by the parent just before the pool starts.
_WORK: tuple[RecordJudge, Sequence[Conversation]] | None = None


def _judge_chunk(bounds: tuple[int, int]) -> tuple[list[Verdict], list[tuple[int, Counter[str]]]]:
    assert _WORK is not None, "a worker runs only inside judge_all"
    judge, convs = _WORK
    judge.reset_counters()
    verdicts = [judge.judge(conv) for conv in convs[bounds[0] : bounds[1]]]
    return verdicts, judge.counters()


def judge_all(
    judge: RecordJudge, convs: Sequence[Conversation], workers: int, progress: Callable[[int], None]
) -> list[Verdict]:
    """A verdict per record, in input order; the records' meta and the steps' counters are updated."""
    global _WORK
    chunks = [(start, min(start + CHUNK, len(convs))) for start in range(0, len(convs), CHUNK)]
    workers = min(workers, len(convs) // MIN_RECORDS_PER_WORKER)
    verdicts: list[Verdict] = []
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        for start, end in chunks:
            progress(start)
            verdicts += [judge.judge(conv) for conv in convs[start:end]]
        return verdicts
    _WORK = (judge, convs)
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for (start, _), (chunk, counters) in zip(chunks, pool.imap(_judge_chunk, chunks), strict=True):
                progress(start)
                verdicts += chunk
                judge.add_counters(counters)
    finally:
        _WORK = None
    for conv, verdict in zip(convs, verdicts, strict=True):
        conv.meta = verdict.meta  # the workers judged copies
    return verdicts


def usable_cpus() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota (a pod's CPU limit)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota visible: the affinity is the limit
    return cpus
