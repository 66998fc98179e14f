"""Label Studio review on the real API server: annotations -> the review-apply Job -> status -> the SFTJob's gate.

A real Label Studio (tests/support/label_studio.py) and a real curation of
planted Alpaca records; the test plays the node: it runs each review-apply
pod's command (`run_review_apply` on the pod's own ConfigMap, with the output
folder on this machine) and finishes the pod with the termination message the
command wrote.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from operator_support import (
    Api,
    Node,
    OperatorFactory,
    RunningOperator,
    condition,
    curation_manifest,
    eventually,
    sftjob_manifest,
)

from sft_trainer.config import TOKEN_ENV, ReviewApplyRunConfig
from sft_trainer.curation.review import Outputs, run_review_apply
from sft_trainer.termination import compact
from support.kube import REPO_ROOT
from support.label_studio import TOKEN, annotate, label_studio_server
from support.label_studio import api as ls_api

sys.path.insert(0, str(REPO_ROOT / "tests" / "unit" / "curation"))
from test_review import curate_into, plant  # noqa: E402

from support.data import SHARED_DATA as DATA  # noqa: E402

pytestmark = pytest.mark.cluster
PROJECT = "cluster review"


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


def run_apply_pod(
    api: Api, node: Node, ns: str, job: str, out: Path, monkeypatch: pytest.MonkeyPatch, tmp: Path
) -> ReviewApplyRunConfig:
    """Do what the kubelet and the container would: run the command on the Job's run config, finish the pod."""
    (pod,) = node.wait_pending(ns, job)
    config_map = next(cm for cm in api.config_maps(ns) if cm["metadata"]["name"] == job)
    config = ReviewApplyRunConfig.model_validate(yaml.safe_load(config_map["data"]["run.yaml"]))
    container = pod["spec"]["containers"][0]
    assert container["command"][:4] == ["python", "-m", "sft_trainer", "review-apply"]
    (token_env,) = [e for e in container["env"] if e["name"] == TOKEN_ENV]
    assert token_env["valueFrom"]["secretKeyRef"] == {"name": "ls-token", "key": "token"}
    termination = tmp / f"{job}.termination"
    monkeypatch.setenv("SFT_TERMINATION_LOG", str(termination))
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    node.run(pod)
    assert run_review_apply(config.model_copy(update={"output_dir": str(out)})) == 0
    node.finish(pod, 0, termination.read_text())
    return config


def test_annotations_reach_status_through_the_apply_job_and_release_the_waiting_sftjob(
    operators: OperatorFactory,
    operator: RunningOperator,
    namespace: str,
    api: Api,
    node: Node,
    label_studio: str,
    curated: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = Path(shutil.copytree(curated, tmp_path / "out"))
    held = sorted(Outputs.read(out).held)
    api.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "ls-token"}, "stringData": {"token": TOKEN}}, _preload_content=False
    )
    studio = {"url": label_studio, "project": PROJECT, "tokenSecretRef": {"name": "ls-token"}}
    api.create(curation_manifest(namespace, "cur", review={"labelStudio": studio}))
    gates = {"maxPendingReview": 1}
    api.create(sftjob_manifest(namespace, "sft", dataset={"curationRef": {"name": "cur"}, "gates": gates}))

    (pod,) = node.wait_pending(namespace, "cur-curate")
    report = json.loads((out / "report.json").read_text())
    node.finish(pod, 0, compact(report["status"]))

    # The SFTJob waits, naming the curation and the count.
    waiting = eventually(
        lambda: (
            (s := api.status("SFTJob", namespace, "sft")).get("phase") == "Waiting"
            and condition(s, "Progressing").get("reason") == "WaitingForReview"
            and s
        ),
        what="SFTJob Waiting with reason WaitingForReview",
        timeout=60,
    )
    message = condition(waiting, "Progressing")["message"]
    assert "DatasetCuration cur" in message and f"{len(held)} records pending" in message
    assert api.job(namespace, "sft-train") is None

    # First review-apply Job: no decisions yet; the pod creates the project and one task per held record.
    first = eventually(
        lambda: (api.status("DatasetCuration", namespace, "cur").get("labelStudio") or {}).get("applyJob"),
        what="the first review-apply Job",
        timeout=60,
    )
    assert run_apply_pod(api, node, namespace, first, out, monkeypatch, tmp_path).decisions == []
    project = eventually(
        lambda: (api.status("DatasetCuration", namespace, "cur").get("labelStudio") or {}).get("project"),
        what="status.labelStudio.project",
    )
    tasks = {
        t["data"]["source_index"]: t
        for t in ls_api(label_studio, "GET", f"/api/projects/{project}/export?exportType=JSON&download_all_tasks=true")
    }  # type: ignore[union-attr]
    assert set(tasks) == set(held)

    # A reviewer decides all but one record in Label Studio.
    for index in held[:-1]:
        if index == held[0]:
            annotate(label_studio, tasks[index]["id"], "Drop", note="spoofed letters")
        else:
            annotate(label_studio, tasks[index]["id"], "Keep")

    # The operator may poll between two submissions: each new set of decisions gets its own Job; the
    # test runs each one's pod until a Job carries every decision.
    ran = [first]
    while True:
        latest = eventually(
            lambda: (
                (j := (api.status("DatasetCuration", namespace, "cur").get("labelStudio") or {}).get("applyJob"))
                not in ran
                and j
            ),
            what="a review-apply Job with the new decisions",
            timeout=60,
        )
        ran.append(latest)
        config = run_apply_pod(api, node, namespace, latest, out, monkeypatch, tmp_path)
        if len(config.decisions) == len(held) - 1:
            break
    assert sorted(d["source_index"] for d in config.decisions) == held[:-1]
    assert {d["decision"] for d in config.decisions if d["source_index"] == held[0]} == {"drop"}

    reviewed = eventually(
        lambda: (s := api.status("DatasetCuration", namespace, "cur")).get("review", {}).get("pending") == 1 and s,
        what="status.review after the apply Job",
        timeout=60,
    )
    assert reviewed["review"] == {"pending": 1, "kept": len(held) - 2, "dropped": 1}
    complete = condition(reviewed, "ReviewComplete")
    assert (complete["status"], complete["reason"]) == ("False", "RecordsPending")
    assert condition(reviewed, "LabelStudioSynced")["status"] == "True"

    # The count dropped to the gate: the SFTJob starts by itself.
    eventually(lambda: api.job(namespace, "sft-train"), what="Job sft-train once the review count dropped", timeout=60)

    # Polling again changes nothing: no third Job while the annotations stay the same.
    jobs = {j["metadata"]["name"] for j in api.jobs(namespace)}
    assert {name for name in jobs if name.startswith("cur-review-")} == set(ran)

    # The token appears nowhere but in the Secret.
    for text in (
        json.dumps(api.status("DatasetCuration", namespace, "cur")),
        str(api.event_messages(namespace, "cur")),
    ):
        assert TOKEN not in text
    # The runner's output exists once it has stopped (reading it earlier waits for the stop forever).
    assert TOKEN not in operators.stop(operator)


def test_a_wrong_token_is_a_condition_with_the_reason_and_no_job(
    operator: RunningOperator, namespace: str, api: Api, node: Node, label_studio: str, curated: Path
) -> None:
    wrong = "f" * 40
    api.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "ls-token"}, "stringData": {"token": wrong}}, _preload_content=False
    )
    studio = {"url": label_studio, "project": PROJECT, "tokenSecretRef": {"name": "ls-token"}}
    api.create(curation_manifest(namespace, "cur", review={"labelStudio": studio}))
    (pod,) = node.wait_pending(namespace, "cur-curate")
    node.finish(pod, 0, compact(json.loads((curated / "report.json").read_text())["status"]))
    synced = eventually(
        lambda: condition(api.status("DatasetCuration", namespace, "cur"), "LabelStudioSynced") or None,
        what="condition LabelStudioSynced",
        timeout=60,
    )
    assert (synced["status"], synced["reason"]) == ("False", "LabelStudioUnauthorized")
    assert wrong not in json.dumps(api.status("DatasetCuration", namespace, "cur"))
    assert not [j for j in api.jobs(namespace) if j["metadata"]["name"].startswith("cur-review-")]
