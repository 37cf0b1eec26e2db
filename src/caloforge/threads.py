"""CPU thread counts: defaults that respect the process's CPU affinity and cgroup quota.

On a shared or containerised machine ``os.cpu_count()`` overstates the cores a process
may use; torch then starts more threads than cores and they spin against each other
(2-70x slower). The default here is the smaller of the affinity mask and the cgroup CPU
quota, and commands take ``--threads N`` to choose.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["available_cpus", "passive_openmp_waits", "set_threads"]


def passive_openmp_waits() -> None:
    """Let idle OpenMP threads sleep instead of spinning, unless the user chose a policy.

    torch's CPU kernels run on libgomp, whose threads spin between parallel regions. On a
    machine whose cores are busy with other work the spinning threads take the cores
    the working ones need: ``generate`` with 2 threads on a loaded 2-core box took 50-70 s
    instead of 11 s, at 5x the CPU time; with ``OMP_WAIT_POLICY=PASSIVE`` it took 11 s
    (``scripts/hostile_inputs.py``, row 31). OpenMP reads the variable once, when torch is
    imported, so the ``caloforge`` command calls this first; ``OMP_WAIT_POLICY=active``
    in the environment restores spinning.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _cgroup_quota() -> float | None:
    try:  # cgroup v2
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        pass
    try:  # cgroup v1
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def available_cpus() -> int:
    """CPUs this process may use: affinity mask, capped by the cgroup quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def set_threads(n: int | None = None, *, include_torch: bool = True) -> int:
    """Set the compute thread pools to ``n`` threads (default: :func:`available_cpus`).

    Sets torch's intra-op pool and, through ``threadpoolctl`` (installed with
    scikit-learn), the BLAS pools numpy and scipy loaded, which otherwise size
    themselves from ``os.cpu_count()`` (OpenMP pools are left to torch, which shares them). ``include_torch=False`` leaves torch alone and
    unimported, for the numpy-only commands (``simulate``). Returns ``n``.
    """
    from .errors import ConfigError

    if n is not None and n < 1:
        raise ConfigError(f"--threads must be >= 1, got {n}")
    n = available_cpus() if n is None else int(n)
    if include_torch:
        import torch

        torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # numpy's BLAS keeps its own pool size then
        pass
    else:
        threadpool_limits(limits=n, user_api="blas")  # applies at once, for the rest of the process
    return n
