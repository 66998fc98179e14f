"""The e2e harness itself: the real scheduler places pods, the node agent runs them.

These prove the harness is faithful before the operator's e2e tests rely on
it: GPU requests, node selectors and taints are honoured by the real
kube-scheduler, and a Job's pod really runs, with its volumes, its own pod IP,
its exit code and its termination message reported back.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from support.e2e import GPU_PRODUCT, bound_claim, networked_node
from support.kube import ControlPlane, Kubectl
from support.node_agent import NodeAgent
from support.waiting import eventually

pytestmark = pytest.mark.cluster

NAMESPACE_COUNTER = itertools.count()
SCRIPT = """
import json, os, socket, pathlib
out = pathlib.Path('/mnt/volumes/outputs')
(out / 'hello.txt').write_text(json.dumps({'rank': os.environ.get('RANK'), 'host': os.environ['SFT_PROGRESS_HOST']}))
pathlib.Path(os.environ['SFT_TERMINATION_LOG']).write_text('{"done": true}')
"""


def job_manifest(namespace: str, name: str, gpus: int, product: str, tolerate: bool, code: str) -> str:
    pod_spec: dict = {  # type: ignore[type-arg]
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "nodeSelector": {"nvidia.com/gpu.product": product},
        "containers": [
            {
                "name": "trainer",
                "image": "local",
                "command": ["python", "-c", code],
                "env": [{"name": "JOB_INDEX", "value": "0"}, {"name": "RANK", "value": "$(JOB_INDEX)"}],
                "resources": {"limits": {"nvidia.com/gpu": gpus}},
                "volumeMounts": [{"name": "out", "mountPath": "/mnt/volumes/outputs"}],
            }
        ],
        "volumes": [{"name": "out", "persistentVolumeClaim": {"claimName": "outputs"}}],
    }
    if tolerate:
        pod_spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return yaml.safe_dump(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"backoffLimit": 0, "template": {"spec": pod_spec}},
        }
    )


@pytest.fixture
def namespace(e2e_kubectl: Kubectl, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    name = f"agent-{next(NAMESPACE_COUNTER)}-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[-40:].strip("-")
    e2e_kubectl.run("create", "namespace", name, check=True)
    bound_claim(e2e_kubectl, name, "outputs", tmp_path / "outputs")
    return name


def pods_of(kubectl: Kubectl, namespace: str, job: str) -> list[dict]:  # type: ignore[type-arg]
    return kubectl.get_json("pods", "-n", namespace, "-l", f"batch.kubernetes.io/job-name={job}")["items"]


def test_gpu_job_runs_on_the_gpu_node(
    e2e_kubectl: Kubectl, gpu_node: NodeAgent, namespace: str, tmp_path: Path
) -> None:
    e2e_kubectl.apply(job_manifest(namespace, "hello", 2, GPU_PRODUCT, True, SCRIPT)).check_returncode()
    eventually(
        lambda: e2e_kubectl.get_json("job", "hello", "-n", namespace).get("status", {}).get("succeeded"),
        60,
        "job hello to succeed",
    )
    pod = pods_of(e2e_kubectl, namespace, "hello")[0]
    assert pod["spec"]["nodeName"] == gpu_node.name
    assert pod["status"]["podIP"].startswith("127.0.0.")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["message"] == '{"done": true}'
    written = (tmp_path / "outputs" / "hello.txt").read_text()
    assert '"rank": "0"' in written and pod["status"]["podIP"] in written


def test_failing_container_reports_its_exit_code(e2e_kubectl: Kubectl, gpu_node: NodeAgent, namespace: str) -> None:
    e2e_kubectl.apply(
        job_manifest(namespace, "boom", 1, GPU_PRODUCT, True, "import sys; sys.exit(42)")
    ).check_returncode()
    eventually(
        lambda: e2e_kubectl.get_json("job", "boom", "-n", namespace).get("status", {}).get("failed"),
        60,
        "job boom to fail",
        diagnose=lambda: e2e_kubectl.run("get", "pods,jobs", "-n", namespace, "-o", "yaml").stdout[-4000:],
    )
    state = pods_of(e2e_kubectl, namespace, "boom")[0]["status"]["containerStatuses"][0]["state"]
    assert state["terminated"]["exitCode"] == 42


@pytest.mark.parametrize(
    ("gpus", "product", "tolerate", "why"),
    [
        (16, GPU_PRODUCT, True, "Insufficient nvidia.com/gpu"),
        (1, "NVIDIA-A100", True, "didn't match Pod's node affinity/selector"),
        (1, GPU_PRODUCT, False, "untolerated taint"),
    ],
    ids=["too-many-gpus", "wrong-gpu-product", "no-toleration"],
)
def test_scheduler_refuses_pods_that_do_not_fit(
    e2e_kubectl: Kubectl, gpu_node: NodeAgent, namespace: str, gpus: int, product: str, tolerate: bool, why: str
) -> None:
    e2e_kubectl.apply(job_manifest(namespace, "unfit", gpus, product, tolerate, "pass")).check_returncode()

    def unschedulable_message() -> str:
        pods = pods_of(e2e_kubectl, namespace, "unfit")
        for condition in (pods[0].get("status", {}).get("conditions") or []) if pods else []:
            if condition["type"] == "PodScheduled" and condition.get("reason") == "Unschedulable":
                return str(condition.get("message", ""))
        return ""

    message = eventually(unschedulable_message, 30, "the scheduler to refuse the pod")
    assert why in message
    assert not pods_of(e2e_kubectl, namespace, "unfit")[0]["spec"].get("nodeName")


def test_init_containers_run_first_and_a_readiness_probe_gates_ready(
    e2e_kubectl: Kubectl, gpu_node: NodeAgent, namespace: str, tmp_path: Path
) -> None:
    """What KubeRay relies on: its workers wait for the head in an init container, and the probes gate Ready."""
    outputs = tmp_path / "outputs"
    mount = {"name": "out", "mountPath": "/mnt/volumes/outputs"}
    main = (
        "import pathlib, time\n"
        "out = pathlib.Path('/mnt/volumes/outputs')\n"
        "(out / 'main.txt').write_text((out / 'init.txt').read_text() + ' then main')\n"
        "while not (out / 'done').exists(): time.sleep(0.2)\n"
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probed", "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "initContainers": [
                {
                    "name": "first",
                    "image": "local",
                    "command": ["python", "-c", "open('/mnt/volumes/outputs/init.txt', 'w').write('init')"],
                    "volumeMounts": [mount],
                }
            ],
            "containers": [
                {
                    "name": "main",
                    "image": "local",
                    "command": ["python", "-c", main],
                    "volumeMounts": [mount],
                    "readinessProbe": {
                        "exec": {"command": ["test", "-f", "/mnt/volumes/outputs/ready"]},
                        "periodSeconds": 1,
                    },
                }
            ],
            "volumes": [{"name": "out", "persistentVolumeClaim": {"claimName": "outputs"}}],
        },
    }
    e2e_kubectl.apply_objects(pod).check_returncode()

    def status() -> dict:  # type: ignore[type-arg]
        return e2e_kubectl.get_json("pod", "probed", "-n", namespace).get("status") or {}

    def ready(s: dict) -> str:  # type: ignore[type-arg]
        return next((c["status"] for c in s.get("conditions") or [] if c["type"] == "Ready"), "")

    eventually(lambda: (outputs / "main.txt").exists(), 60, "the container to start after its init container")
    assert (outputs / "main.txt").read_text() == "init then main"
    running = eventually(lambda: (s := status()).get("phase") == "Running" and s, 30, "the pod to be Running")
    time.sleep(3)  # three probe periods, each failing: the probe's file is not there
    assert ready(running) == ready(status()) == "False"
    (outputs / "ready").write_text("")
    eventually(lambda: ready(status()) == "True", 30, "the probe to pass and the pod to be Ready")
    (outputs / "done").write_text("")
    eventually(lambda: status().get("phase") == "Succeeded", 30, "the pod to succeed")


NETWORK_TAINT = {"key": "test/pod-network", "value": "yes", "effect": "NoSchedule"}


@pytest.fixture
def network_node(e2e_plane: ControlPlane, e2e_kubectl: Kubectl, tmp_path: Path) -> Iterator[NodeAgent]:
    """A node whose pods get a pod network; tainted, so only the pods that ask land on it (also once it is gone)."""
    with networked_node(e2e_plane, tmp_path, "net-node-0", taints=[NETWORK_TAINT]) as agent:
        yield agent


def test_pod_network_resolves_service_names_through_its_dns(
    e2e_kubectl: Kubectl, network_node: NodeAgent, namespace: str, tmp_path: Path
) -> None:
    """A Service's name, long and short (the pod's search path), answers the pod it selects, which serves there."""
    server = "import http.server as h; h.HTTPServer(('', 8080), h.SimpleHTTPRequestHandler).serve_forever()"
    client = (
        "import json, socket, urllib.request\n"
        f"names = ['echo.{namespace}.svc.cluster.local', 'echo']\n"
        "found = {n: socket.getaddrinfo(n, 8080, socket.AF_INET)[0][4][0] for n in names}\n"
        "body = urllib.request.urlopen('http://echo:8080/', timeout=10).status\n"
        "open('/mnt/volumes/outputs/resolved.json', 'w').write(json.dumps({'found': found, 'status': body}))\n"
    )

    def pod(name: str, labels: dict[str, str], code: str) -> dict:  # type: ignore[type-arg]
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "restartPolicy": "Never",
                "nodeSelector": {"kubernetes.io/hostname": network_node.name},
                "tolerations": [{**NETWORK_TAINT, "operator": "Equal"}],
                "containers": [
                    {
                        "name": "main",
                        "image": "local",
                        "command": ["python", "-c", code],
                        "volumeMounts": [{"name": "out", "mountPath": "/mnt/volumes/outputs"}],
                    }
                ],
                "volumes": [{"name": "out", "persistentVolumeClaim": {"claimName": "outputs"}}],
            },
        }

    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "echo", "namespace": namespace},
        "spec": {"clusterIP": "None", "selector": {"app": "echo"}, "ports": [{"port": 8080}]},
    }
    e2e_kubectl.apply_objects(service, pod("server", {"app": "echo"}, server)).check_returncode()
    server_ip = eventually(
        lambda: (e2e_kubectl.get_json("pod", "server", "-n", namespace).get("status") or {}).get("podIP"),
        60,
        "the server pod to run",
    )
    e2e_kubectl.apply_objects(pod("client", {}, client)).check_returncode()
    resolved = tmp_path / "outputs" / "resolved.json"
    eventually(
        resolved.exists,
        60,
        "the client to resolve the service and fetch from it",
        diagnose=lambda: "\n".join(
            log.read_text(errors="replace")[-1500:] for log in (network_node.workdir / "pods").glob("*/*/*.log")
        ),
    )
    assert json.loads(resolved.read_text()) == {
        "found": {f"echo.{namespace}.svc.cluster.local": server_ip, "echo": server_ip},
        "status": 200,
    }
