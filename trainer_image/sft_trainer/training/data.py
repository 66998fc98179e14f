"""Dataset -> verified train and eval samples, with every rejection counted and written.

Order of operations: read the dataset (format rejects are kept), split the
conversations into train and eval with the run's seed, build and verify
samples for each split, then mix the refusal set into the *train* split at the
configured ratio. Every record that is not trained on is written to
`rejected_samples.jsonl` with its reason and source_index; nothing is dropped
silently, and `data_split.json` lists by source_index where every record went
(train, eval, rejected): checked here, and by anyone reading the outputs.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..config import TrainingConfig
from ..formats import Conversation, DatasetReadError, RejectedRecord, read_dataset
from ..runconfig import ConfigError
from .masking import Rejection, Sample, SampleBuilder

REJECTED_FILE = "rejected_samples.jsonl"
SPLIT_FILE = "data_split.json"


class AccountingError(RuntimeError):
    """A dataset record is in none of train, eval and rejected, or in more than one: a bug, never a data problem."""


@dataclass
class SplitStats:
    """Token figures of one split, for the report and `sftctl lint`."""

    samples: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    truncated: int = 0

    def add(self, sample: Sample) -> None:
        self.samples += 1
        self.tokens += len(sample.input_ids)
        self.trained_tokens += sample.num_trained
        self.truncated += int(sample.truncated)

    def as_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "tokens": self.tokens,
            "trainedTokens": self.trained_tokens,
            "trainedFraction": round(self.trained_tokens / self.tokens, 4) if self.tokens else 0.0,
            "truncated": self.truncated,
        }


@dataclass
class PreparedData:
    train: list[Sample]
    eval: list[Sample]
    train_conversations: list[Conversation]
    """The user's training conversations (no refusals), for the memorisation probe."""
    eval_conversations: list[Conversation]
    records_read: int = 0
    refusals_mixed: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    train_stats: SplitStats = field(default_factory=SplitStats)
    eval_stats: SplitStats = field(default_factory=SplitStats)

    def summary(self) -> dict[str, Any]:
        return {
            "recordsRead": self.records_read,
            "trainSamples": len(self.train),
            "evalSamples": len(self.eval),
            "refusalsMixed": self.refusals_mixed,
            "rejected": sum(self.rejected_by_reason.values()),
            "rejectedByReason": dict(sorted(self.rejected_by_reason.items())),
            "train": self.train_stats.as_dict(),
            "eval": self.eval_stats.as_dict(),
        }


def read_conversations(path: str, format: str) -> tuple[list[Conversation], list[RejectedRecord]]:
    """All records of a dataset file, as conversations and format rejects. A missing or unreadable file is a ConfigError."""
    # Only a missing file "does not exist": exists() says so of a symbolic link
    # loop too, whose real problem the reader names.
    try:
        os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"dataset: {path} does not exist") from None
    except OSError:
        pass
    conversations: list[Conversation] = []
    rejects: list[RejectedRecord] = []
    try:
        for item in read_dataset(path, format):
            (conversations if isinstance(item, Conversation) else rejects).append(item)  # type: ignore[arg-type]
    except DatasetReadError as err:
        raise ConfigError(f"dataset: {err}") from err
    return conversations, rejects


def split_conversations(
    conversations: list[Conversation], eval_fraction: float, seed: int
) -> tuple[list[Conversation], list[Conversation]]:
    """Seeded shuffle, then the first round(fraction * n) go to eval (at least one when the fraction is > 0 and n >= 2)."""
    order = list(conversations)
    random.Random(seed).shuffle(order)
    n_eval = round(eval_fraction * len(order))
    if eval_fraction > 0 and n_eval == 0 and len(order) >= 2:
        n_eval = 1
    return order[n_eval:], order[:n_eval]


def load_refusals(dataset: str | None) -> list[Conversation]:
    """The refusal set: a user file, or the built-in one (resources/refusals.jsonl)."""
    if dataset:
        conversations, _ = read_conversations(dataset, "auto")
        return conversations
    text = resources.files("sft_trainer.resources").joinpath("refusals.jsonl").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    return [Conversation.from_record({**json.loads(line), "source_index": i}) for i, line in enumerate(lines)]


def refusal_count(ratio: float, train_records: int, available: int) -> int:
    """How many refusals make `ratio` of the mixed training set (capped by what is available)."""
    if ratio <= 0 or train_records == 0:
        return 0
    wanted = round(ratio * train_records / (1 - ratio))
    return min(max(wanted, 1), available)


def _json_line(record: dict[str, Any]) -> str:
    """One JSON line; readable UTF-8 where possible, ASCII escapes where the record holds invalid UTF-8."""
    line = json.dumps(record, ensure_ascii=False, default=str)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        # Invalid UTF-8 read from the input survives as lone surrogates, which
        # a UTF-8 file cannot hold; escaped, the original bytes stay visible.
        line = json.dumps(record, ensure_ascii=True, default=str)
    return line


class RejectWriter:
    """Appends rejected records to rejected_samples.jsonl and counts them per reason."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.counts: Counter[str] = Counter()
        self.dataset_indices: list[int] = []
        """source_index of every rejected dataset record (refusal-set rejections are not dataset records)."""
        self._handle = path.open("w", encoding="utf-8") if path else None

    def write(self, source_index: int, reasons: list[str], detail: str, raw: Any, origin: str) -> None:
        for reason in reasons:
            self.counts[reason] += 1
        if origin == "dataset":
            self.dataset_indices.append(source_index)
        if self._handle:
            record = {
                "source_index": source_index,
                "origin": origin,
                "reasons": reasons,
                "detail": detail,
                "record": raw,
            }
            self._handle.write(_json_line(record) + "\n")

    def close(self) -> None:
        if self._handle:
            self._handle.close()


def build_split(
    builder: SampleBuilder, conversations: Iterable[Conversation], rejects: RejectWriter, origin: str, stats: SplitStats
) -> list[Sample]:
    samples: list[Sample] = []
    for item in builder.build_many(conversations):
        if isinstance(item, Rejection):
            rejects.write(item.source_index, [item.reason], item.detail, item.raw, origin)
        else:
            samples.append(item)
            stats.add(item)
    return samples


def account_for_records(records_read: int, places: dict[str, list[int]]) -> dict[str, Any]:
    """Where every dataset record went, by source_index; raises AccountingError if one is lost or doubled."""
    seen = Counter(index for indices in places.values() for index in indices)
    expected = set(range(records_read))
    problems = []
    if doubled := sorted(index for index, times in seen.items() if times > 1):
        problems.append(f"{len(doubled)} records are in two places, first source_index {doubled[:5]}")
    if missing := sorted(expected - seen.keys()):
        problems.append(f"{len(missing)} records are nowhere, first source_index {missing[:5]}")
    if unknown := sorted(seen.keys() - expected):
        problems.append(f"source_index values that were never read: {unknown[:5]}")
    if problems:
        raise AccountingError("; ".join(problems))
    return {"recordsRead": records_read, **{place: sorted(indices) for place, indices in places.items()}}


def prepare_data(
    dataset: str, format: str, training: TrainingConfig, builder: SampleBuilder, output_dir: Path | None
) -> PreparedData:
    """Read, split, build, verify and mix; writes rejected_samples.jsonl and data_split.json into output_dir."""
    conversations, format_rejects = read_conversations(dataset, format)
    rejects = RejectWriter(output_dir / REJECTED_FILE if output_dir else None)
    try:
        for bad in format_rejects:
            rejects.write(bad.source_index, bad.reasons, bad.detail, bad.raw, "dataset")
        train_conv, eval_conv = split_conversations(conversations, training.eval_fraction, training.seed)
        prepared = PreparedData([], [], train_conv, eval_conv, records_read=len(conversations) + len(format_rejects))
        prepared.train = build_split(builder, train_conv, rejects, "dataset", prepared.train_stats)
        prepared.eval = build_split(builder, eval_conv, rejects, "dataset", prepared.eval_stats)
        # Keep only the conversations that became samples, for the memorisation probe.
        kept = {s.source_index for s in prepared.train}
        prepared.train_conversations = [c for c in train_conv if c.source_index in kept]
        kept_eval = {s.source_index for s in prepared.eval}
        prepared.eval_conversations = [c for c in eval_conv if c.source_index in kept_eval]
        split = account_for_records(
            prepared.records_read,
            {
                # Lists, not the sets above: a record built twice must show up as doubled.
                "train": [s.source_index for s in prepared.train],
                "eval": [s.source_index for s in prepared.eval],
                "rejected": rejects.dataset_indices,
            },
        )
        if output_dir:
            (output_dir / SPLIT_FILE).write_text(json.dumps(split, separators=(",", ":")), encoding="utf-8")
        if training.refusal.enabled and prepared.train:
            pool = load_refusals(training.refusal.dataset)
            wanted = refusal_count(training.refusal.ratio, len(prepared.train), len(pool))
            chosen = random.Random(training.seed + 1).sample(pool, wanted)
            refusals = build_split(builder, chosen, rejects, "refusals", prepared.train_stats)
            prepared.refusals_mixed = len(refusals)
            prepared.train.extend(refusals)
    finally:
        rejects.close()
    prepared.rejected_by_reason = rejects.counts
    if not prepared.train:
        raise ConfigError(
            f"dataset: no trainable record in {dataset} "
            f"(rejections: {dict(rejects.counts) or 'none'}; see {REJECTED_FILE})"
        )
    return prepared
