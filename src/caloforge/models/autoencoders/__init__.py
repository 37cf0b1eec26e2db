"""Autoencoders of stage 1: VQ-VAEs, their quantiser and discriminators, and the VAE."""

from ._common import VQVAEOutput
from .base import Autoencoder, VariationalAutoencoder
from .discriminator import (
    CylindricalDiscriminator,
    CylindricalDiscriminatorConfig,
    DenseDiscriminator,
    DenseDiscriminatorConfig,
)
from .quantizer import QuantizerLosses, VectorQuantizer
from .vae import ConvVAE3d, VAEConfig, coord_channels, flat_to_volume, volume_to_flat
from .vqvae_cylindrical import (
    CylindricalVQVAE,
    Resample2d,
    VQVAEConfig,
    calo_image_to_flat,
    flat_to_calo_image,
)
from .vqvae_dense import DenseVQVAE, DenseVQVAEConfig

__all__ = [
    "Autoencoder",
    "ConvVAE3d",
    "CylindricalDiscriminator",
    "CylindricalDiscriminatorConfig",
    "CylindricalVQVAE",
    "DenseDiscriminator",
    "DenseDiscriminatorConfig",
    "DenseVQVAE",
    "DenseVQVAEConfig",
    "QuantizerLosses",
    "Resample2d",
    "VAEConfig",
    "VQVAEConfig",
    "VQVAEOutput",
    "VariationalAutoencoder",
    "VectorQuantizer",
    "calo_image_to_flat",
    "coord_channels",
    "flat_to_calo_image",
    "flat_to_volume",
    "volume_to_flat",
]
