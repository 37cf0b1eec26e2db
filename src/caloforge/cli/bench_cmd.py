"""``caloforge bench CKPT``: time a trained model per shower."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="time generation per shower",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  caloforge bench calodream-ds2-tiny --batch-sizes 1,100,1000 --threads 1,2\n"
        "  caloforge bench model/ --solver bns-8 --json bench.json",
        description="Time a model's generation per shower at several batch sizes and thread "
        "counts (and on GPU), after warm-up, median of repeats, with the embedded reference "
        "simulator's time per shower on the same machine as the denominator.")
    p.add_argument("model", help="checkpoint directory or shipped model name")
    p.add_argument("--batch-sizes", "--batch-size", dest="batch_sizes", type=_ints,
                   default=[1, 100, 1000],
                   help="showers per call to time, comma-separated (default: 1,100,1000)")
    p.add_argument("--threads", type=_ints, default=None,
                   help="CPU thread counts (default: 1 and all cores)")
    p.add_argument("--device", action="append", default=None,
                   help="cpu and/or cuda (default: cpu, plus cuda when available)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--solver", default=None,
                   help="ODE solver of flow-based models (e.g. rk4-20, bns-8); default: the model's")
    p.add_argument("--no-reference", action="store_true",
                   help="skip timing the reference simulator")
    p.add_argument("-o", "--json", default=None, help="write the result here (JSON)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..errors import ConfigError
    from ..evaluation.timing import time_generator
    from ..pipelines import load_generator
    from ..simulation import simulate_point_clouds, simulate_showers
    from ._common import check_device

    for device in args.device or ():  # before loading and timing anything
        check_device(device, option="--device")
    model = load_generator(args.model)
    if args.solver is not None:
        if not hasattr(model, "set_solver"):
            raise ConfigError(f"--solver: {args.model} is not a flow-based model (no ODE solver)")
        model.set_solver(args.solver)
    print(f"timing {model} ...", flush=True)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    placed = {}

    def gen(e: torch.Tensor):
        dev = str(e.device)
        if placed.get("device") != dev:
            model.to(e.device)
            placed["device"] = dev
        with torch.inference_mode():
            out = model.sample(e, batch_size=len(e))
        return out

    points = getattr(model, "data_kind", "voxels") == "points"
    reference = None
    if not args.no_reference:
        geometry = model.geometry

        def reference(e):
            if points:
                return simulate_point_clouds(energies=e, geometry=geometry, seed=0)
            return simulate_showers(geometry, energies=e, seed=0).showers

    # point-cloud models: the paper's protocol, uniform in their training range
    lo_hi = getattr(model, "training_energy_range", None) if points else None
    spectrum = dict(energy_range=lo_hi, log_uniform=False) if lo_hi else {}

    result = time_generator(gen, batch_sizes=args.batch_sizes, thread_counts=args.threads,
                            devices=devices, n_repeats=args.repeats, reference=reference,
                            reference_name="GFlash reference simulator",
                            name=str(args.model), json_path=args.json, **spectrum)
    print(result.to_table())
    return 0
