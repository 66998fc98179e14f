"""DatasetCuration on the real API server: children, conditions, figures, events, failures."""

from __future__ import annotations

import time

import pytest
from operator_support import Api, Node, OperatorFactory, RunningOperator, condition, curation_manifest, eventually

from sft_operator.layout import MountLayout
from sft_trainer.progress import ProgressServer
from sft_trainer.termination import compact

pytestmark = pytest.mark.cluster

REPORT_STATUS = {
    "counts": {"input": 1000, "curated": 702, "rejected": 251, "review": 47},
    "dropsByReason": {"duplicate": 120, "gptism": 81, "too_short": 50},
    "taskEntropyBefore": 0.712,
    "taskEntropyAfter": 0.884,
    "rejectedFraction": 0.251,
    "selection": {"strategy": "diverse-quality", "budget": 600, "selected": 600, "control": 600},
    "notes": ["scorer LM skipped: 1,000 records on CPU"],
}


def test_curation_creates_owned_children_and_reports_its_figures(
    operator: RunningOperator, namespace: str, api: Api, node: Node
) -> None:
    created = api.create(curation_manifest(namespace, "cur"))
    uid = created["metadata"]["uid"]
    spec_at_creation = created["spec"]

    job = eventually(lambda: api.job(namespace, "cur-curate"), what="Job cur-curate")
    (config_map,) = api.config_maps(namespace)
    for child in (job, config_map):
        (owner,) = child["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            "DatasetCuration",
            "cur",
            uid,
            True,
        )
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "sft_trainer", "curate", MountLayout().run_config_path]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert f"input: {MountLayout().volumes_root}/datasets/raw/alpaca.json" in config_map["data"]["run.yaml"]

    pending = eventually(
        lambda: (
            api.status("DatasetCuration", namespace, "cur").get("phase") == "Pending"
            and api.status("DatasetCuration", namespace, "cur")
        )
    )
    assert pending["jobName"] == "cur-curate"
    assert pending["outputLocation"] == "pvc://outputs/curation/cur"
    assert condition(pending, "Progressing")["reason"] == "PodsPending"

    (pod,) = node.wait_pending(namespace, "cur-curate")
    with ProgressServer(prefix="sft_curation", host="127.0.0.1", port=operator.progress_port) as server:
        server.update(phase="filter", done=1200, total=4000, percent=30.0, recordsPerSecond=400.0, etaSeconds=7.0)
        node.run(pod)
        eventually(
            lambda: api.status("DatasetCuration", namespace, "cur").get("phase") == "Running", what="phase Running"
        )
        progress = eventually(
            lambda: (
                (api.status("DatasetCuration", namespace, "cur").get("progress") or {}).get("done") == 1200
                and api.status("DatasetCuration", namespace, "cur")["progress"]
            ),
            what="status.progress from the curation pod's /progress",
        )
    assert (progress["phase"], progress["total"], progress["percent"]) == ("filter", 4000, 30.0)
    assert progress["recordsPerSecond"] == 400.0 and progress["etaSeconds"] == 7.0 and progress["updatedAt"]
    node.finish(pod, 0, compact(REPORT_STATUS))

    done = eventually(
        lambda: (s := api.status("DatasetCuration", namespace, "cur")).get("phase") == "Succeeded" and s,
        what="phase Succeeded",
    )
    assert done["counts"] == REPORT_STATUS["counts"]
    assert done["dropsByReason"] == REPORT_STATUS["dropsByReason"]
    assert (done["taskEntropyBefore"], done["taskEntropyAfter"], done["rejectedFraction"]) == (0.712, 0.884, 0.251)
    assert done["selection"] == REPORT_STATUS["selection"] and done["notes"] == REPORT_STATUS["notes"]
    ready = condition(done, "Ready")
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == ("True", "JobSucceeded", 1)
    assert done["startTime"] <= done["completionTime"]

    events = eventually(
        lambda: (e := api.event_messages(namespace, "cur")) and any(r == "JobSucceeded" for _, r, _ in e) and e,
        what="the JobSucceeded Event",
    )
    assert ("Normal", "Created", "Created ConfigMap cur-run-config") in events
    assert ("Normal", "Created", "Created Job cur-curate") in events
    reasons = [reason for _, reason, _ in events]
    assert reasons.count("Created") == 2 and reasons.count("JobRunning") == 1 and reasons.count("JobSucceeded") == 1

    final = api.get("DatasetCuration", namespace, "cur")
    assert final is not None and final["spec"] == spec_at_creation, "the operator wrote spec"
    # kopf's state lives in annotations under our group, never in (schema-pruned) status.
    annotations = final["metadata"].get("annotations", {})
    assert "sft.trustdoc.io/last-handled-configuration" in annotations
    assert not [key for key in annotations if key.startswith("kopf.zalando.org")]


def test_second_reconcile_changes_nothing(
    operators: OperatorFactory, operator: RunningOperator, namespace: str, api: Api
) -> None:
    api.create(curation_manifest(namespace, "cur"))
    # Settled: the Job controller has started the Job and the operator has copied its startTime.
    eventually(lambda: api.status("DatasetCuration", namespace, "cur").get("startTime"), what="status.startTime")
    before = {
        obj["metadata"]["name"]: obj["metadata"]["resourceVersion"]
        for obj in api.config_maps(namespace) + api.jobs(namespace)
    }
    status_before = api.get("DatasetCuration", namespace, "cur")
    assert status_before is not None

    operators.stop(operator)
    restarted = operators.start(namespace)
    # The resume handler runs for the existing object; wait until it has reconciled it.
    eventually(
        lambda: (
            (
                restarted.sample(
                    "trustdoc_sft_reconciles_total", kind="DatasetCuration", handler="reconcile", result="ok"
                )
                or 0
            )
            >= 1
        ),
        what="the resume reconcile",
    )
    after = {
        obj["metadata"]["name"]: obj["metadata"]["resourceVersion"]
        for obj in api.config_maps(namespace) + api.jobs(namespace)
    }
    assert after == before, "a second reconcile changed or duplicated a child"
    created = [m for _, r, m in api.event_messages(namespace, "cur") if r == "Created"]
    assert sorted(created) == ["Created ConfigMap cur-run-config", "Created Job cur-curate"]
    status_after = api.get("DatasetCuration", namespace, "cur")
    assert status_after is not None and status_after["status"] == status_before["status"]


def test_a_pod_without_report_still_succeeds_with_reason_report_missing(
    operator: RunningOperator, namespace: str, api: Api, node: Node
) -> None:
    api.create(curation_manifest(namespace, "cur"))
    (pod,) = node.wait_pending(namespace, "cur-curate")
    node.finish(pod, 0, "")
    done = eventually(
        lambda: (s := api.status("DatasetCuration", namespace, "cur")).get("phase") == "Succeeded" and s,
        what="phase Succeeded",
    )
    ready = condition(done, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "ReportMissing")
    assert "left no termination message" in ready["message"]
    assert "counts" not in done
    eventually(
        lambda: any(t == "Warning" and r == "ReportMissing" for t, r, _ in api.event_messages(namespace, "cur")),
        what="a ReportMissing Warning",
    )


def test_configuration_error_exit_code_fails_at_once_with_the_message(
    operator: RunningOperator, namespace: str, api: Api, node: Node
) -> None:
    api.create(curation_manifest(namespace, "cur", lifecycle={"backoffLimit": 5}))
    (pod,) = node.wait_pending(namespace, "cur-curate")
    started = time.monotonic()
    log_tail = "Loading run config\nConfiguration error: /etc/sft/run.yaml: curation.dedup.threshold: must be > 0"
    node.finish(pod, 42, log_tail)
    failed = eventually(
        lambda: (s := api.status("DatasetCuration", namespace, "cur")).get("phase") == "Failed" and s,
        what="phase Failed",
    )
    elapsed = time.monotonic() - started
    cond = condition(failed, "Failed")
    assert cond["reason"] == "ConfigurationError"
    assert "exit code 42" in cond["message"] and "curation.dedup.threshold: must be > 0" in cond["message"]
    assert len(api.pods(namespace, "cur-curate")) == 1, "a configuration error was retried"
    assert elapsed < 10, f"failing took {elapsed:.1f}s: no retry backoff should be involved"
