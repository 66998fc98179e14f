"""Review in Label Studio, against a real Label Studio server (no mock).

`hack/install-label-studio.sh` installs `label-studio` into its own virtualenv
under .cache/ (its pins clash with ours); the fixture starts it on loopback
with SQLite in the test's tmp folder. The pod side (`run_review_apply`:
project, tasks, appending and applying decisions) and the operator side
(`fetch_decisions`: annotations -> decisions) talk to it over HTTP, and the
annotations are made through its API as a reviewer's browser would.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from sft_operator import labelstudio as ls
from sft_operator.labelstudio import decisions_from_tasks, deleted_problems, fetch_decisions
from sft_trainer.config import (
    CHOICES,
    TOKEN_ENV,
    LabelStudioClient,
    LabelStudioError,
    LabelStudioTarget,
    ReviewApplyRunConfig,
)
from sft_trainer.config.review import UNAUTHORIZED, UNREACHABLE
from sft_trainer.curation.review import (
    DECISIONS_FILE,
    DROPPED,
    Outputs,
    read_decisions,
    record_hash,
    run_review_apply,
)
from support import manifests
from support.browser import screenshot_after_login
from support.kube import REPO_ROOT, free_port
from support.label_studio import PASSWORD, TOKEN, USER, annotate, api, label_studio_server

sys.path.insert(0, str(REPO_ROOT / "tests" / "unit" / "curation"))
from test_review import curate_into, plant  # noqa: E402  (the review tests' real curation of planted Alpaca)

from support.data import SHARED_DATA as DATA  # noqa: E402

PROJECT = "trustdoc review test"


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with label_studio_server(tmp_path_factory.mktemp("label-studio")) as url:
        yield url


@pytest.fixture(scope="module")
def curated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not DATA.exists():
        pytest.skip(f"shared data folder {DATA} is missing")
    alpaca = json.loads((DATA / "alpaca_data.json").read_text(encoding="utf-8"))
    return curate_into(plant(alpaca[:60]), tmp_path_factory.mktemp("curation"))


def apply(out: Path, url: str, decisions: list[dict[str, object]], token: str = TOKEN) -> int:
    os.environ[TOKEN_ENV] = token
    try:
        config = ReviewApplyRunConfig(
            output_dir=str(out), decisions=decisions, label_studio=LabelStudioTarget(url=url, project=PROJECT)
        )
        return run_review_apply(config)
    finally:
        del os.environ[TOKEN_ENV]


def tasks_by_index(client: LabelStudioClient, project: int) -> dict[int, dict]:
    return {t["data"]["source_index"]: t for t in client.export_tasks(project)}


def test_held_records_go_to_label_studio_and_annotations_come_back_as_applied_decisions(
    label_studio: str, curated: Path, tmp_path: Path
) -> None:
    out = Path(shutil.copytree(curated, tmp_path / "out"))
    held = Outputs.read(out).held
    client = LabelStudioClient(label_studio, TOKEN)

    # The first review-apply (no decisions yet) creates the project and one task per held record.
    assert apply(out, label_studio, []) == 0
    project = client.find_project(PROJECT)
    assert project is not None
    tasks = tasks_by_index(client, project)
    assert set(tasks) == set(held)
    sample = tasks[min(held)]["data"]
    assert sample["response"] and sample["prompt"] and "ood." in sample["flags"]

    # What a reviewer sees: the task in Label Studio's own UI (screenshot for docs/review.md).
    shot = REPO_ROOT / ".cache" / "screenshots" / "label-studio-task.png"
    seen = screenshot_after_login(
        f"{label_studio}/user/login/",
        {"email": USER, "password": PASSWORD},
        f"{label_studio}/projects/{project}/data?task={tasks[min(held)]['id']}",
        shot,
    )
    assert shot.stat().st_size > 10_000
    assert "Keep" in seen and "Drop" in seen, seen[:500]

    # Idempotent: a second run (a retried pod, a re-run) adds no task.
    assert apply(out, label_studio, []) == 0
    assert len(client.export_tasks(project)) == len(held)

    keep, drop, edit, bogus, *_rest = sorted(held)
    annotate(label_studio, tasks[keep]["id"], "Keep")
    annotate(label_studio, tasks[drop]["id"], "Drop", note="spoofed letters")
    annotate(label_studio, tasks[edit]["id"], "Keep edited response", edited="A clean, corrected answer.")
    annotate(label_studio, tasks[bogus]["id"], "Maybe later")  # a choice the labeling config never offered

    found_project, decisions, problems = fetch_decisions(client, PROJECT)
    assert found_project == project
    assert {d["source_index"]: d["decision"] for d in decisions} == {keep: "keep", drop: "drop", edit: "edit"}
    assert len(problems) == 1 and f"{bogus}:" in problems[0] and "'Maybe later'" in problems[0]

    assert apply(out, label_studio, decisions) == 0
    curated_rows = {r["source_index"]: r for r in map(json.loads, (out / "curated.jsonl").read_text().splitlines())}
    rejected_rows = {r["source_index"]: r for r in map(json.loads, (out / "rejected.jsonl").read_text().splitlines())}
    assert curated_rows[keep]["review"]["decision"] == "keep"
    assert curated_rows[edit]["messages"][-1]["content"] == "A clean, corrected answer."
    assert rejected_rows[drop]["reasons"][0] == DROPPED and rejected_rows[drop]["detail"] == "spoofed letters"
    report = json.loads((out / "report.json").read_text())
    assert report["status"]["review"] == {"pending": len(held) - 3, "kept": 2, "dropped": 1}

    # The same decisions again (the operator polls, a pod is retried): nothing appended, nothing changed.
    log_before = (out / DECISIONS_FILE).read_bytes()
    assert apply(out, label_studio, decisions) == 0
    assert (out / DECISIONS_FILE).read_bytes() == log_before
    assert len(read_decisions(out).decisions) == 3

    # A decided task deleted by hand: its decision stays applied, and the operator says so.
    api(label_studio, "DELETE", f"/api/tasks/{tasks[keep]['id']}/")
    _, after_delete, _ = fetch_decisions(client, PROJECT)
    assert len(after_delete) == 2
    said = deleted_problems({"decisions": len(decisions)}, len(after_delete))
    assert said and "stay applied" in said[0]
    assert apply(out, label_studio, after_delete) == 0
    assert keep in {r["source_index"] for r in map(json.loads, (out / "curated.jsonl").read_text().splitlines())}
    # The still-pending records keep exactly one task each; the deleted decided one is not imported again.
    assert len(client.export_tasks(project)) == len(held) - 1


def test_a_wrong_token_or_an_unreachable_server_is_a_reason_and_leaks_no_token(
    label_studio: str, curated: Path, tmp_path: Path
) -> None:
    out = Path(shutil.copytree(curated, tmp_path / "out"))
    wrong = "0" * 40
    with pytest.raises(LabelStudioError) as refused:
        LabelStudioClient(label_studio, wrong).find_project(PROJECT)
    assert refused.value.reason == UNAUTHORIZED and wrong not in str(refused.value)

    with pytest.raises(LabelStudioError) as unreachable:
        LabelStudioClient(f"http://127.0.0.1:{free_port()}", TOKEN, timeout=2).find_project(PROJECT)
    assert unreachable.value.reason == UNREACHABLE and TOKEN not in str(unreachable.value)

    # The pod applies what it was given, then fails (the Job retries) without touching the log twice.
    held = sorted(Outputs.read(out).held)
    decision = {
        "source_index": held[0],
        "record_hash": record_hash(Outputs.read(out).held[held[0]]),
        "decision": "keep",
        "reviewer": "ana@example.com",
        "time": "2026-01-01T00:00:00+00:00",
    }
    assert apply(out, label_studio, [decision], token=wrong) == 4
    assert apply(out, label_studio, [decision], token=wrong) == 4
    assert len(read_decisions(out).decisions) == 1
    assert json.loads((out / "report.json").read_text())["status"]["review"]["kept"] == 1


def test_annotations_a_person_edited_by_hand_are_reported_not_applied() -> None:
    """Pure conversion, on the shapes Label Studio's export gives (cancelled, several, none, foreign tasks)."""
    data = {"key": "7:abc", "source_index": 7, "record_hash": "abc"}

    def annotation(id_: int, choice: str, updated: str, cancelled: bool = False) -> dict:
        return {
            "id": id_,
            "completed_by": {"id": 1, "email": "ana@example.com"},
            "updated_at": updated,
            "was_cancelled": cancelled,
            "result": [{"from_name": "decision", "value": {"choices": [choice]}}],
        }

    tasks = [
        {"id": 1, "data": data, "annotations": [annotation(1, "Drop", "2026-01-01"), annotation(2, "Keep", "2026-01-02")]},
        {"id": 2, "data": {**data, "source_index": 8, "key": "8:abc"}, "annotations": [annotation(3, "Keep", "2026-01-03", cancelled=True)]},
        {"id": 3, "data": {"text": "a task someone imported by hand"}, "annotations": []},
        {"id": 4, "data": {**data, "source_index": 9, "key": "9:abc"}, "annotations": [annotation(4, "Keep edited response", "2026-01-04")]},
    ]  # fmt: skip
    decisions, problems = decisions_from_tasks(tasks)
    assert decisions == [
        {
            "source_index": 7,
            "record_hash": "abc",
            "decision": "keep",
            "reviewer": "ana@example.com",
            "time": "2026-01-02",
        }
    ]
    assert any("task 3: not a review task" in p for p in problems)
    assert any("9:abc" in p and "no text" in p for p in problems)
    assert set(CHOICES.values()) == {"keep", "drop", "edit"}


def test_the_review_apply_job_is_the_curation_pod_with_another_command_and_a_deterministic_name() -> None:
    from sft_operator.api import DatasetCurationSpec
    from sft_operator.children import review_apply_children
    from sft_operator.naming import ResourceRef
    from sft_operator.settings import OperatorSettings

    body = {
        "apiVersion": "sft.trustdoc.io/v1alpha1",
        "kind": "DatasetCuration",
        "metadata": {"name": "cur", "namespace": "ns", "uid": "u-1"},
        "spec": {
            "source": {"pvc": {"claimName": "datasets", "path": "raw.json"}},
            "output": {"pvc": {"claimName": "outputs", "path": "curation/cur"}},
            "review": {
                "labelStudio": {"url": "http://ls:8080", "project": "p", "tokenSecretRef": {"name": "ls-token"}}
            },
        },
    }
    ref, spec = ResourceRef.of(body), DatasetCurationSpec.model_validate(body["spec"])
    settings = OperatorSettings()
    decisions = [{"source_index": 3, "record_hash": "ab", "decision": "keep", "reviewer": "ana", "time": "t"}]
    children = review_apply_children(ref, spec, settings, decisions)
    again = review_apply_children(ref, spec, settings, [dict(d) for d in decisions])
    assert children.job == again.job and children.config_map == again.config_map
    assert (
        review_apply_children(ref, spec, settings, decisions, attempt=1).job["metadata"]["name"]
        != children.job["metadata"]["name"]
    )
    assert review_apply_children(ref, spec, settings, []).job["metadata"]["name"] != children.job["metadata"]["name"]

    job, curation_job = children.job, manifests.children(body, settings).job
    assert job["metadata"]["ownerReferences"] == curation_job["metadata"]["ownerReferences"]
    pod, curation_pod = job["spec"]["template"]["spec"], curation_job["spec"]["template"]["spec"]
    assert pod["securityContext"] == curation_pod["securityContext"]
    (container,), (curation_container,) = pod["containers"], curation_pod["containers"]
    assert container["securityContext"] == curation_container["securityContext"]
    assert container["command"] == ["python", "-m", "sft_trainer", "review-apply", "/mnt/config/run.yaml"]
    assert [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v] == [
        "outputs"
    ]
    assert {"name": TOKEN_ENV, "valueFrom": {"secretKeyRef": {"name": "ls-token", "key": "token"}}} in container["env"]
    config = ReviewApplyRunConfig.model_validate(yaml.safe_load(children.config_map["data"]["run.yaml"]))
    assert (
        config.decisions == decisions and config.label_studio is not None and config.output_dir.endswith("curation/cur")
    )


def test_a_review_apply_job_whose_result_is_in_status_is_not_run_again() -> None:
    """Its TTL deletes it once status holds its result; the next tick must not create it again."""

    def status(ok: bool, reason: str) -> dict[str, object]:
        return ls.with_sync_condition({"labelStudio": {"applyJob": "cur-review-abc"}}, ok, reason, "...", 1)

    assert ls.applied(status(True, ls.SYNCED), "cur-review-abc")
    assert not ls.applied(status(True, ls.SYNCED), "cur-review-def"), "new decisions get their Job"
    assert not ls.applied(status(False, ls.APPLYING), "cur-review-abc"), "still running: read it"
    assert not ls.applied(status(False, ls.APPLY_FAILED), "cur-review-abc")
    assert not ls.applied({}, "cur-review-abc")
