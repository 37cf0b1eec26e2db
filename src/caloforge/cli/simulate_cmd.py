"""``caloforge simulate``: GFlash showers into a CaloChallenge or point-cloud file."""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate", help="simulate electromagnetic showers with the GFlash reference simulator",
        description="Simulate GFlash electromagnetic showers and stream them to an HDF5 file: "
        "voxelised showers on a CaloChallenge geometry (CaloChallenge layout), or with "
        "--points, point clouds in the ILD-like ECAL (showerdata layout). Incident "
        "energies from 10 E_c (a few hundred MeV) up to 10 TeV, the model's range.",
        epilog="example: caloforge simulate --geometry ds2 -n 10000 "
        "--energy log-uniform:1GeV:1TeV --seed 1 -o ds2_gflash.h5",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--geometry", default="ds2",
                   help="ds2, ds3 or ds1-photons (default: ds2); ignored with --points")
    p.add_argument("--particle", default=None,
                   help="electron, positron or photon (default: electron for ds2/ds3, "
                   "photon for ds1-photons and --points)")
    p.add_argument("-n", "--n", "--n-showers", dest="n_showers", type=int, required=True,
                   help="number of showers")
    p.add_argument("--energy", default=None,
                   help="incident-energy spectrum: log-uniform:1GeV:1TeV, "
                   "powers-of-two:256MeV:4TeV, uniform:10GeV:90GeV, fixed:50GeV or file:PATH "
                   "(default: the geometry's, log-uniform:1GeV:1TeV for ds2/ds3, "
                   "uniform:10GeV:90GeV for --points)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("-o", "--output", required=True, help="output HDF5 file")
    p.add_argument("--chunk-size", type=int, default=1024,
                   help="showers per write (default: 1024); does not change the showers")
    p.add_argument("--points", action="store_true",
                   help="write point clouds in the ILD-like ECAL instead of voxels")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of numpy's BLAS pools (default: the CPUs this "
                   "process may use)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io import check_output_path
    from ..simulation import (
        SimulationError,
        parse_energy_spectrum,
        point_clouds_to_file,
        simulate_to_file,
    )
    from ..threads import set_threads

    if args.n_showers < 1:
        raise SimulationError(f"-n must be at least 1, got {args.n_showers}")
    if args.chunk_size < 1:
        raise SimulationError(f"--chunk-size must be at least 1, got {args.chunk_size}")
    # every argument is checked before the first shower: the output path, the spectrum
    # (a file: spectrum is read and validated here, its errors naming --energy)
    check_output_path(args.output)
    if args.energy is not None:
        parse_energy_spectrum(args.energy, option="--energy file:")
    # GFlash is numpy only: torch stays unimported, numpy's pools are limited
    set_threads(args.threads, include_torch=False)
    spectrum = args.energy  # the text, as the user wrote it, is stored in the file
    if args.points:
        point_clouds_to_file(args.output, args.n_showers, spectrum=spectrum, seed=args.seed,
                             particle=args.particle, chunk_size=args.chunk_size,
                             progress=not args.no_progress)
    else:
        simulate_to_file(args.output, args.geometry, args.n_showers, spectrum=spectrum,
                         seed=args.seed, particle=args.particle, chunk_size=args.chunk_size,
                         progress=not args.no_progress)
    print(f"wrote {args.n_showers} showers to {args.output}")
    return 0
