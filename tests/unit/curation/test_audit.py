"""Filters and task labels against the hand-labelled Alpaca audit sample (tests/data/curation/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sft_trainer.curation.audit import audit as run_audit


@pytest.fixture(scope="module")
def audit(data_dir: Path) -> dict:
    return run_audit(Path(__file__).resolve().parents[2] / "data" / "curation" / "alpaca_audit_labels.jsonl", data_dir)


def test_sample_is_large_enough(audit: dict) -> None:
    assert audit["n"] >= 200 and audit["n_random"] >= 200 and audit["task_n"] >= 200


def test_validation_is_precise_and_finds_what_the_curator_found(audit: dict) -> None:
    row = audit["families"]["validation"]
    assert row["precision"] >= 0.9
    assert row["recall"] >= 0.8


def test_artifact_rejections_are_mostly_right(audit: dict) -> None:
    assert audit["families"]["artifacts"]["precision"] >= 0.75


def test_hygiene_filters_stay_off_clean_random_records(audit: dict) -> None:
    """On the random stratum, at most a few clean records are hit by any filter but the GPT-ism density."""
    hits = sum(audit["families"][f]["flagged"] for f in ("length", "repetition", "artifacts"))
    assert hits <= 0.1 * audit["n"]


def test_task_labels_beat_the_majority_class_by_far(audit: dict) -> None:
    # The most common label in the sample (open_qa) is 30% of it.
    assert audit["task_accuracy"] >= 0.55
