"""`sftctl run`'s executor (`LocalExecutor.run`) on real runs: a curation, then training on its output, on CPU.

The executor shares the operator's input check (`inputs.training_inputs`),
builders and status function (`run_status`); these runs check that what it
writes is the operator's status: the same conditions (ReviewComplete for a
curation, as the operator sets it), the spec's fields (curationName, a root
job's lineage), the same refusal for a failed quality gate, and the
configuration-error code the Job's podFailurePolicy keys on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from sft_operator import conditions as c
from sft_operator.inputs import curation_readiness
from sft_operator.local_executor import STATUS_FILE, LocalExecutor, LocalRun
from support.manifests import condition, curation, sftjob

TRAINING = {
    "maxSeqLength": 256,
    "batchSize": 4,
    "maxSteps": 1,
    "evalEverySteps": 1,
    "evalFraction": 0.2,
    "refusal": {"enabled": False},
    "probes": {"memorisationPrompts": 0},
    "evaluation": {"enabled": False},
}


def trains_on(name: str, model: Path, **dataset: Any) -> dict[str, Any]:
    """An SFTJob on the tiny model (claim `models`), one step on CPU."""
    return sftjob(
        name,
        model={"pvc": {"claimName": "models", "path": model.name}},
        dataset=dataset,
        training=TRAINING,
        resources={"gpusPerNode": 0},
    )


@pytest.fixture(scope="module")
def runs(
    tiny_model_dir: Path, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, LocalRun], Path]:
    """One manifest, run as `sftctl run` does: a curation of 120 Alpaca records, then three SFTJobs on it."""
    root = tmp_path_factory.mktemp("local-executor")
    manifest = root / "manifest.yaml"
    documents = [
        trains_on("trained", tiny_model_dir, curationRef={"name": "cur"}),
        # A gate this curation cannot pass: refused before any process starts.
        trains_on("gated", tiny_model_dir, curationRef={"name": "cur"}, gates={"minCuratedRecords": 100000}),
        # A dataset that is not there: the trainer stops with its configuration-error code.
        trains_on("missing-data", tiny_model_dir, pvc={"claimName": "datasets", "path": "absent.jsonl"}),
        curation(
            "cur", source={"pvc": {"claimName": "datasets", "path": "alpaca_data.json"}}, curation={"maxRecords": 120}
        ),
    ]
    manifest.write_text(yaml.safe_dump_all(documents))
    executor = LocalExecutor(
        root / "runs", {"datasets": shared_data, "models": tiny_model_dir.parent}, poll_seconds=0.2
    )
    done = {run.resource.name: run for run in executor.run_all(executor.load(manifest))}
    return done, root


def test_the_curation_gets_the_operators_status(runs: tuple[dict[str, LocalRun], Path]) -> None:
    done, _ = runs
    cur = done["cur"]
    assert cur.succeeded, cur.log.read_text()[-3000:]
    status = cur.status
    assert (status["phase"], condition(status, c.READY)["reason"]) == (c.PHASE_SUCCEEDED, c.JOB_SUCCEEDED)
    counts = status["counts"]
    assert counts["input"] == 120 and counts["curated"] > 0
    assert counts["input"] == counts["curated"] + counts["rejected"] + counts["review"]
    # ReviewComplete comes from the shared status function, as on a cluster.
    review = condition(status, c.REVIEW_COMPLETE)
    assert review["reason"] == (c.NOTHING_PENDING if counts["review"] == 0 else c.RECORDS_PENDING)
    assert status["jobName"] == "cur-curate" and Path(status["outputLocation"], "curated.jsonl").exists()
    assert json.loads((cur.workdir / STATUS_FILE).read_text()) == status


def test_training_on_the_curation_succeeds_with_the_spec_fields(
    runs: tuple[dict[str, LocalRun], Path], tiny_model_dir: Path
) -> None:
    done, _ = runs
    trained = done["trained"]
    assert trained.succeeded, trained.log.read_text()[-3000:]
    status = trained.status
    assert status["curationName"] == "cur" and status["jobName"] == "trained-train"
    assert status["lineage"] == [{"model": {"pvc": {"claimName": "models", "path": tiny_model_dir.name}}}]
    assert status["progress"]["step"] == 1 and "finalEvalLoss" in status["metrics"]
    assert status["exports"] and Path(status["outputLocation"], "adapter").is_dir()


def test_a_failed_gate_is_refused_with_the_operators_reason_and_message(
    runs: tuple[dict[str, LocalRun], Path],
) -> None:
    done, _ = runs
    gated = done["gated"]
    expected = curation_readiness({"status": done["cur"].status}, "cur", {"minCuratedRecords": 100000})
    failed = condition(gated.status, c.FAILED)
    assert (failed["status"], failed["reason"], failed["message"]) == ("True", expected.reason, expected.message)
    assert "jobName" not in gated.status and not gated.log.exists()


def test_a_missing_dataset_fails_as_a_configuration_error(runs: tuple[dict[str, LocalRun], Path]) -> None:
    done, _ = runs
    failed = condition(done["missing-data"].status, c.FAILED)
    assert (failed["status"], failed["reason"]) == ("True", c.CONFIG_ERROR), done["missing-data"].status
    assert "absent.jsonl" in failed["message"]
