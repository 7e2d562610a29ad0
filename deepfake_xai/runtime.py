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


def usable_cpus() -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup v2/v1 CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(count, math.ceil(quota)) if quota else count)


def _cgroup_quota() -> float | None:
    try:
        limit, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if limit != "max":
            return int(limit) / int(period)
    except (OSError, ValueError):
        pass
    try:
        limit = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if limit > 0 and period > 0:
            return limit / period
    except (OSError, ValueError):
        pass
    return None


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads``, ``$DEEPFAKE_XAI_THREADS`` or the usable
    CPUs (in that order) and return the number set."""
    import torch

    if threads is None and os.environ.get(THREADS_ENV):
        try:
            threads = int(os.environ[THREADS_ENV])
        except ValueError:
            raise ValueError(
                f"{THREADS_ENV}={os.environ[THREADS_ENV]!r} is not a whole number"
            ) from None
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    chosen = threads or usable_cpus()
    if torch.get_num_threads() != chosen:
        torch.set_num_threads(chosen)
    return chosen
