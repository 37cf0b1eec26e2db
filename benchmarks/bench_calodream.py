"""Generation time per ds2 shower of CaloDREAM, energy and shape network apart.

Usage::

    python benchmarks/bench_calodream.py                 # tiny + paper size, CPU (+ GPU)
    python benchmarks/bench_calodream.py --threads 1 --json bench_calodream.json

For each model (the shipped ``calodream-ds2-tiny`` when installed, else the tiny preset
with random weights; the paper-size ``calodream-ds2`` preset with random weights: the
time does not depend on the weights' values), each device and batch size it prints the
milliseconds per shower of

* the energy network: 45 sequential 1-D flows with the decoder's key/value cache, with
  the model's energy solver (its NFE counts head evaluations: steps x NFE/step x 45);
* the shape network: one solve of the ViT velocity field from noise to data, for each
  solver (RK4-20, midpoint-16, Euler-32, BNS-8: 80, 32, 32 and 8 evaluations);
* the whole generation (energy + shape + decoding) with BNS-8 and with RK4-20;

and the speed-up over the reference simulator (GFlash ds2 on one CPU thread) timed in
the same run. The paper-size model on this CPU is timed at batch 1 only by default
(a forward pass of the 26 M-parameter ViT at batch 100 takes tens of seconds here);
``--paper-batches 1,100`` times more. The machine and the load average are printed
beside the figures.

Targets (issue 9): tiny ds2 with BNS-8 under 20 ms per shower at batch 1000 on this CPU;
paper-size ds2 with BNS-8 under 1 ms per shower at batch 10 000 on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from caloforge.configs import get_preset
from caloforge.evaluation.timing import machine_description
from caloforge.geometry import get_geometry
from caloforge.pipelines import pretrained_models
from caloforge.pipelines.calodream import CaloDREAM, CaloDREAMTransforms, build_calodream_models
from caloforge.sampling import BNSSolver

SHAPE_SOLVERS = ("rk4-20", "midpoint-16", "euler-32", "bns-8")
TARGETS_MS = {("tiny", "cpu", 1000, "bns-8"): 20.0, ("paper", "cuda", 10_000, "bns-8"): 1.0}


def _model(kind: str, seed: int = 0) -> tuple[CaloDREAM, str]:
    """(generator, description) for ``kind`` = "tiny" or "paper"."""
    if kind == "tiny" and "calodream-ds2-tiny" in pretrained_models():
        from caloforge.pipelines import load_generator

        model = load_generator("calodream-ds2-tiny")
        desc = "calodream-ds2-tiny (shipped weights)"
    else:
        preset = "calodream-ds2-tiny" if kind == "tiny" else "calodream-ds2"
        config = get_preset(preset)
        torch.manual_seed(seed)
        geometry = get_geometry("ds2")
        transforms = CaloDREAMTransforms.new(config, geometry)
        # timing needs fitted statistics of the right shape, not meaningful ones
        n_l, n_v = geometry.n_layers, geometry.n_voxels
        transforms.u_std.mean, transforms.u_std.std = torch.zeros(n_l), torch.ones(n_l)
        transforms.voxel_std.mean = torch.full((n_v,), -10.0, dtype=torch.float64)
        transforms.voxel_std.std = torch.ones(n_v, dtype=torch.float64)
        model = CaloDREAM(config, geometry, build_calodream_models(config), transforms)
        desc = f"{preset} (random weights)"
    if "bns-8" not in model.bespoke:
        # an untrained (Euler-initialised) 8-step solver costs what a trained one does
        model.bespoke["bns-8"] = BNSSolver(8).eval().requires_grad_(False)
    return model, desc


def _time(fn: Callable[[], Any], sync: Callable[[], None], repeats: int,
          max_seconds: float) -> float:
    """Median wall seconds of ``fn`` after one warm-up call.

    A warm-up call longer than 5 s is kept as the measurement (first-call overheads are
    negligible there, and repeating minutes-long calls would make the benchmark take
    an hour on a CPU)."""
    t0 = time.perf_counter()
    fn()
    sync()
    first = time.perf_counter() - t0
    if first > 5.0:
        return first
    walls: list[float] = []
    while len(walls) < repeats and sum(walls) < max_seconds:
        t0 = time.perf_counter()
        fn()
        sync()
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls)


def time_model(model: CaloDREAM, kind: str, device: torch.device, batches: list[int],
               max_seconds: float) -> list[dict[str, Any]]:
    model.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    gen = torch.Generator(device=device).manual_seed(0)
    rows = []
    n_layers = model.config.energy.n_layers_energy
    for b in batches:
        repeats = 5 if b == 1 else 3
        e = torch.exp(torch.empty(b, dtype=torch.float64).uniform_(6.9, 13.8))
        with torch.inference_mode():
            u = model.sample_energies(e, generator=gen)
            cond = model.shape_condition(e, u)

            def energy(e: torch.Tensor = e) -> Any:
                return model.sample_energies(e, generator=gen)

            rows.append(dict(model=kind, device=device.type, batch=b, network="energy",
                             solver=model.energy_solver.name,
                             nfe=model.energy_solver.nfe * n_layers,
                             ms=1e3 * _time(energy, sync, repeats, max_seconds) / b))
            for name in SHAPE_SOLVERS:
                model.set_solver(name)

                def shape(cond: torch.Tensor = cond) -> Any:
                    return model.sample_shapes(cond, generator=gen)

                rows.append(dict(model=kind, device=device.type, batch=b, network="shape",
                                 solver=name, nfe=model.shape_solver.nfe,
                                 ms=1e3 * _time(shape, sync, repeats, max_seconds) / b))
            for name in ("bns-8", "rk4-20"):
                model.set_solver(name)

                def total(e: torch.Tensor = e, b: int = b) -> Any:
                    return model.sample(e, batch_size=b, generator=gen)

                rows.append(dict(model=kind, device=device.type, batch=b, network="total",
                                 solver=name, nfe=None,
                                 ms=1e3 * _time(total, sync, repeats, max_seconds) / b))
        print(f"  {kind} {device.type} batch {b}: done", file=sys.stderr, flush=True)
    model.to("cpu")
    return rows


def time_reference(n: int = 200) -> float:
    """GFlash ds2 seconds per shower, best of two runs, one thread."""
    from threadpoolctl import threadpool_limits

    from caloforge.simulation import simulate_showers

    geo = get_geometry("ds2")
    with threadpool_limits(1):
        simulate_showers(geo, 10, seed=0)
        best = float("inf")
        for i in range(2):
            t0 = time.perf_counter()
            simulate_showers(geo, n, seed=1 + i)
            best = min(best, time.perf_counter() - t0)
    return best / n


def format_table(result: dict[str, Any]) -> str:
    m = result["machine"]
    ref_ms = 1e3 * result["reference_s_per_shower"]
    lines = [
        "CaloDREAM ds2 generation time per shower",
        "machine: {} ({} usable cores, {} GiB), GPU: {}, torch {} ({} threads), caloforge {}; "
        "load average {}".format(m["cpu_model"], m["cpu_usable"], m["memory_gib"],
                                 m["gpu"] or "none", m["torch"], result["torch_threads"],
                                 m["caloforge"], result["load_average"]),
        "models: " + "; ".join(f"{k}: {v}" for k, v in result["models"].items()),
        f"reference (GFlash ds2, CPU, 1 thread): {ref_ms:.3f} ms/shower",
        "",
        "| model | device | batch | network | solver | NFE | ms/shower | vs reference | target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        target = TARGETS_MS.get((r["model"], r["device"], r["batch"], r["solver"]))
        tgt = "" if target is None or r["network"] != "total" else (
            f"< {target:g} ms: {'met' if r['ms'] < target else 'MISSED'}")
        lines.append(f"| {r['model']} | {r['device']} | {r['batch']} | {r['network']} | "
                     f"{r['solver']} | {r['nfe'] if r['nfe'] is not None else '-'} | "
                     f"{r['ms']:.3f} | {ref_ms / r['ms']:.3g} | {tgt} |")
    lines += ["", "energy NFE = head evaluations (steps x evaluations per step x 45 layers), "
              "plus one cached transformer step per layer; shape NFE = ViT evaluations; "
              "total = energy + shape + decoding in one `sample` call; medians after a warm-up."]
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--tiny-batches", type=_ints, default=[1, 100, 1000])
    p.add_argument("--paper-batches", type=_ints, default=[1],
                   help="CPU batch sizes of the paper-size model (default: 1)")
    p.add_argument("--gpu-batches", type=_ints, default=[100, 10_000])
    p.add_argument("--max-seconds", type=float, default=30.0,
                   help="stop repeating a measurement after this many seconds")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows, models = [], {}
    for kind, cpu_batches in (("tiny", args.tiny_batches), ("paper", args.paper_batches)):
        model, desc = _model(kind)
        models[kind] = f"{desc}, {sum(model.n_parameters().values()):,} parameters"
        rows += time_model(model, kind, torch.device("cpu"), cpu_batches, args.max_seconds)
        if torch.cuda.is_available():
            rows += time_model(model, kind, torch.device("cuda"), args.gpu_batches,
                               args.max_seconds)
    result = {
        "benchmark": "calodream-ds2 generation",
        "machine": machine_description(),
        "torch_threads": torch.get_num_threads(),
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "models": models,
        "reference_s_per_shower": time_reference(),
        "rows": rows,
    }
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
