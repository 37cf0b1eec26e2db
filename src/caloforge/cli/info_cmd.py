"""``caloforge info FILE``: what is in a shower file."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="summarise a CaloChallenge or point-cloud file",
                       description="Print what a shower file holds: number of showers, the "
                       "geometry it matches, energy range, sparsity and response.")
    p.add_argument("file", help="CaloChallenge HDF5 file or showerdata point-cloud file")
    p.add_argument("--geometry", default=None,
                   help="geometry preset name or binning XML file (default: detect)")
    p.add_argument("--max-showers", type=int, default=100_000,
                   help="showers read for the statistics (default: 100000)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io.summary import format_summary, summarize_file

    print(format_summary(summarize_file(args.file, geometry=args.geometry,
                                        max_showers=args.max_showers)))
    return 0
