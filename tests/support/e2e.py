"""Helpers for tests that run real pods on the e2e cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from .kube import ControlPlane, Kubectl, free_port
from .node_agent import NodeAgent
from .pod_network import PodNetwork
from .waiting import eventually

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
GPU_PRODUCT = "NVIDIA-H100-TEST"
T = TypeVar("T")


def bound_claim(kubectl: Kubectl, namespace: str, claim: str, folder: Path) -> None:
    """A PersistentVolume + bound claim, so the scheduler's volume checks pass for real."""
    folder.mkdir(parents=True, exist_ok=True)
    pv = f"{namespace}-{claim}"
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": pv},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": str(folder)},
            "claimRef": {"namespace": namespace, "name": claim},
        },
    }
    volume_claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim, "namespace": namespace},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "volumeName": pv,
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    result = kubectl.apply_objects(volume, volume_claim)
    assert result.returncode == 0, result.stderr
    eventually(
        lambda: kubectl.get_json("pvc", claim, "-n", namespace).get("status", {}).get("phase") == "Bound",
        30,
        f"claim {namespace}/{claim} to be bound",
    )


@contextmanager
def operator_process(
    plane: ControlPlane, namespace: str, log: Path, **settings: str
) -> Iterator[subprocess.Popen[bytes]]:
    """`sftctl operator` as its own process on one namespace; SFT_OPERATOR_* `settings` override."""
    env = {
        **os.environ,
        "KUBECONFIG": str(plane.kubeconfig),
        "SFT_OPERATOR_METRICS_PORT": str(free_port()),
        # Pod IPs are loopback addresses here: a free port avoids other processes' 9090.
        "SFT_OPERATOR_PROGRESS_PORT": str(free_port()),
        "SFT_OPERATOR_PROGRESS_POLL_SECONDS": "1",
        "SFT_OPERATOR_DATASET_WAIT_SECONDS": "1",
        **{f"SFT_OPERATOR_{key.upper()}": value for key, value in settings.items()},
    }
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "sftctl"), "operator", "-n", namespace, "--standalone"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@contextmanager
def scheduled_plane(workdir: Path) -> Iterator[ControlPlane]:
    """The e2e layer's cluster: a control plane with kube-scheduler, stopped on exit."""
    plane = ControlPlane(workdir)
    try:
        plane.start()
        plane.start_scheduler()
        yield plane
    finally:
        plane.stop()


@contextmanager
def networked_node(
    plane: ControlPlane, workdir: Path, name: str, taints: Sequence[dict[str, str]] = ()
) -> Iterator[NodeAgent]:
    """A node agent whose pods get a pod network (addresses, cluster DNS for service names), stopped on exit."""
    network = PodNetwork(workdir / "network")
    network.start()
    agent = NodeAgent(plane.kubeconfig, workdir / "node", name=name, gpus=0, taints=list(taints), network=network)
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()
        network.stop()
