"""Benchmark of the GFlash reference simulator.

Usage::

    python benchmarks/bench_simulation.py          # throughput + memory at two N
    python benchmarks/bench_simulation.py --full   # adds the 100k ds3 write

Prints the machine, showers per second for ds2 and ds3 over the default spectrum
(electrons, log-uniform 1 GeV - 1 TeV) and the peak resident memory of a separate
process that streams ds3 showers to disk, for several N (it should not grow with N).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import scipy

TARGETS = {"ds2": 300.0, "ds3": 100.0}
MEMORY_TARGET_MB = 2048.0

_WRITE_CHILD = """
import resource, sys, time
from caloforge.simulation import simulate_to_file
n, path = int(sys.argv[1]), sys.argv[2]
t = time.perf_counter()
simulate_to_file(path, "ds3", n, seed=1, progress=False)
dt = time.perf_counter() - t
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, dt)
"""


def cpu_model() -> str:
    """CPU model name, as the package's timing harness records it."""
    from caloforge.evaluation.timing import machine_description

    return machine_description()["cpu_model"]


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def throughput(geometry: str, n: int) -> float:
    from caloforge.simulation import simulate_showers

    simulate_showers(geometry, 128, seed=123)  # warm caches and imports
    t = time.perf_counter()
    simulate_showers(geometry, n, seed=7)
    return n / (time.perf_counter() - t)


def point_cloud_throughput(n: int) -> float:
    from caloforge.simulation import simulate_point_clouds

    simulate_point_clouds(64, seed=123)
    t = time.perf_counter()
    simulate_point_clouds(n, seed=7)
    return n / (time.perf_counter() - t)


def write_peak_memory(n: int) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of a fresh process writing ``n`` ds3 showers."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-c", _WRITE_CHILD, str(n),
                              os.path.join(tmp, "ds3.h5")],
                             check=True, capture_output=True, text=True)
    mb, sec = out.stdout.split()[-2:]
    return float(mb), float(sec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="also write 100k ds3 showers")
    ap.add_argument("--n-ds2", type=int, default=3000)
    ap.add_argument("--n-ds3", type=int, default=1500)
    args = ap.parse_args(argv)

    import caloforge

    print("GFlash reference simulator benchmark")
    print(f"  CPU:      {cpu_model()} ({usable_cores()} usable cores, "
          f"{os.cpu_count()} logical)")
    print(f"  software: Python {platform.python_version()}, numpy {np.__version__}, "
          f"scipy {scipy.__version__}, caloforge {caloforge.__version__}")
    print()
    rows = []
    for g, n in (("ds2", args.n_ds2), ("ds3", args.n_ds3)):
        rate = throughput(g, n)
        ok = "yes" if rate >= TARGETS[g] else "NO"
        rows.append((f"{g} showers/s (in memory, N={n})", f"{rate:9.0f}",
                     f">= {TARGETS[g]:.0f}", ok))
    rate = point_cloud_throughput(1000)
    rows.append(("ILD point clouds/s (N=1000)", f"{rate:9.0f}", "-", "-"))
    sizes = [2000, 8000] + ([100_000] if args.full else [])
    for n in sizes:
        mb, sec = write_peak_memory(n)
        ok = "yes" if mb < MEMORY_TARGET_MB else "NO"
        rows.append((f"ds3 write N={n}: peak RSS MB", f"{mb:9.0f}",
                     f"< {MEMORY_TARGET_MB:.0f}", ok))
        rows.append((f"ds3 write N={n}: showers/s (incl. gzip)", f"{n / sec:9.0f}", "-", "-"))
    w = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{w}}  {'value':>9}  {'target':>8}  met")
    print("-" * (w + 26))
    for name, value, target, ok in rows:
        print(f"{name:<{w}}  {value}  {target:>8}  {ok}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
