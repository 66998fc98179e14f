"""Helpers of the operator tests: the API as dicts, the node, the in-process operator, manifests."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

import pytest
import urllib3
import yaml
from kopf.testing import KopfRunner
from kubernetes import client

from sftctl.commands.operator import kopf_arguments
from support import manifests
from support.kube import ControlPlane, free_port
from support.manifests import condition  # noqa: F401 - the cluster tests take it from here with the rest
from support.waiting import eventually

GROUP, VERSION = "sft.trustdoc.io", "v1alpha1"
PLURALS = {"SFTJob": "sftjobs", "DatasetCuration": "datasetcurations"}
T = TypeVar("T")


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------
# API access for the tests
# --------------------------------------------------------------------------


@dataclass
class Api:
    """The real API, as raw dicts."""

    api_client: client.ApiClient

    def __post_init__(self) -> None:
        self.core = client.CoreV1Api(self.api_client)
        self.batch = client.BatchV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)

    @staticmethod
    def _raw(response: Any) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(response.data)
        return data

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        ns, kind = manifest["metadata"]["namespace"], manifest["kind"]
        return self._raw(
            self.custom.create_namespaced_custom_object(
                GROUP, VERSION, ns, PLURALS[kind], manifest, _preload_content=False
            )
        )

    def get(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        try:
            return self._raw(
                self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, ns, PLURALS[kind], name, _preload_content=False
                )
            )
        except client.exceptions.ApiException as err:
            if err.status == 404:
                return None
            raise

    def status(self, kind: str, ns: str, name: str) -> dict[str, Any]:
        obj = self.get(kind, ns, name)
        return (obj or {}).get("status") or {}

    def patch_spec(self, kind: str, ns: str, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURALS[kind], name, patch)

    def set_status(self, kind: str, ns: str, name: str, status: dict[str, Any]) -> None:
        obj = self.get(kind, ns, name)
        assert obj is not None
        obj["status"] = status
        self.custom.replace_namespaced_custom_object_status(GROUP, VERSION, ns, PLURALS[kind], name, obj)

    def delete(self, kind: str, ns: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURALS[kind], name)

    def jobs(self, ns: str) -> list[dict[str, Any]]:
        return self._raw(self.batch.list_namespaced_job(ns, _preload_content=False))["items"]  # type: ignore[no-any-return]

    def job(self, ns: str, name: str) -> dict[str, Any] | None:
        try:
            return self._raw(self.batch.read_namespaced_job(name, ns, _preload_content=False))
        except client.exceptions.ApiException as err:
            if err.status == 404:
                return None
            raise

    def pods(self, ns: str, job: str | None = None) -> list[dict[str, Any]]:
        selector = f"batch.kubernetes.io/job-name={job}" if job else None
        items = self._raw(self.core.list_namespaced_pod(ns, label_selector=selector, _preload_content=False))["items"]
        return sorted(items, key=lambda pod: pod["metadata"]["creationTimestamp"])  # type: ignore[no-any-return]

    def config_maps(self, ns: str) -> list[dict[str, Any]]:
        items = self._raw(self.core.list_namespaced_config_map(ns, _preload_content=False))["items"]
        return [cm for cm in items if cm["metadata"]["name"] != "kube-root-ca.crt"]

    def services(self, ns: str) -> list[dict[str, Any]]:
        return self._raw(self.core.list_namespaced_service(ns, _preload_content=False))["items"]  # type: ignore[no-any-return]

    def events(self, ns: str, name: str | None = None) -> list[dict[str, Any]]:
        items = self._raw(self.core.list_namespaced_event(ns, _preload_content=False))["items"]
        return [e for e in items if name is None or e["involvedObject"]["name"] == name]

    def event_messages(self, ns: str, name: str) -> list[tuple[str, str, str]]:
        """(type, reason, message) of the Events about one object, oldest first."""

        def when(event: dict[str, Any]) -> str:
            return str(event.get("firstTimestamp") or event.get("eventTime") or event["metadata"]["creationTimestamp"])

        events = sorted(self.events(ns, name), key=lambda e: (when(e), e["metadata"]["resourceVersion"].zfill(20)))
        return [(e["type"], e["reason"], e["message"]) for e in events]


# --------------------------------------------------------------------------
# The operator, in-process
# --------------------------------------------------------------------------


@dataclass
class RunningOperator:
    """An operator started by `start_operator`: its runner and its ports."""

    runner: KopfRunner
    metrics_port: int
    progress_port: int
    env: dict[str, str]

    def metrics(self) -> str:
        http = urllib3.PoolManager()
        return http.request("GET", f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).data.decode()

    def sample(self, metric: str, **labels: str) -> float | None:
        """The value of one series on this operator's /metrics, or None when absent."""
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(self.metrics()):
            for sample in family.samples:
                if sample.name == metric and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return None


@dataclass
class OperatorFactory:
    control_plane: ControlPlane
    monkeypatch: pytest.MonkeyPatch
    running: list[RunningOperator] = field(default_factory=list)

    def environment(self, namespace: str, **overrides: str) -> dict[str, str]:
        env = {
            "KUBECONFIG": str(self.control_plane.kubeconfig),
            "SFT_OPERATOR_NAMESPACES": namespace,
            "SFT_OPERATOR_PEERING_NAME": f"peering-{namespace}",
            "SFT_OPERATOR_METRICS_PORT": str(free_port()),
            "SFT_OPERATOR_PROGRESS_PORT": str(free_port()),
            "SFT_OPERATOR_DATASET_WAIT_SECONDS": "0.5",
            "SFT_OPERATOR_PROGRESS_POLL_SECONDS": os.environ["SFT_OPERATOR_PROGRESS_POLL_SECONDS"],
        }
        env.update(overrides)
        return env

    def start(self, namespace: str, **overrides: str) -> RunningOperator:
        """Run the operator in this process (kopf's KopfRunner) on one namespace; ready when /healthz answers."""
        env = self.environment(namespace, **overrides)
        for key, value in env.items():
            self.monkeypatch.setenv(key, value)
        runner = KopfRunner(kopf_arguments([namespace], standalone=False, liveness=None, verbose=False), timeout=30)
        runner.__enter__()
        operator = RunningOperator(
            runner, int(env["SFT_OPERATOR_METRICS_PORT"]), int(env["SFT_OPERATOR_PROGRESS_PORT"]), env
        )
        self.running.append(operator)
        http = urllib3.PoolManager(retries=False)

        def healthy() -> bool:
            if runner.future.done():
                raise AssertionError(f"operator exited early:\n{runner.output}")
            try:
                return http.request("GET", f"http://127.0.0.1:{operator.metrics_port}/healthz", timeout=1).status == 200
            except urllib3.exceptions.HTTPError:
                return False

        eventually(healthy, timeout=30, what="the operator's /healthz")
        return operator

    def stop(self, operator: RunningOperator) -> str:
        """Stop an operator as a SIGTERM would; returns its log."""
        if operator in self.running:
            self.running.remove(operator)
            operator.runner.__exit__(None, None, None)
        return str(operator.runner.output)


# --------------------------------------------------------------------------
# The node: pods run, finish, fail
# --------------------------------------------------------------------------


@dataclass
class Node:
    """Plays the kubelet through pods/status, so the real Job controller reacts."""

    api: Api

    def pods(self, ns: str, job: str, phase: str | None = None) -> list[dict[str, Any]]:
        pods = self.api.pods(ns, job)
        return [p for p in pods if phase is None or (p.get("status") or {}).get("phase", "Pending") == phase]

    def wait_pending(self, ns: str, job: str, count: int = 1) -> list[dict[str, Any]]:
        return eventually(
            lambda: (pods := self.pods(ns, job, "Pending")) and len(pods) >= count and pods,
            what=f"{count} pending pod(s) of Job {job}",
        )

    def _patch(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        meta = pod["metadata"]
        self.api.core.patch_namespaced_pod_status(meta["name"], meta["namespace"], {"status": status})

    def run(self, pod: dict[str, Any], ip: str = "127.0.0.1") -> None:
        started = now()
        self._patch(
            pod,
            {
                "phase": "Running",
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "startTime": started,
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": started}],
                "containerStatuses": [self._container(True, {"running": {"startedAt": started}})],
            },
        )

    def finish(self, pod: dict[str, Any], exit_code: int, message: str = "", disrupted: bool = False) -> None:
        """Terminate the pod's container; `disrupted` adds the DisruptionTarget condition an eviction sets."""
        conditions = [{"type": "Ready", "status": "False", "lastTransitionTime": now()}]
        if disrupted:
            conditions.append(
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "EvictionByEvictionAPI",
                    "lastTransitionTime": now(),
                }
            )
        terminated = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "message": message,
            "startedAt": now(),
            "finishedAt": now(),
        }
        self._patch(
            pod,
            {
                "phase": "Succeeded" if exit_code == 0 else "Failed",
                "conditions": conditions,
                "containerStatuses": [self._container(False, {"terminated": terminated})],
            },
        )

    @staticmethod
    def _container(ready: bool, state: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": "trainer",
            "image": "trainer",
            "imageID": "",
            "ready": ready,
            "started": ready,
            "restartCount": 0,
            "state": state,
        }


# --------------------------------------------------------------------------
# Manifests
# --------------------------------------------------------------------------


def curation_manifest(ns: str, name: str = "cur", **spec: Any) -> dict[str, Any]:
    return manifests.curation(name, ns, **spec)


def sftjob_manifest(ns: str, name: str = "sft", **spec: Any) -> dict[str, Any]:
    """An SFTJob on CPU: the test node has no GPU."""
    return manifests.sftjob(name, ns, **{"resources": {"gpusPerNode": 0}, **spec})


def as_yaml(manifest: dict[str, Any]) -> str:
    return yaml.safe_dump(manifest)
