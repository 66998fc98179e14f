"""Start one pod container as a local process with its volumes where it expects them.

Run by the node agent as `unshare --mount --propagation private python
pod_launcher.py SPEC.json`: inside the private mount namespace it puts a
tmpfs over /mnt, bind-mounts every volume folder at the container's
mountPath (the pod's scratch folder over /tmp included) and the pod's
termination log at /mnt/termination-log, then execs the container's command.
The host's mounts are untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

# Where the container writes its termination message (SFT_TERMINATION_LOG).
TERMINATION_LOG = "/mnt/termination-log"


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def same_folder(path: str, other: str) -> bool:
    try:
        a, b = os.stat(path), os.stat(other)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def main(spec_path: str) -> None:
    with open(spec_path) as handle:
        spec = json.load(handle)
    # Service names through the pod network's DNS, when the node agent gives pods one (support/pod_network.py).
    if spec.get("resolvConf"):
        mount("--bind", spec["resolvConf"], "/etc/resolv.conf")
    # Everything a pod mounts lives under /mnt or /tmp (see manifests.MountLayout).
    mount("-t", "tmpfs", "pod-mnt", "/mnt")
    # Stage every source first: a volume mounted over /tmp would otherwise hide
    # the sources that live under the host's /tmp.
    staged = []
    for index, item in enumerate(spec["mounts"]):
        stage = f"/mnt/.sources/{index}"
        os.makedirs(stage, exist_ok=True)
        mount("--bind", item["source"], stage)
        staged.append((stage, item))
    # Host folders the process runs from (the checkout, the virtualenv) stay
    # visible even when a volume is mounted over a folder holding them (/tmp).
    kept = []
    for index, path in enumerate(spec.get("keepVisible", [])):
        stage = f"/mnt/.kept/{index}"
        os.makedirs(stage, exist_ok=True)
        mount("--bind", path, stage)
        kept.append((stage, path))
    open(TERMINATION_LOG, "w").close()  # the mount point of the pod's termination log
    mount("--bind", spec["terminationLog"], TERMINATION_LOG)
    for stage, item in staged:
        target = item["mountPath"]
        os.makedirs(target, exist_ok=True)
        mount("--bind", stage, target)
        if item.get("readOnly"):
            mount("-o", "remount,bind,ro", target)
    for stage, path in kept:
        # Hidden by a mount above: put it back. Not "is there a folder": an earlier container of the
        # pod (an init container) leaves its empty mount point in a shared scratch volume.
        if not same_folder(path, stage):
            os.makedirs(path, exist_ok=True)
            mount("--bind", stage, path)
    os.chdir(spec.get("workingDir") or "/")
    os.execvpe(spec["command"][0], spec["command"], spec["env"])


if __name__ == "__main__":
    main(sys.argv[1])
