"""The per-record steps on several processes decide exactly what one process decides."""

from __future__ import annotations

import os
from pathlib import Path

from sft_trainer.config import CurationConfig
from sft_trainer.curation.pipeline import curate
from sft_trainer.curation.runner import MIN_RECORDS_PER_WORKER, usable_cpus
from sft_trainer.formats import read_dataset


def outcome(data_dir: Path, workers: int) -> tuple:
    items = list(read_dataset(data_dir / "alpaca_data.json"))[: 2 * MIN_RECORDS_PER_WORKER + 777]
    result = curate(items, CurationConfig(), workers=workers)
    return (
        [(c.source_index, c.meta) for c in result.curated],
        [(r.source_index, r.reasons, r.extra) for r in result.rejected],
        [(c.source_index, reasons) for c, reasons in result.review],
        [(step.name, step.seen, dict(step.drops)) for step in result.steps],
        result.funnel,
    )


def test_two_workers_give_the_same_result_as_one(data_dir: Path) -> None:
    one, two = outcome(data_dir, 1), outcome(data_dir, 2)
    assert one[0] and one[1], "the sample must keep some records and reject some"
    assert two == one


def test_usable_cpus_is_at_least_one_and_at_most_the_affinity() -> None:
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))
