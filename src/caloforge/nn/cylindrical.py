"""Cylindrical convolutions on calo-images (N, C, Z, A).

Z is the depth (layer) axis with ordinary zero padding; A is the angular axis, which is
periodic, so the operators pad / wrap cyclically along it. Radial bins are channels.

* :class:`CylindricalConv2d` is Algorithm 1 of Calo-VQ with the index ranges corrected
  (docs/calovq.md, A2): ``p_a = (k_a - 1) // 2`` columns are copied cyclically onto *each* side, so the
  output keeps A columns and commutes with ``torch.roll`` along A.
* :class:`CylindricalConvTranspose2d` is Algorithm 2 with the wrapped contributions added
  to the opposite edge before trimming (docs/calovq.md, A3, "wrap-add"). This makes it rotation
  equivariant and the exact adjoint of :class:`CylindricalConv2d` with the same weight.
  The literal printed form (trim only) is kept as ``wrap=False`` for comparison.

The angular stride is always 1: angular resampling is done by FFT (:mod:`caloforge.nn.fft`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CylindricalConv2d",
    "CylindricalConvTranspose2d",
    "circular_pad_angle",
    "wrap_add_angle",
]


def _pair(k: int | tuple[int, int]) -> tuple[int, int]:
    return (k, k) if isinstance(k, int) else (int(k[0]), int(k[1]))


def circular_pad_angle(x: Tensor, p: int) -> Tensor:
    """Pad the last axis cyclically by ``p`` columns on each side.

    (N, C, Z, A) -> (N, C, Z, A + 2p). Works for p > A too (the pattern repeats).
    """
    if p == 0:
        return x
    a = x.shape[-1]
    if p <= a:
        # slicing + cat is several times faster than a gather along the last axis
        return torch.cat([x[..., a - p :], x, x[..., :p]], dim=-1)
    idx = torch.arange(-p, a + p, device=x.device) % a
    return x.index_select(-1, idx)


def wrap_add_angle(y: Tensor, e: int, a: int) -> Tensor:
    """Adjoint of :func:`circular_pad_angle`: fold an (…, A + 2e) tensor back onto A columns.

    Column j of the input stands for angle (j - e) mod A; contributions to the same angle
    are summed. (N, C, Z, A + 2e) -> (N, C, Z, A).
    """
    if e == 0:
        return y
    idx = torch.arange(-e, a + e, device=y.device) % a
    out = y.new_zeros(y.shape[:-1] + (a,))
    return out.index_add(-1, idx, y)


class CylindricalConv2d(nn.Module):
    """2-D convolution, zero padded along Z and cyclic along A (corrected Algorithm 1).

    Args:
        in_channels, out_channels: channel counts.
        kernel_size: int or (k_z, k_a); k_a must be odd (docs/calovq.md, A2).
        stride_z: stride along Z only (the angular stride is 1).
        padding_z: zero padding along Z; default ``(k_z - 1) // 2`` ("same" for odd k_z).
        bias: learn an additive bias.

    Shapes: (N, C_in, Z, A) -> (N, C_out, Z_out, A) with
    ``Z_out = (Z + 2 padding_z - k_z) // stride_z + 1``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride_z: int = 1,
        padding_z: int | None = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        kz, ka = _pair(kernel_size)
        if ka % 2 != 1:
            raise ValueError(f"angular kernel size must be odd (docs/calovq.md, A2), got {ka}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = (kz, ka)
        self.stride_z = int(stride_z)
        self.padding_z = (kz - 1) // 2 if padding_z is None else int(padding_z)
        self.pad_a = (ka - 1) // 2
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kz, ka))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # same default initialisation as nn.Conv2d (kaiming-uniform with a = sqrt(5))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
            bound = 1.0 / fan_in**0.5
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, Z, A) -> (N, C_out, Z_out, A)."""
        x = circular_pad_angle(x, self.pad_a)
        return F.conv2d(
            x, self.weight, self.bias, stride=(self.stride_z, 1), padding=(self.padding_z, 0)
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride_z={self.stride_z}, padding_z={self.padding_z}, bias={self.bias is not None}"
        )


class CylindricalConvTranspose2d(nn.Module):
    """Transposed convolution, zero padded along Z and cyclic along A (Algorithm 2, wrap-add).

    The weight has the layout of ``nn.ConvTranspose2d``: (C_in, C_out, k_z, k_a); with the
    same tensor, this operator is the adjoint of ``CylindricalConv2d(C_out, C_in, ...)``
    (same stride_z and padding_z, bias off).

    Args:
        in_channels, out_channels: channel counts.
        kernel_size: int or (k_z, k_a); k_a must be odd.
        stride_z: up-sampling stride along Z.
        padding_z: as in ``nn.ConvTranspose2d``; default ``(k_z - 1) // 2``.
        output_padding_z: extra rows at the end of Z (to reach an exact Z_out).
        bias: learn an additive bias.
        wrap: True (default) adds the excess columns to the opposite edge (equivariant);
            False trims them away as Algorithm 2 is printed (not equivariant, docs/calovq.md, A3).

    Shapes: (N, C_in, Z, A) -> (N, C_out, Z_out, A) with
    ``Z_out = (Z - 1) stride_z - 2 padding_z + k_z + output_padding_z``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride_z: int = 1,
        padding_z: int | None = None,
        output_padding_z: int = 0,
        bias: bool = True,
        wrap: bool = True,
    ) -> None:
        super().__init__()
        kz, ka = _pair(kernel_size)
        if ka % 2 != 1:
            raise ValueError(f"angular kernel size must be odd (docs/calovq.md, A2), got {ka}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = (kz, ka)
        self.stride_z = int(stride_z)
        self.padding_z = (kz - 1) // 2 if padding_z is None else int(padding_z)
        self.output_padding_z = int(output_padding_z)
        self.excess_a = (ka - 1) // 2
        self.wrap = bool(wrap)
        self.weight = nn.Parameter(torch.empty(in_channels, out_channels, kz, ka))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
            bound = 1.0 / fan_in**0.5
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, Z, A) -> (N, C_out, Z_out, A)."""
        a = x.shape[-1]
        # full (untrimmed) output along A: A + 2 e columns, column j = angle j - e
        y = F.conv_transpose2d(
            x,
            self.weight,
            None,
            stride=(self.stride_z, 1),
            padding=(self.padding_z, 0),
            output_padding=(self.output_padding_z, 0),
        )
        e = self.excess_a
        y = wrap_add_angle(y, e, a) if self.wrap else y[..., e : e + a]
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride_z={self.stride_z}, padding_z={self.padding_z}, wrap={self.wrap}, "
            f"bias={self.bias is not None}"
        )
