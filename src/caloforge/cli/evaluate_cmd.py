"""``caloforge evaluate``: compare generated shower files with a reference."""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="compare generated CaloChallenge files with a reference",
        description="Compute the CaloChallenge metrics (separation powers, W1, FPD/KPD, "
        "precision/recall/density/coverage, classifier AUC/JSD) of every generated file "
        "against the reference, next to the reference-vs-reference floor; write "
        "report.html and metrics.json into --out and print the table.")
    p.add_argument("--reference", required=True, help="reference CaloChallenge HDF5 file")
    p.add_argument("--generated", required=True, nargs="+", help="generated file(s)")
    p.add_argument("--labels", nargs="+", default=None,
                   help="one label per generated file (default: file names)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--classifier", choices=("none", "cpu", "official"), default="cpu",
                   help="classifier preset (default: cpu; official = 3x2048, 50 epochs, for GPUs)")
    p.add_argument("--threshold", type=float, default=None,
                   help="voxel threshold in MeV (default: 1 MeV for ds1, 0.01515 MeV for ds2/ds3)")
    p.add_argument("--max-showers", type=int, default=None,
                   help="use at most this many showers of each file")
    p.add_argument("--geometry", default=None,
                   help="geometry preset name or binning XML file (default: detect)")
    p.add_argument("--no-cache", action="store_true",
                   help="do not read or write the feature cache (default: OUT/.cache)")
    p.add_argument("--no-plots", action="store_true", help="write the report without plots")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import CaloforgeError
    from ..evaluation.report import EvaluationOptions, evaluate, format_table, write_report
    from ..io import resolve_geometry_arg

    if args.max_showers is not None and args.max_showers < 4:
        raise CaloforgeError("--max-showers must be at least 4")
    geometry = resolve_geometry_arg(args.geometry) if args.geometry else None
    log = None if args.quiet else (lambda msg: print(f"[evaluate] {msg}", file=sys.stderr))
    result = evaluate(
        args.reference, args.generated, args.labels,
        options=EvaluationOptions(classifier=args.classifier, seed=args.seed),
        threshold=args.threshold, max_showers=args.max_showers,
        cache_dir=None if args.no_cache else os.path.join(args.out, ".cache"),
        geometry=geometry, log=log)
    paths = write_report(result, args.out, plots=not args.no_plots)
    print(format_table(result))
    print(f"\nwrote {paths['html']} and {paths['json']}")
    return 0
