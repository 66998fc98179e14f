"""DatasetCuration with spec.engine.type ray, on the real API server and the real KubeRay operator.

KubeRay (built from its Go module by hack/build-kuberay.sh) runs as a child
process against the test API server: it turns the operator's RayJob into a
RayCluster and its pods and reports jobDeploymentStatus, which the operator
follows into the DatasetCuration's status. The cluster tests have no kubelet,
so the Ray pods never start here: the RayJob stays Initializing until it is
suspended, which KubeRay carries out (it deletes the Ray cluster) and reports.
A whole Ray run, apply to Succeeded, is the e2e test's (tests/e2e).
Without KubeRay's CRD, the curation waits with reason EngineUnavailable and
nothing is created.

The operator runs as the chart's ServiceAccount with ray.enabled=true, and
the audit log shows it used every verb the chart grants on rayjobs and was
refused nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_support import Api, OperatorFactory, condition, curation_manifest, eventually
from test_least_privilege import chart_kubeconfig, granted, used

from sft_operator.rayjob import RAY_GROUP, RAY_VERSION, RAYJOB_PLURAL
from support.kube import ControlPlane, Kubectl
from support.kuberay import KubeRayOperator, install_crds, uninstall_crds

pytestmark = pytest.mark.cluster

RAY_RELEASE = "sft-ray"


def ray_served(kubectl: Kubectl) -> bool:
    found = kubectl.run("get", "--raw", f"/apis/{RAY_GROUP}/{RAY_VERSION}")
    return found.returncode == 0 and RAYJOB_PLURAL in found.stdout


def rayjob(api: Api, ns: str, name: str) -> dict[str, Any] | None:
    try:
        return api._raw(
            api.custom.get_namespaced_custom_object(
                RAY_GROUP, RAY_VERSION, ns, RAYJOB_PLURAL, name, _preload_content=False
            )
        )
    except Exception as err:  # noqa: BLE001 - 404 while it does not exist yet
        if getattr(err, "status", None) == 404:
            return None
        raise


def ray_curation(ns: str, name: str = "cur", **spec: Any) -> dict[str, Any]:
    return curation_manifest(ns, name, engine={"type": "ray", "workers": 2, "cpusPerWorker": 1}, **spec)


@pytest.fixture
def without_kuberay(kubectl: Kubectl) -> Kubectl:
    uninstall_crds(kubectl)
    eventually(lambda: not ray_served(kubectl), timeout=60, what="ray.io/v1 to disappear from discovery")
    return kubectl


@pytest.fixture
def kuberay(kubectl: Kubectl, control_plane: ControlPlane, tmp_path: Path) -> Iterator[KubeRayOperator]:
    install_crds(kubectl)
    operator = KubeRayOperator(control_plane.kubeconfig, tmp_path / "kuberay")
    operator.start()
    yield operator
    # Later tests run operators without the ray verbs (chart default): no RayJobs for them to watch.
    # KubeRay still runs meanwhile: it removes its finalizers from the RayJobs going with the CRD.
    uninstall_crds(kubectl)
    operator.stop()


def test_without_the_rayjob_crd_a_ray_curation_waits_with_engine_unavailable_and_creates_nothing(
    without_kuberay: Kubectl, operators: OperatorFactory, namespace: str, api: Api
) -> None:
    operators.start(namespace)
    api.create(ray_curation(namespace))
    status = eventually(
        lambda: (
            (s := api.status("DatasetCuration", namespace, "cur"))
            and condition(s, "Progressing").get("reason") == "EngineUnavailable"
            and s
        ),
        what="reason EngineUnavailable",
    )
    message = condition(status, "Progressing")["message"]
    assert "rayjobs.ray.io" in message and "ray.enabled=true" in message
    assert status["phase"] == "Pending" and condition(status, "Ready")["status"] == "False"
    # kopf posts Events in the background: the status may come first.
    eventually(
        lambda: ("Warning", "EngineUnavailable", message) in api.event_messages(namespace, "cur"),
        what="the EngineUnavailable Warning",
    )
    assert api.config_maps(namespace) == [] and api.jobs(namespace) == []


def test_a_ray_curation_becomes_a_rayjob_that_kuberay_runs_and_suspends(
    kuberay: KubeRayOperator,
    operators: OperatorFactory,
    namespace: str,
    api: Api,
    kubectl: Kubectl,
    control_plane: ControlPlane,
    peering_crds: Kubectl,
) -> None:
    kubeconfig, username = chart_kubeconfig(kubectl, control_plane, RAY_RELEASE, "ray.enabled=true")
    operators.start(namespace, KUBECONFIG=str(kubeconfig))
    uid = api.create(ray_curation(namespace))["metadata"]["uid"]

    job = eventually(lambda: rayjob(api, namespace, "cur-curate"), what="RayJob cur-curate")
    (owner,) = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == ("DatasetCuration", "cur", uid, True)
    spec = job["spec"]
    assert spec["entrypoint"] == "python -m sft_trainer curate /mnt/config/run.yaml"
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] == 0
    (workers,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert workers["replicas"] == 2
    assert workers["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "1"
    (config_map,) = api.config_maps(namespace)
    assert "engine:\n    type: ray\n    workers: 2" in config_map["data"]["run.yaml"]
    assert api.jobs(namespace) == [] or all(
        j["metadata"]["ownerReferences"][0]["kind"] == "RayJob" for j in api.jobs(namespace)
    )

    # KubeRay takes it up: a Ray cluster, its head and two workers, from our pod template.
    initializing = eventually(
        lambda: (
            (s := api.status("DatasetCuration", namespace, "cur"))
            and "Initializing" in condition(s, "Progressing").get("message", "")
            and s
        ),
        timeout=60,
        what="the RayJob's Initializing status in the curation's status",
    )
    assert initializing["jobName"] == "cur-curate" and initializing["phase"] == "Pending"
    assert condition(initializing, "Progressing")["reason"] == "PodsPending"
    pods = eventually(
        lambda: (p := ray_pods(api, namespace)) and len(p) == 3 and p, timeout=60, what="the head and two workers"
    )
    # The head Service carries Ray's dashboard port (KubeRay submits and polls through it) and our progress port.
    (service,) = (s for s in api.services(namespace) if s["metadata"]["name"].endswith("-head-svc"))
    assert {"dashboard", "gcs-server", "progress"} <= {port["name"] for port in service["spec"]["ports"]}
    for pod in pods:
        container = pod["spec"]["containers"][0]
        assert "ray start" in " ".join(container.get("args") or [])
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/mnt/config", "/mnt/volumes/datasets", "/mnt/volumes/outputs"} <= mounts
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["spec"]["automountServiceAccountToken"] is False

    # spec.lifecycle.suspend reaches the RayJob; KubeRay deletes the Ray cluster and says Suspended.
    api.patch_spec("DatasetCuration", namespace, "cur", {"spec": {"lifecycle": {"suspend": True}}})
    suspended = eventually(
        lambda: (s := api.status("DatasetCuration", namespace, "cur")) and s.get("phase") == "Suspended" and s,
        timeout=90,
        what="phase Suspended",
    )
    assert condition(suspended, "Progressing")["reason"] == "JobSuspended"
    # KubeRay says Suspending while it deletes the Ray cluster, then Suspended.
    eventually(
        lambda: (
            (rayjob(api, namespace, "cur-curate") or {}).get("status", {}).get("jobDeploymentStatus") == "Suspended"
        ),
        timeout=60,
        what="KubeRay's Suspended",
    )
    # The garbage collector removes the deleted Ray cluster's pods.
    eventually(lambda: ray_pods(api, namespace) == [], timeout=60, what="the Ray pods to go")
    eventually(
        lambda: ("Normal", "Suspended", "Suspended RayJob cur-curate") in api.event_messages(namespace, "cur"),
        what="the Suspended Event",
    )

    operators.stop(operators.running[0])
    allowed, denied = used(control_plane, username)
    assert not denied, "the chart's RBAC (ray.enabled=true) refused the operator:\n" + "\n".join(denied)
    ray_granted = {g for g in granted(RAY_RELEASE, "ray.enabled=true") if g[0] == RAY_GROUP}
    assert ray_granted == {(RAY_GROUP, RAYJOB_PLURAL, verb) for verb in ("get", "list", "watch", "create", "patch")}
    assert ray_granted <= allowed, f"granted on rayjobs but never used: {sorted(ray_granted - allowed)}"
    print(f"\nFIGURE rayjob-rbac: {json.dumps(sorted(v for _, _, v in ray_granted))} granted and used, 0 denied")


def ray_pods(api: Api, ns: str) -> list[dict[str, Any]]:
    return [p for p in api.pods(ns) if "ray.io/node-type" in (p["metadata"].get("labels") or {})]


def test_the_api_server_refuses_an_engine_inside_spec_curation(crds_installed: Kubectl) -> None:
    """spec.engine is the one place: spec.curation has no engine field (kubectl validates strictly)."""
    manifest = curation_manifest("default", "inside", curation={"engine": {"type": "ray"}})
    refused = crds_installed.apply(json.dumps(manifest), "--dry-run=server")
    assert refused.returncode != 0 and 'unknown field "spec.curation.engine"' in refused.stderr
    accepted = crds_installed.apply(json.dumps(ray_curation("default", "outside")), "--dry-run=server")
    assert accepted.returncode == 0, accepted.stderr
