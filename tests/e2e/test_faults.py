"""Faults on a running fine-tune: the trainer SIGKILLed ten times, the API server restarted mid-run.

Everything is real: the operator runs as its own process (`sftctl operator`),
the real scheduler binds the pods to the GPU node agent, which runs them as
local processes; the trainer checkpoints to the output claim and a retried
pod resumes from the newest checkpoint there.

One harness shortcut, said out loud: the Job controller delays each
replacement pod by an exponential back-off (10 s, 20 s, 40 s ... up to
10 min, held in kube-controller-manager's memory), so ten failures of one Job
would wait about half an hour. After each kill has been counted in the Job's
`status.failed`, the test restarts kube-controller-manager, which forgets the
back-off and creates the replacement at once. Counting (backoffLimit),
podFailurePolicy and the resume path are untouched.

Each test prints a `FIGURE` line with what it measured.
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3

from support.e2e import GPU_PRODUCT, bound_claim, operator_process
from support.kube import ControlPlane, Kubectl, free_port
from support.manifests import condition
from support.node_agent import NodeAgent
from support.waiting import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
NAMESPACE = "e2e-faults"
SEED = 20261125
KILLS = 10
MAX_STEPS = 24
CHECKPOINT_EVERY = 2
RESUMED = re.compile(r"Resumed from \S+ \(step (\d+) of \d+\)")
PROGRESS_PORT = free_port()  # not the default 9090: pod IPs are loopback addresses other sessions use too


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A slice of the real Alpaca data as JSONL: SFTJob has no record limit, so the file is the limit."""
    folder = tmp_path_factory.mktemp("datasets")
    records = json.loads((shared_data / "alpaca_data.json").read_text(encoding="utf-8"))[:160]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def outputs(
    e2e_kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory, tiny_models: Path, small_dataset: Path
) -> Path:
    e2e_kubectl.run("create", "namespace", NAMESPACE, check=True)
    folder = tmp_path_factory.mktemp("outputs")
    bound_claim(e2e_kubectl, NAMESPACE, "datasets", small_dataset)
    bound_claim(e2e_kubectl, NAMESPACE, "models", tiny_models)
    bound_claim(e2e_kubectl, NAMESPACE, "outputs", folder)
    return folder


@pytest.fixture(scope="module")
def operator(e2e_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[bytes]]:
    with operator_process(
        e2e_plane, NAMESPACE, tmp_path_factory.mktemp("operator") / "operator.log", PROGRESS_PORT=str(PROGRESS_PORT)
    ) as process:
        yield process


# --------------------------------------------------------------------------- helpers


def sftjob(name: str, backoff_limit: int, max_steps: int = MAX_STEPS) -> dict[str, Any]:
    return {
        "apiVersion": "sft.trustdoc.io/v1alpha1",
        "kind": "SFTJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "model": {"pvc": {"claimName": "models", "path": "tiny"}},
            "dataset": {"pvc": {"claimName": "datasets", "path": "train.jsonl"}},
            "output": {"pvc": {"claimName": "outputs", "path": f"sft/{name}"}},
            "training": {
                "method": "lora",
                "maxSteps": max_steps,
                "batchSize": 8,
                "maxSeqLength": 512,
                "evalEverySteps": 8,
                "checkpointEverySteps": CHECKPOINT_EVERY,
                "earlyStopping": {"enabled": False},
                "probes": {"memorisationPrompts": 0},
                "evaluation": {"enabled": False},
            },
            "lifecycle": {"backoffLimit": backoff_limit},
            "resources": {
                "gpusPerNode": 1,
                "nodeSelector": {"nvidia.com/gpu.product": GPU_PRODUCT},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            },
        },
    }


def progress(ip: str) -> dict[str, Any]:
    """The pod's own /progress (what the operator polls); {} while it does not answer."""
    try:
        response = urllib3.PoolManager(retries=False).request("GET", f"http://{ip}:{PROGRESS_PORT}/progress", timeout=1)
    except urllib3.exceptions.HTTPError:
        return {}
    if response.status != 200:
        return {}
    data: dict[str, Any] = json.loads(response.data)
    return data


def newest_checkpoint_step(output: Path) -> int:
    steps = [
        int(path.name.removeprefix("step-"))
        for path in (output / "checkpoints").glob("step-*")
        if (path / "state.json").is_file()
    ]
    return max(steps, default=0)


def running_pod(agent: NodeAgent, job: str, exclude: set[str]) -> tuple[str, str] | None:
    """(name, pod IP) of a pod of `job` the node agent runs now, not one of `exclude`."""
    for pod in agent.running_pods(NAMESPACE):
        if pod.name.startswith(f"{job}-") and pod.name not in exclude:
            return pod.name, pod.ip
    return None


def diagnostics(kubectl: Kubectl, agent: NodeAgent) -> Callable[[], str]:
    def diagnose() -> str:
        logs = ""
        for log in sorted((agent.workdir / "pods" / NAMESPACE).glob("*/container.log")):
            logs += f"--- {log.parent.name}\n" + log.read_text(errors="replace")[-1500:]
        return (
            kubectl.run("get", "sft,jobs,pods", "-n", NAMESPACE, "-o", "wide").stdout
            + kubectl.run("get", "events", "-n", NAMESPACE).stdout[-4000:]
            + logs
        )

    return diagnose


def wait_succeeded(kubectl: Kubectl, name: str, timeout: float, diagnose: Callable[[], str]) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = kubectl.get_json("sft", name, "-n", NAMESPACE)
        if condition(obj.get("status") or {}, "Failed").get("status") == "True":
            pytest.fail(f"SFTJob {name} failed: {obj['status']}\n{diagnose()}")
        return obj if condition(obj.get("status") or {}, "Succeeded").get("status") == "True" else None

    return eventually(probe, timeout, f"SFTJob {name} to succeed", interval=1, diagnose=diagnose)


# --------------------------------------------------------------------------- tests


def test_trainer_killed_ten_times_at_random_points_resumes_and_finishes(
    e2e_plane: ControlPlane,
    e2e_kubectl: Kubectl,
    gpu_node: NodeAgent,
    outputs: Path,
    operator: subprocess.Popen[bytes],
) -> None:
    kubectl, name = e2e_kubectl, "killed"
    job, output = f"{name}-train", outputs / "sft" / name
    diagnose = diagnostics(kubectl, gpu_node)
    rng = random.Random(SEED)
    kubectl.apply_objects(sftjob(name, backoff_limit=KILLS + 2)).check_returncode()

    killed: list[tuple[str, int, int]] = []  # (pod, steps done when it was killed, newest checkpoint then)
    for kill in range(KILLS):
        pod, ip = eventually(
            lambda: running_pod(gpu_node, job, {p for p, _, _ in killed}),
            120,
            f"a running pod of {job} (kill {kill + 1})",
            diagnose=diagnose,
        )
        # A seeded point after training started: 1 or 2 steps past the newest checkpoint, killed as soon as
        # the pod reports it (a condition: no extra sleep that a fast GPU could run to the end of training in).
        target = min(newest_checkpoint_step(output) + rng.randint(1, CHECKPOINT_EVERY), MAX_STEPS - 1)
        eventually(
            lambda ip=ip, target=target: (
                progress(ip).get("phase") == "training" and progress(ip).get("step", 0) >= target
            ),
            120,
            f"{pod} to reach step {target}",
            interval=0.05,
            diagnose=diagnose,
        )
        step = int(progress(ip).get("step", target))
        gpu_node.kill(NAMESPACE, pod, signal.SIGKILL)
        # What the pod left, read once it is dead (a checkpoint may land between the read above and the kill).
        killed.append((pod, max(step, newest_checkpoint_step(output)), newest_checkpoint_step(output)))
        eventually(
            lambda kill=kill: (
                (kubectl.get_json("job", job, "-n", NAMESPACE).get("status") or {}).get("failed", 0) > kill
            ),
            60,
            f"the Job to count failure {kill + 1}",
            diagnose=diagnose,
        )
        e2e_plane.restart_controller_manager()

    done = wait_succeeded(kubectl, name, 900, diagnose)  # a bound on a hang, not a performance goal
    assert operator.poll() is None, "the operator died"
    status = done["status"]
    assert status["progress"]["step"] == MAX_STEPS and status["progress"]["totalSteps"] == MAX_STEPS
    assert status["metrics"], "no final metrics reached the status"
    job_status = kubectl.get_json("job", job, "-n", NAMESPACE)["status"]
    assert job_status["failed"] == KILLS and job_status["succeeded"] == 1

    # Checkpoints intact: the final one complete, no half-written leftovers, the adapter exported.
    assert newest_checkpoint_step(output) == MAX_STEPS
    assert not list((output / "checkpoints").glob(".tmp-*"))
    assert (output / "adapter" / "adapter_config.json").is_file()
    assert list((output / "adapter").glob("adapter_model.*"))
    report = json.loads((output / "train_report.json").read_text())
    assert report["status"]["progress"]["step"] == MAX_STEPS
    assert [h["step"] for h in report["training"]["history"]] == list(range(1, MAX_STEPS + 1))

    # Steps redone per kill: steps done at the kill minus the step the next pod resumed from.
    pods = sorted(
        kubectl.get_json("pods", "-n", NAMESPACE, "-l", f"batch.kubernetes.io/job-name={job}")["items"],
        key=lambda p: p["metadata"]["creationTimestamp"],
    )
    names = [p["metadata"]["name"] for p in pods]
    assert names[: len(killed)] == [p for p, _, _ in killed] and len(names) == KILLS + 1
    redone = []
    for (pod, step, checkpoint), successor in zip(killed, names[1:], strict=True):
        log = (gpu_node.workdir / "pods" / NAMESPACE / successor / "container.log").read_text(errors="replace")
        match = RESUMED.search(log)
        resumed = int(match.group(1)) if match else 0
        # The successor starts from exactly the newest complete checkpoint its predecessor left.
        assert resumed == checkpoint, f"{successor} resumed from step {resumed}, {pod} left step {checkpoint}"
        redone.append(step - resumed)
    assert max(redone) <= CHECKPOINT_EVERY + 1, f"a kill lost more than a checkpoint interval: {redone}"
    print(
        f"\nFIGURE trainer-kills: runs completed 1/1, kills {len(killed)}, "
        f"steps redone per kill mean {sum(redone) / len(redone):.1f} max {max(redone)} "
        f"(checkpoint every {CHECKPOINT_EVERY} steps; redone {redone})"
    )


def test_apiserver_restarted_mid_run_the_operator_reconnects_and_the_run_succeeds(
    e2e_plane: ControlPlane,
    e2e_kubectl: Kubectl,
    gpu_node: NodeAgent,
    outputs: Path,
    operator: subprocess.Popen[bytes],
) -> None:
    kubectl, name = e2e_kubectl, "survivor"
    job = f"{name}-train"
    diagnose = diagnostics(kubectl, gpu_node)
    kubectl.apply_objects(sftjob(name, backoff_limit=0, max_steps=40)).check_returncode()
    pod, ip = eventually(lambda: running_pod(gpu_node, job, set()), 120, f"a running pod of {job}", diagnose=diagnose)
    eventually(
        lambda: progress(ip).get("phase") == "training" and progress(ip).get("step", 0) >= 2,
        120,
        f"{pod} training",
        interval=0.2,
        diagnose=diagnose,
    )
    # The operator has seen it running before the API server goes away.
    eventually(
        lambda: (kubectl.get_json("sft", name, "-n", NAMESPACE).get("status") or {}).get("progress", {}).get("step"),
        60,
        "progress in status",
        diagnose=diagnose,
    )
    # The trainer is paused for the outage, so the run is mid-way while the API server is down and when it
    # is back, however fast the machine trains (a condition by construction, not a race against the clock).
    step_before = progress(ip).get("step")  # before the pause: a stopped pod answers nothing
    gpu_node.kill(NAMESPACE, pod, signal.SIGSTOP)
    started = time.monotonic()
    e2e_plane.restart_apiserver()
    outage = time.monotonic() - started
    assert running_pod(gpu_node, job, set()) == (pod, ip), "the pod ended during the outage"
    gpu_node.kill(NAMESPACE, pod, signal.SIGCONT)

    done = wait_succeeded(kubectl, name, 900, diagnose)  # a bound on a hang: 40 CPU steps take minutes under load
    assert operator.poll() is None, "the operator died with the API server"
    status = done["status"]
    assert status["progress"]["step"] == 40
    assert status["metrics"], "no final metrics reached the status"
    assert status["startTime"] and status["completionTime"]
    job_status = kubectl.get_json("job", job, "-n", NAMESPACE)["status"]
    assert job_status.get("failed", 0) == 0 and job_status["succeeded"] == 1
    print(
        f"\nFIGURE apiserver-restart: runs completed 1/1 "
        f"(API server down {outage:.1f}s with the pod paused at step {step_before} of 40)"
    )
