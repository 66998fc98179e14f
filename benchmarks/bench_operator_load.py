"""Load: N SFTJobs through the operator on a real API server, as a burst and as a backlog.

    make bench-operator            (200; or: .venv/bin/python benchmarks/bench_operator_load.py --count 500)

Starts the test control plane (etcd + kube-apiserver + kube-controller-manager
from .cache/cluster/bin, job controller off) and, in one run:

- baseline: COUNT plain Jobs created directly from 8 client threads;
- CR floor: COUNT SFTJobs created where no operator watches (schema, CEL
  rules); they are the backlog below, and warm the custom resource's path;
- burst: two operator replicas sharing one kopf peering run, then COUNT
  SFTJobs are created from 8 client threads: create-to-Job latency (p50,
  p99, from the create call's return to the Job's ADDED watch event) and
  Jobs/s, bounded by how fast the SFTJobs arrive;
- backlog: one replica (the chart's default) starts with the CR floor's
  SFTJobs already there: Jobs/s from its first Job to its last (the
  operator's own rate) and from the process start.

Each phase reports whether every object reached its expected state (one Job
each, status.jobName), duplicates, handler errors, each replica's peak RSS
and CPU per object, the API server's and etcd's CPU per object (against a
Job created directly), and the operator's API requests per SFTJob by kind,
read from the API server's audit log (User-Agent `kopf/...` or
`trustdoc-sft-operator`, watches left out).

Goals (issue #15), at 200 objects: p99 create-to-Job <= 5 s, Jobs/s
>= 0.5x direct creation, peak RSS <= 200 MB. docs/operator.md#load has the
figures and why the ratio is out of reach: every SFTJob costs the control
plane about 40 ms of CPU (two writes of the custom resource, the ConfigMap,
the Job, three Events, the watches that carry them) against 2-3 ms for a Job
created directly, and the operator about 15-20 ms more.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # devtools: the control plane the cluster tests start too

import urllib3  # noqa: E402
from devtools.control_plane import ControlPlane, Kubectl, free_port  # noqa: E402
from kubernetes import client, config, watch  # noqa: E402

from sft_operator.kube import USER_AGENT  # noqa: E402

GROUP, VERSION = "sft.trustdoc.io", "v1alpha1"
# The operator's two clients: kopf's own (watches, its state annotations, Events) and ours (children, status).
OPERATOR_AGENTS = ("kopf/", USER_AGENT)
# What each kind of request is, for the table (verb, resource, subresource).
REQUEST_KINDS = {
    ("patch", "sftjobs", ""): "kopf state patches (annotations, finalizer)",
    ("update", "sftjobs", "status"): "status writes (PUT)",
    ("patch", "sftjobs", "status"): "status writes (PATCH)",
    ("get", "sftjobs", ""): "SFTJob reads",
    ("create", "events", ""): "Events",
    ("create", "jobs", ""): "Job creates",
    ("get", "jobs", ""): "Job reads",
    ("create", "configmaps", ""): "ConfigMap creates",
    ("get", "configmaps", ""): "ConfigMap reads",
    ("list", "pods", ""): "pod lists",
}


def sftjob(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SFTJob",
        "metadata": {"name": name},
        "spec": {
            "model": {"pvc": {"claimName": "models", "path": "base"}},
            "dataset": {"pvc": {"claimName": "data", "path": "train.jsonl"}},
            "output": {"pvc": {"claimName": "out", "path": name}},
            "resources": {"gpusPerNode": 1},
        },
    }


def plain_job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x", "command": ["true"]}]}
            }
        },
    }


class JobWatcher:
    """Records when each Job appears, keyed by name, from a watch on the namespace."""

    def __init__(self, batch: client.BatchV1Api, namespace: str) -> None:
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(batch, namespace), daemon=True)
        self._thread.start()

    def _run(self, batch: client.BatchV1Api, namespace: str) -> None:
        while not self._stop.is_set():
            try:
                # A client-side timeout too: a request sent on a pooled connection the server had
                # closed waited forever for its answer, and the Jobs created meanwhile were never seen.
                stream = watch.Watch().stream(
                    batch.list_namespaced_job, namespace, timeout_seconds=5, _request_timeout=(5, 15)
                )
                for event in stream:
                    if event["type"] == "ADDED":
                        # A re-listed watch repeats ADDED for old Jobs: the first sighting counts.
                        self.seen.setdefault(event["object"].metadata.name, time.monotonic())
            except (client.ApiException, urllib3.exceptions.HTTPError):
                time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def create_all(create, manifests: list[dict[str, Any]], workers: int = 8) -> dict[str, float]:  # type: ignore[no-untyped-def]
    created: dict[str, float] = {}

    def one(manifest: dict[str, Any]) -> None:
        create(manifest)
        created[manifest["metadata"]["name"]] = time.monotonic()

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, manifests))
    return created


def wait_until(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def plane_cpu(plane: ControlPlane) -> float:
    """CPU seconds the API server and etcd have used so far: what each phase costs the control plane."""
    return sum(cpu_seconds(plane.processes[name].pid) for name in ("kube-apiserver", "etcd"))


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def operator_requests(audit_log: Path, offset: int, namespace: str) -> list[dict[str, Any]]:
    """The operator's completed requests in one namespace, from the audit log past `offset` (watches left out)."""
    requests = []
    with audit_log.open() as log:
        log.seek(offset)
        for line in log:
            event = json.loads(line)
            ref = event.get("objectRef") or {}
            if (
                event.get("stage") == "ResponseComplete"
                and event.get("userAgent", "").startswith(OPERATOR_AGENTS)
                and ref.get("namespace") == namespace
                and event.get("verb") != "watch"
            ):
                requests.append(event)
    return requests


def request_kind(event: dict[str, Any]) -> str:
    ref = event.get("objectRef") or {}
    key = (event["verb"], ref.get("resource", ""), ref.get("subresource", ""))
    return REQUEST_KINDS.get(key, "other: " + " ".join(part for part in key if part))


def requests_before_job(requests: list[dict[str, Any]], count: int) -> list[int]:
    """Per object: the requests naming it or its children (Events excluded: generated names) up to its Job's create."""
    by_object: dict[str, list[dict[str, Any]]] = {}
    for event in requests:
        name = (event.get("objectRef") or {}).get("name") or ""
        by_object.setdefault(name.split("-")[0], []).append(event)
    counts = []
    for i in range(count):
        made = [
            e["requestReceivedTimestamp"]
            for e in by_object.get(f"s{i}", [])
            if request_kind(e) == "Job creates" and e.get("responseStatus", {}).get("code") == 201
        ]
        if made:
            counts.append(sum(1 for e in by_object[f"s{i}"] if e["requestReceivedTimestamp"] <= made[0]))
    return counts


@dataclass
class OperatorRun:
    """Figures of one phase through two operator replicas."""

    reached: int = 0  # objects whose Job appeared
    settled: int = 0  # objects with status.jobName
    duplicates: int = 0
    failures: list[int] = field(default_factory=list)  # handler failures logged (retried), per replica
    latencies: list[float] = field(default_factory=list)  # create-to-Job (burst only)
    rate: float = 0.0  # Jobs/s: burst start to last Job; backlog: first Job to last Job
    start_rate: float = 0.0  # backlog: operator processes started to last Job
    first_job_seconds: float = 0.0  # backlog: operator processes started to first Job
    rss: list[float] = field(default_factory=list)
    plane_cpu_ms_per_object: float = 0.0  # API server + etcd, watches to the operator included
    cpu_ms_per_object: list[float] = field(default_factory=list)
    requests_by_kind: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    requests_before_job: float | None = None
    converged: bool = False


class Replicas:
    """Operator replicas sharing one kopf peering (priorities 100, 50, ...), watching one namespace."""

    def __init__(self, plane: ControlPlane, workdir: Path, namespace: str, count: int) -> None:
        env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig), "SFT_OPERATOR_PROGRESS_POLL_SECONDS": "10"}
        self.logs = [workdir / f"operator-{namespace}-{index}.log" for index in range(count)]
        self.processes: list[subprocess.Popen[bytes]] = []
        sftctl = str(Path(sys.executable).parent / "sftctl")
        for index, log in enumerate(self.logs):
            priority = 100 - 50 * index
            command = [sftctl, "operator", "-n", namespace, "--peering", namespace, "--priority", str(priority)]
            self.processes.append(
                subprocess.Popen(
                    command,
                    env={**env, "SFT_OPERATOR_METRICS_PORT": str(free_port())},
                    stdout=log.open("wb"),
                    stderr=subprocess.STDOUT,
                )
            )

    def cpu(self) -> list[float]:
        return [cpu_seconds(p.pid) for p in self.processes]

    def rss(self) -> list[float]:
        return [peak_rss_mib(p.pid) for p in self.processes]

    def failures(self) -> list[int]:
        return [
            sum("Handler" in line and "failed" in line for line in log.read_text().splitlines()) for log in self.logs
        ]

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def finish(
    run: OperatorRun,
    replicas: Replicas,
    cpu_before: list[float],
    plane_cpu_before: float,
    custom: client.CustomObjectsApi,
    batch: client.BatchV1Api,
    plane: ControlPlane,
    audit_offset: int,
    namespace: str,
    count: int,
) -> OperatorRun:
    """Wait for status.jobName everywhere, then count duplicates, failures, RSS, CPU and API requests."""

    def settled() -> int:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "sftjobs")["items"]
        return sum(1 for item in items if (item.get("status") or {}).get("jobName"))

    wait_until(lambda: settled() >= count, 60)
    time.sleep(3)  # let late duplicates, if any, show up
    run.settled = settled()
    run.plane_cpu_ms_per_object = 1000 * (plane_cpu(plane) - plane_cpu_before) / count
    owners: dict[str, int] = {}
    for job in batch.list_namespaced_job(namespace).items:
        owner = (job.metadata.labels or {}).get("sft.trustdoc.io/sftjob", "?")
        owners[owner] = owners.get(owner, 0) + 1
    run.duplicates = sum(number - 1 for number in owners.values())
    run.rss = replicas.rss()
    run.cpu_ms_per_object = [
        1000 * (now - before) / count for now, before in zip(replicas.cpu(), cpu_before, strict=True)
    ]
    run.failures = replicas.failures()
    requests = operator_requests(plane.audit_log, audit_offset, namespace)
    for event in requests:
        run.requests_by_kind[request_kind(event)] = run.requests_by_kind.get(request_kind(event), 0) + 1
    run.requests = len(requests)
    before_job = requests_before_job(requests, count)
    run.requests_before_job = statistics.median(before_job) if before_job else None
    return run


def burst_phase(
    plane: ControlPlane, workdir: Path, custom: client.CustomObjectsApi, batch: client.BatchV1Api, args: Any
) -> OperatorRun:
    """Replicas up and peered, then COUNT SFTJobs created at once: create-to-Job latency and Jobs/s."""
    namespace = "load"
    replicas = Replicas(plane, workdir, namespace, 2)
    watcher: JobWatcher | None = None
    try:
        time.sleep(5)  # both replicas up and peered before the burst
        watcher = JobWatcher(batch, namespace)
        audit_offset = plane.audit_log.stat().st_size
        cpu_before, plane_before = replicas.cpu(), plane_cpu(plane)
        start = time.monotonic()
        created = create_all(
            lambda m: custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "sftjobs", m),
            [sftjob(f"s{i}") for i in range(args.count)],
        )
        run = OperatorRun(converged=wait_until(lambda: len(watcher.seen) >= args.count, args.timeout))
        run.rate = args.count / (time.monotonic() - start)
        run.latencies = [
            watcher.seen[f"s{i}-train"] - created[f"s{i}"] for i in range(args.count) if f"s{i}-train" in watcher.seen
        ]
        run.reached = len(run.latencies)
        return finish(
            run, replicas, cpu_before, plane_before, custom, batch, plane, audit_offset, namespace, args.count
        )
    finally:
        if watcher is not None:
            watcher.stop()
        replicas.stop()


def backlog_phase(
    plane: ControlPlane, workdir: Path, custom: client.CustomObjectsApi, batch: client.BatchV1Api, args: Any
) -> OperatorRun:
    """COUNT SFTJobs already there (created while no operator ran), then one replica starts: the operator's own rate.

    One replica (the chart's default): two started at once both work until each has seen the other's
    keep-alive in the peering object, which on a backlog means both reconcile much of it.
    """
    namespace = "backlog"
    watcher = JobWatcher(batch, namespace)
    audit_offset = plane.audit_log.stat().st_size
    plane_before = plane_cpu(plane)
    start = time.monotonic()
    replicas = Replicas(plane, workdir, namespace, 1)
    try:
        run = OperatorRun(converged=wait_until(lambda: len(watcher.seen) >= args.count, args.timeout))
        times = sorted(watcher.seen.values())
        run.reached = len(times)
        if len(times) > 1:
            run.rate = (len(times) - 1) / (times[-1] - times[0])  # intervals between the first and last Job
            run.start_rate = len(times) / (times[-1] - start)
            run.first_job_seconds = times[0] - start
        return finish(run, replicas, [0.0], plane_before, custom, batch, plane, audit_offset, namespace, args.count)
    finally:
        watcher.stop()
        replicas.stop()


def print_table(
    count: int,
    burst: OperatorRun,
    backlog: OperatorRun,
    baseline_rate: float,
    sftjob_rate: float,
    baseline_plane_ms: float,
) -> None:
    def row(figure: str, first: object, second: object = "-") -> None:
        print(f"{figure:46} {first!s:>14} {second!s:>14}")

    print(f"\nOperator load: {count} SFTJobs, same control plane\n")
    print("burst: 2 replicas (peering) running, then the SFTJobs created from 8 client threads;")
    print("backlog: the SFTJobs created while no operator ran (the CR floor below), then 1 replica started")
    print("(its CPU per object includes the process start)\n")
    row("figure", "burst", "backlog")
    row("objects that reached their Job", f"{burst.reached}/{count}", f"{backlog.reached}/{count}")
    row("objects with status.jobName", f"{burst.settled}/{count}", f"{backlog.settled}/{count}")
    row("duplicate Jobs", burst.duplicates, backlog.duplicates)
    row("handler failures logged (retried), per replica", burst.failures, backlog.failures)
    if burst.latencies:
        row("create-to-Job p50 (s)", f"{statistics.median(burst.latencies):.2f}")
        row("create-to-Job p99 (s)", f"{percentile(burst.latencies, 0.99):.2f}")
    row("operator start to first Job (s)", "-", f"{backlog.first_job_seconds:.1f}")
    row("Jobs/s through the operator", f"{burst.rate:.1f}", f"{backlog.rate:.1f}")
    row("  backlog: from the operator's start", "-", f"{backlog.start_rate:.1f}")
    row("Jobs/s created directly (baseline)", f"{baseline_rate:.1f}", f"{baseline_rate:.1f}")
    row("ratio operator / baseline", f"{burst.rate / baseline_rate:.2f}", f"{backlog.rate / baseline_rate:.2f}")
    row("  backlog: from the operator's start", "-", f"{backlog.start_rate / baseline_rate:.2f}")
    row("SFTJobs/s created, no operator (CR floor)", f"{sftjob_rate:.1f}", "-")
    row("ratio operator / CR floor", f"{burst.rate / sftjob_rate:.2f}", f"{backlog.rate / sftjob_rate:.2f}")

    def per_replica(values: list[float], index: int, digits: int) -> str:
        return f"{values[index]:.{digits}f}" if index < len(values) else "-"

    for index in range(2):
        row(f"peak RSS replica {index} (MiB)", per_replica(burst.rss, index, 0), per_replica(backlog.rss, index, 0))
    for index in range(2):
        row(
            f"CPU per object, replica {index} (ms)",
            per_replica(burst.cpu_ms_per_object, index, 1),
            per_replica(backlog.cpu_ms_per_object, index, 1),
        )
    row(
        "API server + etcd CPU per object (ms)",
        f"{burst.plane_cpu_ms_per_object:.1f}",
        f"{backlog.plane_cpu_ms_per_object:.1f}",
    )
    row("  the same for a Job created directly", f"{baseline_plane_ms:.1f}", f"{baseline_plane_ms:.1f}")
    print("\nOperator API requests per SFTJob (audit log, to settled; watches left out; backlog: from the start)\n")
    kinds = sorted(
        set(burst.requests_by_kind) | set(backlog.requests_by_kind), key=lambda k: -burst.requests_by_kind.get(k, 0)
    )
    for kind in kinds:
        row(
            kind,
            f"{burst.requests_by_kind.get(kind, 0) / count:.2f}",
            f"{backlog.requests_by_kind.get(kind, 0) / count:.2f}",
        )
    row("all", f"{burst.requests / count:.2f}", f"{backlog.requests / count:.2f}")
    row("naming the object, up to its Job (median)", burst.requests_before_job, backlog.requests_before_job)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--count", type=int, default=200, help="SFTJobs in the burst (the goal names 200; 500 for the old figure)"
    )
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    # A SIGTERM (a timeout, a killed make) unwinds like Ctrl-C, so the `finally`s stop the operators and the plane.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

    workdir = Path(tempfile.mkdtemp(prefix="bench-operator-"))
    plane = ControlPlane(workdir / "plane", controllers="*,-job-controller")
    plane.start()
    try:
        kubectl = Kubectl(plane.kubeconfig)
        kubectl.run("apply", "-f", str(REPO / "crds"), check=True)
        kubectl.run("apply", "-f", str(REPO / "crds" / "peering"), check=True)
        kubectl.run("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s", check=True)
        api = config.new_client_from_config(str(plane.kubeconfig))
        custom, batch = client.CustomObjectsApi(api), client.BatchV1Api(api)
        for namespace in ("baseline", "backlog", "load"):
            kubectl.run("create", "namespace", namespace, check=True)
        load_before = os.getloadavg()

        # Baseline: the same number of Jobs created directly.
        baseline_watch = JobWatcher(batch, "baseline")
        plane_before = plane_cpu(plane)
        start = time.monotonic()
        create_all(
            lambda m: batch.create_namespaced_job("baseline", m), [plain_job(f"j{i}") for i in range(args.count)]
        )
        wait_until(lambda: len(baseline_watch.seen) >= args.count, args.timeout)
        baseline_rate = args.count / (time.monotonic() - start)
        baseline_plane_ms = 1000 * (plane_cpu(plane) - plane_before) / args.count
        baseline_watch.stop()
        # The custom resource's own floor: SFTJobs created where no operator watches (schema, CEL rules).
        # They are the backlog phase's objects, and warm the custom resource's path before the burst.
        start = time.monotonic()
        create_all(
            lambda m: custom.create_namespaced_custom_object(GROUP, VERSION, "backlog", "sftjobs", m),
            [sftjob(f"s{i}") for i in range(args.count)],
        )
        sftjob_rate = args.count / (time.monotonic() - start)

        burst = burst_phase(plane, workdir, custom, batch, args)
        backlog = backlog_phase(plane, workdir, custom, batch, args)
        print_table(args.count, burst, backlog, baseline_rate, sftjob_rate, baseline_plane_ms)
        load_after = os.getloadavg()
        print(
            f"\nload average (1 min) at the start {load_before[0]:.2f}, at the end {load_after[0]:.2f}; "
            f"{os.cpu_count()} CPUs"
        )
        ok = all(run.converged and run.duplicates == 0 for run in (burst, backlog))
        return 0 if ok else 1
    finally:
        plane.stop()


if __name__ == "__main__":
    sys.exit(main())
