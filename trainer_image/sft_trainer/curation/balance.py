"""Step 10, balance: down-sample over-represented task types until the mix reaches a target.

Two targets, as the spec chooses:
- `target_entropy`: the largest per-type cap c such that keeping min(count, c)
  of every type gives a normalised entropy >= the target (entropy only grows
  as c shrinks, so c is found by bisection). Nothing is cut when the mix is
  already diverse enough.
- `target_mix`: explicit shares; the largest total N with N * share <= count
  for every type in the mix; types outside the mix are dropped. A type of the
  mix with no records left gives its share to the others (and a note).
Within a type the highest-quality records are kept, ties by file order.

`max_drop_fraction` bounds what an entropy target may cost: the cap never
goes below the one that drops that share of the records, so balancing a
small, carefully curated set stops short of the target instead of gutting it.
An explicit `target_mix` is the user's exact choice and is not bounded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from ..formats import Conversation
from .base import SetStep
from .dedup import quality
from .tasks import normalised_entropy


def entropy_cap(counts: Counter[str], target: float, categories: int) -> int | None:
    """Largest cap reaching `target` normalised entropy; None if no cap is needed."""
    if normalised_entropy(counts, categories) >= target:
        return None
    low, high = 1, max(counts.values())  # cap=1 is the most even mix reachable
    while low < high:
        mid = (low + high + 1) // 2
        capped = Counter({t: min(c, mid) for t, c in counts.items()})
        if normalised_entropy(capped, categories) >= target:
            low = mid
        else:
            high = mid - 1
    return low


def budget_cap(counts: Counter[str], max_drop: int) -> int:
    """Smallest cap that drops at most `max_drop` records."""
    low, high = 0, max(counts.values())
    while low < high:
        mid = (low + high) // 2
        if sum(max(0, c - mid) for c in counts.values()) <= max_drop:
            high = mid
        else:
            low = mid + 1
    return low


class Balance(SetStep):
    name = "balance"
    reads_text = False

    def __init__(
        self,
        *,
        target_entropy: float = 0.9,
        target_mix: dict[str, float] | None = None,
        categories: int | None = None,
        max_drop_fraction: float = 1.0,
    ) -> None:
        super().__init__()
        self.target_entropy = target_entropy
        self.max_drop_fraction = max_drop_fraction
        self.target_mix = target_mix
        self.categories = categories
        self.quota: dict[str, int] = {}

    def _shares_of_present_tasks(self, counts: Counter[str]) -> dict[str, float]:
        """The target shares of the tasks that have records, rescaled to sum to 1.

        A task of the mix with no records here must not zero every quota (the
        largest N with N * share <= count would be 0): its share goes to the others.
        """
        assert self.target_mix is not None
        missing = sorted(t for t, s in self.target_mix.items() if s > 0 and counts.get(t, 0) == 0)
        if missing:
            self.notes.append(
                f"balance.targetMix names {', '.join(missing)} with no records left at balancing: "
                "their share was spread over the other tasks of the mix"
            )
        share = {t: s for t, s in self.target_mix.items() if s > 0 and counts.get(t, 0) > 0}
        total = sum(share.values())
        return {t: s / total for t, s in share.items()}

    def select(self, convs: Sequence[Conversation]) -> dict[int, str]:
        by_task: dict[str, list[int]] = {}
        for i, conv in enumerate(convs):
            by_task.setdefault(conv.meta.get("task", "other"), []).append(i)
        counts = Counter({t: len(m) for t, m in by_task.items()})
        if not counts:
            return {}
        stopped: dict[int, str] = {}
        if self.target_mix:
            share = self._shares_of_present_tasks(counts)
            total = min(counts[t] / s for t, s in share.items()) if share else 0.0
            self.quota = {t: int(total * share.get(t, 0.0)) for t in counts}
        else:
            k = self.categories or len(counts)
            cap = entropy_cap(counts, self.target_entropy, k)
            if cap is not None:
                cap = max(cap, budget_cap(counts, int(self.max_drop_fraction * sum(counts.values()))))
            self.quota = {t: c if cap is None else min(c, cap) for t, c in counts.items()}
        for task, members in by_task.items():
            keep = self.quota.get(task, 0)
            if keep >= len(members):
                continue
            ranked = sorted(members, key=lambda i: (-quality(convs[i]), convs[i].source_index))
            code = "not_in_target_mix" if self.target_mix and task not in self.target_mix else "over_represented_task"
            for i in ranked[keep:]:
                stopped[i] = code
        return stopped
