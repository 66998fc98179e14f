"""The operator SIGKILLed at random moments while it reconciles 50 objects: everything converges, once.

`sftctl operator` runs as its own process (a kill -9 leaves no chance to clean
up: no finalizer step, no flush, no goodbye to peers). The 50 CRs (25
DatasetCurations, 25 SFTJobs on pvc datasets) arrive all at once; each
operator life is killed a seeded random 0-0.3 s after its first write (a
child or a status), while the others are still being reconciled. The sixth life
runs to the end.
At the end every object has its status (jobName, a Progressing condition) and
exactly one ConfigMap and one Job, owned by it; nothing was created twice.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from operator_support import GROUP, PLURALS, VERSION, Api, condition, curation_manifest, eventually, sftjob_manifest

from support.kube import ControlPlane, Kubectl, free_port

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
SEED = 424242
OBJECTS = 50
LIVES = 6  # operator processes: the first five are killed, the sixth runs to the end


def start_operator(control_plane: ControlPlane, namespace: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KUBECONFIG": str(control_plane.kubeconfig),
        "SFT_OPERATOR_METRICS_PORT": str(free_port()),
        "SFT_OPERATOR_PROGRESS_PORT": str(free_port()),
        "SFT_OPERATOR_PROGRESS_POLL_SECONDS": "2",
        "SFT_OPERATOR_DATASET_WAIT_SECONDS": "1",
    }
    command = [str(Path(sys.executable).parent / "sftctl"), "operator", "-n", namespace, "--standalone"]
    with open(log, "ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def kill9(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def manifests(namespace: str) -> list[dict[str, Any]]:
    """25 DatasetCurations and 25 SFTJobs on pvc datasets, interleaved."""
    objects = []
    for i in range(OBJECTS):
        if i % 2:
            objects.append(sftjob_manifest(namespace, f"job-{i:02d}"))
        else:
            objects.append(curation_manifest(namespace, f"cur-{i:02d}"))
    return objects


def expected_children(manifest: dict[str, Any]) -> list[str]:
    name = manifest["metadata"]["name"]
    suffix = "train" if manifest["kind"] == "SFTJob" else "curate"
    return sorted([f"{name}-run-config", f"{name}-{suffix}"])


def converged(api: Api, namespace: str, manifest: dict[str, Any]) -> bool:
    status = api.status(manifest["kind"], namespace, manifest["metadata"]["name"])
    return bool(status.get("jobName")) and bool(condition(status, "Progressing"))


def snapshot(api: Api, namespace: str) -> tuple[int, int]:
    """(objects converged, objects half-done: some children but no status yet), from two lists."""
    done = set()
    for plural in PLURALS.values():
        for obj in api.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"]:
            status = obj.get("status") or {}
            if status.get("jobName") and condition(status, "Progressing"):
                done.add(obj["metadata"]["name"])
    owners = {
        ref["name"]
        for child in api.config_maps(namespace) + api.jobs(namespace)
        for ref in child["metadata"].get("ownerReferences") or []
    }
    return len(done), len(owners - done)


def test_operator_killed_at_random_moments_during_50_reconciles_converges_without_duplicates(
    control_plane: ControlPlane, crds_installed: Kubectl, api: Api, namespace: str, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    log = tmp_path / "operator.log"
    objects = manifests(namespace)
    for manifest in objects:
        api.create(manifest)
    kills: list[tuple[float, int, int]] = []  # (seconds into the life, converged, half-done at the kill)

    for _ in range(LIVES - 1):
        before = sum(snapshot(api, namespace))
        process = start_operator(control_plane, namespace, log)
        born = time.monotonic()
        # A random moment while it reconciles: 0-0.3 s after this life's first write (a child or a status).
        eventually(
            lambda before=before: sum(snapshot(api, namespace)) > before,
            timeout=60,
            interval=0.1,
            what="the operator to reconcile something in this life",
        )
        time.sleep(rng.uniform(0, 0.3))
        assert process.poll() is None, log.read_text()[-3000:]
        kill9(process)
        kills.append((time.monotonic() - born, *snapshot(api, namespace)))

    final = start_operator(control_plane, namespace, log)
    try:
        eventually(
            lambda: all(converged(api, namespace, m) for m in objects),
            timeout=180,
            interval=1,
            what="every object to converge after the last restart",
        )
    finally:
        final.send_signal(signal.SIGTERM)
        try:
            final.wait(timeout=30)
        except subprocess.TimeoutExpired:
            kill9(final)

    # Exactly one ConfigMap and one Job per object, each owned by it; nothing else.
    uids = {
        obj["metadata"]["name"]: obj["metadata"]["uid"]
        for plural in PLURALS.values()
        for obj in api.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"]
    }
    owned: dict[str, list[str]] = {}
    strays = []
    children = api.config_maps(namespace) + api.jobs(namespace)
    for child in children:
        refs = child["metadata"].get("ownerReferences") or []
        if len(refs) != 1 or uids.get(refs[0]["name"]) != refs[0]["uid"]:
            strays.append(child["metadata"]["name"])
            continue
        owned.setdefault(refs[0]["name"], []).append(child["metadata"]["name"])
    duplicates = len(children) - 2 * OBJECTS + len(strays)
    assert strays == [], f"children without their owner: {strays}"
    assert {m["metadata"]["name"]: sorted(owned.get(m["metadata"]["name"], [])) for m in objects} == {
        m["metadata"]["name"]: expected_children(m) for m in objects
    }
    # No child was created twice: at most one "Created" Event per child (a kill may lose one, never add one).
    for manifest in objects:
        name = manifest["metadata"]["name"]
        created = [m for _, reason, m in api.event_messages(namespace, name) if reason == "Created"]
        assert len(created) == len(set(created)), f"{name}: {created}"

    mid = sum(1 for _, done, _ in kills if done < OBJECTS)
    print(
        f"\nFIGURE operator-kills: CRs converged {sum(converged(api, namespace, m) for m in objects)}/{OBJECTS}, "
        f"kills {len(kills)}, duplicate children {duplicates} "
        f"(kills mid-reconcile {mid}/{len(kills)}; at each kill: "
        + "; ".join(f"{age:.1f}s into a life, {done} converged, {half} half-done" for age, done, half in kills)
        + ")"
    )
    assert mid == len(kills), "a kill came after everything had converged: it tested nothing"
