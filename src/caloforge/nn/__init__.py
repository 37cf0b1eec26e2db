"""Reusable network blocks (cylindrical convolutions, FFT resampling, residual and
attention blocks, condition embeddings, causal transformer blocks)."""

from .blocks import MLP, AttentionBlock, ConditionEmbedding, FiLM, ResidualBlock, group_norm
from .cylindrical import (
    CylindricalConv2d,
    CylindricalConvTranspose2d,
    circular_pad_angle,
    wrap_add_angle,
)
from .fft import FFTResample, fft_resample, fft_resample_matrix
from .transformer import CausalSelfAttention, KVCache, TransformerBlock

__all__ = [
    "AttentionBlock",
    "CausalSelfAttention",
    "ConditionEmbedding",
    "CylindricalConv2d",
    "CylindricalConvTranspose2d",
    "FFTResample",
    "FiLM",
    "KVCache",
    "MLP",
    "ResidualBlock",
    "TransformerBlock",
    "circular_pad_angle",
    "fft_resample",
    "fft_resample_matrix",
    "group_norm",
    "wrap_add_angle",
]
