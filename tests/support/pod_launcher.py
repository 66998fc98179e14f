"""Start one pod container as a local process with its volumes where it expects them.

Run by the node agent as `unshare --mount --propagation private python
pod_launcher.py SPEC.json`: inside the private mount namespace it puts a
tmpfs over /mnt, bind-mounts every volume folder at the container's
mountPath, bind-mounts the pod's scratch folder over /tmp, then execs the
container's command. The host's mounts are untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def main(spec_path: str) -> None:
    with open(spec_path) as handle:
        spec = json.load(handle)
    # Everything a pod mounts lives under /mnt or /tmp (see manifests.MountLayout).
    mount("-t", "tmpfs", "pod-mnt", "/mnt")
    for item in spec["mounts"]:
        target = item["mountPath"]
        os.makedirs(target, exist_ok=True)
        mount("--bind", item["source"], target)
        if item.get("readOnly"):
            mount("-o", "remount,bind,ro", target)
    os.chdir(spec.get("workingDir") or "/")
    os.execvpe(spec["command"][0], spec["command"], spec["env"])


if __name__ == "__main__":
    main(sys.argv[1])
