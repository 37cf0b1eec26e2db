"""``caloforge info FILE``: what is in a shower file."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="summarise a shower file or a trained model",
                       description="Print what a shower file holds: number of showers, the "
                       "geometry it matches, energy range, sparsity and response. The file "
                       "is streamed in small chunks (about 100 MB of memory at any size). "
                       "Given a checkpoint directory or a shipped model name, print the "
                       "model: pipeline, stages, parameters, solvers.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  caloforge info ds2_gflash.h5\n"
                       "  caloforge info calodream-ds2-tiny")
    p.add_argument("file", help="CaloChallenge HDF5 file, showerdata point-cloud file, "
                   "checkpoint directory or shipped model name")
    p.add_argument("--geometry", default=None,
                   help="geometry preset name or binning XML file (default: detect)")
    p.add_argument("--max-showers", type=int, default=100_000,
                   help="showers read for the statistics (default: 100000)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import CaloforgeError
    from ..io.summary import format_summary, summarize_file

    if args.max_showers < 1:
        raise CaloforgeError(f"--max-showers must be at least 1, got {args.max_showers}")

    import os

    from ..pipelines import pretrained_models

    if os.path.isfile(os.path.join(args.file, "checkpoint.json")) or (
            not os.path.exists(args.file) and args.file in pretrained_models()):
        from ..pipelines.describe import describe_checkpoint

        print(describe_checkpoint(args.file))
        return 0
    print(format_summary(summarize_file(args.file, geometry=args.geometry,
                                        max_showers=args.max_showers)))
    return 0
