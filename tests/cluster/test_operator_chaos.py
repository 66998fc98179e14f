"""The operator SIGKILLed mid-reconcile, five times, while it reconciles 50 objects: everything converges, once.

`sftctl operator` runs as its own process (a kill -9 leaves no chance to clean
up: no finalizer step, no flush, no goodbye to peers). The 50 CRs (25
DatasetCurations, 25 SFTJobs on pvc datasets) arrive all at once. Each
operator life is killed as soon as the objects it has touched (children or
status) reach a seeded point between the previous life's and the next
fifth of the 50: a condition, not a duration, so a fast machine kills
mid-reconcile as surely as a slow one. The sixth life runs to the end.
At the end every object has its status (jobName, a Progressing condition)
and, counted per owner, exactly one ConfigMap and one Job controlled by it;
no child without a live owner; nothing was created twice.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from operator_support import GROUP, PLURALS, VERSION, Api, condition, curation_manifest, eventually, sftjob_manifest

from sft_operator.naming import MANAGED_BY, MANAGED_BY_LABEL
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
        # A few reconciles at a time (not the default pool): the kill must land while a life's share is in
        # flight, and a full pool touches all 50 objects between two snapshots of the polling below.
        "SFT_OPERATOR_WORKERS": "4",
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

    for life in range(1, LIVES):
        before = sum(snapshot(api, namespace))
        # Kill once this life has touched a seeded number of objects, at most life/LIVES of them:
        # whatever the machine's speed, a fifth or more are still untouched at every kill.
        # A life that overshot (a loaded machine lets it touch more before the kill lands) can leave all
        # OBJECTS touched: then the next life is killed as soon as it has looked at them, never waits for more.
        target = min(OBJECTS, rng.randint(before + 1, max(before + 1, OBJECTS * life // LIVES)))
        process = start_operator(control_plane, namespace, log)
        born = time.monotonic()
        eventually(
            lambda target=target, process=process: (
                sum(snapshot(api, namespace)) >= target or process.poll() is not None
            ),
            timeout=60,
            interval=0.02,
            what=f"the operator to touch {target} objects in life {life}",
        )
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

    # Counted per owner: exactly one ConfigMap and one Job per object, controlled by it (by uid, so a
    # child of a deleted and recreated namesake would not pass); no child without a live owner.
    uids = {
        obj["metadata"]["uid"]: obj["metadata"]["name"]
        for plural in PLURALS.values()
        for obj in api.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"]
    }
    per_owner: dict[str, Counter[str]] = {name: Counter() for name in uids.values()}
    strays = []
    children = [("ConfigMap", c) for c in api.config_maps(namespace)]
    children += [("Job", j) for j in api.jobs(namespace)] + [("Service", s) for s in api.services(namespace)]
    for kind, child in children:
        if (child["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL) != MANAGED_BY:
            continue  # not the operator's (kube-root-ca.crt)
        controllers = [r for r in child["metadata"].get("ownerReferences") or [] if r.get("controller")]
        if len(controllers) != 1 or controllers[0]["uid"] not in uids:
            strays.append(f"{kind} {child['metadata']['name']}")
            continue
        per_owner[uids[controllers[0]["uid"]]][kind] += 1
    assert strays == [], f"children without a live owner: {strays}"
    assert {name: dict(counts) for name, counts in per_owner.items()} == {
        m["metadata"]["name"]: {"ConfigMap": 1, "Job": 1} for m in objects
    }
    owned_names = {
        child["metadata"]["name"]
        for _, child in children
        if (child["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY
    }
    assert owned_names == {child for m in objects for child in expected_children(m)}
    # No child was created twice: at most one "Created" Event per child (a kill may lose one, never add one).
    for manifest in objects:
        name = manifest["metadata"]["name"]
        created = [m for _, reason, m in api.event_messages(namespace, name) if reason == "Created"]
        assert len(created) == len(set(created)), f"{name}: {created}"

    mid = sum(1 for _, done, _ in kills if done < OBJECTS)
    print(
        f"\nFIGURE operator-kills: CRs converged {sum(converged(api, namespace, m) for m in objects)}/{OBJECTS}, "
        f"kills {len(kills)}, children per owner ConfigMap 1 and Job 1 "
        f"(kills mid-reconcile {mid}/{len(kills)}; at each kill: "
        + "; ".join(f"{age:.1f}s into a life, {done} converged, {half} half-done" for age, done, half in kills)
        + ")"
    )
    assert mid == len(kills), "a kill came after everything had converged: it tested nothing"
