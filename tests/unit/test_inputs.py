"""`inputs.training_inputs`: the one check of what an SFTJob trains from, for the operator and `sftctl run`.

The lookup here is a namespace held in dicts (a real `Lookup`, as the API
and the run folders are): what it checks, in which order, with which
reason, and that every object is read once per check.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sft_operator import conditions as c
from sft_operator.api import SFTJobSpec
from sft_operator.inputs import training_inputs
from sft_operator.readiness import NOT_YET, READY_TO_USE, UNUSABLE
from support import manifests

BASE = {"pvc": {"claimName": "models", "path": "smollm2"}}


class Namespace:
    """Custom resources and claims by name, counting reads."""

    def __init__(self, *objects: dict[str, Any], claims: tuple[str, ...] = ("outputs", "models")) -> None:
        self.objects = {(o["kind"], o["metadata"]["name"]): o for o in objects}
        self.claims = set(claims)
        self.reads: Counter[tuple[str, str]] = Counter()

    def custom(self, kind: str, name: str) -> dict[str, Any] | None:
        self.reads[kind, name] += 1
        return self.objects.get((kind, name))

    def claim_exists(self, name: str) -> bool:
        return name in self.claims


def finished(body: dict[str, Any], condition: str = c.SUCCEEDED, **status: Any) -> dict[str, Any]:
    conditions = [{"type": condition, "status": "True", "reason": "JobSucceeded", "message": "done"}]
    if condition == c.SUCCEEDED:
        conditions.append({"type": c.READY, "status": "True", "reason": "JobSucceeded"})
    return {
        **body,
        "metadata": {**body["metadata"], "uid": f"uid-{body['metadata']['name']}"},
        "status": {"conditions": conditions, **status},
    }


GENERAL = finished(manifests.sftjob("general", model=BASE), exports=["adapter"], lineage=[{"model": BASE}])
CURATION = finished(manifests.curation("cur"), counts={"input": 10, "curated": 8, "rejected": 2, "review": 0})


def spec(name: str = "domain", **fields: Any) -> SFTJobSpec:
    return SFTJobSpec.model_validate(manifests.sftjob(name, **fields)["spec"])


CHAINED = {"model": {"sftJobRef": {"name": "general", "use": "adapter"}}, "dataset": {"curationRef": {"name": "cur"}}}


def test_a_chained_job_on_a_curation_gets_both_and_reads_each_once() -> None:
    namespace = Namespace(GENERAL, CURATION)
    inputs = training_inputs("domain", spec(**CHAINED), namespace)
    assert inputs.readiness.state == READY_TO_USE
    assert inputs.curation is not None and inputs.curation.name == "cur"
    assert (
        inputs.lineage is not None
        and inputs.lineage[0]["sftJob"] == "general"
        and inputs.lineage[-1] == {"model": BASE}
    )
    assert inputs.parent_uid == "uid-general"
    assert set(namespace.reads.values()) == {1}  # the cycle walk and the readiness check share one read


def test_a_parent_from_a_run_folder_has_no_uid_and_is_still_used() -> None:
    """`sftctl run` reads a finished stage from its run folder: no API server gave it a uid."""
    folder_parent = {**GENERAL, "metadata": {"name": "general"}}
    inputs = training_inputs("domain", spec(**CHAINED), Namespace(folder_parent, CURATION))
    assert inputs.readiness.state == READY_TO_USE
    assert inputs.parent_uid is None


def test_what_is_not_there_yet_waits_and_what_failed_refuses() -> None:
    waiting = training_inputs("domain", spec(**CHAINED), Namespace(CURATION)).readiness
    assert (waiting.state, waiting.reason) == (NOT_YET, c.WAITING_FOR_MODEL)
    deleted = training_inputs("domain", spec(**CHAINED), Namespace(CURATION), seen_parent_uid="uid-general")
    assert deleted.readiness.reason == c.PARENT_DELETED
    no_data = training_inputs("domain", spec(**CHAINED), Namespace(GENERAL)).readiness
    assert (no_data.state, no_data.reason) == (NOT_YET, c.WAITING_FOR_DATASET)
    failed_curation = finished(manifests.curation("cur"), c.FAILED)
    refused = training_inputs("domain", spec(**CHAINED), Namespace(GENERAL, failed_curation)).readiness
    assert (refused.state, refused.reason) == (UNUSABLE, c.DATASET_FAILED)


def test_gates_review_claims_cycles_and_tokenizers_are_checked_in_one_place() -> None:
    gated = {**CHAINED, "dataset": {"curationRef": {"name": "cur"}, "gates": {"minCuratedRecords": 9}}}
    assert (
        training_inputs("domain", spec(**gated), Namespace(GENERAL, CURATION)).readiness.reason == c.QUALITY_GATE_FAILED
    )
    held = finished(manifests.curation("cur"), counts={"input": 10, "curated": 5, "rejected": 2, "review": 3})
    review = {**CHAINED, "dataset": {"curationRef": {"name": "cur"}, "gates": {"maxPendingReview": 0}}}
    assert training_inputs("domain", spec(**review), Namespace(GENERAL, held)).readiness.reason == c.WAITING_FOR_REVIEW

    gone = training_inputs("domain", spec(**CHAINED), Namespace(GENERAL, CURATION, claims=("models",))).readiness
    assert (gone.reason, "claim outputs no longer exists" in gone.message) == (c.PARENT_UNUSABLE, True)

    loop = finished(manifests.sftjob("general", model={"sftJobRef": {"name": "domain", "use": "adapter"}}))
    cycle = training_inputs("domain", spec(**CHAINED), Namespace(loop, CURATION)).readiness
    assert (cycle.reason, cycle.message.endswith("SFTJob domain -> general -> domain")) == (c.CHAIN_CYCLE, True)

    other_tokenizer = finished(
        manifests.curation("cur", tokenizer={"pvc": {"claimName": "models", "path": "other"}}),
        counts=CURATION["status"]["counts"],
    )
    mismatch = training_inputs("domain", spec(**CHAINED), Namespace(GENERAL, other_tokenizer)).readiness
    assert mismatch.reason == c.BASE_MODEL_MISMATCH


def test_a_started_job_keeps_its_lineage_without_reading_its_parent() -> None:
    started = [
        {
            "sftJob": "general",
            "use": "adapter",
            "method": "lora",
            "output": {"claimName": "outputs", "path": "sft/general"},
        },
        {"model": BASE},
    ]
    namespace = Namespace(CURATION)  # the parent is gone
    inputs = training_inputs("domain", spec(**CHAINED), namespace, started_lineage=started)
    assert inputs.readiness.state == READY_TO_USE and inputs.lineage == started
    assert ("SFTJob", "general") not in namespace.reads
