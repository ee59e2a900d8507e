"""How many cores this process may actually use: its CPU affinity, capped by a cgroup CPU quota.

`os.cpu_count()` counts the machine's cores; a container or a `taskset` gets fewer, and llama.cpp threads
beyond what the process may run spin-wait for each other at every step (docs/benchmarks.md, CPU contention).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_V2_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def quota_cores(cpu_max: str | None = None, v1_quota: str | None = None, v1_period: str | None = None) -> float | None:
    """Cores' worth of CPU time the cgroup grants per period (cgroup v2 `cpu.max` "QUOTA PERIOD", or v1's
    cfs quota and period); None when unlimited or unknown."""
    if cpu_max is not None:
        quota, _, period = cpu_max.strip().partition(" ")
        if quota != "max" and quota and period:
            return int(quota) / int(period)
        return None
    if v1_quota is not None and v1_period is not None and int(v1_quota) > 0:
        return int(v1_quota) / int(v1_period)
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def available_cores() -> int:
    """The affinity mask's size, capped by the cgroup quota (rounded down, at least 1)."""
    cores = len(os.sched_getaffinity(0))
    cpu_max = _read(CGROUP_V2_MAX)
    quota = quota_cores(cpu_max) if cpu_max is not None else quota_cores(
        None, _read(CGROUP_V1_QUOTA), _read(CGROUP_V1_PERIOD))
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota)))
    return max(1, cores)
