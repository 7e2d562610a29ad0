"""How many CPU threads torch should use: the CPUs this process may really run on.

torch's default counts the machine's cores, not the affinity mask or the container's CPU quota,
so on a shared or limited machine its threads oversubscribe the CPUs and one forward pass can take
forty times longer. Every front door calls :func:`configure_threads` once.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

THREADS_ENV = "DEEPFAKE_XAI_THREADS"
CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup v2/v1 CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root)
    return max(1, min(count, math.ceil(quota)) if quota else count)


def cgroup_cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs allowed by the cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us`` under ``root``;
    None when there is no quota (or it cannot be read)."""
    try:
        limit, period = (root / "cpu.max").read_text().split()[:2]
        if limit != "max" and int(period) > 0:
            return int(limit) / int(period)
    except (OSError, ValueError):
        pass
    try:
        limit = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if limit > 0 and period > 0:
            return limit / period
    except (OSError, ValueError):
        pass
    return None


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads``, ``$DEEPFAKE_XAI_THREADS`` or the usable
    CPUs (in that order) and return the number set.

    Raises:
        ValueError: ``threads`` or the environment variable is not a whole number >= 1.
    """
    import torch

    if threads is None and os.environ.get(THREADS_ENV, "").strip():
        text = os.environ[THREADS_ENV]
        try:
            threads = int(text)
        except ValueError:
            raise ValueError(f"{THREADS_ENV}={text!r} is not a whole number") from None
        if threads < 1:
            raise ValueError(f"{THREADS_ENV}={text!r} must be at least 1")
    if threads is not None and (isinstance(threads, bool) or threads < 1):
        raise ValueError(f"threads must be at least 1, got {threads!r}")
    chosen = threads or usable_cpus()
    if torch.get_num_threads() != chosen:
        torch.set_num_threads(chosen)
    return chosen
