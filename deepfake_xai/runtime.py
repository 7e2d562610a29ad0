"""Process settings that decide CPU speed: torch's threads and glibc's allocator.

torch's default counts the machine's cores, not the affinity mask or the container's CPU quota,
so on a shared or limited machine its threads oversubscribe the CPUs and one forward pass can take
forty times longer. Every front door calls :func:`configure_threads` once.

glibc returns every large freed block to the OS, so each batch page-faults its tensors in again;
:func:`configure_allocator` keeps them (what the benchmarks measured, ``benchmarks/README.md``).
The engine and the CLI call it; ``DEEPFAKE_XAI_MALLOC=0`` opts out.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import platform
from collections.abc import Iterator
from pathlib import Path

THREADS_ENV = "DEEPFAKE_XAI_THREADS"
CGROUP_ROOT = Path("/sys/fs/cgroup")
ALLOCATOR_ENV = "DEEPFAKE_XAI_MALLOC"
GLIBC_MALLOC_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")
M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1
_allocator_state: str | None = None


def switch_setting(name: str) -> bool | None:
    """Environment variable ``name`` as a three-way switch: True (``1``/``on``/``true``/``yes``/
    ``always``), False (``0``/``off``/``false``/``no``/``never``) or None (unset or anything else:
    the caller's default choice)."""
    value = os.environ.get(name, "").strip().lower()
    if value in ("1", "on", "true", "yes", "always"):
        return True
    if value in ("0", "off", "false", "no", "never"):
        return False
    return None


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


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[int]:
    """torch's intra-op threads set to ``count`` inside the block, then put back."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(before)


def configure_allocator() -> str:
    """Make glibc keep large freed blocks for reuse (no ``mmap`` per allocation, no trimming),
    as ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647`` would; once per process.

    It roughly doubled batch-32 CPU throughput here, at the price of a resident size that stays
    at its high-water mark. Returns what happened: ``"applied"``, ``"opted out"``
    (``$DEEPFAKE_XAI_MALLOC`` is ``0``/``off``/``false``/``no``), ``"environment"`` (the caller set
    glibc's own variables, which win), ``"not glibc"`` or ``"failed"``.
    """
    global _allocator_state
    if _allocator_state is None:
        _allocator_state = _tune_allocator()
    return _allocator_state


def _tune_allocator() -> str:
    if os.environ.get(ALLOCATOR_ENV, "").strip().lower() in ("0", "off", "false", "no"):
        return "opted out"
    if any(name in os.environ for name in GLIBC_MALLOC_ENV):
        return "environment"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "not glibc"
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "not glibc"
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return "applied" if done else "failed"
