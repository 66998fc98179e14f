"""The learned task labeller: shipped head, real embedder, accuracy on the hand-labelled audit sample.

The audit sample (tests/data/curation/alpaca_audit_labels.jsonl) is never used
to train or tune the head (benchmarks/train_classifiers.py reads only its
record numbers, to exclude them).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from sft_trainer.curation.tasks import TASK_TYPES, LearnedTaskLabeller, label
from sft_trainer.formats import Conversation, Message, record_to_conversation

AUDIT = Path(__file__).resolve().parents[2] / "data" / "curation" / "alpaca_audit_labels.jsonl"
GOAL = 0.80
MARGIN_OVER_RULES = 0.08
"""The head must beat the rules by this much on the audit sample (measured: 0.800 against 0.64)."""


@pytest.fixture(scope="module")
def embedder():
    from sft_trainer.models.embedder import load_embedder

    return load_embedder(None, "cpu")


@pytest.fixture(scope="module")
def audit(alpaca: list[dict]) -> list[tuple[Conversation, str]]:
    rows = [json.loads(line) for line in AUDIT.read_text(encoding="utf-8").splitlines()]
    out = []
    for row in rows:
        if row["task"]:
            conv = record_to_conversation(alpaca[row["source_index"]], row["source_index"])
            assert isinstance(conv, Conversation)
            out.append((conv, row["task"]))
    return out


def _accuracy(audit, embedder) -> float:
    convs = [Conversation(list(c.messages), c.source_index) for c, _ in audit]
    predicted = LearnedTaskLabeller(embedder).label_batch(convs)
    return float(np.mean([p == t for p, (_, t) in zip(predicted, audit, strict=True)]))


def test_learned_labels_reach_the_goal_on_the_audit_sample(audit, embedder) -> None:
    assert _accuracy(audit, embedder) >= GOAL


def test_learned_labels_beat_the_rules_on_the_audit_sample(audit, embedder) -> None:
    convs = [conv for conv, _ in audit]
    predicted = LearnedTaskLabeller(embedder).label_batch(convs)
    truth = [task for _, task in audit]
    accuracy = np.mean([p == t for p, t in zip(predicted, truth, strict=True)])
    rules = np.mean([label(c) == t for c, t in audit])
    confusions = Counter((t, p) for p, t in zip(predicted, truth, strict=True) if p != t).most_common(5)
    print(f"audit task accuracy: learned {accuracy:.3f}, rules {rules:.3f} (n={len(truth)}); {confusions}")
    assert accuracy >= rules + MARGIN_OVER_RULES
    assert all(c.meta["task"] == p for c, p in zip(convs, predicted, strict=True))
    confidences = [c.meta["scores"]["task_confidence"] for c in convs]
    assert all(0 < x <= 1 for x in confidences)


def test_annotator_features_give_the_same_labels_without_an_embedder(audit, embedder) -> None:
    convs = [Conversation(list(c.messages), c.source_index) for c, _ in audit[:6]]
    direct = LearnedTaskLabeller(embedder).label_batch([Conversation(list(c.messages), c.source_index) for c in convs])
    for conv in convs:
        conv.features["prompt_emb"] = embedder.encode(["\n\n".join(conv.turns("user"))])[0]
        conv.features["response_emb"] = embedder.encode(["\n\n".join(conv.turns("assistant"))])[0]
    assert LearnedTaskLabeller().label_batch(convs) == direct


def test_non_finite_embedding_falls_back_to_the_rules() -> None:
    labeller = LearnedTaskLabeller()
    dim = (labeller.model.n_features - len(labeller.vocabulary) - len(TASK_TYPES) - 2) // 2
    conv = Conversation([Message("user", "Summarize this article."), Message("assistant", "It says...")], 3)
    conv.features["prompt_emb"] = np.full(dim, np.inf, dtype=np.float32)
    conv.features["response_emb"] = np.zeros(dim, dtype=np.float32)
    assert labeller.label_batch([conv]) == [label(conv)]
    assert conv.meta["scores"]["task_confidence"] is None


def test_missing_inputs_are_clear_errors(tmp_path: Path) -> None:
    conv = Conversation([Message("user", "Hi"), Message("assistant", "Hello.")], 9)
    with pytest.raises(ValueError, match="record 9 has no features"):
        LearnedTaskLabeller().label_batch([conv])
    with pytest.raises(FileNotFoundError, match="make classifiers"):
        LearnedTaskLabeller(weights=tmp_path / "tasks.npz")
    assert LearnedTaskLabeller().label_batch([]) == []
