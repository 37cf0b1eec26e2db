"""``caloforge train PRESET --data FILE --out DIR``: train a pipeline (or one stage of it)."""

from __future__ import annotations

import argparse

__all__ = ["register", "build_config"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a model from a preset on a shower file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train the stages of a pipeline preset (e.g. calovq-ds2-tiny) on a "
        "CaloChallenge file. Each stage trains alone and saves into the output directory; "
        "run under `torchrun --nproc_per_node N -m caloforge train ...` for DDP.",
        epilog="example:\n  caloforge train calodream-ds2-tiny --data train.h5 -o model/ "
        "--set training.shape.max_steps=2000\n  caloforge train --list")
    p.add_argument("preset", nargs="?", help="preset name (see --list)")
    p.add_argument("--data", help="training file (CaloChallenge HDF5)")
    p.add_argument("-o", "--out", "--output", help="checkpoint directory")
    p.add_argument("--stage", action="append", default=None,
                   help="train only this stage (repeatable; default: all, in order)")
    p.add_argument("--config", action="append", default=[], metavar="TOML",
                   help="TOML file of overrides (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override one setting, e.g. --set training.<stage>.max_steps=500")
    p.add_argument("--resume", action="store_true",
                   help="continue interrupted stages from their last checkpoint")
    p.add_argument("--device", default=None, help="cpu, cuda or auto (default: the preset's)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of every stage's training and of the split (default: the preset's)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: the CPUs this process may use)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--list", action="store_true", help="list the pipelines, stages and presets")
    p.set_defaults(func=run)


def build_config(preset: str, toml_files: list[str], overrides: list[str]):
    """The preset's configuration with TOML files and ``KEY=VALUE`` overrides applied."""
    from ..configs import get_preset, override_config

    return override_config(get_preset(preset), toml_files=toml_files, overrides=overrides)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..pipelines import get_pipeline, registered_pipelines

    if args.list:
        for name in registered_pipelines():
            spec = get_pipeline(name)
            print(f"{name}: {spec.description}")
            for s in spec.stages:
                needs = f" (reads {', '.join(s.requires)})" if s.requires else ""
                print(f"  stage {s.name:14s} {s.description}{needs}")
            for preset, (_, doc) in spec.presets.items():
                print(f"  preset {preset:26s} {doc}")
        return 0
    missing = [f"--{k}" for k in ("data", "out") if getattr(args, k) is None]
    if args.preset is None:
        missing.insert(0, "PRESET")
    if missing:
        raise ConfigError(f"missing {', '.join(missing)} (see caloforge train --help)")
    from ..io import check_input_path
    from ..pipelines import pipeline_for_config, train_pipeline
    from ..threads import set_threads
    from ._common import check_device, check_output_dir

    config = build_config(args.preset, args.config, args.overrides)
    spec = pipeline_for_config(config)
    stages = tuple(args.stage) if args.stage else spec.active_stages(config)
    bad = [s for s in stages if s not in spec.stage_names]
    if bad:
        raise ConfigError(f"unknown stage(s) {bad}; {args.preset} has "
                          f"{', '.join(spec.stage_names)}")
    check_input_path(args.data, option="--data")
    check_output_dir(args.out, option="-o")
    if args.device not in (None, "auto"):
        check_device(args.device, option="--device")
    set_threads(args.threads)
    model = train_pipeline(config, args.data, args.out, stages=stages, resume=args.resume,
                           progress=not args.no_progress, device=args.device, seed=args.seed)
    print(f"trained {', '.join(stages)} of {args.preset} into {args.out}")
    if model is not None:
        print(model)
    return 0
