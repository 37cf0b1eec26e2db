"""Reusable network blocks (cylindrical convolutions, FFT resampling, residual and
attention blocks, condition and time embeddings, causal transformer blocks, an
encoder-decoder transformer, 3-D patching, adaLN-Zero DiT blocks, and a 3-D convolution
of a 2x nearest-upsampled volume computed at the low resolution)."""

from .blocks import MLP, AttentionBlock, ConditionEmbedding, FiLM, ResidualBlock, group_norm
from .cylindrical import (
    CylindricalConv2d,
    CylindricalConvTranspose2d,
    circular_pad_angle,
    wrap_add_angle,
)
from .dit import DiTBlock, DiTFinalLayer, modulate
from .embeddings import GaussianFourierEmbedding, SinusoidalTimeEmbedding, TimestepEmbedder
from .encoder_decoder import (
    Attention,
    DecoderBlock,
    DecoderState,
    EncoderBlock,
    EncoderDecoderTransformer,
)
from .fft import FFTResample, fft_resample, fft_resample_matrix
from .patch import (
    LearnablePositionEncoding,
    PatchEmbed3d,
    patch_grid,
    patchify3d,
    unpatchify3d,
)
from .transformer import CausalSelfAttention, KVCache, TransformerBlock
from .upsample_conv import nearest_up2, nearest_up2_conv3d, prefers_folded

__all__ = [
    "Attention",
    "AttentionBlock",
    "CausalSelfAttention",
    "ConditionEmbedding",
    "CylindricalConv2d",
    "CylindricalConvTranspose2d",
    "DecoderBlock",
    "DecoderState",
    "DiTBlock",
    "DiTFinalLayer",
    "EncoderBlock",
    "EncoderDecoderTransformer",
    "FFTResample",
    "FiLM",
    "GaussianFourierEmbedding",
    "KVCache",
    "LearnablePositionEncoding",
    "MLP",
    "PatchEmbed3d",
    "ResidualBlock",
    "SinusoidalTimeEmbedding",
    "TimestepEmbedder",
    "TransformerBlock",
    "circular_pad_angle",
    "fft_resample",
    "fft_resample_matrix",
    "group_norm",
    "modulate",
    "nearest_up2",
    "nearest_up2_conv3d",
    "patch_grid",
    "patchify3d",
    "prefers_folded",
    "unpatchify3d",
    "wrap_add_angle",
]
