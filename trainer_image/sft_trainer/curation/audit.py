"""Precision and recall of each surface filter family, and task-label accuracy, on a hand-labelled audit sample.

The sample and its labelling rules live in tests/data/curation/ (README.md);
`benchmarks/curation_audit.py` prints these figures and the tests hold them to
their bounds. Recall is measured on the random stratum only; precision on
every labelled record the filter rejects.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from ..config import CurationConfig
from ..formats import Conversation, record_to_conversation
from .pipeline import surface_filters
from .tasks import label

FAMILIES = ("validation", "length", "repetition", "artifacts", "gptisms")


def audit(labels_file: Path, data: Path) -> dict:
    """Each surface filter family judged alone on the audit sample, and the rule task labels against its labels."""
    records = json.loads((data / "alpaca_data.json").read_text(encoding="utf-8"))
    labels = [json.loads(line) for line in labels_file.read_text(encoding="utf-8").splitlines()]
    filters = surface_filters(CurationConfig())
    predicted: dict[int, set[str]] = {}
    tasks: dict[int, str] = {}
    for row in labels:
        conv = record_to_conversation(records[row["source_index"]], row["source_index"])
        assert isinstance(conv, Conversation)
        # Every family judged independently, as if it were the only filter.
        reasons = [r for r in (f(conv) for f in filters) if r]
        predicted[row["source_index"]] = {r.split(".")[0] for r in reasons}
        tasks[row["source_index"]] = label(conv)
    result: dict = {"families": {}, "n": len(labels), "n_random": sum(r["stratum"] == "random" for r in labels)}
    for family in FAMILIES:
        flagged = [r for r in labels if family in predicted[r["source_index"]]]
        truth_random = [r for r in labels if r["stratum"] == "random" and family in r["issues"]]
        tp = sum(1 for r in flagged if family in r["issues"])
        found = sum(1 for r in truth_random if family in predicted[r["source_index"]])
        result["families"][family] = {
            "flagged": len(flagged),
            "precision": tp / len(flagged) if flagged else None,
            "positives_in_random": len(truth_random),
            "recall": found / len(truth_random) if truth_random else None,
        }
    task_rows = [r for r in labels if r["task"]]
    correct = sum(1 for r in task_rows if tasks[r["source_index"]] == r["task"])
    result["task_accuracy"] = correct / len(task_rows)
    result["task_n"] = len(task_rows)
    result["task_confusions"] = Counter(
        (r["task"], tasks[r["source_index"]]) for r in task_rows if tasks[r["source_index"]] != r["task"]
    ).most_common(10)
    any_issue = [r for r in labels if r["stratum"] == "random"]
    result["random_with_any_issue"] = sum(1 for r in any_issue if r["issues"]) / len(any_issue)
    return result


def learned_task_accuracy(labels_file: Path, data: Path) -> tuple[float, int]:
    """Accuracy of `LearnedTaskLabeller` (real embedder) on the random stratum's task labels."""
    from sft_trainer.curation.tasks import LearnedTaskLabeller
    from sft_trainer.models.embedder import load_embedder

    records = json.loads((data / "alpaca_data.json").read_text(encoding="utf-8"))
    rows = [r for r in (json.loads(line) for line in labels_file.read_text(encoding="utf-8").splitlines()) if r["task"]]
    convs = [record_to_conversation(records[r["source_index"]], r["source_index"]) for r in rows]
    assert all(isinstance(c, Conversation) for c in convs)
    predicted = LearnedTaskLabeller(load_embedder(None, "cpu")).label_batch(convs)  # type: ignore[arg-type]
    return sum(p == r["task"] for p, r in zip(predicted, rows, strict=True)) / len(rows), len(rows)
