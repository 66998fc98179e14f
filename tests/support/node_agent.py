"""A test node agent: a Node with GPUs whose pods run as local processes.

What a kubelet does for the e2e tests, on this machine: registers a Node with
`nvidia.com/gpu` capacity, keeps its Lease and Ready condition fresh so the
node-lifecycle controller never evicts it, and runs the pods the real
kube-scheduler binds to it. Each container runs as a local process (command,
args, env, volumes mapped to folders in a private mount namespace), with its
own 127.0.0.x address as pod IP; the agent reports pod phase, container
states, exit codes and termination messages through the real API.

What it does not do that a kubelet would, so that no one reads more into an
e2e pass than it proves:

* no images: the container's command runs from this virtualenv, whatever
  `image` says (a wrong image name, a missing package in the image, an
  entrypoint that does not exist there all pass here);
* no securityContext: runAsUser/runAsNonRoot, readOnlyRootFilesystem,
  dropped capabilities and seccomp are not applied; processes run as the
  test's user, so a pod that needs root, or writes outside its volumes,
  is not caught;
* no cluster DNS by default: names like `<job>-0.<job>` (the multi-node
  rendezvous) do not resolve; each pod gets its own 127.0.0.x address as pod
  IP and nothing else. With `network=PodNetwork(...)` each pod has its own
  network namespace and Service names resolve through the pod network's DNS
  (support/pod_network.py); pod hostnames and subdomains still do not;
* no real isolation: no cgroups (CPU and memory limits are not enforced,
  an OOM kill never happens), no PID namespace; only the mounts (and, with a
  pod network, the network) are private (volumes bind-mounted at their
  mountPath, read-only where asked);
* init containers run in order before the container (KubeRay's workers
  wait in one for the head's GCS), and exec readiness probes gate the Ready
  condition (KubeRay's RayCluster is ready, and its submitter starts, only
  when Ray answers its health checks); liveness, startup and httpGet/tcp
  probes are not run;
* no service account token, no image pulls or pull secrets; Secrets reach
  pods only as env (secretKeyRef);
* the termination message is read from the file named by
  SFT_TERMINATION_LOG rather than /dev/termination-log.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from .pod_network import PodNetwork

# What a request to an API server that is restarting can raise.
API_DOWN = (ApiException, OSError, ValueError, HTTPError)

LAUNCHER = Path(__file__).with_name("pod_launcher.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
HEARTBEAT_SECONDS = 5.0
# A kubelet's back-off before it runs a failed init container again (restartPolicy other than Never).
INIT_RETRY_SECONDS = 10.0
# Kubernetes' defaults for a probe's timing fields.
PROBE_DEFAULTS = {
    "initialDelaySeconds": 0,
    "periodSeconds": 10,
    "timeoutSeconds": 1,
    "successThreshold": 1,
    "failureThreshold": 3,
}


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class RunningPod:
    namespace: str
    name: str
    uid: str
    ip: str
    # The container process running now: an init container's, then the container's; None before the first.
    process: subprocess.Popen[bytes] | None
    started_at: str
    folder: Path
    container: str
    # Before a network namespace exists the agent's own; else `ip netns exec NETNS`.
    netns_prefix: list[str] = field(default_factory=list)
    # Readiness reports and the final status never interleave: a late "ready" never follows "terminated".
    status_lock: threading.Lock = field(default_factory=threading.Lock)
    finished: bool = False


def _placed(pod: RunningPod, phase: str) -> dict[str, Any]:
    """The status fields of a pod this node runs, whatever its conditions: phase, addresses, start time."""
    return {
        "phase": phase,
        "hostIP": "127.0.0.1",
        "podIP": pod.ip,
        "podIPs": [{"ip": pod.ip}],
        "startTime": pod.started_at,
    }


@dataclass
class NodeAgent:
    kubeconfig: Path
    workdir: Path
    name: str = "gpu-node-0"
    gpus: int = 8
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)
    ip_offset: int = 10
    # Own network namespaces and service names for the pods (support/pod_network.py); None: loopback addresses.
    network: PodNetwork | None = None
    pods: dict[str, RunningPod] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        api_client = config.new_client_from_config(str(self.kubeconfig))
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self._ips = itertools.count(self.ip_offset)

    # --------------------------------------------------------------- node

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._register()
        for target in (self._heartbeat_loop, self._pod_loop):
            thread = threading.Thread(target=target, name=f"{self.name}-{target.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            pods = list(self.pods.values())
        for pod in pods:
            _terminate(pod.process, grace=5)
        for thread in self._threads:
            thread.join(timeout=10)

    def _node_status(self) -> dict[str, Any]:
        capacity = {"cpu": "16", "memory": "128Gi", "pods": "110", "nvidia.com/gpu": str(self.gpus)}
        stamp = now()
        return {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": self.name}],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "test node agent is posting ready status",
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                }
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "v1.34.3",
                "kubeProxyVersion": "v1.34.3",
                "containerRuntimeVersion": "local://process",
                "osImage": "test-node-agent",
                "kernelVersion": os.uname().release,
                "machineID": self.name,
                "systemUUID": self.name,
                "bootID": self.name,
            },
        }

    def _register(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux", **self.labels},
            },
            "spec": {"taints": self.taints} if self.taints else {},
        }
        try:
            self.core.create_node(body)
        except ApiException as err:
            if err.status != 409:
                raise
        self.core.patch_node_status(self.name, {"status": self._node_status()})
        self._renew_lease()

    def _renew_lease(self) -> None:
        spec = {
            "holderIdentity": self.name,
            "leaseDurationSeconds": 40,
            "renewTime": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        try:
            self.coordination.patch_namespaced_lease(self.name, "kube-node-lease", {"spec": spec})
        except ApiException as err:
            if err.status != 404:
                raise
            self.coordination.create_namespaced_lease(
                "kube-node-lease", {"metadata": {"name": self.name, "namespace": "kube-node-lease"}, "spec": spec}
            )

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self._renew_lease()
                self.core.patch_node_status(self.name, {"status": {"conditions": self._node_status()["conditions"]}})
                if self.network is not None:
                    self.network.refresh_names(self._services())
            except API_DOWN:
                continue  # the API server may be restarting (fault tests); try again next beat

    # --------------------------------------------------------------- pods

    def _pod_loop(self) -> None:
        selector = f"spec.nodeName={self.name}"
        while not self._stop.is_set():
            try:
                # List, then watch from the list's resourceVersion, as a kubelet's
                # informer does: a watch without one may wait for the API server's
                # cache to reach the newest version and see nothing for minutes.
                listed = self.core.list_pod_for_all_namespaces(field_selector=selector)
                for pod in listed.items:
                    self._on_pod_logged(pod)
                stream = watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces,
                    field_selector=selector,
                    resource_version=listed.metadata.resource_version,
                    timeout_seconds=10,
                )
                for event in stream:
                    if self._stop.is_set():
                        return
                    self._on_pod_logged(event["object"])
                self._reap()
            except API_DOWN:
                time.sleep(1)  # API server restart: re-list and carry on

    def _on_pod_logged(self, pod: client.V1Pod) -> None:
        """Handle one pod; a failure is logged and never stops the agent (a kubelet keeps going)."""
        try:
            self._on_pod(pod)
        except Exception as err:  # noqa: BLE001 - logged with its traceback, then the next event
            self._log(f"{pod.metadata.namespace}/{pod.metadata.name}", err)

    def _log(self, key: str, err: Exception) -> None:
        with (self.workdir / "agent.log").open("a") as log:
            log.write(f"{now()} {key}: {err!r}\n{traceback.format_exc()}\n")

    def _on_pod(self, pod: client.V1Pod) -> None:
        key = f"{pod.metadata.namespace}/{pod.metadata.name}"
        if pod.metadata.deletion_timestamp is not None:
            self._delete(key, pod)
            return
        with self._lock:
            known = key in self.pods
        if known or (pod.status and pod.status.phase in ("Succeeded", "Failed")):
            return
        self._start(key, pod)

    def _start(self, key: str, pod: client.V1Pod) -> None:
        raw = self.core.api_client.sanitize_for_serialization(pod)
        folder = self.workdir / "pods" / raw["metadata"]["namespace"] / raw["metadata"]["name"]
        folder.mkdir(parents=True, exist_ok=True)
        netns_prefix: list[str] = []
        if self.network is not None:
            netns, ip = self.network.add_pod(key, raw["metadata"]["namespace"], raw["metadata"].get("labels") or {})
            self.network.refresh_names(self._services())
            netns_prefix = ["ip", "netns", "exec", netns]
        else:
            ip = f"127.0.0.{next(self._ips)}"
        running = RunningPod(
            raw["metadata"]["namespace"],
            raw["metadata"]["name"],
            raw["metadata"]["uid"],
            ip,
            None,
            now(),
            folder,
            raw["spec"]["containers"][0]["name"],
            netns_prefix,
        )
        with self._lock:
            self.pods[key] = running
        if raw["spec"].get("initContainers"):
            # Init containers may wait for minutes (KubeRay's wait for the GCS): not on the watch's thread.
            self._report_initializing(running, raw["spec"]["initContainers"])
            threading.Thread(target=self._run_pod_logged, args=(key, running, raw), daemon=True).start()
        else:
            self._run_pod(key, running, raw)

    def _run_pod_logged(self, key: str, running: RunningPod, raw: dict[str, Any]) -> None:
        try:
            self._run_pod(key, running, raw)
        except Exception as err:  # noqa: BLE001 - logged with its traceback (a kubelet keeps going)
            self._log(key, err)

    def _run_pod(self, key: str, running: RunningPod, raw: dict[str, Any]) -> None:
        """The init containers one after another, then the container, as a kubelet runs a pod."""
        for init in raw["spec"].get("initContainers") or []:
            while True:
                process = self._launch(key, running, raw, init, log_name=f"{init['name']}.log")
                if process is None:
                    return  # the pod was deleted meanwhile
                code = process.wait()
                if code == 0:
                    break
                if raw["spec"].get("restartPolicy") == "Never":
                    self._finish_init_failed(key, running, init["name"], code)
                    return
                if self._stop.wait(INIT_RETRY_SECONDS):
                    return
        container = raw["spec"]["containers"][0]
        process = self._launch(key, running, raw, container, log_name="container.log")
        if process is None:
            return
        probe = container.get("readinessProbe")
        self._report_running(running, ready=probe is None)
        if probe is not None:
            threading.Thread(target=self._probe_readiness, args=(key, running, process, probe), daemon=True).start()
        threading.Thread(target=self._wait, args=(key, running), daemon=True).start()

    def _launch(
        self, key: str, running: RunningPod, raw: dict[str, Any], container: dict[str, Any], log_name: str
    ) -> subprocess.Popen[bytes] | None:
        """One container of the pod as a local process in the pod's network; None if the pod is gone."""
        folder = running.folder
        is_main = log_name == "container.log"
        termination_log = folder / ("termination-log" if is_main else f"{container['name']}.termination-log")
        termination_log.write_text("")
        env = self._container_env(raw, container, running.ip)
        spec = {
            "command": expand((container.get("command") or []) + (container.get("args") or []), env),
            "env": env,
            "mounts": self._mounts(raw, container, folder),
            "terminationLog": str(termination_log),
            "keepVisible": [str(REPO_ROOT), sys.prefix],
            "resolvConf": str(self.network.resolv_conf(running.namespace)) if self.network is not None else None,
            "workingDir": container.get("workingDir"),
        }
        spec_file = folder / ("spec.json" if is_main else f"{container['name']}.spec.json")
        spec_file.write_text(json.dumps(spec, indent=2))
        with self._lock:
            if self.pods.get(key) is not running:
                return None
            with (folder / log_name).open("ab") as log:
                running.process = subprocess.Popen(
                    [
                        *running.netns_prefix,
                        "unshare",
                        "--mount",
                        "--propagation",
                        "private",
                        sys.executable,
                        str(LAUNCHER),
                        str(spec_file),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            return running.process

    def _container_env(self, raw: dict[str, Any], container: dict[str, Any], ip: str) -> dict[str, str]:
        return {
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": "/tmp",
            # What the trainer image's ENV gives every pod: curation's default models, baked in.
            "SFT_MODEL_CACHE": os.environ.get("SFT_MODEL_CACHE", str(REPO_ROOT / ".cache" / "models")),
            **self._env(raw, container),
            # One address per pod: what a pod network namespace would give.
            "SFT_PROGRESS_HOST": ip,
            "SFT_TERMINATION_LOG": "/mnt/termination-log",  # bound to the termination log by the launcher
        }

    def _env(self, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        annotations = pod["metadata"].get("annotations") or {}
        for item in container.get("env") or []:
            if "value" in item:
                # $(VAR) in a value refers to variables defined before it.
                env[item["name"]] = expand([item["value"]], env)[0]
                continue
            source = item.get("valueFrom") or {}
            if "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                if path.startswith("metadata.annotations['"):
                    env[item["name"]] = annotations.get(path.split("'")[1], "")
                elif path == "metadata.name":
                    env[item["name"]] = pod["metadata"]["name"]
                elif path == "metadata.namespace":
                    env[item["name"]] = pod["metadata"]["namespace"]
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                secret = self.core.read_namespaced_secret(ref["name"], pod["metadata"]["namespace"])
                env[item["name"]] = base64.b64decode(secret.data[ref["key"]]).decode()
        return env

    def _mounts(self, pod: dict[str, Any], container: dict[str, Any], folder: Path) -> list[dict[str, Any]]:
        sources: dict[str, str] = {}
        for volume in pod["spec"].get("volumes") or []:
            name = volume["name"]
            if "configMap" in volume:
                target = folder / "volumes" / name
                target.mkdir(parents=True, exist_ok=True)
                data = self.core.read_namespaced_config_map(volume["configMap"]["name"], pod["metadata"]["namespace"])
                for key, value in (data.data or {}).items():
                    (target / key).write_text(value)
                sources[name] = str(target)
            elif "emptyDir" in volume:
                target = folder / "volumes" / name
                target.mkdir(parents=True, exist_ok=True)
                sources[name] = str(target)
            elif "persistentVolumeClaim" in volume:
                sources[name] = self._claim_folder(pod["metadata"]["namespace"], volume["persistentVolumeClaim"])
        return [
            {"source": sources[m["name"]], "mountPath": m["mountPath"], "readOnly": m.get("readOnly", False)}
            for m in container.get("volumeMounts") or []
            if m["name"] in sources
        ]

    def _claim_folder(self, namespace: str, source: dict[str, Any]) -> str:
        """The bound PersistentVolume's hostPath, as a kubelet would mount it."""
        claim = self.core.read_namespaced_persistent_volume_claim(source["claimName"], namespace)
        volume = self.core.read_persistent_volume(claim.spec.volume_name)
        if volume.spec.host_path is None:
            raise ValueError(f"PersistentVolume {volume.metadata.name}: the test node mounts hostPath volumes only")
        return str(volume.spec.host_path.path)

    def _report_initializing(self, pod: RunningPod, init_containers: list[dict[str, Any]]) -> None:
        """Pending while the init containers run, as a kubelet reports it."""
        stamp = now()
        status = {
            **_placed(pod, "Pending"),
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp},
                *(
                    {"type": kind, "status": "False", "reason": "ContainersNotInitialized", "lastTransitionTime": stamp}
                    for kind in ("Initialized", "ContainersReady", "Ready")
                ),
            ],
            "initContainerStatuses": [
                {
                    "name": init["name"],
                    "ready": False,
                    "restartCount": 0,
                    "image": "local",
                    "imageID": "local://process",
                    "state": {"waiting": {"reason": "PodInitializing"}},
                }
                for init in init_containers
            ],
        }
        self._patch_status(pod, status)

    def _report_running(self, pod: RunningPod, ready: bool) -> None:
        """Running; Ready at once, or (a readiness probe) when the probe first passes."""
        stamp = now()
        status = {
            **_placed(pod, "Running"),
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp},
                {"type": "Initialized", "status": "True", "lastTransitionTime": stamp},
                *(
                    {"type": kind, "status": str(ready), "lastTransitionTime": stamp}
                    for kind in ("ContainersReady", "Ready")
                ),
            ],
            "containerStatuses": [
                {
                    "name": pod.container,
                    "ready": ready,
                    "started": True,
                    "restartCount": 0,
                    "image": "local",
                    "imageID": "local://process",
                    "state": {"running": {"startedAt": pod.started_at}},
                }
            ],
        }
        self._patch_status(pod, status)

    def _probe_readiness(
        self, key: str, pod: RunningPod, process: subprocess.Popen[bytes], probe: dict[str, Any]
    ) -> None:
        """Run an exec readiness probe in the container's namespaces and report Ready as it changes."""
        command = (probe.get("exec") or {}).get("command")
        if not command:
            self._log(key, ValueError(f"readinessProbe {probe}: the test node runs exec probes only; never Ready"))
            return
        timing = {**PROBE_DEFAULTS, **{k: v for k, v in probe.items() if k in PROBE_DEFAULTS}}
        ready, passed, failed = False, 0, 0
        if self._stop.wait(timing["initialDelaySeconds"]):
            return
        while process.poll() is None:
            if self._exec_probe(process.pid, command, timing["timeoutSeconds"]):
                passed, failed = passed + 1, 0
            else:
                passed, failed = 0, failed + 1
            flips = passed >= timing["successThreshold"] if not ready else failed >= timing["failureThreshold"]
            if flips:
                ready = not ready
                with pod.status_lock:
                    if pod.finished:
                        return
                    self._report_running(pod, ready=ready)
            if self._stop.wait(timing["periodSeconds"]):
                return

    @staticmethod
    def _exec_probe(pid: int, command: list[str], timeout: float) -> bool:
        """What `kubectl exec` would run: the command inside the container's mounts and network."""
        try:
            done = subprocess.run(
                ["nsenter", "--target", str(pid), "--mount", "--net", "--", *command],
                capture_output=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0

    def _finish_init_failed(self, key: str, pod: RunningPod, init: str, code: int) -> None:
        """restartPolicy Never: a failed init container fails the pod, and its container never starts."""
        if self.network is not None:
            self.network.remove_pod(key)
        stamp = now()
        log = (pod.folder / f"{init}.log").read_text(errors="replace")[-2048:]
        status = {
            "phase": "Failed",
            "conditions": [
                {"type": "Initialized", "status": "False", "reason": "PodCompleted", "lastTransitionTime": stamp},
                {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": stamp},
            ],
            "initContainerStatuses": [
                {
                    "name": init,
                    "ready": False,
                    "restartCount": 0,
                    "image": "local",
                    "imageID": "local://process",
                    "state": {"terminated": {"exitCode": code, "reason": "Error", "message": log, "finishedAt": stamp}},
                }
            ],
        }
        self._patch_status(pod, status)

    def _wait(self, key: str, pod: RunningPod) -> None:
        assert pod.process is not None
        code = pod.process.wait()
        if self.network is not None:
            self.network.remove_pod(key)  # with whatever daemons the process left in its namespace
        message = (pod.folder / "termination-log").read_text()[-4096:]
        if not message.strip():
            # FallbackToLogsOnError: the log tail when the process wrote no message.
            log = (pod.folder / "container.log").read_text(errors="replace")
            message = log[-2048:] if code != 0 else ""
        stamp = now()
        status = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": stamp},
                {"type": "ContainersReady", "status": "False", "reason": "PodCompleted", "lastTransitionTime": stamp},
            ],
            "containerStatuses": [
                {
                    "name": pod.container,
                    "ready": False,
                    "started": False,
                    "restartCount": 0,
                    "image": "local",
                    "imageID": "local://process",
                    "state": {
                        "terminated": {
                            "exitCode": code if code >= 0 else 128 - code,
                            "reason": "Completed" if code == 0 else "Error",
                            "message": message,
                            "startedAt": pod.started_at,
                            "finishedAt": stamp,
                        }
                    },
                }
            ],
        }
        with pod.status_lock:
            pod.finished = True
        for _ in range(60):  # the API server may be down for a moment (fault tests)
            try:
                self._patch_status(pod, status)
                break
            except API_DOWN:
                time.sleep(1)

    def _services(self) -> list[dict[str, Any]]:
        items = self.core.list_service_for_all_namespaces(_preload_content=False)
        return json.loads(items.data)["items"]  # type: ignore[no-any-return]

    def _patch_status(self, pod: RunningPod, status: dict[str, Any]) -> None:
        self.core.patch_namespaced_pod_status(pod.name, pod.namespace, {"status": status})

    def _delete(self, key: str, pod: client.V1Pod) -> None:
        """What a kubelet does for a pod marked for deletion: stop it, then remove it for good."""
        with self._lock:
            running = self.pods.pop(key, None)
        if running is not None:
            _terminate(running.process, grace=float(pod.metadata.deletion_grace_period_seconds or 5))
            if self.network is not None:
                self.network.remove_pod(key)
        try:
            self.core.delete_namespaced_pod(
                pod.metadata.name,
                pod.metadata.namespace,
                grace_period_seconds=0,
                body=client.V1DeleteOptions(grace_period_seconds=0, preconditions={"uid": pod.metadata.uid}),
            )
        except ApiException as err:
            if err.status not in (404, 409):
                raise

    def _reap(self) -> None:
        """Forget pods whose objects are gone (deleted while the watch was down)."""
        with self._lock:
            keys = list(self.pods)
        for key in keys:
            namespace, name = key.split("/", 1)
            try:
                self.core.read_namespaced_pod(name, namespace)
            except ApiException as err:
                if err.status == 404:
                    with self._lock:
                        pod = self.pods.pop(key, None)
                    if pod:
                        _terminate(pod.process, grace=2)

    def running_pods(self, namespace: str) -> list[RunningPod]:
        """The pods of `namespace` whose container runs now (not one still in its init containers or launching)."""
        with self._lock:
            pods = list(self.pods.values())
        return [p for p in pods if p.namespace == namespace and p.process is not None and p.process.poll() is None]

    def kill(self, namespace: str, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill a pod's process the way an OOM or a crash would (fault tests)."""
        with self._lock:
            pod = self.pods[f"{namespace}/{name}"]
        if pod.process is None:
            raise RuntimeError(f"pod {namespace}/{name} has no process yet")
        os.killpg(pod.process.pid, sig)


def _terminate(process: subprocess.Popen[bytes] | None, grace: float) -> None:
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def expand(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' `$(VAR)` expansion of command and args from the container's env."""
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), arg) for arg in args]
