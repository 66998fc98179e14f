"""How many CPUs this process may really use: what a pod's CPU limit allows, not what the node has.

`os.cpu_count()` counts the node's cores; a container limited to 2 CPUs on
a 64-core node that starts 64 workers or threads is throttled by the CFS
quota and runs slower than with 2. The limit is read from the cgroup: v2's
`cpu.max` ("QUOTA PERIOD", or "max"), else v1's `cpu.cfs_quota_us` and
`cpu.cfs_period_us` (-1: none); the process's CPU affinity caps it too.
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# Where cgroup v1 mounts the CPU controller (the name depends on the distribution).
_V1_CPU_DIRS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def usable_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may use: its affinity, capped by the cgroup's CPU quota (whole CPUs, at least 1)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota(cgroup_root)
    return cpus if quota is None else max(1, min(cpus, int(quota)))


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """The CPU limit in CPUs (quota / period) from cgroup v2, else v1; None when there is none."""
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass  # no cgroup v2 CPU controller here: try v1
    for folder in _V1_CPU_DIRS:
        try:
            quota_us = int((cgroup_root / folder / "cpu.cfs_quota_us").read_text())
            period_us = int((cgroup_root / folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota_us < 0 else quota_us / period_us
    return None
