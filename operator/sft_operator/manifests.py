"""Pure builders: a custom resource in, the Kubernetes objects that run it out.

No API calls here: the kopf handlers and the local executor (`sftctl run`)
call these with the same inputs and get the same ConfigMap, Job and Service.
Names are deterministic, so a second reconcile finds what the first created
instead of creating it again.

Where things live in a pod is a `MountLayout`: in a cluster every claim is
mounted under /mnt/volumes/<claim>; the local executor passes a layout that
points each claim at a folder on this machine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from sft_trainer.config import (
    TOKEN_ENV,
    CurationConfig,
    CurationRunConfig,
    LabelStudioTarget,
    ParentStage,
    ReviewApplyRunConfig,
    TrainRunConfig,
)

from .api import (
    API_VERSION,
    DatasetCurationSpec,
    DatasetSource,
    ModelSource,
    PvcLocation,
    Resources,
    SFTJobSpec,
)
from .chain import Start, start_of
from .settings import OperatorSettings

RUN_CONFIG_FILE = "run.yaml"
CONTAINER = "trainer"
# Exit code of `python -m sft_trainer` for a configuration error: the Job's
# podFailurePolicy fails the Job at once instead of retrying it.
EXIT_CONFIG_ERROR = 42
RENDEZVOUS_PORT = 29500
# The container port the operator reads /progress from (by name, so a pod
# keeps working whatever port the operator is configured with later).
PROGRESS_PORT_NAME = "progress"
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
# Set by the Job controller on every pod of an Indexed Job; rank 0 reports progress.
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
PART_OF = "trustdoc-sft"
# Every child carries this label: the operator watches only Jobs that have it.
MANAGED_BY_LABEL, MANAGED_BY = "app.kubernetes.io/managed-by", "trustdoc-sft-operator"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
OWNER_LABEL = {"SFTJob": "sft.trustdoc.io/sftjob", "DatasetCuration": "sft.trustdoc.io/datasetcuration"}


@dataclass(frozen=True)
class MountLayout:
    """Where claims, the run config and scratch space are, as the pod sees them."""

    volumes_root: str = "/mnt/volumes"
    config_dir: str = "/mnt/config"
    scratch_dir: str = "/tmp"
    claim_dirs: dict[str, str] = field(default_factory=dict)
    """Explicit folder per claim (local executor); others go under volumes_root."""

    def claim_dir(self, claim: str) -> str:
        return self.claim_dirs.get(claim, f"{self.volumes_root}/{claim}")

    def path(self, location: PvcLocation) -> str:
        base = self.claim_dir(location.claim_name)
        return base if location.path in ("", ".") else f"{base}/{location.path}"

    @property
    def run_config_path(self) -> str:
        return f"{self.config_dir}/{RUN_CONFIG_FILE}"


@dataclass(frozen=True)
class Owner:
    """The custom resource that owns the children."""

    kind: str
    name: str
    namespace: str
    uid: str

    @classmethod
    def of(cls, body: dict[str, Any]) -> Owner:
        meta = body["metadata"]
        return cls(body["kind"], meta["name"], meta.get("namespace", "default"), meta.get("uid", ""))

    @property
    def subcommand(self) -> str:
        """`python -m sft_trainer <subcommand>`, also the Job name's suffix."""
        return "curate" if self.kind == "DatasetCuration" else "train"

    @property
    def component(self) -> str:
        """The `app.kubernetes.io/component` label of everything made for this owner."""
        return "curation" if self.kind == "DatasetCuration" else "training"

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass
class Children:
    """Everything the operator creates for one custom resource."""

    config_map: dict[str, Any]
    job: dict[str, Any]
    service: dict[str, Any] | None = None

    def all(self) -> list[dict[str, Any]]:
        return [obj for obj in (self.config_map, self.service, self.job) if obj is not None]


def child_name(owner_name: str, suffix: str, limit: int = 63) -> str:
    """`<owner>-<suffix>`, shortened with a stable hash when over `limit`.

    Job names become pod label values (63 characters at most), so the limit
    is the label limit.
    """
    name = f"{owner_name}-{suffix}"
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{digest}"


def job_name(owner: Owner) -> str:
    return child_name(owner.name, owner.subcommand)


def labels(owner: Owner) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": PART_OF,
        "app.kubernetes.io/component": owner.component,
        MANAGED_BY_LABEL: MANAGED_BY,
        "app.kubernetes.io/instance": owner.name,
        OWNER_LABEL[owner.kind]: owner.name,
    }


# --------------------------------------------------------------------------
# Run configs
# --------------------------------------------------------------------------


def source_path(source: ModelSource | DatasetSource | PvcLocation, layout: MountLayout) -> str:
    """Where the pod finds a model or dataset: a mounted path, or an `hf://` URI it downloads."""
    if isinstance(source, PvcLocation):
        return layout.path(source)
    if source.pvc is not None:
        return layout.path(source.pvc)
    if source.hugging_face is not None:
        repo = source.hugging_face
        uri = f"hf://{repo.repo}@{repo.revision}"
        return f"{uri}/{repo.file}" if repo.file else uri
    raise ValueError("source has neither pvc nor huggingFace")


def curation_run_config(
    spec: DatasetCurationSpec, layout: MountLayout, settings: OperatorSettings
) -> CurationRunConfig:
    return CurationRunConfig(
        input=source_path(spec.source, layout),
        format=spec.source.format,
        output_dir=layout.path(spec.output.pvc),
        tokenizer=source_path(spec.tokenizer, layout) if spec.tokenizer else None,
        curation=pipeline_settings(spec),
        progress_port=settings.progress_port,
    )


def pipeline_settings(spec: DatasetCurationSpec) -> CurationConfig:
    """The run config's `curation` section: spec.curation, with spec.engine as its `engine`."""
    return CurationConfig.model_validate({**spec.curation.to_wire(), "engine": spec.engine.to_wire()})


CURATED_FILE = "curated.jsonl"


def training_run_config(
    spec: SFTJobSpec,
    layout: MountLayout,
    settings: OperatorSettings,
    curation_spec: DatasetCurationSpec | None = None,
    start: Start | None = None,
    name: str | None = None,
) -> TrainRunConfig:
    """The trainer's run config; a curationRef reads the curation's curated.jsonl, an sftJobRef starts at `start`."""
    if spec.dataset.curation_ref is not None:
        if curation_spec is None:
            raise ValueError("dataset.curationRef needs the referenced DatasetCuration's spec")
        dataset, data_format = f"{layout.path(curation_spec.output.pvc)}/{CURATED_FILE}", "messages"
    else:
        dataset, data_format = source_path(spec.dataset, layout), spec.dataset.format
    parent = None
    if spec.model.sft_job_ref is not None:
        if start is None:
            raise ValueError("model.sftJobRef needs the lineage of the referenced SFTJob")
        parent = ParentStage(
            name=spec.model.sft_job_ref.name,
            output_dir=layout.path(start.parent_output),
            use=spec.model.sft_job_ref.use,
            adapters=[layout.path(adapter) for adapter in start.adapters],
            base_model=source_path(start.base, layout),
        )
    return TrainRunConfig(
        model=source_path(start.model, layout) if start else source_path(spec.model, layout),
        name=name,
        parent=parent,
        dataset=dataset,
        format=data_format,
        output_dir=layout.path(spec.output.pvc),
        training=spec.training,
        progress_port=settings.progress_port,
    )


# --------------------------------------------------------------------------
# Pods and Jobs
# --------------------------------------------------------------------------


def claims_of(*locations: PvcLocation | None) -> list[str]:
    return sorted({loc.claim_name for loc in locations if loc is not None})


def _pvcs(spec: DatasetCurationSpec | SFTJobSpec, extra: Iterable[PvcLocation | None] = ()) -> list[str]:
    if isinstance(spec, SFTJobSpec):
        return claims_of(spec.model.pvc, spec.dataset.pvc, spec.output.pvc, *extra)
    return claims_of(spec.source.pvc, spec.output.pvc, spec.tokenizer.pvc if spec.tokenizer else None, *extra)


def _hf_token_env(*sources: ModelSource | DatasetSource | None) -> list[dict[str, Any]]:
    """HF_TOKEN from the first secret reference: by reference only, never by value."""
    for source in sources:
        repo = source.hugging_face if source is not None else None
        if repo is not None and repo.token_secret_ref is not None:
            ref = repo.token_secret_ref
            return [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}]
    return []


def _security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _resources(resources: Resources) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    requests: dict[str, Any] = {}
    if resources.gpus_per_node:
        # A quantity: the API takes int-or-string, typed clients (and server-side apply) want the string.
        limits["nvidia.com/gpu"] = str(resources.gpus_per_node)
    for key in ("cpu", "memory"):
        value = getattr(resources, key)
        if value:
            limits[key] = requests[key] = value
    out: dict[str, Any] = {}
    if limits:
        out["limits"] = limits
    if requests:
        out["requests"] = requests
    return out


# torchrun itself exits 1 whatever its workers exit with; the image's launcher
# is torchrun that keeps EXIT_CONFIG_ERROR, so podFailurePolicy still sees it.
TORCHRUN = ["python", "-m", "sft_trainer.launch"]


def _command(owner: Owner, spec: DatasetCurationSpec | SFTJobSpec, layout: MountLayout) -> list[str]:
    subcommand = owner.subcommand
    module = ["-m", "sft_trainer", subcommand, layout.run_config_path]
    # Curation is one process whatever it is given; training runs one process per GPU.
    if owner.kind == "DatasetCuration" or (spec.resources.nodes == 1 and spec.resources.gpus_per_node <= 1):
        return ["python", *module]
    if spec.resources.nodes == 1:
        # One process per GPU; --standalone runs the rendezvous inside the pod.
        return [*TORCHRUN, "--standalone", f"--nproc-per-node={spec.resources.gpus_per_node}", *module]
    job = job_name(owner)
    return [
        *TORCHRUN,
        f"--nnodes={spec.resources.nodes}",
        f"--nproc-per-node={spec.resources.gpus_per_node}",
        "--node-rank=$(NODE_RANK)",
        f"--master-addr={job}-0.{job}",
        f"--master-port={RENDEZVOUS_PORT}",
        *module,
    ]


def pod_template(
    owner: Owner,
    spec: DatasetCurationSpec | SFTJobSpec,
    layout: MountLayout,
    settings: OperatorSettings,
    config_map: str,
    claims: list[str],
    env: list[dict[str, Any]],
    read_only_claims: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = [
        {"name": "run-config", "configMap": {"name": config_map}},
        {"name": "scratch", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "run-config", "mountPath": layout.config_dir, "readOnly": True},
        {"name": "scratch", "mountPath": layout.scratch_dir},
    ]
    for index, claim in enumerate(claims):
        volumes.append({"name": f"pvc-{index}", "persistentVolumeClaim": {"claimName": claim}})
        mount = {"name": f"pvc-{index}", "mountPath": layout.claim_dir(claim)}
        mounts.append({**mount, "readOnly": True} if claim in read_only_claims else mount)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image or settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": _command(owner, spec, layout),
        "env": [
            {"name": "SFT_PROGRESS_HOST", "value": "0.0.0.0"},
            # Paths in the run config must stay inside their claim's folder under this root
            # (sft_trainer/paths.py reads it; the operator's volumesRoot setting may move it).
            {"name": "SFT_VOLUMES_ROOT", "value": layout.volumes_root},
            {"name": "HF_HOME", "value": f"{layout.scratch_dir}/huggingface"},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            *env,
        ],
        "ports": [{"name": PROGRESS_PORT_NAME, "containerPort": settings.progress_port}],
        # The process writes its report's compact `status` summary here; the
        # operator reads it from the pod (it cannot read the claim). On a crash
        # the log tail takes its place, so a failure message reaches status too.
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
        "securityContext": _security_context(),
        "resources": _resources(spec.resources),
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # Pods only read their inputs and serve /progress: no API credentials.
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "fsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if spec.resources.node_selector:
        pod_spec["nodeSelector"] = dict(spec.resources.node_selector)
    if spec.resources.tolerations:
        pod_spec["tolerations"] = [t.to_wire() for t in spec.resources.tolerations]
    if spec.resources.nodes > 1:
        pod_spec["subdomain"] = job_name(owner)
    return {"metadata": {"labels": labels(owner)}, "spec": pod_spec}


def job(
    owner: Owner,
    spec: DatasetCurationSpec | SFTJobSpec,
    layout: MountLayout,
    settings: OperatorSettings,
    config_map: str,
    claims: list[str],
    env: list[dict[str, Any]],
    read_only_claims: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    lifecycle = spec.lifecycle
    nodes = spec.resources.nodes
    job_labels = labels(owner)
    if lifecycle.queue_name:
        job_labels[QUEUE_LABEL] = lifecycle.queue_name
    job_spec: dict[str, Any] = {
        "backoffLimit": lifecycle.backoff_limit,
        "suspend": lifecycle.suspend,
        "completions": nodes,
        "parallelism": nodes,
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [EXIT_CONFIG_ERROR]},
                },
                # Evictions, preemptions and node drains are not the run's fault.
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            ]
        },
        "template": pod_template(owner, spec, layout, settings, config_map, claims, env, read_only_claims),
    }
    if nodes > 1:
        job_spec["completionMode"] = "Indexed"
        template_container = job_spec["template"]["spec"]["containers"][0]
        template_container["env"].append(
            {
                "name": "NODE_RANK",
                "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}},
            }
        )
        template_container["ports"].append({"name": "rendezvous", "containerPort": RENDEZVOUS_PORT})
    if lifecycle.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = lifecycle.active_deadline_seconds
    if lifecycle.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = lifecycle.ttl_seconds_after_finished
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(owner, job_name(owner), job_labels),
        "spec": job_spec,
    }


def _metadata(owner: Owner, name: str, object_labels: dict[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": object_labels,
        "ownerReferences": [owner.reference()],
    }


def config_map(owner: Owner, run_config: CurationRunConfig | TrainRunConfig) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(owner, child_name(owner.name, "run-config"), labels(owner)),
        "data": {RUN_CONFIG_FILE: yaml.safe_dump(run_config.to_wire(), sort_keys=False)},
    }


def headless_service(owner: Owner) -> dict[str, Any]:
    """Stable DNS names `<job>-<index>.<job>` for torchrun rendezvous."""
    name = job_name(owner)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, name, labels(owner)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {"batch.kubernetes.io/job-name": name},
            "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT}],
        },
    }


# --------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------


def curation_children(
    body: dict[str, Any],
    settings: OperatorSettings,
    layout: MountLayout | None = None,
    runner: Callable[..., dict[str, Any]] | None = None,
) -> Children:
    """ConfigMap + what runs it: the Job, or what `runner` builds from the same pieces (rayjob.ray_job)."""
    owner = Owner.of(body)
    spec = DatasetCurationSpec.model_validate(body["spec"])
    layout = layout or MountLayout(volumes_root=settings.volumes_root)
    cm = config_map(owner, curation_run_config(spec, layout, settings))
    claims = _pvcs(spec)
    env = _hf_token_env(spec.source, spec.tokenizer)
    return Children(cm, (runner or job)(owner, spec, layout, settings, cm["metadata"]["name"], claims, env))


def training_children(
    body: dict[str, Any],
    settings: OperatorSettings,
    curation: dict[str, Any] | None = None,
    layout: MountLayout | None = None,
    lineage: list[dict[str, Any]] | None = None,
) -> Children:
    """ConfigMap + Job (+ headless Service for multi-node) of an SFTJob.

    `curation` is the referenced DatasetCuration object when the dataset is a
    curationRef: its output claim is mounted and its curated.jsonl read.
    `lineage` is the status.lineage of a job whose model is an sftJobRef: the
    claims holding the stages it starts from are mounted read-only.
    """
    owner = Owner.of(body)
    spec = SFTJobSpec.model_validate(body["spec"])
    layout = layout or MountLayout(volumes_root=settings.volumes_root)
    curation_spec = DatasetCurationSpec.model_validate(curation["spec"]) if curation else None
    start = start_of(lineage) if lineage and spec.model.sft_job_ref else None
    cm = config_map(owner, training_run_config(spec, layout, settings, curation_spec, start, owner.name))
    claims = sorted(
        {*_pvcs(spec, [curation_spec.output.pvc if curation_spec else None]), *(start.claims if start else [])}
    )
    # Only the output claim is written; a parent's claim is read-only unless it is that one.
    read_only = frozenset(start.claims if start else []) - {spec.output.pvc.claim_name}
    env = _hf_token_env(start.base if start else spec.model, spec.dataset)
    children = Children(cm, job(owner, spec, layout, settings, cm["metadata"]["name"], claims, env, read_only))
    if spec.resources.nodes > 1:
        children.service = headless_service(owner)
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


def review_apply_run_config(
    spec: DatasetCurationSpec, layout: MountLayout, decisions: list[dict[str, Any]]
) -> ReviewApplyRunConfig:
    studio = spec.review.label_studio if spec.review else None
    return ReviewApplyRunConfig(
        output_dir=layout.path(spec.output.pvc),
        decisions=decisions,
        label_studio=LabelStudioTarget(url=studio.url, project=studio.project) if studio else None,
    )


def review_apply_children(
    body: dict[str, Any],
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
    owner = Owner.of(body)
    spec = DatasetCurationSpec.model_validate(body["spec"])
    layout = layout or MountLayout(volumes_root=settings.volumes_root)
    name = review_apply_name(owner.name, decisions, attempt)
    run_config = review_apply_run_config(spec, layout, decisions)
    object_labels = labels(owner) | {"app.kubernetes.io/component": "review"}
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(owner, name, object_labels),
        "data": {RUN_CONFIG_FILE: yaml.safe_dump(run_config.to_wire(), sort_keys=False)},
    }
    studio = spec.review.label_studio if spec.review else None
    env = []
    if studio is not None:
        ref = studio.token_secret_ref
        env.append({"name": TOKEN_ENV, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    template = pod_template(owner, spec, layout, settings, name, claims_of(spec.output.pvc), env)
    template["metadata"]["labels"] = object_labels
    template["spec"]["containers"][0]["command"] = [
        "python",
        "-m",
        "sft_trainer",
        REVIEW_APPLY_SUBCOMMAND,
        layout.run_config_path,
    ]
    job_spec: dict[str, Any] = {
        "backoffLimit": REVIEW_APPLY_BACKOFF_LIMIT,
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [EXIT_CONFIG_ERROR]},
                },
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            ]
        },
        "template": template,
    }
    if spec.lifecycle.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.lifecycle.ttl_seconds_after_finished
    job_obj = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(owner, name, object_labels),
        "spec": job_spec,
    }
    return Children(cm, job_obj)
