"""A DatasetCuration with engine ray, from `kubectl apply` to Succeeded, on the real KubeRay operator.

Its own control plane (with kube-scheduler), the KubeRay operator built from
its Go module, `sftctl operator`, and a node agent whose pods each get a
network namespace on a bridge and service names through the pod network's
DNS (support/pod_network.py), and that runs what KubeRay's pods rely on a
kubelet for: the worker's init container (it waits for the head's GCS) and
the exec readiness probes on Ray's health endpoints (the RayCluster is ready,
and the submitter starts, only when Ray answers). The Ray head and worker
pods KubeRay creates run `ray start` as local processes, the submitter pod
submits `python -m sft_trainer curate` to the head's dashboard, and the
curated outputs land on the output volume. KubeRay reaches the dashboard through the
API server's service proxy (--use-kubernetes-proxy), as it may in a cluster
whose operators cannot resolve service names.

Needs root (network namespaces, a bridge, the DNS server's port 53),
`ray[default]` (the dashboard and the Jobs API) and KubeRay built by
`hack/build-kuberay.sh`. About two minutes here (60 records, one worker).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.e2e import bound_claim, networked_node, operator_process, scheduled_plane
from support.kube import ControlPlane, Kubectl
from support.kuberay import KubeRayOperator, install_crds
from support.manifests import condition
from support.node_agent import NodeAgent
from support.waiting import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
NAMESPACE = "e2e-ray"
OUTPUTS = ("curated.jsonl", "rejected.jsonl", "review.jsonl", "report.json")


@pytest.fixture(scope="module")
def ray_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with scheduled_plane(tmp_path_factory.mktemp("ray-plane")) as plane:
        yield plane


@pytest.fixture(scope="module")
def ray_kubectl(ray_plane: ControlPlane) -> Kubectl:
    kubectl = Kubectl(ray_plane.kubeconfig)
    kubectl.run("apply", "-f", str(Path(__file__).resolve().parents[2] / "crds"), check=True)
    install_crds(kubectl)
    return kubectl


@pytest.fixture(scope="module")
def ray_node(ray_plane: ControlPlane, ray_kubectl: Kubectl) -> Iterator[NodeAgent]:
    with networked_node(ray_plane, ray_plane.workdir, "ray-node-0") as agent:
        yield agent


@pytest.fixture(scope="module")
def kuberay(ray_plane: ControlPlane, ray_kubectl: Kubectl) -> Iterator[KubeRayOperator]:
    operator = KubeRayOperator(
        ray_plane.kubeconfig, ray_plane.workdir / "kuberay", extra_args=["--use-kubernetes-proxy"]
    )
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()


def test_a_curation_on_ray_goes_from_apply_to_succeeded_with_real_outputs(
    ray_plane: ControlPlane,
    ray_kubectl: Kubectl,
    ray_node: NodeAgent,
    kuberay: KubeRayOperator,
    shared_data: Path,
    tmp_path: Path,
) -> None:
    ray_kubectl.run("create", "namespace", NAMESPACE, check=True)
    outputs = tmp_path / "outputs"
    bound_claim(ray_kubectl, NAMESPACE, "datasets", shared_data)
    bound_claim(ray_kubectl, NAMESPACE, "outputs", outputs)
    curation = {
        "apiVersion": "sft.trustdoc.io/v1alpha1",
        "kind": "DatasetCuration",
        "metadata": {"name": "alpaca-ray", "namespace": NAMESPACE},
        "spec": {
            "source": {"pvc": {"claimName": "datasets", "path": "alpaca_data.json"}},
            "output": {"pvc": {"claimName": "outputs", "path": "curation/alpaca-ray"}},
            "engine": {"type": "ray", "workers": 1, "cpusPerWorker": 1},
            # The cheap judges only: two cores run the API server, KubeRay, Ray and the curation.
            "curation": {
                "maxRecords": 60,
                "balance": {"method": "rules"},
                "relevance": {"enabled": False},
                "scorer": {"enabled": False},
            },
        },
    }
    log = ray_plane.workdir / "operator.log"
    with operator_process(ray_plane, NAMESPACE, log):
        ray_kubectl.apply(json.dumps(curation)).check_returncode()

        def status() -> dict:  # type: ignore[type-arg]
            return ray_kubectl.get_json("dcur", "alpaca-ray", "-n", NAMESPACE).get("status") or {}

        try:
            finished = eventually(
                lambda: (s := status()) and s.get("phase") in ("Succeeded", "Failed") and s, 600, "the curation to end"
            )
        except AssertionError:
            raise AssertionError(diagnose(ray_kubectl, ray_node, kuberay)) from None
    assert finished["phase"] == "Succeeded", (
        f"{condition(finished, 'Failed')}\n{diagnose(ray_kubectl, ray_node, kuberay)}"
    )
    counts = finished["counts"]
    assert counts["input"] == 60 and counts["curated"] + counts["rejected"] + counts["review"] == 60
    folder = outputs / "curation" / "alpaca-ray"
    for name in OUTPUTS:
        assert (folder / name).is_file(), name
    report = json.loads((folder / "report.json").read_text())
    assert report["status"]["counts"] == counts
    rayjob = ray_kubectl.get_json("rayjob", "alpaca-ray-curate", "-n", NAMESPACE)
    assert rayjob["status"]["jobStatus"] == "SUCCEEDED"
    assert rayjob["status"]["jobDeploymentStatus"] == "Complete"


def diagnose(kubectl: Kubectl, node: NodeAgent, kuberay: KubeRayOperator) -> str:
    """What each part said, for a failure message."""
    parts = [
        "RayJob: " + kubectl.run("get", "rayjob", "-n", NAMESPACE, "-o", "json").stdout[-3000:],
        "pods: " + kubectl.run("get", "pods", "-n", NAMESPACE, "-o", "wide").stdout,
        "KubeRay: " + kuberay.tail(30),
    ]
    # Each container's log: the Ray node's (container.log) and its init container's (wait-gcs-ready.log).
    for log in sorted((node.workdir / "pods" / NAMESPACE).glob("*/*.log")):
        parts.append(f"{log.parent.name}/{log.name}: " + log.read_text(errors="replace")[-1500:])
    return "\n\n".join(parts)
