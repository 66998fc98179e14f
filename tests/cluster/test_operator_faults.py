"""Faults on the real API server: restarts mid-reconcile, two replicas, a name taken by a stranger."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3
from kubernetes import config
from operator_support import (
    Api,
    OperatorFactory,
    condition,
    curation_manifest,
    eventually,
    sftjob_manifest,
)

from sft_operator.settings import OperatorSettings
from support import manifests
from support.kube import REPO_ROOT, ControlPlane, Kubectl, free_port, install_crds

pytestmark = pytest.mark.cluster


def children_by_owner(api: Api, ns: str) -> dict[str, list[str]]:
    """Owner name -> names of the ConfigMaps and Jobs it controls."""
    owned: dict[str, list[str]] = {}
    for obj in api.config_maps(ns) + api.jobs(ns):
        (ref,) = obj["metadata"]["ownerReferences"]
        owned.setdefault(ref["name"], []).append(obj["metadata"]["name"])
    return {owner: sorted(names) for owner, names in owned.items()}


def test_a_restart_after_a_half_done_reconcile_completes_it_without_duplicates(
    operators: OperatorFactory, namespace: str, api: Api
) -> None:
    # The first operator created the ConfigMap and died before the Job: recreate exactly that state.
    body = api.create(curation_manifest(namespace, "cur"))
    env = operators.environment(namespace)
    children = manifests.children(body, OperatorSettings.from_env(env))
    seeded = api.core.create_namespaced_config_map(namespace, children.config_map)

    operators.start(namespace, **{k: v for k, v in env.items() if k != "KUBECONFIG"})
    job = eventually(lambda: api.job(namespace, "cur-curate"), what="the Job the first run never created")
    (config_map,) = api.config_maps(namespace)
    assert config_map["metadata"]["resourceVersion"] == seeded.metadata.resource_version, "the ConfigMap was rewritten"
    assert job["metadata"]["ownerReferences"][0]["uid"] == body["metadata"]["uid"]
    eventually(lambda: api.status("DatasetCuration", namespace, "cur").get("jobName"), what="status.jobName")
    created = [m for _, r, m in api.event_messages(namespace, "cur") if r == "Created"]
    assert created == ["Created Job cur-curate"]


def test_an_operator_stopped_mid_burst_and_restarted_leaves_one_set_of_children(
    operators: OperatorFactory, namespace: str, api: Api
) -> None:
    first = operators.start(namespace)
    names = [f"burst-{i}" for i in range(6)]
    for name in names:
        api.create(curation_manifest(namespace, name))
    operators.stop(first)  # mid-reconcile for some of them
    second = operators.start(namespace)
    expected = {name: sorted([f"{name}-curate", f"{name}-run-config"]) for name in names}
    eventually(lambda: children_by_owner(api, namespace) == expected, what="one ConfigMap and one Job per object")
    eventually(
        lambda: all(api.status("DatasetCuration", namespace, n).get("jobName") for n in names), what="every status"
    )
    assert children_by_owner(api, namespace) == expected
    assert second.sample("trustdoc_sft_reconcile_errors_total") is None


def start_replica(env: dict[str, str], priority: int, log: Path) -> subprocess.Popen[bytes]:
    """`sftctl operator` in its own process: another replica of the Deployment."""
    command = [sys.executable, "-m", "sftctl.cli", "operator", "--priority", str(priority)]
    with open(log, "wb") as out:
        return subprocess.Popen(command, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)


def healthy(port: int) -> bool:
    try:
        return (
            urllib3.PoolManager(retries=False).request("GET", f"http://127.0.0.1:{port}/healthz", timeout=1).status
            == 200
        )
    except urllib3.exceptions.HTTPError:
        return False


def peers(api: Api, ns: str, name: str) -> dict[str, object]:
    peering = api.custom.get_namespaced_custom_object("kopf.dev", "v1", ns, "kopfpeerings", name)
    return dict(peering.get("status") or {})


class PeeringLog(logging.Handler):
    """What kopf's peering says in this process (the in-process standby): pausing, resuming."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def said(self, start: str) -> bool:
        return any(message.startswith(start) for message in self.messages)


@pytest.fixture
def peering_log() -> Iterator[PeeringLog]:
    handler, logger = PeeringLog(), logging.getLogger("kopf._core.engines.peering")
    level = logger.level
    logger.setLevel(logging.INFO)  # the pause and resume are INFO records
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_two_replicas_never_both_act_and_the_standby_takes_over(
    operators: OperatorFactory, namespace: str, api: Api, tmp_path: Path, peering_log: PeeringLog
) -> None:
    standby = operators.start(namespace, SFT_OPERATOR_PEERING_PRIORITY="10")
    env = {**standby.env, "SFT_OPERATOR_METRICS_PORT": str(free_port()), "SFT_OPERATOR_PEERING_PRIORITY": "20"}
    active = start_replica(env, 20, tmp_path / "replica.log")
    try:
        eventually(lambda: healthy(int(env["SFT_OPERATOR_METRICS_PORT"])), what="the second replica's /healthz")
        eventually(lambda: len(peers(api, namespace, env["SFT_OPERATOR_PEERING_NAME"])) == 2, what="both peers")
        eventually(lambda: peering_log.said("Pausing operations in favour of"), what="the standby pausing")

        api.create(sftjob_manifest(namespace, "first"))
        eventually(lambda: api.status("SFTJob", namespace, "first").get("startTime"), what="first handled")
        metrics = urllib3.PoolManager().request("GET", f"http://127.0.0.1:{env['SFT_OPERATOR_METRICS_PORT']}/metrics")
        assert (
            'trustdoc_sft_reconciles_total{handler="reconcile",kind="SFTJob",result="ok"} 1.0' in metrics.data.decode()
        )
        assert standby.sample("trustdoc_sft_reconciles_total") is None, "the standby replica acted too"
        assert sorted(m for _, r, m in api.event_messages(namespace, "first") if r == "Created") == [
            "Created ConfigMap first-run-config",
            "Created Job first-train",
        ]

        active.send_signal(signal.SIGTERM)
        assert active.wait(timeout=30) == 0, (tmp_path / "replica.log").read_text()[-3000:]
        # The stopped replica removed itself from the peering: the standby resumes (a condition, not a stopwatch).
        eventually(lambda: peering_log.said("Resuming operations"), what="the standby resuming")
        api.create(sftjob_manifest(namespace, "second"))
        eventually(lambda: api.job(namespace, "second-train"), what="the standby taking over")
        # Taking over, it resumes "first" (finding its children) and creates "second"'s.
        eventually(
            lambda: (
                standby.sample("trustdoc_sft_reconciles_total", kind="SFTJob", handler="reconcile", result="ok") == 2
            ),
            what="the standby reconciling both objects",
        )
        assert children_by_owner(api, namespace) == {
            "first": ["first-run-config", "first-train"],
            "second": ["second-run-config", "second-train"],
        }
    finally:
        if active.poll() is None:
            active.kill()
            active.wait()


def test_a_name_held_by_another_owner_is_waited_for_not_adopted(
    operators: OperatorFactory, namespace: str, api: Api
) -> None:
    operators.start(namespace)
    api.create(sftjob_manifest(namespace, "sft"))
    eventually(lambda: api.job(namespace, "sft-train"), what="Job sft-train")
    # Deleting with orphan propagation leaves the Job behind without an owner.
    api.custom.delete_namespaced_custom_object(
        "sft.trustdoc.io", "v1alpha1", namespace, "sftjobs", "sft", propagation_policy="Orphan"
    )
    eventually(lambda: api.get("SFTJob", namespace, "sft") is None, what="the first object gone")
    eventually(lambda: not api.job(namespace, "sft-train")["metadata"].get("ownerReferences"), what="the Job orphaned")  # type: ignore[index]

    api.create(sftjob_manifest(namespace, "sft"))
    stuck = eventually(
        lambda: (
            (s := api.status("SFTJob", namespace, "sft"))
            and condition(s, "Progressing").get("reason") == "NameConflict"
            and s
        ),
        what="reason NameConflict",
    )
    message = condition(stuck, "Progressing")["message"]
    assert "ConfigMap sft-run-config already exists and is not owned by this object" in message
    assert api.job(namespace, "sft-train")["metadata"].get("ownerReferences") is None  # type: ignore[index]
    # Once the stranger's children are gone the new object gets its own.
    api.core.delete_namespaced_config_map("sft-run-config", namespace)
    api.batch.delete_namespaced_job("sft-train", namespace, propagation_policy="Background")
    new_uid = api.get("SFTJob", namespace, "sft")["metadata"]["uid"]  # type: ignore[index]
    eventually(
        lambda: (
            (j := api.job(namespace, "sft-train"))
            and j["metadata"].get("ownerReferences", [{}])[0].get("uid") == new_uid
        ),
        timeout=30,
        what="a Job owned by the new object",
    )


@pytest.fixture
def own_control_plane(tmp_path: Path) -> Iterator[ControlPlane]:
    """A control plane of its own, with the CRDs: an operator serving every namespace sees only this test's objects."""
    plane = ControlPlane(tmp_path / "plane")
    try:
        plane.start()
        kubectl = Kubectl(plane.kubeconfig)
        install_crds(kubectl)
        kubectl.run("apply", "-f", str(REPO_ROOT / "crds" / "peering"), check=True)
        kubectl.run(
            "wait", "--for=condition=Established", "--timeout=60s", "crd/clusterkopfpeerings.kopf.dev", check=True
        )
        yield plane
    finally:
        plane.stop()


def test_sftctl_operator_cluster_wide_creates_its_cluster_peering_and_serves_every_namespace(
    own_control_plane: ControlPlane, tmp_path: Path
) -> None:
    api = Api(config.new_client_from_config(config_file=str(own_control_plane.kubeconfig)))
    namespace = "anywhere"
    api.core.create_namespace({"metadata": {"name": namespace}})
    env = OperatorFactory(own_control_plane, pytest.MonkeyPatch()).environment(
        namespace, SFT_OPERATOR_PEERING_NAME="cluster-wide"
    )
    env.pop("SFT_OPERATOR_NAMESPACES")  # no namespaces: `sftctl operator` runs with --all-namespaces
    replica = start_replica(env, 5, tmp_path / "cluster-wide.log")
    try:
        eventually(lambda: healthy(int(env["SFT_OPERATOR_METRICS_PORT"])), what="/healthz", timeout=120)
        # The operator created the cluster-wide peering object; its keep-alive follows right after start.
        peering = eventually(
            lambda: api.custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", "cluster-wide").get(
                "status"
            ),
            what="the keep-alive in the ClusterKopfPeering",
        )
        assert [peer["priority"] for peer in peering.values()] == [5]
        api.create(sftjob_manifest(namespace, "anywhere"))
        eventually(lambda: api.status("SFTJob", namespace, "anywhere").get("jobName"), what="the object handled")
    finally:
        replica.send_signal(signal.SIGTERM)
        assert replica.wait(timeout=30) == 0, (tmp_path / "cluster-wide.log").read_text()[-3000:]
