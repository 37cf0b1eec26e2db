"""``caloforge generate CKPT -o OUT.h5``: sample showers from a trained model."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate", help="generate showers with a trained model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Sample showers from a checkpoint directory or a shipped model "
        "(e.g. calovq-ds2-tiny) and write a CaloChallenge file, streamed in chunks.",
        epilog="example:\n  caloforge generate calodream-ds2-tiny -n 10000 -o showers.h5\n"
        "  caloforge generate model/ --energies-from reference.h5 -o showers.h5")
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
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: the CPUs this process may use; batches under "
                   "64 showers sample on one thread, which is faster there)")
    p.add_argument("--solver", default=None,
                   help="ODE solver of flow-based models, e.g. rk4-20, midpoint-32, euler-50, "
                   "bns-8 (trained with the model); default: the model's")
    p.add_argument("--threshold", type=float, default=None, metavar="MEV",
                   help="also set voxels below this energy to 0 (after the model's own cuts)")
    p.add_argument("--no-verify", action="store_true",
                   help="accept a checkpoint whose weights carry no sha256 (hand-made)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ..errors import ConfigError
    from ..io import check_input_path, check_output_path
    from ..pipelines import generate_to_file, load_generator
    from ..simulation import parse_energy_spectrum
    from ..threads import set_threads

    if args.batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    if args.threshold is not None and not args.threshold >= 0:
        raise ConfigError("--threshold must be >= 0 (MeV)")
    check_output_path(args.output)
    if args.energies_from:
        check_input_path(args.energies_from, option="--energies-from")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device}: CUDA is not available on this machine")
    if args.energies_from:
        spectrum = parse_energy_spectrum(f"file:{args.energies_from}", option="--energies-from")
        n = args.n if args.n is not None else len(spectrum.energies)
    else:
        spectrum = parse_energy_spectrum(args.energy or "log-uniform:1GeV:1TeV", option="--energy")
        if args.n is None:
            raise ConfigError("give the number of showers with -n (or --energies-from FILE)")
        n = args.n
    if n < 1:
        raise ConfigError("-n must be >= 1")
    energies = spectrum.sample(n, np.random.default_rng(args.seed))
    set_threads(args.threads)
    model = load_generator(args.model, map_location=args.device, verify=not args.no_verify)
    if args.solver is not None:
        if not hasattr(model, "set_solver"):
            raise ConfigError(f"--solver: {args.model} is not a flow-based model (no ODE solver)")
        model.set_solver(args.solver)
    generate_to_file(model, energies, args.output, batch_size=args.batch_size, seed=args.seed,
                     progress=not args.no_progress, threshold_mev=args.threshold,
                     attrs={"generator": str(args.model), "seed": args.seed},
                     threads=args.threads)
    print(f"wrote {n} showers to {args.output}")
    return 0
