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
        "report.html and metrics.json into --out and print the table. Where a file is "
        "subsampled (--max-showers, or to match the reference halves) a seeded random "
        "subset is used, never the first rows; the report says how many showers each "
        "metric used.",
        epilog="example: caloforge evaluate --reference ref.h5 --generated model.h5 "
        "--labels model -o eval/ --classifier cpu")
    p.add_argument("--reference", required=True, help="reference CaloChallenge HDF5 file")
    p.add_argument("--generated", required=True, nargs="+", help="generated file(s)")
    p.add_argument("--labels", nargs="+", default=None,
                   help="one label per generated file (default: file names)")
    p.add_argument("-o", "--out", "--output", required=True, help="output directory")
    p.add_argument("--classifier", choices=("none", "cpu", "official"), default="cpu",
                   help="classifier preset (default: cpu; official = 3x2048, 50 epochs, for GPUs)")
    p.add_argument("--threshold", type=float, default=None,
                   help="voxel threshold in MeV (default: 1 MeV for ds1, 0.5e-3/0.033 = "
                   "0.0151515 MeV for ds2/ds3)")
    p.add_argument("--max-showers", type=int, default=None,
                   help="use at most this many showers of each file (a seeded random subset)")
    p.add_argument("--geometry", default=None,
                   help="geometry preset name or binning XML file (default: detect)")
    p.add_argument("--no-cache", action="store_true",
                   help="do not read or write the feature cache (default: OUT/.cache)")
    p.add_argument("--no-plots", action="store_true", help="write the report without plots")
    p.add_argument("--convention", choices=("caloforge", "official"), default="caloforge",
                   help="official: the CaloChallenge evaluation's FPD/KPD sampling (with "
                   "replacement, its batch sizes) and 39 E_layer bins, for numbers that stand "
                   "beside published tables; caloforge (default): bias-corrected FPD, 40 "
                   "E_layer bins with under/overflow (docs/evaluation.md)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    p.add_argument("--device", default=None,
                   help="cpu or cuda for the classifier tests (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: the CPUs this process may use)")
    p.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true",
                   help="no progress messages")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import CaloforgeError
    from ..evaluation.report import EvaluationOptions, evaluate, format_table, write_report
    from ..io import check_output_path, resolve_geometry_arg
    from ..threads import set_threads
    from ._common import check_device

    if args.max_showers is not None and args.max_showers < 4:
        raise CaloforgeError("--max-showers must be at least 4")
    if args.threshold is not None and not args.threshold >= 0:
        raise CaloforgeError(f"--threshold must be >= 0 MeV, got {args.threshold}")
    # the output directory is checked before any work: a report that cannot be written
    # must not cost the evaluation first
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise CaloforgeError(f"--out {args.out}: exists and is not a directory")
    check_output_path(os.path.join(args.out, "metrics.json"))
    geometry = resolve_geometry_arg(args.geometry) if args.geometry else None
    check_device(args.device, option="--device")
    set_threads(args.threads)
    log = None if args.quiet else (lambda msg: print(f"[evaluate] {msg}", file=sys.stderr))
    result = evaluate(
        args.reference, args.generated, args.labels,
        options=EvaluationOptions(classifier=args.classifier, seed=args.seed,
                                  convention=args.convention, device=args.device),
        threshold=args.threshold, max_showers=args.max_showers,
        cache_dir=None if args.no_cache else os.path.join(args.out, ".cache"),
        geometry=geometry, log=log)
    paths = write_report(result, args.out, plots=not args.no_plots)
    print(format_table(result))
    print(f"\nwrote {paths['html']} and {paths['json']}")
    return 0
