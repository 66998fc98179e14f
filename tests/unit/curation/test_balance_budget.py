"""Balancing a small curated set stops at its drop budget instead of gutting it."""

from __future__ import annotations

from collections import Counter

from sft_trainer.curation.balance import Balance, budget_cap, entropy_cap
from sft_trainer.formats import Conversation, Message


def conversations(counts: dict[str, int]) -> list[Conversation]:
    convs = []
    for task, count in counts.items():
        for _ in range(count):
            convs.append(
                Conversation(
                    [Message("user", f"{task} question {len(convs)}"), Message("assistant", "answer " * 5)],
                    source_index=len(convs),
                    meta={"task": task},
                )
            )
    return convs


def test_budget_cap_is_the_smallest_cap_within_budget() -> None:
    counts = Counter({"open_qa": 80, "coding": 10, "reasoning": 10})
    cap = budget_cap(counts, 10)
    assert sum(max(0, c - cap) for c in counts.values()) <= 10
    assert sum(max(0, c - (cap - 1)) for c in counts.values()) > 10


def test_entropy_target_is_bounded_by_max_drop_fraction() -> None:
    mix = {"open_qa": 80, "coding": 10, "reasoning": 10}
    unbounded = Balance(target_entropy=0.95, max_drop_fraction=1.0).select(conversations(mix))
    bounded = Balance(target_entropy=0.95, max_drop_fraction=0.1).select(conversations(mix))
    assert entropy_cap(Counter(mix), 0.95, 3) is not None
    assert len(unbounded) > 10
    assert len(bounded) == 10 and set(bounded.values()) == {"over_represented_task"}


def test_explicit_mix_is_not_bounded() -> None:
    mix = {"open_qa": 80, "coding": 10, "reasoning": 10}
    dropped = Balance(target_mix={"open_qa": 0.34, "coding": 0.33, "reasoning": 0.33}, max_drop_fraction=0.1).select(
        conversations(mix)
    )
    assert len(dropped) > 10
