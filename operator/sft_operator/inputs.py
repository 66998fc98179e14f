"""What an SFTJob trains from, and whether it can: one check for the operator and `sftctl run`.

An SFTJob may start from another SFTJob's result (`spec.model.sftJobRef`)
and train on a DatasetCuration's output (`spec.dataset.curationRef`).
`training_inputs` reads both through a `Lookup` (the API on a cluster, the
run folders of `sftctl run` on this machine) and says whether the job can
start now, must wait, or can never run, with the condition's reason and
message; when it can, it hands over what the builders need (the curation's
spec, the lineage). The operator waits on NOT_YET; `sftctl run` runs every
resource after what it depends on, so there NOT_YET fails the job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from . import conditions as c
from .api import DatasetCurationSpec, SFTJobSpec
from .chain import base_model_mismatch, cycle_message, find_cycle, lineage_of, parent_of, parent_readiness, start_of
from .readiness import NOT_YET, READY_TO_USE, UNUSABLE, Readiness

Obj = dict[str, Any]


class Lookup(Protocol):
    """Reads what an SFTJob refers to, in the namespace (or run folder) it lives in."""

    def custom(self, kind: str, name: str) -> Obj | None:
        """The custom resource with its status, or None when it does not exist."""

    def claim_exists(self, name: str) -> bool:
        """Whether a PersistentVolumeClaim (a folder, locally) of this name exists."""


@dataclass(frozen=True)
class Curation:
    """The DatasetCuration an SFTJob trains on: its name and spec (its output claim holds curated.jsonl)."""

    name: str
    spec: DatasetCurationSpec


@dataclass(frozen=True)
class TrainingInputs:
    """Whether the job can start and, when it can, what it starts from (None: a base model, a dataset on a claim)."""

    readiness: Readiness
    curation: Curation | None = None
    lineage: list[Obj] | None = None
    parent_uid: str | None = None
    """The uid of the parent SFTJob seen now: the operator records it, to tell its deletion from its absence."""


def training_inputs(
    name: str,
    spec: SFTJobSpec,
    lookup: Lookup,
    seen_parent_uid: str | None = None,
    started_lineage: list[Obj] | None = None,
) -> TrainingInputs:
    """Check the stage the job starts from, then its dataset, then that both measure with one tokenizer.

    `started_lineage` is the lineage of a job that already started: it is
    kept (its parent may since have been deleted; nothing is re-checked).
    """
    lookup = _Remembered(lookup)  # a chain's walk and the readiness check read the same parent once
    lineage, parent_uid = started_lineage, None
    if spec.model.sft_job_ref is not None and lineage is None:
        ref = spec.model.sft_job_ref
        cycle = find_cycle(name, ref.name, lambda n: parent_of(lookup.custom("SFTJob", n) or {}))
        if cycle:
            return TrainingInputs(Readiness(UNUSABLE, c.CHAIN_CYCLE, cycle_message(cycle)))
        parent = lookup.custom("SFTJob", ref.name)
        parent_uid = (parent.get("metadata") or {}).get("uid") if parent is not None else None
        readiness = parent_readiness(parent, spec.model, seen_parent_uid)
        if readiness.state != READY_TO_USE:
            return TrainingInputs(readiness, parent_uid=parent_uid)
        assert parent is not None
        lineage = lineage_of(parent, ref.use)
        gone = [claim for claim in start_of(lineage).claims if not lookup.claim_exists(claim)]
        if gone:
            message = (
                f"spec.model.sftJobRef: SFTJob {ref.name}'s results are gone: claim {', '.join(gone)} no longer exists"
            )
            return TrainingInputs(Readiness(UNUSABLE, c.PARENT_UNUSABLE, message), parent_uid=parent_uid)
    curation = None
    if spec.dataset.curation_ref is not None:
        curation_name = spec.dataset.curation_ref.name
        found = lookup.custom("DatasetCuration", curation_name)
        gates = spec.dataset.gates.to_wire() if spec.dataset.gates else None
        readiness = curation_readiness(found, curation_name, gates)
        if readiness.state != READY_TO_USE:
            return TrainingInputs(readiness, lineage=lineage, parent_uid=parent_uid)
        assert found is not None
        curation = Curation(curation_name, DatasetCurationSpec.model_validate(found["spec"]))
    if lineage and curation and (mismatch := base_model_mismatch(lineage, curation.name, curation.spec)):
        return TrainingInputs(
            Readiness(UNUSABLE, c.BASE_MODEL_MISMATCH, mismatch), lineage=lineage, parent_uid=parent_uid
        )
    return TrainingInputs(Readiness(READY_TO_USE), curation, lineage, parent_uid)


class _Remembered:
    """A Lookup that reads each object once."""

    def __init__(self, lookup: Lookup) -> None:
        self._lookup = lookup
        self._seen: dict[tuple[str, str], Obj | None] = {}

    def custom(self, kind: str, name: str) -> Obj | None:
        if (kind, name) not in self._seen:
            self._seen[kind, name] = self._lookup.custom(kind, name)
        return self._seen[kind, name]

    def claim_exists(self, name: str) -> bool:
        return self._lookup.claim_exists(name)


def curation_readiness(curation: Obj | None, name: str, gates: dict[str, Any] | None) -> Readiness:
    """Can an SFTJob train on this DatasetCuration now: Ready, through the quality gates, review done enough?"""
    if curation is None:
        return Readiness(NOT_YET, c.WAITING_FOR_DATASET, f"Waiting for DatasetCuration {name}: it does not exist yet")
    status = curation.get("status", {}) or {}
    conds = status.get("conditions", []) or []
    if c.is_true(conds, c.FAILED):
        failure = c.get_condition(conds, c.FAILED) or {}
        message = f"DatasetCuration {name} failed: {failure.get('message') or failure.get('reason')}"
        return Readiness(UNUSABLE, c.DATASET_FAILED, message)
    if not c.is_true(conds, c.READY):
        phase = status.get("phase") or c.PHASE_PENDING  # named for the person reading, never decided on
        message = f"Waiting for DatasetCuration {name} to be Ready (it is {phase})"
        return Readiness(NOT_YET, c.WAITING_FOR_DATASET, message)
    failures = gate_failures(gates, status)
    if failures:
        return Readiness(UNUSABLE, c.QUALITY_GATE_FAILED, f"DatasetCuration {name} failed " + "; ".join(failures))
    waiting = review_wait(gates, status, name)
    if waiting:  # the operator retries until the count drops: the job then starts by itself
        return Readiness(NOT_YET, c.WAITING_FOR_REVIEW, waiting)
    return Readiness(READY_TO_USE, message=f"DatasetCuration {name} is Ready")


def review_wait(gates: dict[str, Any] | None, curation_status: dict[str, Any], name: str) -> str | None:
    """Why an SFTJob waits for its curation's review (gate maxPendingReview), or None when it need not."""
    limit = (gates or {}).get("maxPendingReview")
    if limit is None:
        return None
    review = curation_status.get("review") or {}
    pending = review.get("pending", (curation_status.get("counts") or {}).get("review", 0))
    if pending <= limit:
        return None
    return (
        f"Waiting for review of DatasetCuration {name}: {pending} records pending, more than maxPendingReview {limit}"
    )


def gate_failures(gates: dict[str, Any] | None, curation_status: dict[str, Any]) -> list[str]:
    """Which quality gates a curation's figures fail, each saying by how much.

    `gates` is an SFTJob's `spec.dataset.gates` (camelCase); an empty list
    means the job may train on this curation.
    """
    if not gates:
        return []
    failures: list[str] = []
    entropy = curation_status.get("taskEntropyAfter")
    rejected = curation_status.get("rejectedFraction")
    curated = (curation_status.get("counts") or {}).get("curated")
    minimum_entropy = gates.get("minTaskEntropy")
    if minimum_entropy is not None and (entropy is None or entropy < minimum_entropy):
        failures.append(
            f"minTaskEntropy: task entropy {_fmt(entropy)} is below {minimum_entropy:.3f}{_by(minimum_entropy, entropy)}"
        )
    maximum_rejected = gates.get("maxRejectedFraction")
    if maximum_rejected is not None and (rejected is None or rejected > maximum_rejected):
        failures.append(
            f"maxRejectedFraction: rejected fraction {_fmt(rejected)} is above {maximum_rejected:.3f}"
            f"{_by(rejected, maximum_rejected)}"
        )
    minimum_curated = gates.get("minCuratedRecords")
    if minimum_curated is not None and (curated is None or curated < minimum_curated):
        failures.append(
            f"minCuratedRecords: {curated} curated records, fewer than {minimum_curated}"
            + (f" by {minimum_curated - curated}" if curated is not None else "")
        )
    return failures


def _fmt(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.3f}"


def _by(high: float | None, low: float | None) -> str:
    """` by 0.123`: how far a figure missed its gate (empty when the figure is unknown)."""
    return "" if high is None or low is None else f" by {high - low:.3f}"
