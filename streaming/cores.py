"""How many cores this process may use: its CPU affinity, capped by the cgroup v2 CPU quota
(a container's `resources.limits.cpu`), which `os.cpu_count()` does not see: a TaskManager
limited to 2 CPUs on a 64-core node must not start 64 decoders."""
from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_quota(cpu_max)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def cgroup_quota(cpu_max: Path = CGROUP_CPU_MAX) -> float | None:
    """CPUs the cgroup may use (`cpu.max`: "<quota> <period>" or "max <period>"); None: no limit."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None
