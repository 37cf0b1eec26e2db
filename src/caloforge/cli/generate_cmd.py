"""``caloforge generate CKPT -o OUT.h5``: sample showers from a trained model."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate", help="generate showers with a trained model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Sample showers from a checkpoint directory or a shipped model "
        "(e.g. calovq-ds2-tiny) and write a CaloChallenge file, streamed in chunks; "
        "point-cloud models (CaloClouds II) write point clouds in the showerdata layout, "
        "or with --project the cells above threshold.",
        epilog="example:\n  caloforge generate calodream-ds2-tiny -n 10000 -o showers.h5\n"
        "  caloforge generate model/ --energies-from reference.h5 -o showers.h5\n"
        "  caloforge generate caloclouds2-ild-tiny -n 2000 --solver consistency-1 -o clouds.h5\n"
        "  caloforge generate calolatent-ds2-tiny --layer-energies-from calodream-ds2-tiny "
        "-n 1000 -o mixed.h5\n"
        "    (CaloDREAM's energy network gives the layer energies, CaloLatent's VAE + latent\n"
        "    diffusion the shapes; --solver applies to the shape model)")
    p.add_argument("model", help="checkpoint directory or shipped model name (with "
                   "--layer-energies-from: the shape model)")
    p.add_argument("--layer-energies-from", default=None, metavar="ENERGY_MODEL",
                   help="compose two models: take the layer energies from this model's "
                   "layer-energy stage (checkpoint directory or shipped name) and the shapes "
                   "from MODEL; both must share the geometry")
    p.add_argument("-o", "--output", required=True, help="output HDF5 file")
    p.add_argument("-n", "--n", type=int, default=None, help="number of showers")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--energy", default=None,
                     help="incident-energy spectrum, e.g. log-uniform:1GeV:1TeV, fixed:50GeV "
                     "(default: log-uniform over 1 GeV - 1 TeV; point-cloud models: uniform "
                     "over 10 - 90 GeV)")
    src.add_argument("--energies-from", default=None, metavar="FILE",
                     help="take the incident energies of this file (default n: all of them)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="showers per model call (default: 1000; on a CPU fewer for large "
                   "geometries, ds3: 258, to bound memory); the random stream depends on it")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: the CPUs this process may use; batches under "
                   "64 showers sample on one thread, which is faster there)")
    p.add_argument("--solver", default=None,
                   help="ODE solver of flow-based models, e.g. rk4-20, midpoint-32, euler-50, "
                   "bns-8 (trained with the model); default: the model's")
    p.add_argument("--threshold", type=float, default=None, metavar="MEV",
                   help="also set voxels below this energy to 0 (after the model's own cuts); "
                   "point-cloud models with --project: the cell threshold (default 0.1 MeV)")
    p.add_argument("--project", nargs="?", const="model", default=None, metavar="GEOMETRY",
                   help="point-cloud models: write each shower's cells above threshold (one "
                   "point per cell, at its centre) instead of its points; GEOMETRY: the cell "
                   "grid, e.g. ild-ecal:80 (default: the model's)")
    p.add_argument("--compression", choices=("gzip", "lzf", "none"), default="gzip",
                   help="voxel files: gzip (default; the CaloChallenge files' filter, read by "
                   "every HDF5 tool; GFlash-like ds2 showers take 4.2 KiB each, 6x less than "
                   "none; the slowest: 0.2 ms per ds2 shower on one core, done on a background "
                   "thread while the model samples), lzf (2.5x faster to write than gzip, 1.25x "
                   "larger; needs h5py's lzf filter to read) or none (25 KiB per ds2 shower); "
                   "the stored values are the same (measured, docs/calovq.md)")
    p.add_argument("--no-verify", action="store_true",
                   help="accept a checkpoint whose weights carry no sha256 (hand-made)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ..errors import ConfigError
    from ..io import check_input_path, check_output_path
    from ..pipelines import generate_to_file
    from ..pipelines.generate import default_batch_size, generate_points_to_file
    from ..simulation import parse_energy_spectrum
    from ..threads import set_threads

    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    if args.threshold is not None and not args.threshold >= 0:
        raise ConfigError("--threshold must be >= 0 (MeV)")
    check_output_path(args.output)
    if args.energies_from:
        check_input_path(args.energies_from, option="--energies-from")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device}: CUDA is not available on this machine")
    model = None
    if args.energies_from:
        spectrum = parse_energy_spectrum(f"file:{args.energies_from}", option="--energies-from")
        n = args.n if args.n is not None else len(spectrum.energies)
    else:
        if args.n is None:
            raise ConfigError("give the number of showers with -n (or --energies-from FILE)")
        default = "log-uniform:1GeV:1TeV"
        if args.energy is None:
            model = _load(args)
            default = getattr(model, "default_energy_spectrum", default)
        spectrum = parse_energy_spectrum(args.energy or default, option="--energy")
        n = args.n
    if n < 1:
        raise ConfigError("-n must be >= 1")
    energies = spectrum.sample(n, np.random.default_rng(args.seed))
    set_threads(args.threads)
    model = model or _load(args)
    points = getattr(model, "data_kind", "voxels") == "points"
    project = None
    if args.project is not None:
        if not points:
            raise ConfigError(f"--project: {args.model} makes voxels, not point clouds")
        from ..geometry import named_geometry

        project = model.geometry if args.project == "model" else named_geometry(args.project)
    elif points and args.compression != "gzip":
        raise ConfigError("--compression applies to voxel files; point-cloud files use the "
                          "showerdata layout's own storage")
    elif points and args.threshold is not None:
        raise ConfigError("--threshold applies to point-cloud models only with --project "
                          "(points carry no threshold; cells do)")
    if args.solver is not None:
        if not hasattr(model, "set_solver"):
            raise ConfigError(f"--solver: {args.model} is not a flow-based model (no ODE solver)")
        model.set_solver(args.solver)
    if args.batch_size is None:
        args.batch_size = (1000 if points else
                           default_batch_size(getattr(model, "geometry", None), args.device))
    if points:
        generate_points_to_file(model, energies, args.output, batch_size=args.batch_size,
                                seed=args.seed, progress=not args.no_progress,
                                threads=args.threads, project=project,
                                project_threshold_mev=args.threshold)
    else:
        generate_to_file(model, energies, args.output, batch_size=args.batch_size,
                         seed=args.seed, progress=not args.no_progress,
                         threshold_mev=args.threshold,
                         attrs={"generator": str(args.model), "seed": args.seed,
                                **({"layer_energies_from": str(args.layer_energies_from)}
                                   if args.layer_energies_from else {})},
                         threads=args.threads, compression=args.compression)
    what = "cells of " if project is not None else ""
    print(f"wrote {what}{n} showers to {args.output}")
    return 0


def _load(args: argparse.Namespace):
    from ..pipelines import compose_checkpoints, load_generator

    if args.layer_energies_from:
        return compose_checkpoints(args.model, args.layer_energies_from,
                                   map_location=args.device, verify=not args.no_verify)
    return load_generator(args.model, map_location=args.device, verify=not args.no_verify)
