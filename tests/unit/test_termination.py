"""The termination-message summary: small enough for Kubernetes, never written outside a pod."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sft_trainer.termination import LIMIT_BYTES, compact, write_termination_summary


def test_large_summaries_drop_the_smallest_detail_first() -> None:
    drops = {f"validation.reason_{i:03d}": i for i in range(400)}
    status = {"counts": {"input": 10_000, "curated": 7_000, "rejected": 2_900, "review": 100}, "dropsByReason": drops}
    text = compact(status)
    assert len(text.encode()) <= LIMIT_BYTES
    kept = json.loads(text)
    assert kept["counts"] == status["counts"] and kept["dropsByReasonTruncated"] is True
    assert "validation.reason_399" in kept["dropsByReason"] and "validation.reason_000" not in kept["dropsByReason"]


def test_small_summaries_are_untouched() -> None:
    status = {"progress": {"step": 3}, "metrics": {"evalLoss": 1.5}}
    assert json.loads(compact(status)) == status


def test_written_where_the_environment_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "termination-log"
    monkeypatch.setenv("SFT_TERMINATION_LOG", str(target))
    write_termination_summary({"counts": {"input": 1}})
    assert json.loads(target.read_text()) == {"counts": {"input": 1}}


def test_nothing_written_outside_a_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SFT_TERMINATION_LOG", raising=False)
    if Path("/dev/termination-log").exists():
        pytest.skip("running inside a pod")
    write_termination_summary({"counts": {"input": 1}})
    assert not Path("/dev/termination-log").exists()
