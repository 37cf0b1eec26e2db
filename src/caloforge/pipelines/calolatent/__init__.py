"""CaloLatent: layer-energy diffusion, a 3-D VAE and score-based diffusion in its latent
space (docs/calolatent.md).

Stages, in the paper's order: ``layer`` (the layer-energy model) and ``vae`` (the
autoencoder), independent of each other, then ``latent`` (the latent score model on the
frozen encoder's draws; the baseline VAE, which samples z ~ N(0, I), has no such stage);
then ``decoder_noise`` (not in the paper: the fitted width of the decoder's Gaussian, so
that generation samples it instead of decoding its mean).
"""

from ..registry import PipelineSpec, StageSpec, register_pipeline_spec
from ..voxel_calibration import (
    INCIDENT_BINNING,
    NO_CALIBRATION,
    NO_HIT_COUNT_MAP,
    calibration_stage,
)
from .config import CaloLatentConfig, CaloLatentTraining
from .decoder_noise import DecoderNoise, fit_decoder_noise
from .model import CaloLatent, CaloLatentTransforms, build_calolatent_models
from .presets import CALOLATENT_PRESETS
from .stages import CaloLatentScoreStage, CaloLatentVAEStage, clip_each_gradient, vae_loss
from .training import (
    build_decoder_noise_stage,
    build_latent_stage,
    build_layer_stage,
    build_vae_stage,
    encode_posteriors,
    prepare,
    trainer_config,
)

__all__ = [
    "CALOLATENT_PRESETS",
    "CALOLATENT_SPEC",
    "CaloLatent",
    "CaloLatentConfig",
    "CaloLatentScoreStage",
    "CaloLatentTraining",
    "CaloLatentTransforms",
    "CaloLatentVAEStage",
    "DecoderNoise",
    "build_calolatent_models",
    "clip_each_gradient",
    "encode_posteriors",
    "fit_decoder_noise",
    "micro_overrides",
    "vae_loss",
]


def micro_overrides(steps: int = 6) -> list[str]:
    """``--set`` overrides that shrink ``calolatent-ds2-tiny`` so that training all three
    stages and sampling take seconds (for framework tests of the whole pipeline)."""
    sets = ["vae.stem_channels=2", "vae.widths=[2, 4]", "vae.bottleneck_width=8",
            "vae.cond_dim=8", "layer_model.hidden_dim=16", "layer_model.embed_dim=8",
            "layer_model.time_hidden=16", "latent_model.hidden_dim=16",
            "latent_model.embed_dim=8", "latent_model.time_hidden=16",
            "layer_sampler=em-4", "latent_sampler=em-4", "decoder_noise_showers=40",
            "calibration.showers=40"]
    for stage in ("layer", "vae", "latent"):
        sets += [f"training.{stage}.max_steps={steps}", f"training.{stage}.batch_size=16",
                 f"training.{stage}.checkpoint_every=2", f"training.{stage}.val_every=0",
                 f"training.{stage}.log_every=1"]
    return sets


def _migrate(body: dict, version: int) -> dict:
    """Upgrade a stored config to the current layout.

    1 -> 2: the decoder's fitted width (``decoder_noise_*``); a model stored before it has
    no such stage and decodes the mean, which ``decoder_noise_bins = 0`` says.
    2 -> 3: the voxel calibration (``calibration``); a model stored before it has no such
    stage, which ``calibration.showers = 0`` says.
    3 -> 4: the voxel map's bins (``calibration.binning``); a map stored before
    them is binned in ln E_inc.
    4 -> 5: the hit-count map (``calibration.hit_count_bins``); a map stored
    before it leaves each layer's number of hits to the voxel map.
    """
    if version <= 1:
        body.setdefault("decoder_noise_bins", 0)
        body.setdefault("decoder_noise_showers", 20000)
    if version <= 2:
        body.setdefault("calibration", dict(NO_CALIBRATION))
    if version <= 3:
        body["calibration"].setdefault("binning", INCIDENT_BINNING)
    if version <= 4:
        body["calibration"].setdefault("hit_count_bins", NO_HIT_COUNT_MAP)
    return body


CALOLATENT_SPEC = register_pipeline_spec(PipelineSpec(
    name="calolatent",
    config_type=CaloLatentConfig,
    stages=(
        StageSpec("layer", build_layer_stage,
                  description="layer-energy diffusion model (VP-SDE on the 45 ratios u)"),
        StageSpec("vae", build_vae_stage,
                  description="3-D ResNet VAE of the voxel fractions, conditioned on E_inc, u"),
        StageSpec("latent", build_latent_stage, requires=("vae",),
                  description="latent score model on the frozen encoder's draws",
                  # the baseline VAE samples z ~ N(0, I): no latent model
                  enabled=lambda config: config.latent_prior == "diffusion"),
        StageSpec("decoder_noise", build_decoder_noise_stage, requires=("vae",),
                  description="width of the decoder's Gaussian per voxel (fitted, no training)",
                  enabled=lambda config: config.decoder_noise_bins > 0),
        calibration_stage(requires=("layer", "vae", "latent", "decoder_noise")),
    ),
    generator=CaloLatent,
    trainer_config=trainer_config,
    presets=CALOLATENT_PRESETS,
    prepare=prepare,
    config_version=5,
    migrate=_migrate,
    description="CaloLatent: layer diffusion + 3-D VAE + latent score-based diffusion",
))
