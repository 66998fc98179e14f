"""Fixtures for the operator tests: the operator in-process, and a test acting as the node.

The control plane has no kubelet and no scheduler: the real Job controller
creates pods that never run. `Node` (operator_support.py) plays the kubelet's
part through the real API (pods/status): it marks a pod Running with a pod IP
and Ready, or terminated with an exit code and a termination message; the Job
controller then does the rest (counts, retries, podFailurePolicy,
Complete/Failed). A pod's /progress is a real HTTP server on the pod IP
(127.0.0.x) and on the port the pod's spec names, which the operator is
configured to put there.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import urllib3
from kubernetes import config
from operator_support import Api, Node, OperatorFactory, RunningOperator

from support.kube import REPO_ROOT, ControlPlane, Kubectl

# kopf fixes the progress timer's interval when the handlers are imported, so
# this must be set before the first operator starts in this process.
os.environ.setdefault("SFT_OPERATOR_PROGRESS_POLL_SECONDS", "0.5")


@pytest.fixture(scope="session")
def api(control_plane: ControlPlane) -> Api:
    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    return Api(config.new_client_from_config(config_file=str(control_plane.kubeconfig)))


@pytest.fixture(scope="session")
def peering_crds(crds_installed: Kubectl) -> Kubectl:
    """kopf's peering CRDs (crds/peering/), as the Helm chart installs them."""
    crds_installed.run("apply", "-f", str(REPO_ROOT / "crds" / "peering"), check=True)
    crds_installed.run("wait", "--for=condition=Established", "--timeout=60s", "crd/kopfpeerings.kopf.dev", check=True)
    return crds_installed


@pytest.fixture
def namespace(kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test (deleted afterwards, without waiting)."""
    name = f"t-{request.node.name[5:30].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:5]}"
    kubectl.run("create", "namespace", name, check=True)
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false")


@pytest.fixture
def operators(
    control_plane: ControlPlane, peering_crds: Kubectl, monkeypatch: pytest.MonkeyPatch, namespace: str
) -> Iterator[OperatorFactory]:
    """Starts operators on demand; stops them before the test's namespace is deleted (it depends on it)."""
    factory = OperatorFactory(control_plane, monkeypatch)
    yield factory
    for operator in list(factory.running):
        factory.stop(operator)


@pytest.fixture
def operator(operators: OperatorFactory, namespace: str) -> RunningOperator:
    """One operator watching the test's namespace."""
    return operators.start(namespace)


@pytest.fixture
def node(api: Api) -> Node:
    return Node(api)
