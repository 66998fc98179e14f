"""Everything the operator creates for one custom resource (`Children`), from its parsed spec.

The entry points of the builders: the handlers and `sftctl run` call these
with the same inputs and get the same ConfigMap, Job and Service; the spec
arrives parsed (once per reconcile) with the identity of its resource.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sft_trainer.config import TOKEN_ENV

from .api import DatasetCurationSpec, SFTJobSpec
from .chain import start_of
from .inputs import Curation
from .layout import MountLayout, claims_of
from .naming import COMPONENT_LABEL, ResourceRef, child_name, labels, metadata
from .pods import MultiNode, config_map, hf_token_env, job, pod_failure_policy, pod_template, pvcs, run_config_map
from .run_configs import curation_run_config, review_apply_run_config, training_run_config
from .settings import OperatorSettings

# What runs a curation: `pods.job`, or `rayjob.ray_job` for engine ray (same inputs).
Runner = Callable[
    [ResourceRef, DatasetCurationSpec, MountLayout, OperatorSettings, str, list[str], list[dict[str, Any]]],
    dict[str, Any],
]


@dataclass
class Children:
    """Everything the operator creates for one custom resource."""

    config_map: dict[str, Any]
    job: dict[str, Any]
    """What runs the work: a Job, or a RayJob for a curation on Ray."""
    service: dict[str, Any] | None = None

    def all(self) -> list[dict[str, Any]]:
        return [obj for obj in (self.config_map, self.service, self.job) if obj is not None]


def curation_children(
    ref: ResourceRef,
    spec: DatasetCurationSpec,
    settings: OperatorSettings,
    layout: MountLayout | None = None,
    runner: Runner = job,
) -> Children:
    """ConfigMap + what runs it: the Job, or what `runner` builds from the same pieces (rayjob.ray_job)."""
    layout = layout or MountLayout(volumes_root=settings.volumes_root)
    cm = run_config_map(ref, curation_run_config(spec, layout, settings))
    env = hf_token_env(spec.source, spec.tokenizer)
    return Children(cm, runner(ref, spec, layout, settings, cm["metadata"]["name"], pvcs(spec), env))


def training_children(
    ref: ResourceRef,
    spec: SFTJobSpec,
    settings: OperatorSettings,
    curation: Curation | None = None,
    layout: MountLayout | None = None,
    lineage: list[dict[str, Any]] | None = None,
) -> Children:
    """ConfigMap + Job (+ headless Service for multi-node) of an SFTJob.

    `curation` is the referenced DatasetCuration when the dataset is a
    curationRef: its output claim is mounted and its curated.jsonl read.
    `lineage` is the status.lineage of a job whose model is an sftJobRef: the
    claims holding the stages it starts from are mounted read-only.
    """
    layout = layout or MountLayout(volumes_root=settings.volumes_root)
    curation_spec = curation.spec if curation else None
    start = start_of(lineage) if lineage and spec.model.sft_job_ref else None
    cm = run_config_map(ref, training_run_config(spec, layout, settings, curation_spec, start, ref.name))
    claims = sorted(
        {*pvcs(spec, [curation_spec.output.pvc if curation_spec else None]), *(start.claims if start else [])}
    )
    # Only the output claim is written; a parent's claim is read-only unless it is that one.
    read_only = frozenset(start.claims if start else []) - {spec.output.pvc.claim_name}
    env = hf_token_env(start.base if start else spec.model, spec.dataset)
    children = Children(cm, job(ref, spec, layout, settings, cm["metadata"]["name"], claims, env, read_only))
    multi_node = MultiNode.of(ref, spec.resources)
    if multi_node:
        children.service = multi_node.headless_service(ref)
    return children


# --------------------------------------------------------------------------
# Review on a cluster: the review-apply Job
# --------------------------------------------------------------------------

REVIEW_APPLY_SUBCOMMAND = "review-apply"
# A retried pod appends nothing twice and re-applying is a no-op, so retries are safe.
REVIEW_APPLY_BACKOFF_LIMIT = 2


def review_apply_name(owner_name: str, decisions: list[dict[str, Any]], attempt: int = 0) -> str:
    """`<curation>-review-<hash>`: the same decisions (and attempt) give the same Job, so a poll creates no duplicate."""
    canonical = json.dumps([decisions, attempt], sort_keys=True, separators=(",", ":"))
    return child_name(owner_name, f"review-{hashlib.sha256(canonical.encode()).hexdigest()[:10]}")


def review_apply_children(
    ref: ResourceRef,
    spec: DatasetCurationSpec,
    settings: OperatorSettings,
    decisions: list[dict[str, Any]],
    attempt: int = 0,
    layout: MountLayout | None = None,
) -> Children:
    """ConfigMap (the run config, with the decisions) + Job running `python -m sft_trainer review-apply`.

    The pod is the curation pod's template (same image, security context and
    output volume) with another command; it mounts only the output claim and,
    when Label Studio is configured, gets the token by Secret reference.
    """
    layout = layout or MountLayout(volumes_root=settings.volumes_root)
    name = review_apply_name(ref.name, decisions, attempt)
    object_labels = labels(ref) | {COMPONENT_LABEL: "review"}
    cm = config_map(ref, name, review_apply_run_config(spec, layout, decisions), object_labels)
    studio = spec.review.label_studio if spec.review else None
    env = []
    if studio is not None:
        secret = studio.token_secret_ref
        env.append({"name": TOKEN_ENV, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key}}})
    command = ["python", "-m", "sft_trainer", REVIEW_APPLY_SUBCOMMAND, layout.run_config_path]
    template = pod_template(
        ref, spec, layout, settings, name, claims_of(spec.output.pvc), env, command=command, pod_labels=object_labels
    )
    job_spec: dict[str, Any] = {
        "backoffLimit": REVIEW_APPLY_BACKOFF_LIMIT,
        "podFailurePolicy": pod_failure_policy(),
        "template": template,
    }
    # No TTL yet, as for the run's Job: `reconciler.hand_to_ttl` sets it once status holds the report.
    return Children(
        cm, {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata(ref, name, object_labels), "spec": job_spec}
    )
