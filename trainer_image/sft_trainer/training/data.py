"""Dataset -> verified train and eval samples, with every rejection counted and written.

Order of operations: read the dataset (format rejects are kept), split the
conversations into train and eval with the run's seed, build and verify
samples for each split, then mix the refusal set into the *train* split at the
configured ratio. Every record that is not trained on is written to
`rejected_samples.jsonl` with its reason; nothing is dropped silently.
"""

from __future__ import annotations

import json
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
    if not Path(path).exists():
        raise ConfigError(f"dataset: {path} does not exist")
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


class RejectWriter:
    """Appends rejected records to rejected_samples.jsonl and counts them per reason."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.counts: Counter[str] = Counter()
        self._handle = path.open("w", encoding="utf-8") if path else None

    def write(self, source_index: int, reasons: list[str], detail: str, raw: Any, origin: str) -> None:
        for reason in reasons:
            self.counts[reason] += 1
        if self._handle:
            record = {
                "source_index": source_index,
                "origin": origin,
                "reasons": reasons,
                "detail": detail,
                "record": raw,
            }
            self._handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")

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


def prepare_data(
    dataset: str, format: str, training: TrainingConfig, builder: SampleBuilder, output_dir: Path | None
) -> PreparedData:
    """Read, split, build, verify and mix; writes rejected_samples.jsonl into output_dir."""
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
