"""A real Kubernetes control plane on loopback for the cluster tests and the operator benchmark.

Starts `etcd`, `kube-apiserver` and `kube-controller-manager` (built from the
published Go modules by hack/build-cluster-binaries.sh) as child processes,
waits until the API server is ready, and writes a kubeconfig. Nothing here is
a fake: schema and CEL validation, the status subresource, garbage collection
and Job semantics are Kubernetes' own.

Authentication is a static token file (one admin user in system:masters) and
authorisation is RBAC, so tests can impersonate less privileged accounts.
"""

from __future__ import annotations

import base64
import json
import os
import random
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN_DIR = Path(os.environ.get("SFT_CLUSTER_BIN", REPO_ROOT / ".cache" / "cluster" / "bin"))
SERVICE_CIDR = "10.96.0.0/24"


class ClusterStartError(RuntimeError):
    """The control plane did not come up; the message carries the log tail."""


def binary(name: str) -> str:
    """Path of a cluster binary: our build first, then PATH (etcd is Debian's)."""
    built = BIN_DIR / name
    if built.exists():
        return str(built)
    found = shutil.which(name)
    if found:
        return found
    raise ClusterStartError(f"{name} not found in {BIN_DIR} or PATH: run `make cluster-binaries`")


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range.

    A port from `bind(0)` is free only until someone else asks the kernel for one: torchrun's rendezvous
    store or any outgoing connection could be handed the same number before our server binds it (a
    progress server failed with EADDRINUSE that way). Below the ephemeral range nobody is handed ports.
    """
    port_range = Path("/proc/sys/net/ipv4/ip_local_port_range")
    lowest_ephemeral = int(port_range.read_text().split()[0]) if port_range.exists() else 32768
    candidates = random.Random().sample(range(10_000, lowest_ephemeral), 200)
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port among 200 tried in 10000..{lowest_ephemeral - 1}")


@dataclass
class ControlPlane:
    """A running etcd + kube-apiserver + kube-controller-manager."""

    workdir: Path
    controllers: str = "*"
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    api_port: int = field(default_factory=free_port)
    etcd_port: int = field(default_factory=free_port)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    def audit_events(self, username: str) -> list[dict]:  # type: ignore[type-arg]
        """Audit events of one user (JSON lines written by the API server)."""
        if not self.audit_log.exists():
            return []
        events = []
        for line in self.audit_log.read_text().splitlines():
            event = json.loads(line)
            if event.get("user", {}).get("username") == username:
                events.append(event)
        return events

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    # ------------------------------------------------------------------ start

    def start(self, timeout: float = 60.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_credentials()
        self._spawn("etcd", self._etcd_args())
        self._spawn("kube-apiserver", self._apiserver_args())
        self._wait_ready(timeout)
        self._write_kubeconfig()
        self._spawn("kube-controller-manager", self._controller_manager_args())

    def _write_credentials(self) -> None:
        # The service-account key pair signs and verifies SA tokens; the API
        # server refuses to start without one.
        key = self.workdir / "sa.key"
        if not key.exists():
            subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
            subprocess.run(
                ["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(self.workdir / "sa.pub")],
                check=True,
                capture_output=True,
            )
        (self.workdir / "tokens.csv").write_text(f'{self.token},admin,admin,"system:masters"\n')
        # Who did what: the least-privilege tests compare this with the chart's RBAC.
        (self.workdir / "audit-policy.yaml").write_text(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n"
        )

    def _etcd_args(self) -> list[str]:
        peer = free_port()
        url = f"http://127.0.0.1:{self.etcd_port}"
        return [
            binary("etcd"),
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=default=http://127.0.0.1:{peer}",
            "--listen-metrics-urls=",
            # Tests write little and want speed over durability.
            "--unsafe-no-fsync=true" if self._etcd_supports_no_fsync() else "--snapshot-count=10000",
            "--log-level=warn",
        ]

    @staticmethod
    def _etcd_supports_no_fsync() -> bool:
        out = subprocess.run([binary("etcd"), "--help"], capture_output=True, text=True)
        return "--unsafe-no-fsync" in (out.stdout + out.stderr)

    def _apiserver_args(self) -> list[str]:
        return [
            binary("kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.api_port}",
            f"--cert-dir={self.workdir / 'certs'}",
            f"--token-auth-file={self.workdir / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={self.workdir / 'sa.pub'}",
            f"--service-account-signing-key-file={self.workdir / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=false",
            "--enable-priority-and-fairness=false",
            f"--audit-policy-file={self.workdir / 'audit-policy.yaml'}",
            f"--audit-log-path={self.audit_log}",
            "--profiling=false",
            "--v=0",
        ]

    def _controller_manager_args(self) -> list[str]:
        return [
            binary("kube-controller-manager"),
            f"--kubeconfig={self.kubeconfig}",
            f"--controllers={self.controllers}",
            f"--service-account-private-key-file={self.workdir / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--use-service-account-credentials=false",
            # Jobs and their pods are what the operator makes; collect garbage fast.
            "--concurrent-gc-syncs=5",
            "--v=0",
        ]

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.log(name), "ab")  # noqa: SIM115 - closed by the child's exit
        self.processes[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_ready(self, timeout: float) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + timeout
        last_error = ""
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise ClusterStartError(f"{name} exited with {proc.returncode}:\n{self._tail(name)}")
            request = urllib.request.Request(f"{self.server}/readyz", headers={"Authorization": f"Bearer {self.token}"})
            try:
                with urllib.request.urlopen(request, context=context, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError as err:
                last_error = str(err)
            time.sleep(0.2)
        raise ClusterStartError(
            f"kube-apiserver not ready after {timeout}s ({last_error}):\n{self._tail('kube-apiserver')}"
        )

    def _tail(self, name: str, lines: int = 30) -> str:
        try:
            return "\n".join(self.log(name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"

    def _write_kubeconfig(self) -> None:
        # Clients verify the API server against the CA it generated itself (its certificate file carries the
        # chain), as a real kubeconfig would: an insecure client makes urllib3 load the whole system trust store
        # for every new connection, a cost no cluster has (it showed in the operator's burst benchmark).
        authority = base64.b64encode((self.workdir / "certs" / "apiserver.crt").read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": self.server, "certificate-authority-data": authority}}],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
            "current-context": "test",
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2))

    # ------------------------------------------------------------------- stop

    def stop(self, grace: float = 10.0) -> None:
        """Stop everything, newest first, and leave no process behind."""
        for name in reversed(list(self.processes)):
            proc = self.processes[name]
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.processes.clear()

    def start_scheduler(self) -> None:
        """The real kube-scheduler: honours GPU requests, node selectors and taints."""
        self._spawn(
            "kube-scheduler",
            [
                binary("kube-scheduler"),
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--v=0",
            ],
        )

    def restart_controller_manager(self) -> None:
        """Kill and start kube-controller-manager: it forgets what it held in memory (Job back-off)."""
        proc = self.processes.pop("kube-controller-manager")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        self._spawn("kube-controller-manager", self._controller_manager_args())

    def restart_apiserver(self) -> None:
        """Kill and start kube-apiserver again on the same port (fault tests)."""
        proc = self.processes.pop("kube-apiserver")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        self._spawn("kube-apiserver", self._apiserver_args())
        self._wait_ready(60)


@dataclass
class Kubectl:
    """`kubectl` bound to one kubeconfig."""

    kubeconfig: Path

    def run(
        self, *args: str, input: str | None = None, check: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [binary("kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result

    def apply(self, manifest: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.run("apply", "-f", "-", *extra, input=manifest)

    def apply_objects(self, *objects: dict, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:  # type: ignore[type-arg]
        """Apply objects as JSON: YAML 1.1 would read a namespace called `y` or `on` as a boolean."""
        return self.apply(json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}), *extra)

    def get_json(self, *args: str) -> dict:  # type: ignore[type-arg]
        return json.loads(self.run("get", *args, "-o", "json", check=True).stdout)


def install_crds(kubectl: Kubectl) -> None:
    """Apply the generated CRDs and wait until they are Established."""
    kubectl.run("apply", "-f", str(REPO_ROOT / "crds"), check=True)
    # `kubectl wait` errors out (rather than waits) while a fresh CRD has no
    # status yet, which happens under load: retry until it can wait.
    deadline = time.monotonic() + 60
    while True:
        waited = kubectl.run(
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd",
            "-l",
            "app.kubernetes.io/part-of=trustdoc-sft",
        )
        if waited.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"CRDs not Established: {waited.stderr}")
        time.sleep(0.5)
