"""``caloforge generate CKPT -o OUT.h5``: sample showers from a trained model."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate", help="generate showers with a trained model",
        description="Sample showers from a checkpoint directory or a shipped model "
        "(e.g. calovq-ds2-tiny) and write a CaloChallenge file, streamed in chunks.")
    p.add_argument("model", help="checkpoint directory or shipped model name")
    p.add_argument("-o", "--output", required=True, help="output HDF5 file")
    p.add_argument("-n", "--n", type=int, default=None, help="number of showers")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--energy", default=None,
                     help="incident-energy spectrum, e.g. log-uniform:1GeV:1TeV, fixed:50GeV "
                     "(default: log-uniform over 1 GeV - 1 TeV)")
    src.add_argument("--energies-from", default=None, metavar="FILE",
                     help="take the incident energies of this file (default n: all of them)")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold", type=float, default=None, metavar="MEV",
                   help="set voxels below this energy to 0 (default: the model's setting)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ..errors import ConfigError
    from ..pipelines import generate_to_file, load_generator
    from ..simulation import parse_energy_spectrum

    if args.batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device}: CUDA is not available on this machine")
    if args.energies_from:
        spectrum = parse_energy_spectrum(f"file:{args.energies_from}")
        n = args.n if args.n is not None else len(spectrum.energies)
    else:
        spectrum = parse_energy_spectrum(args.energy or "log-uniform:1GeV:1TeV")
        if args.n is None:
            raise ConfigError("give the number of showers with -n (or --energies-from FILE)")
        n = args.n
    if n < 1:
        raise ConfigError("-n must be >= 1")
    energies = spectrum.sample(n, np.random.default_rng(args.seed))
    model = load_generator(args.model, map_location=args.device)
    if args.threshold is not None and hasattr(model, "config"):
        model.config.output_threshold_mev = float(args.threshold)
    generate_to_file(model, energies, args.output, batch_size=args.batch_size, seed=args.seed,
                     progress=not args.no_progress,
                     attrs={"generator": str(args.model), "seed": args.seed})
    print(f"wrote {n} showers to {args.output}")
    return 0
