"""CaloDREAM: autoregressive CFM energy network + ViT shape network (full space or VAE
latent) + bespoke solvers (docs/calodream.md).

Stages, in order: ``energy``, ``vae`` (latent space only), ``shape``, ``bns``,
``calibration`` (the fitted voxel-energy map, docs/calibration.md).
"""

from ..registry import PipelineSpec, StageSpec, register_pipeline_spec
from ..voxel_calibration import (
    INCIDENT_BINNING,
    NO_CALIBRATION,
    NO_HIT_COUNT_MAP,
    calibration_stage,
)
from .config import BNSConfig, CaloDREAMConfig, CaloDREAMTraining
from .model import CaloDREAM, build_calodream_models
from .presets import CALODREAM_PRESETS
from .stages import FlowMatchingStage, VAEStage
from .training import (
    build_bns_stage,
    build_energy_stage,
    build_shape_stage,
    build_vae_stage,
    prepare,
    trainer_config,
)
from .transforms import CaloDREAMTransforms

__all__ = [
    "BNSConfig",
    "CALODREAM_PRESETS",
    "CALODREAM_SPEC",
    "CaloDREAM",
    "CaloDREAMConfig",
    "CaloDREAMTraining",
    "CaloDREAMTransforms",
    "FlowMatchingStage",
    "VAEStage",
    "build_calodream_models",
    "micro_overrides",
]


def micro_overrides(steps: int = 6) -> list[str]:
    """``--set`` overrides that shrink ``calodream-ds2-tiny`` to a seconds-long training
    (the framework's tests train every pipeline with them)."""
    sets = ["energy.n_decoder_layers=1", "energy.ff_dim=32", "energy.head_hidden=16",
            "energy.head_layers=2", "shape.dim=144", "shape.n_heads=2", "shape.mlp_hidden=16",
            "shape.n_blocks=1", "energy_solver=euler-2", "shape_solver=euler-3",
            "bns.n_steps=2", "bns.max_iters=3", "bns.patience=2", "bns.batch_size=4",
            "bns.reference=midpoint-4", "calibration.showers=40"]
    for stage in ("energy", "shape"):
        sets += [f"training.{stage}.max_steps={steps}", f"training.{stage}.batch_size=16",
                 f"training.{stage}.checkpoint_every=2", f"training.{stage}.val_every=0"]
    return sets


def _migrate(body: dict, version: int) -> dict:
    """Upgrade a stored config to the current layout.

    1 -> 2: the voxel calibration (``calibration``); a model stored before it has no such
    stage, which ``calibration.showers = 0`` says.
    2 -> 3: the voxel map's bins (``calibration.binning``); a map stored before
    them is binned in ln E_inc.
    3 -> 4: the hit-count map (``calibration.hit_count_bins``); a map stored
    before it leaves each layer's number of hits to the voxel map.
    """
    if version <= 1:
        body.setdefault("calibration", dict(NO_CALIBRATION))
    if version <= 2:
        body["calibration"].setdefault("binning", INCIDENT_BINNING)
    if version <= 3:
        body["calibration"].setdefault("hit_count_bins", NO_HIT_COUNT_MAP)
    return body


CALODREAM_SPEC = register_pipeline_spec(PipelineSpec(
    name="calodream",
    config_type=CaloDREAMConfig,
    stages=(
        StageSpec("energy", build_energy_stage,
                  description="autoregressive CFM energy network p(u | E_inc)"),
        StageSpec("vae", build_vae_stage, enabled=lambda c: c.space == "latent",
                  description="VAE of the latent path (BCE + beta KL)"),
        StageSpec("shape", build_shape_stage, requires=("vae",),
                  description="ViT velocity field p(x | E_inc, u), voxels or VAE latent"),
        StageSpec("bns", build_bns_stage, requires=("energy", "shape"),
                  enabled=lambda c: c.bns.enabled,
                  description="bespoke non-stationary solver of the shape network"),
        calibration_stage(requires=("energy", "vae", "shape", "bns")),
    ),
    generator=CaloDREAM,
    trainer_config=trainer_config,
    presets=CALODREAM_PRESETS,
    prepare=prepare,
    config_version=4,
    migrate=_migrate,
    description="CaloDREAM: transfusion energy network + ViT shape network + bespoke solvers",
))
