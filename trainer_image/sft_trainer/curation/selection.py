"""The best N records, and their random control.

From the records that passed hygiene, keep `budget` (or `fraction` of them),
task by task in the pool's own task mix, best score first. With
`diverse-quality`, a record too similar (cosine of prompt embeddings above
the threshold) to one already kept is passed over while others remain
(Deita's diversity filter); if a task runs out of dissimilar records, the
passed-over ones fill its quota in score order, so the budget is always met.

Scores by strategy:
- `quality`, `diverse-quality`: `scores.quality` (the pipeline's quality score);
- `ifd`: the scorer LM's instruction-following difficulty (Cherry): a high
  IFD means the prompt helps the model little with the response, so the
  record teaches the most, but IFD >= 1 means the prompt does not help at
  all (the response does not follow from it) and those rank last;
- `random`: a seeded shuffle.

Whatever the strategy, `control` is a random subset of the same size and the
same per-task counts, from the same pool, seeded by `seed`: training on it is
the A/B that tells whether the selection beat chance on your model (a 2025
re-run of selection methods on ~1M pools found most do not).

Every record that is not selected is rejected as `selection.not_selected`
with its score and rank (`meta["selection"]`), so it stays accounted for.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..formats import Conversation
from .base import SetStep

STRATEGIES = ("diverse-quality", "quality", "ifd", "random")


def task_quotas(counts: dict[str, int], total: int) -> dict[str, int]:
    """`total` split over tasks in proportion to `counts` (largest remainder; ties by task name)."""
    pool = sum(counts.values())
    if pool == 0:
        return {}
    exact = {task: total * n / pool for task, n in counts.items()}
    quotas = {task: min(counts[task], math.floor(share)) for task, share in exact.items()}
    by_remainder = sorted(counts, key=lambda t: (-(exact[t] - math.floor(exact[t])), t))
    while sum(quotas.values()) < total:
        for task in by_remainder:
            if quotas[task] < counts[task] and sum(quotas.values()) < total:
                quotas[task] += 1
    return quotas


class Selection(SetStep):
    name = "selection"
    reads_text = False
    reads_features = ("prompt_emb",)

    def __init__(
        self,
        *,
        budget: int | None = None,
        fraction: float | None = None,
        strategy: str = "diverse-quality",
        diversity_threshold: float = 0.9,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if (budget is None) == (fraction is None):
            raise ValueError("selection needs exactly one of budget and fraction")
        if strategy not in STRATEGIES:
            raise ValueError(f"selection.strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
        self.budget, self.fraction = budget, fraction
        self.strategy = strategy
        self.diversity_threshold = diversity_threshold
        self.seed = seed
        self.control: list[Conversation] = []
        self.selected = 0
        self.pool = 0
        self.passed_over_for_diversity = 0

    def report(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "budget": self.target,
            "pool": self.pool,
            "selected": self.selected,
            "control": len(self.control),
            "controlSeed": self.seed,
            "diversityThreshold": self.diversity_threshold if self.strategy == "diverse-quality" else None,
            "passedOverForDiversity": self.passed_over_for_diversity,
        }

    @property
    def target(self) -> int:
        if self.budget is not None:
            return min(self.budget, self.pool)
        return min(self.pool, round((self.fraction or 0.0) * self.pool))

    def select(self, convs: Sequence[Conversation]) -> dict[int, str]:
        self.pool = len(convs)
        by_task: dict[str, list[int]] = {}
        for i, conv in enumerate(convs):
            by_task.setdefault(conv.meta.get("task", "other"), []).append(i)
        quotas = task_quotas({t: len(m) for t, m in by_task.items()}, self.target)
        scores = self._scores(convs)
        kept: set[int] = set()
        for task in sorted(by_task):
            ranked = sorted(by_task[task], key=lambda i: (-scores[i], convs[i].source_index))
            kept.update(self._pick(ranked, quotas[task], convs))
        rank_of = {i: r for r, i in enumerate(sorted(range(len(convs)), key=lambda i: (-scores[i], i)), start=1)}
        for i, conv in enumerate(convs):
            conv.meta["selection"] = {"score": round(scores[i], 4), "rank": rank_of[i], "selected": i in kept}
        self.selected = len(kept)
        self.control = self._control(convs, by_task, quotas)
        return {i: "not_selected" for i in range(len(convs)) if i not in kept}

    def _scores(self, convs: Sequence[Conversation]) -> list[float]:
        if self.strategy == "random":
            rng = random.Random(f"{self.seed}:selection")
            return [rng.random() for _ in convs]
        if self.strategy == "ifd":
            ifds = [conv.meta.get("scores", {}).get("ifd") for conv in convs]
            if any(v is None for v in ifds):
                self.notes.append("selection by IFD needs the scorer LM; records without an IFD rank last")
            # IFD >= 1 (or unknown, or NaN): the prompt does not help; those rank below every useful record.
            return [v if isinstance(v, int | float) and math.isfinite(v) and v < 1 else -1.0 for v in ifds]
        return [float(conv.meta.get("scores", {}).get("quality", 0.0)) for conv in convs]

    def _pick(self, ranked: list[int], quota: int, convs: Sequence[Conversation]) -> list[int]:
        if self.strategy != "diverse-quality":
            return ranked[:quota]
        vectors = [convs[i].features.get("prompt_emb") for i in ranked]
        if any(v is None for v in vectors):
            note = "diverse-quality selection needs prompt embeddings (the embedder step); selected by quality alone"
            if note not in self.notes:
                self.notes.append(note)
            return ranked[:quota]
        chosen: list[int] = []
        passed_over: list[int] = []
        kept_vectors = np.empty((quota, len(vectors[0]) if vectors else 0), dtype=np.float32)
        for i, vector in zip(ranked, vectors, strict=True):
            if len(chosen) == quota:
                break
            # Cost: one (kept x dim) product per candidate, fine for budgets up to ~10^4 per task.
            if chosen and float(np.max(kept_vectors[: len(chosen)] @ vector)) > self.diversity_threshold:
                passed_over.append(i)
                continue
            kept_vectors[len(chosen)] = vector
            chosen.append(i)
        self.passed_over_for_diversity += len(passed_over)
        return chosen + passed_over[: quota - len(chosen)]

    def _control(
        self, convs: Sequence[Conversation], by_task: dict[str, list[int]], quotas: dict[str, int]
    ) -> list[Conversation]:
        rng = random.Random(f"{self.seed}:control")
        picked = [i for task in sorted(by_task) for i in rng.sample(by_task[task], quotas[task])]
        return [convs[i] for i in sorted(picked)]
