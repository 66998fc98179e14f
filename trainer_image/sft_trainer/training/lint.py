"""The preflight behind `sftctl lint`: build every sample as training would, and summarise.

Nothing is trained and no model weights are loaded: only the tokenizer and
the chat template. The figures are the ones that catch broken SFT runs before
they start: how much is trained, what was truncated or rejected and why, and
which template and end-of-turn token are in use.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data import read_conversations
from .masking import (
    DOUBLE_BOS,
    IGNORE_INDEX,
    MISSING_BOS,
    MISSING_END_OF_TURN,
    NOTHING_TRAINED,
    RESPONSE_TRUNCATED,
    Rejection,
    Sample,
    SampleBuilder,
)
from .modeling import load_tokenizer
from .templates import resolve_template


@dataclass
class LintReport:
    template: str
    end_of_turn: str
    bos_token: str | None
    model_adds_bos: bool
    records: int = 0
    samples: list[Sample] = field(default_factory=list)
    """The first N built samples, for display."""
    built: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    longest: int = 0
    truncated: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    rejected_examples: list[Rejection] = field(default_factory=list)
    tokenizer: Any = field(default=None, repr=False)
    """The tokenizer used (to display tokens)."""

    @property
    def trained_fraction(self) -> float:
        return self.trained_tokens / self.tokens if self.tokens else 0.0

    @property
    def bos_violations(self) -> int:
        return self.rejected[DOUBLE_BOS] + self.rejected[MISSING_BOS]

    @property
    def eos_violations(self) -> int:
        return self.rejected[MISSING_END_OF_TURN] + self.rejected[RESPONSE_TRUNCATED]

    def summary(self) -> dict[str, Any]:
        return {
            "template": self.template,
            "endOfTurn": self.end_of_turn,
            "bosToken": self.bos_token,
            "records": self.records,
            "samples": self.built,
            "tokens": self.tokens,
            "trainedTokens": self.trained_tokens,
            "trainedFraction": round(self.trained_fraction, 4),
            "meanTokens": round(self.tokens / self.built, 1) if self.built else 0,
            "longest": self.longest,
            "truncated": self.truncated,
            "bosViolations": self.bos_violations,
            "eosViolations": self.eos_violations,
            "nothingTrained": self.rejected[NOTHING_TRAINED],
            "rejected": sum(self.rejected.values()),
            "rejectedByReason": dict(sorted(self.rejected.items())),
        }


def lint_dataset(
    dataset: str,
    model: str,
    *,
    format: str = "auto",
    template: str = "auto",
    loss_on: str = "assistant",
    max_seq_length: int = 2048,
    overlong: str = "reject",
    show: int = 5,
) -> LintReport:
    """Build every record of `dataset` with the tokenizer in `model`; keep the first `show` samples."""
    tokenizer = load_tokenizer(Path(model))
    chat_template = resolve_template(tokenizer, template)
    builder = SampleBuilder(
        tokenizer,
        chat_template,
        loss_on=loss_on,
        max_seq_length=max_seq_length,
        overlong=overlong,  # type: ignore[arg-type]
    )
    conversations, format_rejects = read_conversations(dataset, format)
    report = LintReport(
        chat_template.name, chat_template.end_of_turn, tokenizer.bos_token, builder.model_wants_bos, tokenizer=tokenizer
    )
    report.records = len(conversations) + len(format_rejects)
    for bad in format_rejects:
        report.rejected.update(bad.reasons)
    for item in builder.build_many(conversations):
        if isinstance(item, Rejection):
            report.rejected[item.reason] += 1
            if len(report.rejected_examples) < show:
                report.rejected_examples.append(item)
            continue
        report.built += 1
        report.tokens += len(item.input_ids)
        report.trained_tokens += item.num_trained
        report.longest = max(report.longest, len(item.input_ids))
        report.truncated += int(item.truncated)
        if len(report.samples) < show:
            report.samples.append(item)
    return report


def token_pieces(tokenizer: Any, sample: Sample) -> list[tuple[str, bool]]:
    """(text of each token, trained?) for display."""
    return [
        (tokenizer.decode([token]), label != IGNORE_INDEX)
        for token, label in zip(sample.input_ids, sample.labels, strict=True)
    ]
