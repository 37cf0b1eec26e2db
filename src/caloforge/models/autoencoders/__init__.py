"""Autoencoders of stage 1: VQ-VAEs, their quantiser and discriminators."""

from ._common import VQVAEOutput
from .discriminator import (
    CylindricalDiscriminator,
    CylindricalDiscriminatorConfig,
    DenseDiscriminator,
    DenseDiscriminatorConfig,
)
from .quantizer import QuantizerLosses, VectorQuantizer
from .vqvae_cylindrical import (
    CylindricalVQVAE,
    Resample2d,
    VQVAEConfig,
    calo_image_to_flat,
    flat_to_calo_image,
)
from .vqvae_dense import DenseVQVAE, DenseVQVAEConfig

__all__ = [
    "CylindricalDiscriminator",
    "CylindricalDiscriminatorConfig",
    "CylindricalVQVAE",
    "DenseDiscriminator",
    "DenseDiscriminatorConfig",
    "DenseVQVAE",
    "DenseVQVAEConfig",
    "QuantizerLosses",
    "Resample2d",
    "VQVAEConfig",
    "VQVAEOutput",
    "VectorQuantizer",
    "calo_image_to_flat",
    "flat_to_calo_image",
]
