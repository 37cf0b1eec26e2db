"""Benchmark of ``caloforge evaluate`` (the voxelised-shower metrics and report).

Usage::

    python benchmarks/bench_evaluation.py                 # 100k vs 100k ds2, ds3 memory
    python benchmarks/bench_evaluation.py --n 20000       # quicker
    python benchmarks/bench_evaluation.py --skip-classifier

Synthesises toy showers with numpy (``caloforge.evaluation.toy_showers``: sparse like real
ones, about 75 % zero voxels) into temporary CaloChallenge files, then times, in fresh
processes:

1. ds2 N vs N without classifiers (cold feature cache), target < 5 minutes;
2. the same again with the feature cache warm;
3. ds2 N vs N with the CPU classifier preset (low-level on min(N/2, 50k) showers per class);
4. the peak resident memory of evaluating ds3 files (chunked features, capped voxel reads).

Prints a table with the machine. Synthesis time is not counted.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

_CHILD = """
import resource, sys, time
from caloforge.evaluation import EvaluationOptions, evaluate, write_report
ref, gen, out, classifier = sys.argv[1:5]
t = time.perf_counter()
res = evaluate(ref, [gen], ["model"], options=EvaluationOptions(classifier=classifier),
               cache_dir=out + "/.cache")
write_report(res, out)
dt = time.perf_counter() - t
print("RESULT", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, dt,
      res.models["model"]["sep/response"].value, res.floor["sep/response"].value)
"""


def cpu_model() -> str:
    """CPU model name, as the package's timing harness records it."""
    from caloforge.evaluation.timing import machine_description

    return machine_description()["cpu_model"]


def synthesise(path: str, geometry: str, n: int, seed: int, **kw) -> float:
    from caloforge.evaluation import toy_showers
    from caloforge.geometry import get_geometry
    from caloforge.io import ShowerWriter

    g = get_geometry(geometry)
    t = time.perf_counter()
    chunk = max(100, int(2e7 // g.n_voxels))
    with ShowerWriter(path, g, compression=None) as w:
        for i, lo in enumerate(range(0, n, chunk)):
            w.write(toy_showers(g, min(chunk, n - lo), rng=seed * 100_003 + i, **kw))
    return time.perf_counter() - t


def run_child(ref: str, gen: str, out: str, classifier: str) -> tuple[float, float, float, float]:
    proc = subprocess.run([sys.executable, "-c", _CHILD, ref, gen, out, classifier],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"evaluation failed ({classifier})")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    mem, dt, s_model, s_floor = (float(x) for x in line.split()[1:])
    return mem, dt, s_model, s_floor


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="ds2 showers per file (default 100k)")
    ap.add_argument("--ds3-n", type=int, default=20_000, help="ds3 showers per file (default 20k)")
    ap.add_argument("--skip-classifier", action="store_true")
    ap.add_argument("--skip-ds3", action="store_true")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temporary one)")
    args = ap.parse_args()
    import torch

    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, torch threads "
          f"{torch.get_num_threads()}, python {platform.python_version()}, torch {torch.__version__}")
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        ref, gen = os.path.join(d, "ref2.h5"), os.path.join(d, "gen2.h5")
        t1 = synthesise(ref, "ds2", args.n, 1)
        t2 = synthesise(gen, "ds2", args.n, 2, energy_scale=1.02)
        print(f"synthesised 2 x {args.n} ds2 showers in {t1 + t2:.0f} s (not counted)", flush=True)
        out = os.path.join(d, "out")
        mem, dt, sm, sf = run_child(ref, gen, out, "none")
        rows.append((f"ds2 {args.n} vs {args.n}, no classifier, cold cache", dt, mem, 300.0))
        print(rows[-1], f"S(response): model {sm:.4f}, floor {sf:.4f}", flush=True)
        mem, dt, *_ = run_child(ref, gen, out, "none")
        rows.append((f"ds2 {args.n} vs {args.n}, no classifier, warm cache", dt, mem, None))
        print(rows[-1], flush=True)
        if not args.skip_classifier:
            mem, dt, *_ = run_child(ref, gen, out, "cpu")
            rows.append((f"ds2 {args.n} vs {args.n}, CPU classifier preset, warm cache", dt, mem, None))
            print(rows[-1], flush=True)
        os.remove(ref)
        os.remove(gen)
        if not args.skip_ds3:
            ref3, gen3 = os.path.join(d, "ref3.h5"), os.path.join(d, "gen3.h5")
            synthesise(ref3, "ds3", args.ds3_n, 3)
            synthesise(gen3, "ds3", args.ds3_n, 4)
            size = os.path.getsize(ref3) / 1e9
            mem, dt, *_ = run_child(ref3, gen3, os.path.join(d, "out3"), "none")
            rows.append((f"ds3 {args.ds3_n} vs {args.ds3_n} ({size:.1f} GB/file), no classifier",
                         dt, mem, None))
            print(rows[-1], flush=True)
    print()
    print(f"{'case':<62} {'time [s]':>9} {'peak RSS [MB]':>14} {'target':>9}")
    for name, dt, mem, target in rows:
        tgt = "" if target is None else (f"<{target:.0f} s " + ("ok" if dt < target else "MISSED"))
        print(f"{name:<62} {dt:>9.1f} {mem:>14.0f} {tgt:>9}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
