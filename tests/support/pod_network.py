"""Pod networking for the test node agent: what a CNI plugin and cluster DNS give a kubelet.

Opt-in (`NodeAgent(network=PodNetwork(...))`): each pod gets its own network
namespace, with a veth pair into one Linux bridge and an address of a /24, so
pods that bind the same ports (every Ray node binds 8080, 52365...) do not
collide, and the host (API server, operators) reaches them by pod IP.

Service names resolve as cluster DNS resolves them: a DNS server on the
bridge's gateway answers `NAME.NAMESPACE.svc.cluster.local` of every Service
with a selector with a running pod of this node that it selects (what a
headless Service with published not-ready addresses answers, as KubeRay's
head Service is; no ClusterIP, no kube-proxy), and each pod's
/etc/resolv.conf names that server with its namespace's search path. A
hosts file did not do: Ray's GCS client (gRPC's c-ares resolver) still asked
the nameserver of the host's resolv.conf, out of a pod's reach, and timed out
(`ray health-check` by service name: Deadline Exceeded after 42 s; by IP, or
with GRPC_DNS_RESOLVER=native: 3 s), so KubeRay's workers never joined.

Needs root (CAP_NET_ADMIN, port 53) on this machine; the default node agent
keeps its loopback addresses and needs none of this.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnslib import QTYPE, RCODE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

CLUSTER_DOMAIN = "svc.cluster.local"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class _Pod:
    namespace: str
    labels: dict[str, str]
    netns: str
    address: str


class ServiceNames(BaseResolver):  # type: ignore[misc]
    """Cluster DNS for the pods: service FQDNs to pod IPs; any other name does not exist."""

    def __init__(self) -> None:
        self.addresses: dict[str, str] = {}

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        address = self.addresses.get(str(request.q.qname).rstrip(".").lower())
        if address is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype in (QTYPE.A, QTYPE.ANY):
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=5))
        # A name that exists but has no record of the asked type (AAAA): an empty answer, at once.
        return reply


@dataclass
class PodNetwork:
    """A bridge `bridge` with gateway `prefix`.1; pods get `prefix`.2 and up."""

    workdir: Path
    bridge: str = "sftbr0"
    prefix: str = "10.244.77"
    pods: dict[str, _Pod] = field(default_factory=dict)
    names: ServiceNames = field(default_factory=ServiceNames)
    _dns: DNSServer | None = None
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(2))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def gateway(self) -> str:
        return f"{self.prefix}.1"

    def resolv_conf(self, namespace: str) -> Path:
        """The /etc/resolv.conf of a pod in `namespace`: the pod network's DNS, a kubelet's search path."""
        path = self.workdir / f"resolv-{namespace}.conf"
        if not path.exists():  # written once: running pods have it bound, a rewrite would truncate it under them
            path.write_text(
                f"nameserver {self.gateway}\n"
                f"search {namespace}.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN} cluster.local\n"
                "options ndots:5\n"
            )
        return path

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        quiet = DNSLogger("-request,-reply,-truncated", prefix=False)
        self._dns = DNSServer(self.names, address=self.gateway, port=53, logger=quiet)
        self._dns.start_thread()

    def stop(self) -> None:
        with self._lock:
            keys = list(self.pods)
        for key in keys:
            self.remove_pod(key)
        if self._dns is not None:
            self._dns.stop()
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)

    def add_pod(self, key: str, namespace: str, labels: dict[str, str]) -> tuple[str, str]:
        """A namespace and an address for one pod: (netns name, pod IP)."""
        number = next(self._numbers)
        if number > 254:
            raise RuntimeError(f"pod network {self.prefix}.0/24 is full")
        netns, host_side, address = f"sftpod{number}", f"sftveth{number}", f"{self.prefix}.{number}"
        _ip("netns", "add", netns)
        _ip("link", "add", host_side, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("link", "set", host_side, "master", self.bridge, "up")
        _ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("-n", netns, "route", "add", "default", "via", f"{self.prefix}.1")
        with self._lock:
            self.pods[key] = _Pod(namespace, dict(labels), netns, address)
        return netns, address

    def remove_pod(self, key: str) -> None:
        """Stop what still runs in the pod's namespace (daemons its process left), then remove it."""
        with self._lock:
            pod = self.pods.pop(key, None)
        if pod is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self._pids(pod.netns)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 5
            while pids and time.monotonic() < deadline:
                time.sleep(0.2)
                pids = self._pids(pod.netns)
            if not pids:
                break
        subprocess.run(["ip", "netns", "del", pod.netns], capture_output=True)

    @staticmethod
    def _pids(netns: str) -> list[int]:
        found = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
        return [int(line) for line in found.stdout.split()]

    def refresh_names(self, services: list[dict[str, Any]]) -> None:
        """Point every Service's name at a running pod it selects."""
        addresses: dict[str, str] = {}
        with self._lock:
            pods = list(self.pods.values())
        for service in services:
            selector = (service.get("spec") or {}).get("selector") or {}
            if not selector:
                continue
            name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
            chosen = next(
                (
                    p
                    for p in pods
                    if p.namespace == namespace and all(p.labels.get(k) == v for k, v in selector.items())
                ),
                None,
            )
            if chosen is not None:
                addresses[f"{name}.{namespace}.{CLUSTER_DOMAIN}"] = chosen.address
        self.names.addresses = addresses  # one assignment: the DNS threads see the old map or the new
