"""Peak memory of the commands that read or write ds3 files, against the file size.

Usage::

    python benchmarks/bench_memory.py                      # ds3 files of 1k, 5k, 20k showers
    python benchmarks/bench_memory.py --sizes 200,500      # quick check
    python benchmarks/bench_memory.py --skip-generate

For each size N, synthesises a ds3 CaloChallenge file of N toy showers
(``caloforge.evaluation.toy_showers``, about 75 % zero voxels) and a second one as the
"generated" sample, then runs, each in a fresh process:

1. ``caloforge info FILE``;
2. ``caloforge evaluate --classifier none --no-plots`` of the second file against the first;
3. ``caloforge generate MODEL --energies-from FILE`` (N showers), where MODEL is a
   ``calovq-ds3-tiny`` with randomly initialised weights, saved to the scratch directory:
   generation memory depends on the network's shapes and the batch and chunk sizes, not
   on the weights' values, so no trained ds3 model is needed.

The peak resident memory of each process is its ``VmHWM`` from ``/proc/self/status``
read as the command ends (Linux only). The issue's targets: flat within
20 % across N, ``info`` under 500 MB, everything under 2 GB. Prints a table with the
machine and its load average; synthesis and model set-up are not counted.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def machine() -> str:
    from caloforge.evaluation.timing import machine_description
    from caloforge.threads import available_cpus

    return (f"{machine_description()['cpu_model']}, {available_cpus()} usable CPUs "
            f"({os.cpu_count()} logical), python {platform.python_version()}")


def load_average() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def synthesise(path: str, n: int, seed: int) -> None:
    from caloforge.evaluation import toy_showers
    from caloforge.geometry import get_geometry
    from caloforge.io import ShowerWriter

    g = get_geometry("ds3")
    chunk = max(100, int(2e7 // g.n_voxels))
    with ShowerWriter(path, g, compression=None) as w:
        for i, lo in enumerate(range(0, n, chunk)):
            w.write(toy_showers(g, min(chunk, n - lo), rng=seed * 100_003 + i))


def random_ds3_model(path: str) -> None:
    """Save a ``calovq-ds3-tiny`` with random weights (transforms fitted on toy showers)."""
    import torch

    from caloforge.configs import get_preset
    from caloforge.evaluation import toy_showers
    from caloforge.geometry import get_geometry
    from caloforge.pipelines.calovq.model import CaloVQ, CaloVQTransforms, build_calovq_models

    torch.manual_seed(0)
    config = get_preset("calovq-ds3-tiny")
    geometry = get_geometry(config.geometry)
    toy = toy_showers(geometry, 200, rng=7)
    transforms = CaloVQTransforms.new(config, geometry).fit(
        torch.as_tensor(toy.showers, dtype=torch.float32),
        torch.as_tensor(toy.incident_energies.reshape(-1), dtype=torch.float32))
    vqvae, gpt = build_calovq_models(config)
    CaloVQ(config, geometry, vqvae, gpt, transforms).save(path)


#: Runs one command and reports the peak resident memory of its own address space
#: (VmHWM, reset at exec). ``ru_maxrss`` of a child is not used: Linux carries the
#: parent's high-water mark across fork/vfork and exec, so a child of this (large)
#: process would report at least the parent's memory.
_CHILD = """
import sys
from caloforge.cli.main import main
code = main(sys.argv[1:])
with open("/proc/self/status") as fh:
    hwm = [ln.split()[1] for ln in fh if ln.startswith("VmHWM:")][0]
sys.stderr.write(f"\\nPEAK_RSS_KB {hwm}\\n")
sys.exit(code)
"""


def peak_rss_mb(argv: list[str]) -> tuple[float, float]:
    """Run ``caloforge ARGV`` in a fresh process; (its peak RSS in MB, wall time in s)."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, *argv], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"caloforge {' '.join(argv)} failed (exit {proc.returncode})")
    kb = [ln.split()[1] for ln in proc.stderr.splitlines() if ln.startswith("PEAK_RSS_KB")][-1]
    return int(kb) / 1024.0, dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=_ints, default=[1_000, 5_000, 20_000],
                    help="ds3 showers per file, comma-separated (default: 1000,5000,20000)")
    ap.add_argument("--skip-generate", action="store_true")
    ap.add_argument("--threads", type=int, default=1,
                    help="--threads of every command (default: 1)")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temporary one)")
    args = ap.parse_args()

    print(f"machine: {machine()}", flush=True)
    print(f"load average (1/5/15 min) at start: {load_average()}", flush=True)
    threads = ["--threads", str(args.threads)]
    rows: list[tuple[str, int, float, float]] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        model = os.path.join(d, "calovq-ds3-random")
        if not args.skip_generate:
            random_ds3_model(model)
        for n in args.sizes:
            ref, gen = os.path.join(d, f"ref{n}.h5"), os.path.join(d, f"gen{n}.h5")
            synthesise(ref, n, 1)
            synthesise(gen, n, 2)
            size = os.path.getsize(ref) / 1e6
            print(f"synthesised 2 x {n} ds3 showers ({size:.0f} MB per file)", flush=True)
            cases = [
                ("info", ["info", ref]),
                ("evaluate --classifier none",
                 ["evaluate", "--reference", ref, "--generated", gen, "-o",
                  os.path.join(d, f"eval{n}"), "--classifier", "none", "--no-plots",
                  "--no-cache", "--quiet", *threads]),
            ]
            if not args.skip_generate:
                cases.append(("generate (random calovq-ds3-tiny)",
                              ["generate", model, "--energies-from", ref, "-o",
                               os.path.join(d, f"out{n}.h5"), "--no-progress", *threads]))
            for name, argv in cases:
                mem, dt = peak_rss_mb(argv)
                rows.append((name, n, mem, dt))
                print(f"  {name:<36} N={n:<6} peak RSS {mem:7.0f} MB  {dt:7.1f} s", flush=True)
            for path in (ref, gen):
                os.remove(path)

    print()
    print(f"load average (1/5/15 min) at end: {load_average()}")
    print(f"{'command':<36} {'N':>7} {'peak RSS [MB]':>14} {'time [s]':>9}")
    for name, n, mem, dt in rows:
        print(f"{name:<36} {n:>7} {mem:>14.0f} {dt:>9.1f}")
    print()
    for name in dict.fromkeys(r[0] for r in rows):
        mems = [r[2] for r in rows if r[0] == name]
        spread = (max(mems) - min(mems)) / min(mems)
        limit = 500.0 if name == "info" else 2000.0
        print(f"{name:<36} spread across N {100 * spread:5.1f} % (target <= 20 %), "
              f"max {max(mems):.0f} MB (target < {limit:.0f} MB): "
              f"{'ok' if spread <= 0.2 and max(mems) < limit else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
