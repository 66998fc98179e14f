"""Precision and recall of each filter family, and task-label accuracy, on the hand-labelled Alpaca audit sample.

    .venv/bin/python benchmarks/curation_audit.py [--learned]

`--learned` also labels the sample with the learned task head (loads the
embedder) and prints its accuracy beside the rules'.

Labels and the labelling rules: tests/data/curation/ (README.md). Recall is
measured on the random stratum only; precision on every labelled record the
filter rejects.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from curation_corpora import DATA  # noqa: E402

from sft_trainer.config import CurationConfig  # noqa: E402
from sft_trainer.curation.pipeline import surface_filters  # noqa: E402
from sft_trainer.curation.tasks import label  # noqa: E402
from sft_trainer.formats import Conversation, record_to_conversation  # noqa: E402

LABELS = Path(__file__).resolve().parents[1] / "tests" / "data" / "curation" / "alpaca_audit_labels.jsonl"
FAMILIES = ("validation", "length", "repetition", "artifacts", "gptisms")


def audit() -> dict:
    records = json.loads((DATA / "alpaca_data.json").read_text(encoding="utf-8"))
    labels = [json.loads(line) for line in LABELS.read_text(encoding="utf-8").splitlines()]
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


def learned_task_accuracy() -> tuple[float, int]:
    """Accuracy of `LearnedTaskLabeller` (real embedder) on the random stratum's task labels."""
    from sft_trainer.curation.tasks import LearnedTaskLabeller
    from sft_trainer.models.embedder import load_embedder

    records = json.loads((DATA / "alpaca_data.json").read_text(encoding="utf-8"))
    rows = [r for r in (json.loads(line) for line in LABELS.read_text(encoding="utf-8").splitlines()) if r["task"]]
    convs = [record_to_conversation(records[r["source_index"]], r["source_index"]) for r in rows]
    assert all(isinstance(c, Conversation) for c in convs)
    predicted = LearnedTaskLabeller(load_embedder(None, "cpu")).label_batch(convs)  # type: ignore[arg-type]
    return sum(p == r["task"] for p, r in zip(predicted, rows, strict=True)) / len(rows), len(rows)


def main() -> int:
    result = audit()
    print(f"audit sample: {result['n']} records ({result['n_random']} random)")
    print(f"{'family':12} {'flagged':>8} {'precision':>10} {'positives (random)':>19} {'recall':>7}")
    for family, row in result["families"].items():
        p = "-" if row["precision"] is None else f"{row['precision']:.2f}"
        r = "-" if row["recall"] is None else f"{row['recall']:.2f}"
        print(f"{family:12} {row['flagged']:8d} {p:>10} {row['positives_in_random']:19d} {r:>7}")
    print(
        f"task labels: accuracy {result['task_accuracy']:.3f} on {result['task_n']} records; top confusions (truth, predicted):"
    )
    for (truth, pred), n in result["task_confusions"]:
        print(f"  {truth:17} -> {pred:17} {n}")
    if "--learned" in sys.argv[1:]:
        accuracy, n = learned_task_accuracy()
        print(
            f"task labels, learned head: accuracy {accuracy:.3f} on {n} records (rules: {result['task_accuracy']:.3f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
