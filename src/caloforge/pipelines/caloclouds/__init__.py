"""CaloClouds II: point-cloud showers from a Shower Flow, an EDM-diffused PointWise Net,
calibrations and one-step consistency distillation (docs/caloclouds.md).

Stages, in order: ``showerflow`` (the 65 shower summaries given E_inc), ``diffusion``
(the PointWise Net), ``calibrate`` (the N calibration and the radial map of the
diffusion model), ``distill`` (consistency distillation of the diffusion model) and
``calibrate_distilled`` (the same two fits for the distilled model).
"""

from ..registry import PipelineSpec, StageSpec, register_pipeline_spec
from .config import CaloClouds2Config, CaloClouds2Training, DistillationSettings, EDMSettings
from .model import CaloClouds2
from .presets import CALOCLOUDS_PRESETS
from .training import (
    build_calibrate_distilled_stage,
    build_calibrate_stage,
    build_diffusion_stage,
    build_distill_stage,
    build_showerflow_stage,
    prepare,
    trainer_config,
)

__all__ = [
    "CALOCLOUDS_PRESETS",
    "CALOCLOUDS_SPEC",
    "CaloClouds2",
    "CaloClouds2Config",
    "CaloClouds2Training",
    "DistillationSettings",
    "EDMSettings",
    "micro_overrides",
]


def micro_overrides(steps: int = 6) -> list[str]:
    """``--set`` overrides that shrink ``caloclouds2-ild-tiny`` so that training every
    stage and sampling take seconds (for framework tests of the whole pipeline)."""
    sets = ["shower_flow.blocks=1", "shower_flow.couplings=1", "shower_flow.hidden=16",
            "shower_flow.spline_hidden=8", "pointwise.widths=[8, 8]", "pointwise.time_dim=8",
            "pointwise.fourier_frequencies=4", "edm.points_per_shower=16",
            "calibration_showers=40", "sampler=heun-3", "max_points=3000"]
    for stage in ("showerflow", "diffusion", "distill"):
        sets += [f"training.{stage}.max_steps={steps}", f"training.{stage}.batch_size=8",
                 f"training.{stage}.checkpoint_every=2", f"training.{stage}.val_every=0",
                 f"training.{stage}.log_every=1"]
    return sets


def _migrate(body: dict, version: int) -> dict:
    """Upgrade a stored config to the current layout.

    1 -> 2: the radial map (``radial_map_bins``, ``radial_map_quantiles``); calibration
    stages fitted before it hold none, which ``radial_map_bins = 0`` says; and the
    random square symmetry of step 11, off so that such a model generates as before.
    """
    if version <= 1:
        body.setdefault("radial_map_bins", 0)
        body.setdefault("radial_map_quantiles", 64)
        body.setdefault("symmetrise", False)
    return body


CALOCLOUDS_SPEC = register_pipeline_spec(PipelineSpec(
    name="caloclouds",
    config_type=CaloClouds2Config,
    stages=(
        StageSpec("showerflow", build_showerflow_stage,
                  description="Shower Flow: N, E_vis, CoG, per-layer points and energies | E"),
        StageSpec("diffusion", build_diffusion_stage,
                  description="PointWise Net with EDM diffusion, conditioned on E and N"),
        StageSpec("calibrate", build_calibrate_stage, requires=("showerflow", "diffusion"),
                  description="N calibration and radial map of the diffusion model",
                  enabled=lambda c: c.calibration_showers > 0),
        StageSpec("distill", build_distill_stage, requires=("diffusion",),
                  description="consistency distillation: one-step sampling"),
        StageSpec("calibrate_distilled", build_calibrate_distilled_stage,
                  requires=("showerflow", "distill"),
                  description="N calibration and radial map of the distilled model",
                  enabled=lambda c: c.calibration_showers > 0),
    ),
    generator=CaloClouds2,
    trainer_config=trainer_config,
    presets=CALOCLOUDS_PRESETS,
    prepare=prepare,
    config_version=2,
    migrate=_migrate,
    description="CaloClouds II: Shower Flow + EDM point diffusion + calibrations + CM",
    data_kind="points",
))
