"""The Kubernetes objects that run the work: pod template, Job, ConfigMap, and a multi-node run's Service.

Pure builders, no API calls. Every pod runs one container (`CONTAINER`) as a
non-root user with no API credentials, mounts the run config read-only and
the claims it needs, serves /progress on the port named `progress`, and
writes its report's `status` to the termination message.

A multi-node SFTJob (`resources.nodes > 1`) is an Indexed Job whose pods
find each other through a headless Service: `MultiNode` is everything that
adds (rank, rendezvous port, DNS subdomain, torchrun's arguments, the
Service), in one place, applied while the pod is built.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from sft_trainer.config import EXIT_CONFIG_ERROR, CurationRunConfig, ReviewApplyRunConfig, TrainRunConfig

from .api import DatasetCurationSpec, DatasetSource, ModelSource, PvcLocation, Resources, SFTJobSpec
from .layout import RUN_CONFIG_FILE, MountLayout, claims_of
from .naming import COMPLETION_INDEX, CONTAINER, ResourceRef, child_name, job_name, labels, metadata, run_labels
from .settings import OperatorSettings

RENDEZVOUS_PORT = 29500
# The container port the operator reads /progress from (by name, so a pod
# keeps working whatever port the operator is configured with later).
PROGRESS_PORT_NAME = "progress"
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
# torchrun itself exits 1 whatever its workers exit with; the image's launcher
# is torchrun that keeps EXIT_CONFIG_ERROR, so podFailurePolicy still sees it.
TORCHRUN = ["python", "-m", "sft_trainer.launch"]


def pod_failure_policy() -> dict[str, Any]:
    """A config error fails the Job at once; evictions, preemptions and node drains are not the run's fault."""
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [EXIT_CONFIG_ERROR]},
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        ]
    }


def pvcs(spec: DatasetCurationSpec | SFTJobSpec, extra: Iterable[PvcLocation | None] = ()) -> list[str]:
    """The claims a run of this spec mounts (`extra`: claims that come from elsewhere, e.g. a curation's output)."""
    if isinstance(spec, SFTJobSpec):
        return claims_of(spec.model.pvc, spec.dataset.pvc, spec.output.pvc, *extra)
    return claims_of(spec.source.pvc, spec.output.pvc, spec.tokenizer.pvc if spec.tokenizer else None, *extra)


def hf_token_env(*sources: ModelSource | DatasetSource | None) -> list[dict[str, Any]]:
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


def container_resources(resources: Resources) -> dict[str, Any]:
    """A container's `resources`: GPU limits, and cpu/memory as both limit and request."""
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


@dataclass(frozen=True)
class MultiNode:
    """What a pod of a multi-node run adds: its rank, the rendezvous port, the Service's subdomain, torchrun's flags."""

    service: str
    """The headless Service, named as the Indexed Job: pod `<job>-<index>` answers at `<job>-<index>.<job>`."""
    resources: Resources

    @classmethod
    def of(cls, ref: ResourceRef, resources: Resources) -> MultiNode | None:
        """The multi-node setup of a run on more than one node, else None."""
        return cls(job_name(ref), resources) if resources.nodes > 1 else None

    def torchrun_arguments(self) -> list[str]:
        return [
            f"--nnodes={self.resources.nodes}",
            f"--nproc-per-node={self.resources.gpus_per_node}",
            "--node-rank=$(NODE_RANK)",
            f"--master-addr={self.service}-0.{self.service}",
            f"--master-port={RENDEZVOUS_PORT}",
        ]

    def env(self) -> list[dict[str, Any]]:
        rank = {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}}
        return [{"name": "NODE_RANK", "valueFrom": rank}]

    def ports(self) -> list[dict[str, Any]]:
        return [{"name": "rendezvous", "containerPort": RENDEZVOUS_PORT}]

    def headless_service(self, ref: ResourceRef) -> dict[str, Any]:
        """Stable DNS names `<job>-<index>.<job>` for torchrun's rendezvous."""
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(ref, self.service, labels(ref)),
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": True,
                "selector": {"batch.kubernetes.io/job-name": self.service},
                "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT}],
            },
        }


def work_command(ref: ResourceRef, spec: DatasetCurationSpec | SFTJobSpec, layout: MountLayout) -> list[str]:
    """`python -m sft_trainer <subcommand> run.yaml`, under torchrun when training runs one process per GPU."""
    module = ["-m", "sft_trainer", ref.subcommand, layout.run_config_path]
    # Curation is one process whatever it is given; training runs one process per GPU.
    if ref.kind == "DatasetCuration" or (spec.resources.nodes == 1 and spec.resources.gpus_per_node <= 1):
        return ["python", *module]
    multi_node = MultiNode.of(ref, spec.resources)
    if multi_node is None:
        # One process per GPU; --standalone runs the rendezvous inside the pod.
        return [*TORCHRUN, "--standalone", f"--nproc-per-node={spec.resources.gpus_per_node}", *module]
    return [*TORCHRUN, *multi_node.torchrun_arguments(), *module]


def pod_template(
    ref: ResourceRef,
    spec: DatasetCurationSpec | SFTJobSpec,
    layout: MountLayout,
    settings: OperatorSettings,
    config_map: str,
    claims: list[str],
    env: list[dict[str, Any]],
    read_only_claims: frozenset[str] = frozenset(),
    command: list[str] | None = None,
    pod_labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The pod that runs `command` (default: the work of `ref`'s kind), with the run config and `claims` mounted."""
    multi_node = MultiNode.of(ref, spec.resources) if command is None else None
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
        "command": command or work_command(ref, spec, layout),
        "env": [
            {"name": "SFT_PROGRESS_HOST", "value": "0.0.0.0"},
            # Paths in the run config must stay inside their claim's folder under this root
            # (sft_trainer/paths.py reads it; the operator's volumesRoot setting may move it).
            {"name": "SFT_VOLUMES_ROOT", "value": layout.volumes_root},
            {"name": "HF_HOME", "value": f"{layout.scratch_dir}/huggingface"},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            *env,
            *(multi_node.env() if multi_node else []),
        ],
        "ports": [
            {"name": PROGRESS_PORT_NAME, "containerPort": settings.progress_port},
            *(multi_node.ports() if multi_node else []),
        ],
        # The process writes its report's compact `status` summary here; the
        # operator reads it from the pod (it cannot read the claim). On a crash
        # the log tail takes its place, so a failure message reaches status too.
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
        "securityContext": _security_context(),
        "resources": container_resources(spec.resources),
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
    if multi_node:
        pod_spec["subdomain"] = multi_node.service
    return {"metadata": {"labels": pod_labels or labels(ref)}, "spec": pod_spec}


def job(
    ref: ResourceRef,
    spec: DatasetCurationSpec | SFTJobSpec,
    layout: MountLayout,
    settings: OperatorSettings,
    config_map: str,
    claims: list[str],
    env: list[dict[str, Any]],
    read_only_claims: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The Job that runs the work of `ref` (an Indexed Job of `nodes` pods for a multi-node run)."""
    lifecycle = spec.lifecycle
    nodes = spec.resources.nodes
    job_spec: dict[str, Any] = {
        "backoffLimit": lifecycle.backoff_limit,
        "suspend": lifecycle.suspend,
        "completions": nodes,
        "parallelism": nodes,
        "podFailurePolicy": pod_failure_policy(),
        "template": pod_template(ref, spec, layout, settings, config_map, claims, env, read_only_claims),
    }
    if MultiNode.of(ref, spec.resources):
        job_spec["completionMode"] = "Indexed"  # each pod's index is its node rank
    if lifecycle.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = lifecycle.active_deadline_seconds
    # No ttlSecondsAfterFinished here: the reconciler hands the finished Job to
    # the TTL controller once status holds its pods' report (`reconciler.hand_to_ttl`).
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(ref, job_name(ref), run_labels(ref, lifecycle.queue_name)),
        "spec": job_spec,
    }


def config_map(
    ref: ResourceRef,
    name: str,
    run_config: CurationRunConfig | TrainRunConfig | ReviewApplyRunConfig,
    object_labels: dict[str, str],
) -> dict[str, Any]:
    """The ConfigMap holding the run config as run.yaml (mounted read-only at the layout's config_dir)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(ref, name, object_labels),
        "data": {RUN_CONFIG_FILE: yaml.safe_dump(run_config.to_wire(), sort_keys=False)},
    }


def run_config_map(ref: ResourceRef, run_config: CurationRunConfig | TrainRunConfig) -> dict[str, Any]:
    """The ConfigMap of the work's own run (`<name>-run-config`)."""
    return config_map(ref, child_name(ref.name, "run-config"), run_config, labels(ref))
