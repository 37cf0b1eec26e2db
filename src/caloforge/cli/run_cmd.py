"""``caloforge run``: the whole job on the embedded default, in one command.

Simulate reference ds2 showers with the embedded GFlash simulator (a training set and a
held-out set), train the small preset of a pipeline on them (``--pipeline``, default
calodream), generate as many showers as the held-out set with the trained model and with
every model shipped in the package, evaluate them against the held-out set next to the
reference-vs-reference floor, and write the report. ``--pretrained-only`` skips the
training and evaluates every shipped model side by side.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="simulate, train, generate, evaluate and report in one go",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the main job on the embedded default: simulate reference ds2 "
        "showers, train a small model, generate with it (and with every shipped model), "
        "evaluate against held-out reference showers and write report.html.",
        epilog="example:\n  caloforge run -o demo\n  caloforge run -o demo --pipeline calovq\n"
        "  caloforge run -o demo --pretrained-only")
    p.add_argument("-o", "--out", "--output", default="caloforge-run", help="output directory")
    p.add_argument("--pipeline", default="calodream",
                   help="pipeline whose <pipeline>-ds2-tiny preset is trained (default: calodream)")
    p.add_argument("--preset", default=None,
                   help="model preset to train (default: <pipeline>-ds2-tiny)")
    p.add_argument("--n-train", type=int, default=30_000, help="training showers")
    p.add_argument("--n-reference", type=int, default=30_000,
                   help="held-out showers (30k: enough for the FPD floor on two halves)")
    p.add_argument("--pretrained-only", action="store_true",
                   help="do not train; evaluate the shipped model only")
    p.add_argument("--classifier", choices=("none", "cpu", "official"), default="cpu")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a setting of the trained preset")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--device", default=None,
                   help="cpu or cuda for training, generation and the classifier tests "
                   "(default: the preset's for training, cpu for generation)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: the CPUs this process may use)")
    p.add_argument("--resume", action="store_true", help="resume an interrupted training")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _step(msg: str) -> None:
    print(f"\n== {msg}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..evaluation.report import EvaluationOptions, evaluate, format_table, write_report
    from ..geometry import get_geometry
    from ..io import read_showers
    from ..pipelines import (
        generate_to_file,
        get_pipeline,
        load_generator,
        pretrained_models,
        train_pipeline,
    )
    from ..simulation import simulate_to_file
    from ..threads import set_threads
    from ._common import check_device, check_output_dir
    from .train_cmd import build_config

    if args.n_reference < 100 or (not args.pretrained_only and args.n_train < 100):
        raise ConfigError("--n-train and --n-reference must be at least 100")
    # everything that can be wrong is checked before minutes of simulation
    config = None
    if get_pipeline(args.pipeline).data_kind != "voxels":
        raise ConfigError(f"caloforge run covers the voxel (ds2) pipelines; {args.pipeline!r} "
                          "makes point clouds: simulate --points, train, generate and "
                          "evaluate step by step (docs/caloclouds.md)")
    preset = args.preset or f"{get_pipeline(args.pipeline).name}-ds2-tiny"
    if not args.pretrained_only:
        config = build_config(preset, [], args.overrides)
    check_device(args.device, option="--device")
    check_output_dir(args.out, option="-o")
    set_threads(args.threads)
    out = args.out
    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    geometry = get_geometry("ds2")
    ref_path = os.path.join(out, "reference.h5")
    train_path = os.path.join(out, "train.h5")

    _step(f"simulating {args.n_reference} held-out reference showers (GFlash, ds2)")
    t = time.perf_counter()
    if not os.path.exists(ref_path):
        simulate_to_file(ref_path, geometry, args.n_reference, seed=args.seed + 1000)
    timings["simulate reference"] = time.perf_counter() - t
    energies = read_showers(ref_path).incident_energies

    models: list[tuple[str, str]] = []
    if not args.pretrained_only:
        _step(f"simulating {args.n_train} training showers")
        t = time.perf_counter()
        if not os.path.exists(train_path):
            simulate_to_file(train_path, geometry, args.n_train, seed=args.seed)
        timings["simulate training set"] = time.perf_counter() - t
        _step(f"training {preset} (all stages)")
        t = time.perf_counter()
        ckpt = os.path.join(out, preset)
        train_pipeline(config, train_path, ckpt, resume=args.resume,
                       progress=not args.no_progress, seed=args.seed,
                       device=args.device)
        timings["train"] = time.perf_counter() - t
        models.append((f"{preset} (trained here)", ckpt))
    for name in pretrained_models():
        if load_generator(name).geometry.same_binning(geometry):
            models.append((f"{name} (shipped)", name))
    if not models:
        raise ConfigError("no model to evaluate: train one or install the shipped model")

    generated, labels = [], []
    for i, (label, spec) in enumerate(models):
        _step(f"generating {len(energies)} showers with {label}")
        t = time.perf_counter()
        path = os.path.join(out, f"generated_{i}.h5")
        generate_to_file(load_generator(spec, map_location=args.device or "cpu"), energies,
                         path, seed=args.seed, progress=not args.no_progress,
                         threads=args.threads)
        timings[f"generate: {label}"] = time.perf_counter() - t
        generated.append(path)
        labels.append(label)

    _step("evaluating against the held-out reference")
    t = time.perf_counter()
    result = evaluate(ref_path, generated, labels,
                      options=EvaluationOptions(classifier=args.classifier, seed=args.seed,
                                              device=args.device),
                      cache_dir=os.path.join(out, ".cache"),
                      log=lambda m: print(f"[evaluate] {m}", file=sys.stderr))
    paths = write_report(result, os.path.join(out, "report"))
    timings["evaluate"] = time.perf_counter() - t
    print(format_table(result))
    print("\nwall time per step:")
    for k, v in timings.items():
        print(f"  {k:45s} {v:8.1f} s")
    print(f"  {'total':45s} {time.perf_counter() - t0:8.1f} s")
    print(f"\nreport: {paths['html']}\nmetrics: {paths['json']}")
    return 0
