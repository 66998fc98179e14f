"""Exact and near deduplication, and task balancing, on real Alpaca records."""

from __future__ import annotations

import random
import re
from collections import Counter

import numpy as np
import pytest

from sft_trainer.curation.balance import Balance, entropy_cap
from sft_trainer.curation.dedup import ExactDedup, NearDedup, conversation_text, equal_key_groups, lsh_bands
from sft_trainer.curation.tasks import normalised_entropy
from sft_trainer.formats import Conversation, Message


def make(records: list[dict], start: int = 0) -> list[Conversation]:
    out = []
    for i, r in enumerate(records):
        prompt = r["instruction"] + (f"\n\n{r['input']}" if r["input"] else "")
        out.append(
            Conversation(
                [Message("user", prompt), Message("assistant", r["output"])], start + i, {"scores": {"quality": 0.5}}
            )
        )
    return out


def perturb(text: str, rng: random.Random) -> str:
    """Change between one word and one word in 12: from near to merely similar, never exact."""
    words = text.split(" ")
    for _ in range(rng.randint(1, max(1, len(words) // 12))):
        words[rng.randrange(len(words))] = "tweaked"
    return " ".join(words)


def jaccard(a: Conversation, b: Conversation, n: int = 5) -> float:
    def grams(c: Conversation) -> set[tuple[str, ...]]:
        words = re.findall(r"\w+", conversation_text(c).lower())
        return set(zip(*(words[k:] for k in range(n)), strict=False))

    ga, gb = grams(a), grams(b)
    return len(ga & gb) / len(ga | gb)


def test_near_duplicates_of_long_records_are_clustered_and_the_best_kept(alpaca: list[dict]) -> None:
    rng = random.Random(0)
    originals = [r for r in alpaca[:3000] if len((r["instruction"] + r["output"]).split()) >= 80][:300]
    copies = [{**r, "output": perturb(r["output"], rng)} for r in originals]
    convs = make(originals + copies)
    for c in convs[len(originals) :]:
        c.meta["scores"]["quality"] = 0.9  # the copies score higher: they must be the survivors
    step = NearDedup()
    stopped = step(convs)
    n = len(originals)
    clustered = {frozenset(c) for c in step.clusters}
    similar = [i for i in range(n) if jaccard(convs[i], convs[n + i]) >= 0.85]
    dissimilar = [i for i in range(n) if jaccard(convs[i], convs[n + i]) < 0.7]
    assert len(similar) > 30 and len(dissimilar) > 30
    found = sum(1 for i in similar if frozenset({i, n + i}) in clustered)
    assert found >= 0.95 * len(similar)
    assert not any(frozenset({i, n + i}) in clustered for i in dissimilar)
    assert all(i < n for i in stopped)  # only originals dropped
    assert all(reason == "dedup.near_duplicate" for reason in stopped.values())
    i = similar[0]
    kept = convs[n + i]
    assert kept.meta["dup_cluster"] == convs[i].meta["dup_cluster"] == f"near-{kept.source_index}"


def test_distinct_records_are_not_clustered(alpaca: list[dict]) -> None:
    step = NearDedup()
    assert len(step(make(alpaca[:2000]))) <= 2  # raw Alpaca was generated with a similarity filter


def test_exact_duplicates_ignore_case_and_punctuation() -> None:
    a = Conversation(
        [Message("user", "Name a fruit."), Message("assistant", "Apple!")], 0, {"scores": {"quality": 0.1}}
    )
    b = Conversation([Message("user", "name a fruit"), Message("assistant", "apple")], 1, {"scores": {"quality": 0.9}})
    c = Conversation([Message("user", "Name a vegetable."), Message("assistant", "Leek")], 2)
    assert ExactDedup()([a, b, c]) == {0: "dedup.exact_duplicate"}
    assert a.meta["duplicate_of"] == 1


def test_equal_keys_are_grouped_in_order_of_first_appearance() -> None:
    """The sort-based grouping gives what a dict of lists in reading order gives: groups of 2+ in the order their
    first member appears, members ascending (a key's bytes in any order, keys equal in a prefix kept apart)."""
    rng = np.random.default_rng(7)
    distinct = rng.integers(0, 256, size=(300, 16), dtype=np.uint8)
    distinct[1, :15] = distinct[0, :15]  # differs only in the last byte
    keys = distinct[rng.integers(0, 300, size=2000)]
    expected: dict[bytes, list[int]] = {}
    for row, key in enumerate(keys):
        expected.setdefault(key.tobytes(), []).append(row)
    assert equal_key_groups(keys) == [rows for rows in expected.values() if len(rows) > 1]
    assert equal_key_groups(distinct) == []
    assert equal_key_groups(keys[:1]) == []


def test_lsh_bands_put_the_s_curve_near_the_threshold() -> None:
    bands, rows = lsh_bands(0.8, 128)
    assert bands * rows <= 128
    assert 0.6 < (1 / bands) ** (1 / rows) < 0.85


def test_balance_reaches_the_target_entropy_keeping_the_best() -> None:
    convs = []
    for task, n in {"open_qa": 600, "coding": 100, "rewriting": 60, "summarization": 40}.items():
        for i in range(n):
            convs.append(Conversation([], len(convs), {"task": task, "scores": {"quality": i / n}}))
    before = Counter(c.meta["task"] for c in convs)
    step = Balance(target_entropy=0.9)
    stopped = step(convs)
    after = Counter(c.meta["task"] for i, c in enumerate(convs) if i not in stopped)
    assert normalised_entropy(before) < 0.9 <= normalised_entropy(after)
    dropped_qa = [convs[i].meta["scores"]["quality"] for i in stopped]
    kept_qa = [
        c.meta["scores"]["quality"] for i, c in enumerate(convs) if i not in stopped and c.meta["task"] == "open_qa"
    ]
    assert max(dropped_qa) <= min(kept_qa)
    assert entropy_cap(after, 0.9, 4) is None  # already balanced: nothing more to cut


def test_balance_with_an_explicit_mix() -> None:
    convs = [Conversation([], i, {"task": t}) for i, t in enumerate(["a"] * 50 + ["b"] * 10 + ["c"] * 5)]
    stopped = Balance(target_mix={"a": 0.5, "b": 0.5})(convs)
    kept = Counter(c.meta["task"] for i, c in enumerate(convs) if i not in stopped)
    assert kept == Counter({"a": 10, "b": 10})
    assert Counter(stopped.values())["balance.not_in_target_mix"] == 5


def test_a_mix_task_without_records_does_not_zero_the_others() -> None:
    convs = [Conversation([], i, {"task": t}) for i, t in enumerate(["coding"] * 30 + ["open_qa"] * 10)]
    step = Balance(target_mix={"coding": 0.5, "open_qa": 0.25, "creative_writing": 0.25})
    stopped = step(convs)
    kept = Counter(c.meta["task"] for i, c in enumerate(convs) if i not in stopped)
    assert kept == Counter({"coding": 20, "open_qa": 10})  # 2:1, as the mix asks of the tasks present
    assert any("creative_writing" in note for note in step.notes)


def test_a_misspelt_mix_task_is_refused_naming_the_field() -> None:
    from pydantic import ValidationError

    from sft_trainer.config import CurationConfig

    with pytest.raises(ValidationError, match="balance.targetMix keys must be task types"):
        CurationConfig.model_validate({"balance": {"targetMix": {"coding": 0.5, "codng": 0.5}}})
