"""How CaloClouds II's stages build their data for the generic staged trainer.

Stages, in order (docs/caloclouds.md, 'The system'):

* ``showerflow``: the Shower Flow on the 65 summaries of every training shower, computed
  once in a streaming pass over the file;
* ``diffusion``: the PointWise Net on padded batches read from the file per step;
* ``calibrate``: the N calibration of the diffusion model (§3; docs/caloclouds.md, A7):
  p_data fitted on reference showers of the training split, p_gen on as many showers
  generated without the N calibration for the same energies; and the radial map (ours,
  docs/caloclouds.md, 'The radial map') fitted on the same generated showers against the
  reference ones, applied before p_gen is fitted (it changes the cell count); both
  stored as weights of the stage;
* ``distill``: consistency distillation of the diffusion model's EMA weights;
* ``calibrate_distilled``: the same N calibration for the distilled model (the paper
  refits p_gen for every model).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ...checkpoints import save_checkpoint
from ...io import PointCloudData
from ...models import build_model
from ...training import TensorDictDataset
from ..staged import StageBuild, StageContext
from .calibrations import NCalibration, check_n_calibration, count_cells, fit_cubic
from .config import CaloClouds2Config
from .data import PointCloudShowers, PointNormaliser, read_showers
from .features import shower_flow_context, shower_flow_features
from .model import (
    CaloClouds2,
    FlowStandardisation,
    calibration_state,
    edm_preconditioning,
    flow_scales,
)
from .radial_map import RadialMap, fit_radial_map
from .stages import DiffusionStage, DistillationStage, ShowerFlowStage

__all__ = ["build_calibrate_distilled_stage", "build_calibrate_stage", "build_diffusion_stage",
           "build_distill_stage", "build_showerflow_stage", "prepare", "trainer_config"]

_FEATURE_CHUNK = 5_000


def trainer_config(config: CaloClouds2Config, stage: str):
    if stage.startswith("calibrate"):
        # calibrations train nothing; their seed is the diffusion stage's
        return config.training.diffusion
    return getattr(config.training, stage)


def prepare(ctx: StageContext) -> None:
    """Record the training energy range (generation warns outside it)."""
    e = ctx.energies[ctx.train_idx]
    ctx.state["transforms"] = {"caloclouds": {
        "energy_range_mev": [float(e.min()), float(e.max())]}}


def _normaliser(ctx: StageContext) -> PointNormaliser:
    c: CaloClouds2Config = ctx.config
    return PointNormaliser.for_geometry(ctx.geometry, c.e_max_mev, c.max_points)


def _features(ctx: StageContext) -> torch.Tensor:
    """The 65 Shower Flow inputs of every shower of the file, (N, 65), streamed."""
    from ...io import iter_point_clouds

    n = len(ctx.energies)
    parts, seen = [], 0
    for chunk in iter_point_clouds(ctx.data_path, chunk_size=_FEATURE_CHUNK):
        chunk = chunk[: n - seen] if seen + len(chunk) > n else chunk
        parts.append(shower_flow_features(chunk, flow_scales(ctx.config),
                                          n_layers=ctx.geometry.n_layers))
        seen += len(chunk)
        if seen >= n:
            break
    return torch.from_numpy(np.concatenate(parts).astype(np.float32))


def build_showerflow_stage(ctx: StageContext) -> StageBuild:
    config: CaloClouds2Config = ctx.config
    flow = build_model("shower_flow", config.shower_flow)
    tr, va = ctx.train_idx, ctx.val_idx
    features = _features(ctx)
    scaling = FlowStandardisation.fit(features[tr])
    ctx.state["transforms"]["shower_flow"] = scaling.state()
    x = scaling.encode(features)
    context = torch.as_tensor(shower_flow_context(ctx.energies.numpy()), dtype=torch.float32)
    train = TensorDictDataset(x=x[tr], context=context[tr])
    val = TensorDictDataset(x=x[va], context=context[va]) if len(va) else None
    return StageBuild(ShowerFlowStage(flow), train, val)


def _point_sets(ctx: StageContext, stage: str) -> tuple[PointCloudShowers, PointCloudShowers | None]:
    config: CaloClouds2Config = ctx.config
    norm = _normaliser(ctx)
    jitter = ctx.geometry.cell_mm / config.subcells if config.jitter else 0.0
    seed = ctx.trainer_configs[stage].seed
    train = PointCloudShowers(ctx.data_path, ctx.train_idx, norm, jitter_mm=jitter,
                              points_per_shower=config.edm.points_per_shower, seed=seed)
    val = None
    if len(ctx.val_idx):
        # validation: every point, no jitter (a fixed set of numbers across steps)
        val = PointCloudShowers(ctx.data_path, ctx.val_idx, norm,
                                points_per_shower=config.edm.points_per_shower, seed=seed + 1)
    return train, val


def build_diffusion_stage(ctx: StageContext) -> StageBuild:
    config: CaloClouds2Config = ctx.config
    net = build_model("pointwise_net", config.pointwise)
    e = config.edm
    stage = DiffusionStage(net, edm_preconditioning(config), e.padding == "masked",
                           ema_max=e.ema_max, ema_power=e.ema_power)
    return StageBuild(stage, *_point_sets(ctx, "diffusion"))


def build_distill_stage(ctx: StageContext) -> StageBuild:
    config: CaloClouds2Config = ctx.config
    teacher = build_model("pointwise_net", config.pointwise)
    ctx.frozen("diffusion", {"pointwise_ema": teacher})  # §3.2: the teacher is the EMA
    d = config.distillation
    stage = DistillationStage(teacher, edm_preconditioning(config), d.boundaries, d.target_ema,
                              config.edm.rho, config.edm.padding == "masked")
    return StageBuild(stage, *_point_sets(ctx, "distill"))


def _partial_model(ctx: StageContext, sampler: str) -> CaloClouds2:
    """The generator from the stages trained so far (no N calibration yet)."""
    config: CaloClouds2Config = ctx.config
    ckpt = ctx.checkpoint()
    flow = build_model("shower_flow", config.shower_flow)
    ckpt.load_modules("showerflow", {"shower_flow": flow})
    pointwise = build_model("pointwise_net", config.pointwise)
    ckpt.load_modules("diffusion", {"pointwise_ema": pointwise})
    distilled = None
    if "distill" in ckpt.stages:
        distilled = build_model("pointwise_net", config.pointwise)
        ckpt.load_modules("distill", {"target": distilled})
    model = CaloClouds2(config, ctx.geometry, flow, pointwise, distilled,
                        transforms=ckpt.manifest.get("transforms", {}))
    model.set_solver(sampler)
    return model


def _calibrate(ctx: StageContext, stage: str, sampler: str) -> None:
    config: CaloClouds2Config = ctx.config
    seed = ctx.trainer_configs[stage].seed
    rng = np.random.default_rng([seed, 7])
    n = min(config.calibration_showers, len(ctx.train_idx))
    rows = np.sort(rng.choice(ctx.train_idx, size=n, replace=False))
    reference = read_showers(ctx.data_path, rows, ctx.geometry)
    thr = config.calibration_threshold_mev
    # p_data: cells(points) on the reference (fit_p_data); p_gen: points(cells) on the
    # uncalibrated model (fit_p_gen), with the cell counts kept for the check below
    ref_cells = count_cells(reference, ctx.geometry, thr)
    p_data = fit_cubic(reference.n_points, ref_cells)
    model = _partial_model(ctx, sampler)
    generated = model.sample(torch.from_numpy(reference.incident_energies.astype(np.float64)),
                             batch_size=256, calibrate_n=False,
                             generator=torch.Generator().manual_seed(seed))
    modules = {}
    if config.radial_map_bins > 0:
        radial = _fit_radial_map(ctx, reference, generated, rng)
        generated = radial.apply_to_clouds(generated)
        modules["radial_map"] = radial.state()
    gen_cells = count_cells(generated, ctx.geometry, thr)
    p_gen = fit_cubic(gen_cells, generated.n_points)
    fit = NCalibration(p_data=tuple(p_data), p_gen=tuple(p_gen))
    # a model whose cell count stops growing with its point count (e.g. a one-step sampler
    # whose points pile up in few cells) gets a cubic p_gen that turns over: say so
    check = check_n_calibration(fit, reference.n_points, ref_cells, gen_cells,
                                max_points=config.max_points)
    problem = check.problem()
    if problem is not None:
        warnings.warn(f"{stage}: the N calibration of the {model.model_kind} model "
                      f"({model.sampler.name}) is unsound: {problem}; the model cannot "
                      "match the reference's cell count (docs/caloclouds.md, "
                      "'Calibrations')", stacklevel=2)
    save_checkpoint(ctx.out_dir, stage, {"n_calibration": calibration_state(fit), **modules},
                    **ctx.checkpoint_meta(),
                    extra={"showers": int(n), "sampler": model.sampler.name,
                           "threshold_mev": float(thr), "check": check.to_dict()})


def _fit_radial_map(ctx: StageContext, reference: PointCloudData, generated: PointCloudData,
                    rng: np.random.Generator) -> RadialMap:
    """The radial map of ``generated`` onto ``reference``, whose points get the training
    jitter first (the distribution the network learnt, docs/caloclouds.md, A21)."""
    config: CaloClouds2Config = ctx.config
    points = np.array(reference.points, dtype=np.float32)
    if config.jitter:
        width = ctx.geometry.cell_mm / config.subcells
        points[:, :2] += (rng.random((len(points), 2), dtype=np.float32) - 0.5) * width
    jittered = PointCloudData(reference.incident_energies, points, reference.n_points,
                              reference.geometry)
    return fit_radial_map(generated, jittered, n_layers=ctx.geometry.n_layers,
                          n_bins=config.radial_map_bins,
                          n_quantiles=config.radial_map_quantiles,
                          axis_xy=(config.axis_x_mm, config.axis_y_mm))


def build_calibrate_stage(ctx: StageContext) -> None:
    _calibrate(ctx, "calibrate", ctx.config.sampler if not ctx.config.sampler.startswith(
        "consistency") else "heun-13")


def build_calibrate_distilled_stage(ctx: StageContext) -> None:
    s = ctx.config.sampler
    _calibrate(ctx, "calibrate_distilled", s if s.startswith("consistency") else "consistency-1")
