"""Calo-VQ: VQ-VAE(+GAN) with cylindrical convolutions and a GPT prior (docs/calovq.md).

Stages, in order: ``vqvae`` (the autoencoder, Eq. 2-6), then ``gpt`` (the token prior on
the frozen autoencoder's codes).
"""

from ..registry import PipelineSpec, StageSpec, register_pipeline_spec
from .config import CaloVQConfig, CaloVQTraining, GANConfig
from .model import CaloVQ, CaloVQTransforms, build_calovq_models
from .presets import CALOVQ_PRESETS
from .stages import CaloVQAutoencoderStage, CaloVQPriorStage, CodebookCollapseWarning
from .training import (
    build_gpt_stage,
    build_vqvae_stage,
    encode_tokens,
    fit_occupancy,
    init_codebook_from_data,
    prepare,
    trainer_config,
)

__all__ = [
    "CALOVQ_PRESETS",
    "CALOVQ_SPEC",
    "CaloVQ",
    "CaloVQAutoencoderStage",
    "CaloVQConfig",
    "CaloVQPriorStage",
    "CaloVQTraining",
    "CaloVQTransforms",
    "CodebookCollapseWarning",
    "GANConfig",
    "build_calovq_models",
    "encode_tokens",
    "fit_occupancy",
    "init_codebook_from_data",
]


#: codebook fields added in layout 2, with the values earlier layouts always used (the
#: plain VQ-VAE), so that stored models decode exactly as before
_CODEBOOK_DEFAULTS = {"dead_code_decay": 0.99, "codebook_init": "uniform",
                      "codebook_update": "gradient", "codebook_decay": 0.99,
                      "l2_normalize_codes": False}


def _migrate(body: dict, version: int) -> dict:
    """Upgrade a stored config to the current layout.

    0 -> 1: trainer settings as ``stage1``/``stage2`` -> ``training.<stage>``.
    1 -> 2: the codebook options of the autoencoder and the codebook usage warning.
    """
    if version == 0 and ("stage1" in body or "stage2" in body):
        body["training"] = {"vqvae": body.pop("stage1", {}), "gpt": body.pop("stage2", {})}
        for trainer in body["training"].values():
            # fields added in layout 1, with the values layout 0 always used
            trainer.setdefault("optimizer", "adamw")
            trainer.setdefault("schedule", "cosine")
    if version <= 1:
        for key in ("vqvae", "dense_vqvae"):
            if isinstance(body.get(key), dict):
                for k, v in _CODEBOOK_DEFAULTS.items():
                    body[key].setdefault(k, v)
        # only watches training; generation does not read it
        body.setdefault("codebook_usage_warning", 0.1)
    return body


CALOVQ_SPEC = register_pipeline_spec(PipelineSpec(
    name="calovq",
    config_type=CaloVQConfig,
    stages=(
        StageSpec("vqvae", build_vqvae_stage,
                  description="VQ-VAE (+GAN) autoencoder, learns the shower codes"),
        StageSpec("gpt", build_gpt_stage, requires=("vqvae",),
                  description="GPT prior over [energy tokens][shower codes]"),
    ),
    generator=CaloVQ,
    trainer_config=trainer_config,
    presets=CALOVQ_PRESETS,
    prepare=prepare,
    config_version=2,
    migrate=_migrate,
    description="Calo-VQ: VQ-VAE(+GAN) with cylindrical convolutions and a GPT prior",
))
