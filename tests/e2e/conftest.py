"""The e2e cluster: its own control plane plus kube-scheduler and a GPU node agent.

Separate from the cluster tests' control plane, where no pod ever runs (those
tests play the node themselves); here pods are scheduled by the real
scheduler and run as local processes by the node agent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.e2e import GPU_PRODUCT, GPU_TAINT, scheduled_plane
from support.kube import REPO_ROOT, ControlPlane, Kubectl
from support.node_agent import NodeAgent
from support.waiting import eventually


@pytest.fixture(scope="session")
def e2e_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with scheduled_plane(tmp_path_factory.mktemp("e2e-plane")) as plane:
        yield plane


@pytest.fixture(scope="session")
def e2e_kubectl(e2e_plane: ControlPlane) -> Kubectl:
    kubectl = Kubectl(e2e_plane.kubeconfig)
    kubectl.run("apply", "-f", str(REPO_ROOT / "crds"), check=True)
    return kubectl


@pytest.fixture(scope="session")
def gpu_node(e2e_plane: ControlPlane, e2e_kubectl: Kubectl) -> Iterator[NodeAgent]:
    agent = NodeAgent(
        e2e_plane.kubeconfig,
        e2e_plane.workdir / "node",
        name="gpu-node-0",
        gpus=8,
        labels={"nvidia.com/gpu.product": GPU_PRODUCT},
        taints=[GPU_TAINT],
    )
    agent.start()
    eventually(lambda: _node_ready(e2e_kubectl, agent.name), 30, f"node {agent.name} Ready")
    try:
        yield agent
    finally:
        agent.stop()


def _node_ready(kubectl: Kubectl, name: str) -> bool:
    node = kubectl.get_json("node", name)
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A folder holding `tiny/`, a tiny Llama with a locally trained tokenizer (see tests/trainer/tiny.py)."""
    from trainer.tiny import build_tiny_llama, build_tokenizer, training_text

    models = tmp_path_factory.mktemp("models")
    tokenizer = build_tokenizer(models / "tokenizer", training_text(shared_data))
    build_tiny_llama(models / "tiny", tokenizer)
    return models
