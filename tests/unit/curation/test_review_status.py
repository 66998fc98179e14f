"""The operator's side of review: status.review, condition ReviewComplete, the SFTJob's maxPendingReview wait, the gauge."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from test_review import curate_into, decide, plant

from sft_operator import conditions as c
from sft_operator.api import SFTJobSpec
from sft_operator.figures import curation_figures
from sft_operator.inputs import review_wait
from sft_operator.metrics import StatusCollector
from sft_operator.run_state import waiting
from sft_trainer.curation.review import Outputs, apply_decisions
from unit.test_status import COMPLETE, job, observe_job, pod


@pytest.fixture(scope="module")
def curation(tmp_path_factory: pytest.TempPathFactory, alpaca: list[dict]) -> Path:
    return curate_into(plant(alpaca[:60]), tmp_path_factory.mktemp("curation"))


def finished_status(report_status: dict) -> dict:
    """What the operator makes of a curation pod that left this summary in its termination message."""
    return observe_job("DatasetCuration", {}, job(COMPLETE), [pod("p", "Succeeded", 0, json.dumps(report_status))], 1)


def test_a_fresh_curation_waits_for_review_and_a_reviewed_one_does_not(curation: Path, tmp_path: Path) -> None:
    fresh = json.loads((curation / "report.json").read_text())["status"]
    held = fresh["counts"]["review"]
    status = finished_status(fresh)
    assert status["review"] == {"pending": held, "kept": 0, "dropped": 0}
    complete = c.get_condition(status["conditions"], c.REVIEW_COMPLETE)
    assert complete is not None and (complete["status"], complete["reason"], complete["message"]) == (
        "False",
        c.RECORDS_PENDING,
        f"{held} records wait for review",
    )
    assert status["phase"] == "Succeeded"  # review pending does not change what the run did

    out = Path(shutil.copytree(curation, tmp_path / "out"))
    for i, index in enumerate(Outputs.read(out).held):
        decide(out, index, "drop" if i % 2 else "keep")
    apply_decisions(out)
    reviewed = finished_status(json.loads((out / "report.json").read_text())["status"])
    assert reviewed["review"] == {"pending": 0, "kept": (held + 1) // 2, "dropped": held // 2}
    assert reviewed["counts"]["review"] == 0
    complete = c.get_condition(reviewed["conditions"], c.REVIEW_COMPLETE)
    assert complete is not None and (complete["status"], complete["reason"]) == ("True", c.NOTHING_PENDING)


def test_max_pending_review_makes_the_job_wait_until_the_count_drops(curation: Path) -> None:
    spec = SFTJobSpec.model_validate(
        {
            "model": {"pvc": {"claimName": "models", "path": "smollm2"}},
            "dataset": {"curationRef": {"name": "cur"}, "gates": {"maxPendingReview": 2}},
            "output": {"pvc": {"claimName": "outputs", "path": "run"}},
        }
    )
    gates = spec.dataset.gates.to_wire() if spec.dataset.gates else None
    assert gates == {"maxPendingReview": 2}
    status = curation_figures(json.loads((curation / "report.json").read_text()))
    pending = status["review"]["pending"]
    assert review_wait(gates, status, "cur") == (
        f"Waiting for review of DatasetCuration cur: {pending} records pending, more than maxPendingReview 2"
    )
    assert review_wait(gates, {**status, "review": {"pending": 2, "kept": 5, "dropped": 0}}, "cur") is None
    assert review_wait(None, status, "cur") is None and review_wait({"minCuratedRecords": 1}, status, "cur") is None
    shown = waiting({}, c.WAITING_FOR_REVIEW, "x", 1)
    assert shown["phase"] == "Waiting"


def test_the_review_queue_is_a_prometheus_gauge() -> None:
    status = {"phase": "Succeeded", "review": {"pending": 4, "kept": 2, "dropped": 1}}
    registry = CollectorRegistry()
    registry.register(StatusCollector({}, {("team", "cur"): [status]}))
    text = generate_latest(registry).decode()
    assert 'trustdoc_sft_curation_review_records{name="cur",namespace="team",state="pending"} 4.0' in text
    assert 'trustdoc_sft_curation_review_records{name="cur",namespace="team",state="dropped"} 1.0' in text
