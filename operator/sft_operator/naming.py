"""Who a custom resource is, and what its children are called and labelled.

One identity type (`ResourceRef`) serves the handlers (which object to
write status to: the uid tells a recreated namesake apart) and the builders
(the owner of every child). Child names are deterministic, so a second
reconcile finds what the first created instead of creating it again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .api import API_VERSION

# The container that runs the work, in every pod the operator makes.
CONTAINER = "trainer"
PART_OF = "trustdoc-sft"
# Every child carries this label: the operator watches only Jobs that have it.
MANAGED_BY_LABEL, MANAGED_BY = "app.kubernetes.io/managed-by", "trustdoc-sft-operator"
COMPONENT_LABEL = "app.kubernetes.io/component"
OWNER_LABEL = {"SFTJob": "sft.trustdoc.io/sftjob", "DatasetCuration": "sft.trustdoc.io/datasetcuration"}
# Kueue admits a Job (or RayJob) to the queue this label names.
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# Set by the Job controller on every pod of an Indexed Job; rank 0 reports for the run.
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
# Kubernetes names and label values: 63 characters at most.
NAME_LIMIT = 63


@dataclass(frozen=True)
class ResourceRef:
    """One custom resource (this very one: the uid tells a recreated namesake apart)."""

    kind: str
    namespace: str
    name: str
    uid: str

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> ResourceRef:
        """From an object as the API returns it (or a manifest: `sftctl run` gives namespace and uid)."""
        meta = body["metadata"]
        return cls(
            str(body["kind"]), str(meta.get("namespace", "default")), str(meta["name"]), str(meta.get("uid", ""))
        )

    @property
    def subcommand(self) -> str:
        """`python -m sft_trainer <subcommand>`, also the Job name's suffix."""
        return "curate" if self.kind == "DatasetCuration" else "train"

    @property
    def component(self) -> str:
        """The `app.kubernetes.io/component` label of everything made for this resource."""
        return "curation" if self.kind == "DatasetCuration" else "training"

    def owner_reference(self) -> dict[str, Any]:
        """The children's ownerReference: this resource controls them (and their garbage collection)."""
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def child_name(owner_name: str, suffix: str, limit: int = NAME_LIMIT) -> str:
    """`<owner>-<suffix>`, shortened with a stable hash when over `limit`.

    Job names become pod label values (63 characters at most), so the limit
    is the label limit.
    """
    name = f"{owner_name}-{suffix}"
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{digest}"


def job_name(ref: ResourceRef) -> str:
    return child_name(ref.name, ref.subcommand)


def labels(ref: ResourceRef) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": PART_OF,
        COMPONENT_LABEL: ref.component,
        MANAGED_BY_LABEL: MANAGED_BY,
        "app.kubernetes.io/instance": ref.name,
        OWNER_LABEL[ref.kind]: ref.name,
    }


def run_labels(ref: ResourceRef, queue_name: str | None) -> dict[str, str]:
    """Labels of the object that runs the work (Job or RayJob): Kueue's queue label when a queue is named."""
    return labels(ref) | ({QUEUE_LABEL: queue_name} if queue_name else {})


def metadata(ref: ResourceRef, name: str, object_labels: dict[str, str]) -> dict[str, Any]:
    """A child's metadata: its name, the resource's namespace, these labels, owned by the resource."""
    return {
        "name": name,
        "namespace": ref.namespace,
        "labels": object_labels,
        "ownerReferences": [ref.owner_reference()],
    }
