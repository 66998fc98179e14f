"""A DatasetCuration with `spec.engine.type: ray`: the KubeRay RayJob that runs it, and what its status means.

Pure functions, like the Job's builders (`pods`): the RayJob is built from the same pod
template as the one-pod curation Job (image, volumes, run config, security
context), in three roles:

- the Ray head and the worker group (`workers` replicas with
  `cpusPerWorker`/`gpusPerWorker` as their resources): the template without a
  command, because KubeRay puts `ray start` there;
- the submitter (KubeRay's K8sJobMode): the template running `SUBMIT_SCRIPT`,
  which submits the entrypoint `python -m sft_trainer curate CONFIG` to the
  cluster (the driver runs on the head, where Ray sets RAY_ADDRESS for it),
  follows its logs, and when the curation succeeded writes the `status` block
  of the report.json the driver wrote to the output volume into the
  submitter's termination message. The operator reads the figures from there,
  as it does from the curation pod of a Job.

KubeRay waits for the submitter to finish before it marks the RayJob
Complete, so a Complete RayJob's submitter pod already carries its message.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from . import conditions as c
from .api import CurationResources, DatasetCurationSpec
from .layout import MountLayout
from .naming import ResourceRef, child_name, metadata, run_labels
from .pod_reports import last_pod_failure
from .pods import container_resources, pod_template
from .run_state import RunState
from .settings import OperatorSettings

RAY_GROUP, RAY_VERSION, RAYJOB_PLURAL, RAYJOB_KIND = "ray.io", "v1", "rayjobs", "RayJob"
RAY_API_VERSION = f"{RAY_GROUP}/{RAY_VERSION}"
RAYJOB_CRD = f"{RAYJOB_PLURAL}.{RAY_GROUP}"
# The chart value that grants the operator its verbs on rayjobs.
HELM_VALUE = "ray.enabled"
# KubeRay refuses longer RayJob names: it appends a suffix for the RayCluster and its pods.
MAX_RAYJOB_NAME = 47
WORKER_GROUP = "workers"
# KubeRay's own default resources for a submitter: it only submits and follows logs.
SUBMITTER_RESOURCES = {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m", "memory": "200Mi"}}
# KubeRay builds the head Service from the head container's ports and adds its
# defaults only when there are none; ours has `progress`, so Ray's are named
# here (KubeRay finds the dashboard, GCS and client ports by these names).
RAY_HEAD_PORTS = [
    {"name": "gcs-server", "containerPort": 6379},
    {"name": "dashboard", "containerPort": 8265},
    {"name": "client", "containerPort": 10001},
    {"name": "metrics", "containerPort": 8080},
]

# KubeRay's K8sJobMode protocol (a retried submitter never submits twice:
# RAY_DASHBOARD_ADDRESS and RAY_JOB_SUBMISSION_ID are set by KubeRay), then the
# figures. The entrypoint arrives as "$@", an argument list: no spec field is
# ever part of the shell text.
#
# The driver writes report.json with its `status` block only when the
# curation succeeded, and a fresh submission first removes the one an earlier
# run left, so the report's presence is the verdict (`ray job status` words
# its answer for people and differs between Ray versions).
SUBMIT_SCRIPT = """set -e
address="http://${RAY_DASHBOARD_ADDRESS}"
if ! ray job status --address "$address" "$RAY_JOB_SUBMISSION_ID" >/dev/null 2>&1; then
  rm -f "$SFT_REPORT"
  ray job submit --address "$address" --submission-id "$RAY_JOB_SUBMISSION_ID" --no-wait -- "$@"
fi
ray job logs --address "$address" --follow "$RAY_JOB_SUBMISSION_ID"
exec python -m sft_trainer.termination "$SFT_REPORT"
"""
REPORT_FILE = "report.json"


def ray_job_name(owner: ResourceRef) -> str:
    return child_name(owner.name, owner.subcommand, limit=MAX_RAYJOB_NAME)


def _cpu_quantity(cores: float) -> str:
    return str(int(cores)) if float(cores).is_integer() else f"{round(cores * 1000)}m"


def _ray_node(
    template: dict[str, Any], resources: dict[str, Any], ports: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The pod template as a Ray node: no command (KubeRay runs `ray start` there), these resources and ports."""
    node = copy.deepcopy(template)
    container = node["spec"]["containers"][0]
    del container["command"]
    container["resources"] = resources
    container["ports"] = [*container.get("ports", []), *copy.deepcopy(ports or [])]
    return node


def _submitter(template: dict[str, Any], entrypoint: list[str], report: str) -> dict[str, Any]:
    submitter = copy.deepcopy(template)
    container = submitter["spec"]["containers"][0]
    container["command"] = ["bash", "-c", SUBMIT_SCRIPT, "submit", *entrypoint]
    container["env"].append({"name": "SFT_REPORT", "value": report})
    container["resources"] = copy.deepcopy(SUBMITTER_RESOURCES)
    # The submitter serves no /progress (the driver on the head does).
    container.pop("ports", None)
    return submitter


def ray_job(
    owner: ResourceRef,
    spec: DatasetCurationSpec,
    layout: MountLayout,
    settings: OperatorSettings,
    config_map: str,
    claims: list[str],
    env: list[dict[str, Any]],
) -> dict[str, Any]:
    """The RayJob of a curation with engine ray (same inputs as `pods.job`)."""
    engine, lifecycle = spec.engine, spec.lifecycle
    template = pod_template(owner, spec, layout, settings, config_map, claims, env)
    entrypoint = template["spec"]["containers"][0]["command"]
    worker_resources = CurationResources(
        cpu=_cpu_quantity(engine.cpus_per_worker),
        memory=spec.resources.memory,
        gpus_per_node=engine.gpus_per_worker,
    )
    job_spec: dict[str, Any] = {
        "entrypoint": " ".join(entrypoint),
        "shutdownAfterJobFinishes": True,
        # The Ray cluster goes this long after the job ends; the RayJob, its
        # submitter pod (with the figures) and the DatasetCuration stay.
        "ttlSecondsAfterFinished": lifecycle.ttl_seconds_after_finished or 0,
        "suspend": lifecycle.suspend,
        # A RayJob retry starts a new Ray cluster; Ray itself retries failed tasks within one.
        "backoffLimit": lifecycle.backoff_limit,
        "rayClusterSpec": {
            "headGroupSpec": {
                # The head runs the driver and no stages: `workers` says how many pods do the work.
                "rayStartParams": {"num-cpus": "0"},
                "template": _ray_node(template, container_resources(spec.resources), RAY_HEAD_PORTS),
            },
            "workerGroupSpecs": [
                {
                    "groupName": WORKER_GROUP,
                    "replicas": engine.workers,
                    "minReplicas": engine.workers,
                    "maxReplicas": engine.workers,
                    "rayStartParams": {},
                    "template": _ray_node(template, container_resources(worker_resources)),
                }
            ],
        },
        "submitterPodTemplate": _submitter(template, entrypoint, f"{layout.path(spec.output.pvc)}/{REPORT_FILE}"),
    }
    if lifecycle.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = lifecycle.active_deadline_seconds
    return {
        "apiVersion": RAY_API_VERSION,
        "kind": RAYJOB_KIND,
        "metadata": metadata(owner, ray_job_name(owner), run_labels(owner, lifecycle.queue_name)),
        "spec": job_spec,
    }


# --------------------------------------------------------------------------
# What a RayJob's status says about the run
# --------------------------------------------------------------------------

# status.reason of a failed RayJob -> our reason; anything else is JobFailed.
_FAILURE_REASONS = {"DeadlineExceeded": c.DEADLINE_EXCEEDED}


def rayjob_run_state(rayjob: dict[str, Any], submitter_pods: list[dict[str, Any]]) -> RunState:
    """Read KubeRay's `jobDeploymentStatus` (the RayJob) and `jobStatus` (the Ray job inside it)."""
    name = rayjob["metadata"]["name"]
    status = rayjob.get("status") or {}
    deployment = status.get("jobDeploymentStatus") or "New"
    job_status = status.get("jobStatus") or "PENDING"
    start, end = status.get("startTime"), status.get("endTime")
    if deployment == "Complete" and job_status == "SUCCEEDED":
        return RunState(c.PHASE_SUCCEEDED, c.JOB_SUCCEEDED, f"RayJob {name} completed", start, end)
    if deployment in ("Complete", "Failed"):
        reason = status.get("reason") or job_status
        message = status.get("message") or f"RayJob {name} failed ({reason})"
        detail = last_pod_failure(submitter_pods)
        run = RunState(c.PHASE_FAILED, _FAILURE_REASONS.get(reason, c.JOB_FAILED), message, start, end)
        return replace(run, message=f"{message}; {detail}" if detail else message)
    if deployment in ("Suspending", "Suspended") or (rayjob.get("spec") or {}).get("suspend"):
        return RunState(c.PHASE_SUSPENDED, c.JOB_SUSPENDED, f"RayJob {name} is suspended", start)
    if deployment == "Retrying":
        failures = status.get("failed") or 0
        limit = (rayjob.get("spec") or {}).get("backoffLimit")
        message = f"RayJob {name} failed; retrying on a new Ray cluster ({failures} of {limit} retries used)"
        return RunState(c.PHASE_PENDING, c.RETRYING, message, start)
    if deployment == "Running" and job_status == "RUNNING":
        cluster = status.get("rayClusterName") or "its Ray cluster"
        return RunState(c.PHASE_RUNNING, c.JOB_RUNNING, f"RayJob {name} is running on {cluster}", start)
    message = f"RayJob {name} is starting (deployment {deployment}, Ray job {job_status})"
    return RunState(c.PHASE_PENDING, c.PODS_PENDING, message, start)


def is_rayjob(obj: dict[str, Any]) -> bool:
    return obj.get("kind") == RAYJOB_KIND


def wants_ray(spec: dict[str, Any]) -> bool:
    """Whether a custom resource's (wire) spec runs on Ray."""
    return ((spec.get("engine") or {}).get("type")) == "ray"


def engine_unavailable_message() -> str:
    return (
        f"spec.engine.type is ray, but the cluster does not serve the RayJob CRD ({RAYJOB_CRD}): install KubeRay "
        f"(its kuberay-operator chart) and set the trustdoc-sft chart value {HELM_VALUE}=true, which grants the "
        "operator its verbs on rayjobs; nothing was created, the curation starts once both are there"
    )
