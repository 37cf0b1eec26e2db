"""Training throughput per stage: showers per second of every trained stage of a preset.

Usage::

    python benchmarks/bench_training.py                        # default presets, CPU (+ GPU)
    python benchmarks/bench_training.py --presets calovq-ds2 calovq-ds2-tiny --steps 50
    python benchmarks/bench_training.py --threads 2 --json bench_training.json

For each preset it simulates a small training file with the embedded reference simulator
(GFlash; voxels of the preset's geometry, or ILD-like point clouds), then trains every
stage that the shared Trainer runs, one after another in one run directory, for
``--warmup`` + ``--steps`` steps at the preset's own batch size and settings (precision,
optimizer, ...). Per stage it reports

* showers/s: training samples per second over the ``--steps`` steps after the warm-up
  (the Trainer's own ``samples_per_s`` log entry, which excludes start-up);
* start-up: the rest of the stage's wall time: reading the file, building the stage's data
  (e.g. Calo-VQ stage 2 encodes every training shower with the frozen stage 1), the
  warm-up steps excepted, and saving;
* the size of the stage's weight file (parameters and buffers).

Stages that fit something with their own loop (calibrations, the bespoke solver) are
listed without a rate. Every preset is timed on the CPU and, when CUDA is available, on
the GPU (``--devices``). Paper-size presets get ``--paper-steps`` steps on the CPU, where
one step can take seconds. The machine and the load average are printed beside the
figures; run nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from caloforge.configs import get_preset
from caloforge.evaluation.timing import machine_description
from caloforge.pipelines.registry import load_builtin_pipelines, pipeline_for_config
from caloforge.pipelines.staged import train_pipeline
from caloforge.simulation import point_clouds_to_file, simulate_to_file
from caloforge.training.speed import effective_amp

DEFAULT_PRESETS = (
    "calovq-ds2-tiny", "calovq-ds2",
    "calodream-ds2-tiny", "calodream-ds2",
    "calolatent-ds2-tiny", "calolatent-ds2",
    "caloclouds2-ild-tiny", "caloclouds2-ild",
)


def _is_paper(preset: str) -> bool:
    return not preset.endswith("-tiny")


def _training_file(spec, config, n: int, workdir: Path) -> Path:
    """A GFlash training file for the preset's geometry (cached per geometry)."""
    if spec.data_kind == "points":
        path = workdir / f"points_{n}.h5"
        if not path.exists():
            point_clouds_to_file(path, n, seed=1, progress=False)
    else:
        path = workdir / f"{config.geometry}_{n}.h5"
        if not path.exists():
            simulate_to_file(path, config.geometry, n, seed=1, progress=False)
    return path


def _trained_stages(spec, config) -> list[str]:
    """Stages the shared Trainer runs (their settings live in ``config.training``)."""
    names = {f.name for f in dataclasses.fields(config.training)}
    return [s for s in spec.active_stages(config) if s in names]


def _short_schedule(config, stage: str, warmup: int, steps: int, amp: str | None,
                    compile_: bool) -> Any:
    tc = getattr(config.training, stage)
    changes = dict(max_steps=warmup + steps, log_every=warmup, val_every=0, val_batches=1,
                   checkpoint_every=0)
    if amp is not None:
        changes["amp"] = amp
    if compile_:
        changes["compile"] = True
    new = dataclasses.replace(tc, **changes)  # re-validates, scales the warm-up down
    setattr(config.training, stage, new)
    return new


def _stage_rate(out: Path, stage: str, batch: int, warmup: int) -> tuple[float, float]:
    """(showers/s after the warm-up, seconds of the whole training loop) from the log."""
    recs = [json.loads(line) for line in (out / f"{stage}.log.jsonl").read_text().splitlines()
            if line.strip()]
    recs = [r for r in recs if "samples_per_s" in r]
    loop_s, prev = 0.0, 0
    for r in recs:
        loop_s += (r["step"] - prev) * batch / r["samples_per_s"]
        prev = r["step"]
    return recs[-1]["samples_per_s"], loop_s


def _stored_weights(out: Path, stage: str) -> int:
    """Numbers in the stage's weight file (parameters and buffers such as EMA statistics)."""
    from safetensors import safe_open

    n = 0
    with safe_open(str(out / f"{stage}.safetensors"), "pt") as f:
        for k in f.keys():  # noqa: SIM118 (safe_open is not iterable)
            size = 1
            for d in f.get_slice(k).get_shape():
                size *= d
            n += size
    return n


def bench_preset(preset: str, device: str, *, showers: int, warmup: int, steps: int,
                 workdir: Path, amp: str | None, compile_: bool) -> list[dict[str, Any]]:
    config = get_preset(preset)
    spec = pipeline_for_config(config)
    data = _training_file(spec, config, showers, workdir)
    trained = set(_trained_stages(spec, config))
    rows = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        out = Path(tmp) / preset
        for stage in spec.active_stages(config):
            if stage not in trained:
                rows.append(dict(preset=preset, device=device, stage=stage, batch=None,
                                 showers_per_s=None, startup_s=None, params=None,
                                 note="fit with its own loop (not timed)"))
                continue
            tc = _short_schedule(config, stage, warmup, steps, amp, compile_)
            t0 = time.perf_counter()
            train_pipeline(config, data, out, stages=(stage,), progress=False, device=device)
            wall = time.perf_counter() - t0
            rate, loop_s = _stage_rate(out, stage, tc.batch_size, warmup)
            rows.append(dict(preset=preset, device=device, stage=stage, batch=tc.batch_size,
                             showers_per_s=rate, startup_s=max(wall - loop_s, 0.0),
                             params=_stored_weights(out, stage), steps=steps,
                             amp=effective_amp(tc.amp, torch.device(device)),
                             compile=tc.compile, note=""))
            print(f"  {preset} {stage} on {device}: {rate:,.0f} showers/s "
                  f"(batch {tc.batch_size}), start-up {rows[-1]['startup_s']:.1f} s",
                  file=sys.stderr, flush=True)
    return rows


def format_table(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "Training throughput per stage (shared Trainer)",
        "machine: {} ({} usable cores, {} GiB), GPU: {}, torch {} ({} CPU threads), "
        "caloforge {}; load average before {}, after {}".format(
            m["cpu_model"], m["cpu_usable"], m["memory_gib"], m["gpu"] or "none", m["torch"],
            result["torch_threads"], m["caloforge"], result["load_before"],
            result["load_after"]),
        f"training file: {result['showers']} GFlash showers per geometry; warm-up "
        f"{result['warmup']} steps, then the timed steps",
        "",
        "| preset | device | stage | stored weights | batch | steps | precision | showers/s | "
        "start-up s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        if r["showers_per_s"] is None:
            lines.append(f"| {r['preset']} | {r['device']} | {r['stage']} | - | - | - | - | "
                         f"{r['note']} | - |")
            continue
        prec = {"none": "fp32"}.get(r["amp"], r["amp"]) + (" + compile" if r["compile"] else "")
        lines.append(f"| {r['preset']} | {r['device']} | {r['stage']} | {r['params']:,} | "
                     f"{r['batch']} | {r['steps']} | {prec} | {r['showers_per_s']:,.0f} | "
                     f"{r['startup_s']:.1f} |")
    lines += ["", "showers/s: training samples per second after the warm-up (Trainer log); "
              "start-up: the rest of the stage's wall time (data build, set-up, warm-up "
              "excepted, save); precision: what autocast ran in (fp32 on a CPU whatever `amp` "
              "says)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--presets", nargs="+", default=list(DEFAULT_PRESETS))
    p.add_argument("--devices", nargs="+", default=None,
                   help="cpu and/or cuda (default: cpu, plus cuda when available)")
    p.add_argument("--showers", type=int, default=5000,
                   help="showers in the simulated training file (default 5000)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per stage")
    p.add_argument("--steps", type=int, default=20, help="timed steps per stage")
    p.add_argument("--paper-steps", type=int, default=3,
                   help="timed steps of paper-size presets on the CPU (default 3)")
    p.add_argument("--amp", choices=("auto", "none", "bf16", "fp16"), default=None,
                   help="override every stage's precision (default: the preset's)")
    p.add_argument("--compile", action="store_true", help="torch.compile every training step")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--workdir", default=None, help="where the training files go (kept)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_builtin_pipelines()
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_training_"))
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    rows: list[dict[str, Any]] = []
    for device in devices:
        for preset in args.presets:
            steps = args.paper_steps if device == "cpu" and _is_paper(preset) else args.steps
            rows += bench_preset(preset, device, showers=args.showers, warmup=args.warmup,
                                 steps=steps, workdir=workdir, amp=args.amp,
                                 compile_=args.compile)
    result = {
        "benchmark": "training throughput",
        "machine": machine_description(),
        "torch_threads": torch.get_num_threads(),
        "load_before": load_before,
        "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "showers": args.showers,
        "warmup": args.warmup,
        "rows": rows,
    }
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
