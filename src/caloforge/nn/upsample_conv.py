"""A 3x3x3 convolution of a 2x nearest-upsampled volume, computed at the low resolution.

``conv(interpolate(x, scale_factor=2, mode="nearest"))`` with a 3x3x3, padding-1 conv
equals, at each of the 8 output parities (p, q, r) in {0, 1}^3, a 3x3x3 conv of the
*low-resolution* x with folded weights: high-resolution tap k of parity p reads the
low-resolution offset floor((p + k - 1) / 2) in {-1, 0, 1}, so the folded kernel sums
the taps that land on the same low-resolution voxel. The 8 parities are stacked as output
channels of one convolution and interleaved back into the 2x volume. Zero padding agrees
at the borders: a high-resolution tap outside the volume is outside it at low
resolution too.

Same arithmetic up to the summation order (float32 differences ~1e-6), differentiable in
x and in the weights. It never materialises the upsampled input, which for a wide input
and a narrow output (CaloLatent's decoder: 16 -> 4 channels at 48 x 16 x 12) is most of
the cost: measured 3x faster on CPU at batch 1000. For a narrow input (1 channel) the
plain path is cheaper, hence :func:`prefers_folded`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["nearest_up2", "nearest_up2_conv3d", "prefers_folded"]

# _FOLD[p, o, k] = 1 where high-resolution tap k of output parity p reads low-resolution
# offset o - 1 (parity 0: taps 0 | 1, 2 -> offsets -1 | 0; parity 1: 0, 1 | 2 -> 0 | +1)
_FOLD = torch.tensor([[[1., 0., 0.], [0., 1., 1.], [0., 0., 0.]],
                      [[0., 0., 0.], [1., 1., 0.], [0., 0., 1.]]])


def nearest_up2(x: Tensor) -> Tensor:
    """2x nearest-neighbour upsampling of (N, C, D, H, W), channels-last in and out (the
    layout the 3-D convolutions of the decoder are fastest in)."""
    return F.interpolate(x.contiguous(memory_format=torch.channels_last_3d),
                         scale_factor=2, mode="nearest")


def prefers_folded(in_channels: int, out_channels: int) -> bool:
    """Whether :func:`nearest_up2_conv3d` beats upsampling first: when the input is wider
    than the output, so the upsampled input would be the largest tensor."""
    return in_channels > out_channels


def nearest_up2_conv3d(x: Tensor, conv: nn.Conv3d) -> Tensor:
    """``conv(nearest 2x upsampling of x)`` for a 3x3x3, stride-1, padding-1 ``conv``,
    without building the upsampled x. (N, C, D, H, W) -> (N, C_out, 2D, 2H, 2W),
    channels-last."""
    if (conv.kernel_size != (3, 3, 3) or conv.padding != (1, 1, 1)
            or conv.stride != (1, 1, 1) or conv.dilation != (1, 1, 1) or conv.groups != 1):
        raise ValueError("nearest_up2_conv3d needs a 3x3x3 conv with stride 1, padding 1")
    w = conv.weight
    co, ci = w.shape[:2]
    fold = _FOLD.to(w)
    # folded kernels of the 8 parities, stacked as output channels ordered (p, q, r, out)
    wf = torch.einsum("pak,qbl,rcm,oiklm->pqroiabc", fold, fold, fold, w)
    wf = wf.reshape(8 * co, ci, 3, 3, 3)
    bias = None if conv.bias is None else conv.bias.repeat(8)
    y = F.conv3d(x.contiguous(memory_format=torch.channels_last_3d), wf, bias, padding=1)
    n, _, d, h, wd = y.shape
    # (N, D, H, W, p, q, r, C) -> (N, D, p, H, q, W, r, C): the parities interleave
    y = y.permute(0, 2, 3, 4, 1).reshape(n, d, h, wd, 2, 2, 2, co)
    y = y.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(n, 2 * d, 2 * h, 2 * wd, co)
    return y.permute(0, 4, 1, 2, 3)
