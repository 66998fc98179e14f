"""Precision and recall of each filter family, and task-label accuracy, on the hand-labelled Alpaca audit sample.

    .venv/bin/python benchmarks/curation_audit.py [--learned]

`--learned` also labels the sample with the learned task head (loads the
embedder) and prints its accuracy beside the rules'.

Labels and the labelling rules: tests/data/curation/ (README.md). Recall is
measured on the random stratum only; precision on every labelled record the
filter rejects.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from curation_corpora import DATA  # noqa: E402

from sft_trainer.curation.audit import audit, learned_task_accuracy  # noqa: E402

LABELS = Path(__file__).resolve().parents[1] / "tests" / "data" / "curation" / "alpaca_audit_labels.jsonl"


def main() -> int:
    result = audit(LABELS, DATA)
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
        accuracy, n = learned_task_accuracy(LABELS, DATA)
        print(
            f"task labels, learned head: accuracy {accuracy:.3f} on {n} records (rules: {result['task_accuracy']:.3f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
