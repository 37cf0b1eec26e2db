"""A readable summary of a trained model: what ``caloforge info MODEL`` prints."""

from __future__ import annotations

import os

from ..checkpoints import load_checkpoint
from .loading import load_generator, resolve_checkpoint
from .registry import get_pipeline

__all__ = ["describe_checkpoint"]


def _geometry_line(geometry) -> str:
    if hasattr(geometry, "n_voxels"):
        return f"{geometry.name} ({geometry.n_voxels} voxels)"
    return (f"{geometry.name} (point clouds; {geometry.n_layers} layers, cells "
            f"{geometry.n_cells_x} x {geometry.n_cells_y} of {geometry.cell_mm} mm)")


def describe_checkpoint(spec: str | os.PathLike) -> str:
    """Pipeline, stages (steps, data fingerprint), parameters and solvers of a checkpoint
    directory or shipped model; the weights are verified on the way."""
    path = resolve_checkpoint(spec)
    ckpt = load_checkpoint(path)
    model = load_generator(path)
    pipeline = get_pipeline(ckpt.config["pipeline"])
    lines = [f"model:      {spec}  ({path})",
             f"pipeline:   {pipeline.name}: {pipeline.description}",
             f"geometry:   {_geometry_line(model.geometry)}",
             f"caloforge:  written by version {ckpt.manifest.get('caloforge_version', '?')}",
             "stages:"]
    width = max([10, *(len(s) for s in ckpt.stages)])
    for stage in ckpt.stages:
        info = ckpt.stage_info(stage)
        step = info.get("step")
        lines.append(f"  {stage:{width}s} step {step if step is not None else '-':>8}  "
                     f"{info.get('size', 0) / 1e6:6.2f} MB  ema={info.get('ema')}  "
                     f"data {str(info.get('data_fingerprint') or '-')[:19]}")
    if hasattr(model, "n_parameters"):
        params = model.n_parameters()
        lines.append("parameters: " + ", ".join(f"{k} {v:,}" for k, v in params.items())
                     + f"  (total {sum(params.values()):,})")
    if hasattr(model, "describe"):
        for k, v in model.describe().items():
            if k != "parameters":
                lines.append(f"{k + ':':11s} {v}")
    lo_hi = getattr(model, "training_energy_range", None)
    if lo_hi:
        lines.append(f"E_inc:      {lo_hi[0]:.4g} - {lo_hi[1]:.4g} MeV (training range)")
    return "\n".join(lines)
