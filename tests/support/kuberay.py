"""The real KubeRay operator against the test API server.

hack/build-kuberay.sh builds `kuberay-operator` from the published Go module
(github.com/ray-project/kuberay/ray-operator) into .cache/cluster/bin and
copies its CRDs (config/crd/bases) to .cache/cluster/kuberay-crds. Here they
are installed and the controller runs as a child process with the admin
kubeconfig, as its Deployment would run in a cluster.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from support.kube import BIN_DIR, Kubectl, free_port

CRD_DIR = BIN_DIR.parent / "kuberay-crds"
CRD_NAMES = ("rayclusters.ray.io", "rayjobs.ray.io", "rayservices.ray.io")


class KubeRayMissing(RuntimeError):
    """The binary or its CRDs were not built."""


def install_crds(kubectl: Kubectl) -> None:
    """KubeRay's CRDs, Established. Server-side apply: they exceed the client-side annotation limit."""
    if not CRD_DIR.is_dir():
        raise KubeRayMissing(f"{CRD_DIR} not found: run `bash hack/build-kuberay.sh`")
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR), check=True)
    # `kubectl wait` errors out (rather than waits) while a fresh CRD has no
    # status yet, which happens under load: retry until it can wait.
    deadline = time.monotonic() + 60
    while True:
        waited = kubectl.run("wait", "--for=condition=Established", "--timeout=30s", *(f"crd/{n}" for n in CRD_NAMES))
        if waited.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"KubeRay's CRDs not Established: {waited.stderr}")
        time.sleep(0.5)


def uninstall_crds(kubectl: Kubectl) -> None:
    for name in CRD_NAMES:
        kubectl.run("delete", "crd", name, "--ignore-not-found", "--wait=true", "--timeout=60s", check=True, timeout=90)


@dataclass
class KubeRayOperator:
    """`kuberay-operator` as a child process; its log is in `workdir/kuberay.log`."""

    kubeconfig: Path
    workdir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    # e.g. --use-kubernetes-proxy: reach Ray dashboards through the API server's service proxy.
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.workdir / "kuberay.log"

    def start(self) -> None:
        binary = BIN_DIR / "kuberay-operator"
        if not binary.exists():
            raise KubeRayMissing(f"{binary} not found: run `bash hack/build-kuberay.sh`")
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            str(binary),
            "--kubeconfig",
            str(self.kubeconfig),
            "--metrics-addr",
            "0",  # no metrics server
            "--health-probe-bind-address",
            f"127.0.0.1:{free_port()}",
            "--enable-leader-election=false",
            "--log-stdout-encoder",
            "console",
            *self.extra_args,
        ]
        env = {**os.environ, **self.extra_env}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        time.sleep(1)
        if self.process.poll() is not None:
            raise RuntimeError(f"kuberay-operator exited at once:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
