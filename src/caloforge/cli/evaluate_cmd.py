"""``caloforge evaluate``: compare generated shower files with a reference.

CaloChallenge voxel files go to :mod:`caloforge.evaluation.report`; point-cloud files
(``showerdata`` layout, detected from the reference) to
:mod:`caloforge.evaluation.pointcloud_report`. Both kinds cannot be mixed.
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="compare generated shower files (voxels or point clouds) with a reference",
        description="Compute the CaloChallenge metrics (separation powers, W1, FPD/KPD, "
        "precision/recall/density/coverage, classifier AUC/JSD) of every generated file "
        "against the reference, next to the reference-vs-reference floor; write "
        "report.html and metrics.json into --out and print the table. Where a file is "
        "subsampled (--max-showers, or to match the reference halves) a seeded random "
        "subset is used, never the first rows; the report says how many showers each "
        "metric used. "
        "Point clouds: when the reference is a point-cloud file (showerdata layout, as "
        "written by `caloforge simulate --points` and `caloforge generate` of point-cloud "
        "pipelines), the showers are projected onto the cells of the ILD-like ECAL, cells "
        "below --threshold (0.1 MeV) are removed, and the CaloClouds II scores are "
        "computed: W1 x100 of N_hits, E_vis/E_inc, E_cell, E_long, E_radial and the "
        "centroids (mean ± std over 10 subsamples) and the AUC of the 25-input high-level "
        "classifier, next to the floor of two random halves of the reference "
        "(docs/evaluation_pointclouds.md). Generated files must be of the reference's kind.",
        epilog="examples: caloforge evaluate --reference ref.h5 --generated model.h5 "
        "--labels model -o eval/ --classifier cpu; "
        "caloforge evaluate --reference ref_points.h5 --generated model_points.h5 -o eval/")
    p.add_argument("--reference", required=True,
                   help="reference file: CaloChallenge HDF5, or a point-cloud (showerdata) "
                   "file, which switches to the point-cloud evaluation")
    p.add_argument("--generated", required=True, nargs="+",
                   help="generated file(s), of the same kind as the reference")
    p.add_argument("--labels", nargs="+", default=None,
                   help="one label per generated file (default: file names)")
    p.add_argument("-o", "--out", "--output", required=True, help="output directory")
    p.add_argument("--classifier", choices=("none", "cpu", "official"), default="cpu",
                   help="classifier preset (default: cpu; official = 3x2048, 50 epochs, for GPUs). "
                   "Point clouds: the CaloClouds II network (32-16-8, 10 epochs); cpu trains "
                   "it once, official 10 times on different splits (AUC mean ± std)")
    p.add_argument("--threshold", type=float, default=None,
                   help="voxel threshold in MeV (default: 1 MeV for ds1, 0.5e-3/0.033 = "
                   "0.0151515 MeV for ds2/ds3; point clouds: cell threshold, default 0.1 MeV, "
                   "half a MIP)")
    p.add_argument("--max-showers", type=int, default=None,
                   help="use at most this many showers of each file (a seeded random subset)")
    p.add_argument("--geometry", default=None,
                   help="geometry preset name or binning XML file (default: detect); point "
                   "clouds: ild-ecal (30 x 30 cells of 5 mm, the window of `caloforge "
                   "simulate --points`; the default) or ild-ecal:N for an N x N window")
    p.add_argument("--no-cache", action="store_true",
                   help="do not read or write the feature cache (default: OUT/.cache; "
                   "voxel files only)")
    p.add_argument("--no-plots", action="store_true", help="write the report without plots")
    p.add_argument("--convention", choices=("official", "caloforge"), default=None,
                   help="official (default): the CaloChallenge evaluation's FPD/KPD sampling "
                   "(with replacement, its batch sizes) and 39 E_layer bins, so numbers stand "
                   "beside published tables; the bias-corrected FPD is reported in its own "
                   "row. caloforge: bias-corrected FPD as the FPD row, 40 E_layer bins with "
                   "under/overflow (docs/evaluation.md); voxel files only")
    p.add_argument("--voxel-memory", type=float, default=None, metavar="GB",
                   help="memory budget in GB for the voxels of the low-level classifier "
                   "(default 1.0; ds3: about 1 200 showers per class, ds2: 7 700); the "
                   "report says when it made the classifier use fewer showers")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    p.add_argument("--device", default=None,
                   help="cpu or cuda for the classifier tests (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: the CPUs this process may use)")
    p.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true",
                   help="no progress messages")
    p.set_defaults(func=run)


def _names_planar_geometry(spec: str) -> bool:
    """Whether a --geometry value names the point-cloud grid (ild-ecal[:N])."""
    return spec.partition(":")[0].strip().lower().replace("_", "-") == "ild-ecal"


def run(args: argparse.Namespace) -> int:
    from ..errors import CaloforgeError
    from ..io import check_output_path, is_point_cloud_file, resolve_geometry_arg
    from ._common import check_device

    if args.max_showers is not None and args.max_showers < 4:
        raise CaloforgeError("--max-showers must be at least 4")
    if args.voxel_memory is not None and not args.voxel_memory > 0:
        raise CaloforgeError(f"--voxel-memory must be > 0 GB, got {args.voxel_memory}")
    if args.threshold is not None and not args.threshold >= 0:
        raise CaloforgeError(f"--threshold must be >= 0 MeV, got {args.threshold}")
    # the output directory is checked before any work: a report that cannot be written
    # must not cost the evaluation first
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise CaloforgeError(f"--out {args.out}: exists and is not a directory")
    check_output_path(os.path.join(args.out, "metrics.json"))
    planar = args.geometry is not None and _names_planar_geometry(args.geometry)
    if planar:
        from ..evaluation.pointcloud_report import parse_point_cloud_geometry

        geometry = parse_point_cloud_geometry(args.geometry)
    else:
        geometry = resolve_geometry_arg(args.geometry) if args.geometry else None
    check_device(args.device, option="--device")
    # the kind of every file is known before any work: a mix is one clear error
    points = is_point_cloud_file(args.reference, option="--reference")
    for path in args.generated:
        if is_point_cloud_file(path, option="--generated") != points:
            kind, ref_kind = (("a CaloChallenge voxel file", "a point-cloud (showerdata) file")
                              if points else
                              ("a point-cloud (showerdata) file", "a CaloChallenge voxel file"))
            raise CaloforgeError(
                f"--generated {path}: {kind}, but the reference {args.reference} is "
                f"{ref_kind}; evaluate files of one kind together")
    if points and args.geometry is not None and not planar:
        raise CaloforgeError(f"--geometry {args.geometry}: point clouds take ild-ecal or "
                             "ild-ecal:N (an N x N window of 5 mm cells)")
    if not points and planar:
        raise CaloforgeError(f"--geometry {args.geometry}: a point-cloud grid, but the "
                             f"reference {args.reference} is a CaloChallenge voxel file")
    log = None if args.quiet else (lambda msg: print(f"[evaluate] {msg}", file=sys.stderr))
    if points:
        return _run_point_clouds(args, geometry, log)
    from ..evaluation.report import EvaluationOptions, evaluate, format_table, write_report
    from ..threads import set_threads

    set_threads(args.threads)
    budget = {} if args.voxel_memory is None else {
        "voxel_memory_bytes": max(1, int(args.voxel_memory * 1e9))}
    result = evaluate(
        args.reference, args.generated, args.labels,
        options=EvaluationOptions(classifier=args.classifier, seed=args.seed,
                                  convention=args.convention or "official", device=args.device,
                                  **budget),
        threshold=args.threshold, max_showers=args.max_showers,
        cache_dir=None if args.no_cache else os.path.join(args.out, ".cache"),
        geometry=geometry, log=log)
    paths = write_report(result, args.out, plots=not args.no_plots)
    print(format_table(result))
    print(f"\nwrote {paths['html']} and {paths['json']}")
    return 0


def _run_point_clouds(args: argparse.Namespace, geometry, log) -> int:
    """The point-cloud evaluation (CaloClouds II scores) of ``caloforge evaluate``."""
    from ..errors import CaloforgeError
    from ..evaluation.pointcloud import HALF_MIP_MEV
    from ..evaluation.pointcloud_report import (
        PointCloudEvaluationOptions,
        evaluate_point_cloud_files,
        format_point_cloud_table,
        write_point_cloud_report,
    )
    from ..threads import set_threads

    if args.convention is not None:
        raise CaloforgeError(f"--convention {args.convention}: applies to CaloChallenge voxel "
                             "files; point clouds are scored as CaloClouds II scores them")
    set_threads(args.threads)
    opts = PointCloudEvaluationOptions(
        classifier=args.classifier, seed=args.seed, max_showers=args.max_showers,
        threshold_mev=HALF_MIP_MEV if args.threshold is None else args.threshold,
        device=args.device)
    result = evaluate_point_cloud_files(args.reference, args.generated, args.labels,
                                        options=opts, geometry=geometry, log=log)
    paths = write_point_cloud_report(result, args.out, plots=not args.no_plots)
    print(format_point_cloud_table(result))
    print(f"\nwrote {paths['html']} and {paths['json']}")
    return 0
