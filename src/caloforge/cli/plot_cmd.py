"""``caloforge plot``: pictures of shower files."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="draw pictures of shower files (needs caloforge[plot])",
                       description="Draw pictures of CaloChallenge shower files.",
                       epilog="example: caloforge plot average ds2_gflash.h5 -o average.png")
    kinds = p.add_subparsers(dest="kind", metavar="KIND")
    a = kinds.add_parser(
        "average", help="average shower: mean energy per layer and one layer's r-alpha image",
        description="Average the showers of a CaloChallenge file (read in chunks, so files "
        "larger than memory work) and draw the mean energy per layer beside the r-alpha "
        "image of one layer.",
        epilog="example: caloforge plot average ds2_gflash.h5 -o average.png",
    )
    a.add_argument("file", help="CaloChallenge HDF5 file")
    a.add_argument("-o", "--output", required=True, help="image to write (.png, .pdf, .svg)")
    a.add_argument("--layer", type=int, default=None,
                   help="layer of the image (default: the layer of largest mean energy)")
    a.add_argument("--geometry", default=None,
                   help="geometry preset name or binning XML file (default: detect)")
    a.add_argument("--chunk-size", type=int, default=10_000,
                   help="showers read at a time (default: 10000)")
    a.add_argument("--dpi", type=int, default=150, help="resolution of raster images")
    a.set_defaults(func=run_average)
    p.set_defaults(func=_needs_kind, _parser=p)


def _needs_kind(args: argparse.Namespace) -> int:
    args._parser.print_help()
    return 2


def run_average(args: argparse.Namespace) -> int:
    from ..errors import CaloforgeError
    from ..evaluation.plots import average_shower_figure
    from ..io import atomic_path, resolve_geometry_arg

    geometry = resolve_geometry_arg(args.geometry)
    if args.chunk_size < 1:
        raise CaloforgeError("--chunk-size must be >= 1")
    fig = average_shower_figure(args.file, geometry, layer=args.layer,
                                chunk_size=args.chunk_size)
    fmt = args.output.rsplit(".", 1)[-1].lower() if "." in args.output else "png"
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise CaloforgeError(f"cannot write {args.output!r}: unknown image format {fmt!r} "
                             f"(known: {', '.join(sorted(supported))})")
    # Written beside the target and renamed, so an interrupted run leaves no broken image.
    with atomic_path(args.output, suffix="." + fmt) as tmp:
        fig.savefig(tmp, dpi=args.dpi, format=fmt)
    print(f"wrote {args.output}")
    return 0
