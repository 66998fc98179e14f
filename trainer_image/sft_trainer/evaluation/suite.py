"""What every suite returns: per-prompt figures (for the bootstrap), counted skips, examples."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Figure:
    """One figure as a ratio of per-prompt sums (see stats.py), with the prompt ids for pairing."""

    key: str
    """camelCase name in eval_report.json, e.g. promptLevelStrict."""
    label: str
    """What a person reads in the report."""
    ids: list[str]
    numerators: list[float]
    denominators: list[float] | None = None
    """None: a plain mean over prompts."""
    higher_is_better: bool = True
    unit: str = "rate"
    """rate (shown as a percentage) or nats."""

    def pick(self, keep: list[str]) -> tuple[list[float], list[float] | None]:
        """Numerators and denominators of the prompts in `keep`, in that order."""
        position = {pid: i for i, pid in enumerate(self.ids)}
        num = [self.numerators[position[pid]] for pid in keep]
        den = None if self.denominators is None else [self.denominators[position[pid]] for pid in keep]
        return num, den


@dataclass
class SuiteResult:
    suite: str
    figures: list[Figure] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    """Reason code -> prompts (or records) not scored."""
    counts: dict[str, int | float] = field(default_factory=dict)
    """Facts about the run: prompts scored, replies that hit the token cap, seconds..."""
    examples: list[dict[str, Any]] = field(default_factory=list)
    """A few {id, prompt, response, ...} for the report."""
    error: str | None = None
    """Set when the whole suite could not run (missing data file...): the report shows it, nothing else fails."""


def skipped_suite(suite: str, reason: str) -> SuiteResult:
    return SuiteResult(suite=suite, error=reason)
