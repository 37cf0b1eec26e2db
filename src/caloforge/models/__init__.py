"""Networks: stage-1 autoencoders, latent priors, energy networks, point-cloud networks,
flows, and the model registry.

``build_model(name, config)`` builds a registered model from its typed config (or a plain
dict of its fields; unknown keys and unknown names raise :class:`~caloforge.errors.ConfigError`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import nn

from ..errors import ConfigError
from .autoencoders import (
    Autoencoder,
    ConvVAE3d,
    CylindricalDiscriminator,
    CylindricalDiscriminatorConfig,
    CylindricalVQVAE,
    DenseDiscriminator,
    DenseDiscriminatorConfig,
    DenseVQVAE,
    DenseVQVAEConfig,
    VAEConfig,
    VectorQuantizer,
    VQVAEConfig,
    VQVAEOutput,
)
from .autoencoders.resnet_vae3d import ResNetVAE3d, ResNetVAE3dConfig
from .energy import TransfusionConfig, TransfusionEnergyNet
from .energy.layer_diffusion import LayerDiffusionConfig, LayerDiffusionMLP
from .flows import ShowerFlow, ShowerFlowConfig
from .pointcloud import ConcatSquashLinear, PointWiseNet, PointWiseNetConfig
from .priors import GPT, GPTConfig, ViTConfig, ViTVelocityField
from .priors.score_mlp import LatentScoreConfig, LatentScoreMLP

__all__ = [
    "MODEL_REGISTRY",
    "Autoencoder",
    "ConcatSquashLinear",
    "ConvVAE3d",
    "CylindricalDiscriminator",
    "CylindricalDiscriminatorConfig",
    "CylindricalVQVAE",
    "DenseDiscriminator",
    "DenseDiscriminatorConfig",
    "DenseVQVAE",
    "DenseVQVAEConfig",
    "GPT",
    "GPTConfig",
    "LatentScoreConfig",
    "LatentScoreMLP",
    "LayerDiffusionConfig",
    "LayerDiffusionMLP",
    "PointWiseNet",
    "PointWiseNetConfig",
    "ResNetVAE3d",
    "ResNetVAE3dConfig",
    "ShowerFlow",
    "ShowerFlowConfig",
    "TransfusionConfig",
    "TransfusionEnergyNet",
    "VAEConfig",
    "VQVAEConfig",
    "VQVAEOutput",
    "VectorQuantizer",
    "ViTConfig",
    "ViTVelocityField",
    "available_models",
    "build_model",
    "config_class",
    "register_model",
]

#: name -> (model class, config dataclass)
MODEL_REGISTRY: dict[str, tuple[type[nn.Module], type]] = {}


def register_model(name: str, model_cls: type[nn.Module], config_cls: type) -> None:
    """Register ``model_cls(config_cls(...))`` under ``name``; names are unique."""
    if name in MODEL_REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"config class of {name!r} must be a dataclass")
    MODEL_REGISTRY[name] = (model_cls, config_cls)


def available_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(MODEL_REGISTRY)


def config_class(name: str) -> type:
    """The config dataclass of a registered model."""
    if name not in MODEL_REGISTRY:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(available_models())}")
    return MODEL_REGISTRY[name][1]


def build_model(name_or_type: str, config: Any = None) -> nn.Module:
    """Build a registered model.

    Args:
        name_or_type: a registered name (see :func:`available_models`).
        config: an instance of the model's config dataclass, a mapping of its fields
            (unknown keys raise), or None for the defaults.
    """
    cfg_cls = config_class(name_or_type)
    model_cls = MODEL_REGISTRY[name_or_type][0]
    if config is None:
        cfg = cfg_cls()
    elif isinstance(config, cfg_cls):
        cfg = config
    elif isinstance(config, Mapping):
        known = {f.name for f in dataclasses.fields(cfg_cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ConfigError(
                f"unknown config key(s) {unknown} for model {name_or_type!r}; known: {sorted(known)}"
            )
        cfg = cfg_cls(**config)
    else:
        raise ConfigError(
            f"config for {name_or_type!r} must be {cfg_cls.__name__} or a mapping, got {type(config).__name__}"
        )
    return model_cls(cfg)


register_model("vqvae_cylindrical", CylindricalVQVAE, VQVAEConfig)
register_model("vqvae_dense", DenseVQVAE, DenseVQVAEConfig)
register_model(
    "discriminator_cylindrical", CylindricalDiscriminator, CylindricalDiscriminatorConfig
)
register_model("discriminator_dense", DenseDiscriminator, DenseDiscriminatorConfig)
register_model("gpt", GPT, GPTConfig)
register_model("vit_velocity", ViTVelocityField, ViTConfig)
register_model("transfusion", TransfusionEnergyNet, TransfusionConfig)
register_model("vae_conv3d", ConvVAE3d, VAEConfig)
register_model("layer_diffusion", LayerDiffusionMLP, LayerDiffusionConfig)
register_model("latent_score_mlp", LatentScoreMLP, LatentScoreConfig)
register_model("vae_resnet3d", ResNetVAE3d, ResNetVAE3dConfig)
register_model("pointwise_net", PointWiseNet, PointWiseNetConfig)
register_model("shower_flow", ShowerFlow, ShowerFlowConfig)
