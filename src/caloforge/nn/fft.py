"""FFT resampling along the periodic angular axis (Calo-VQ §4.2, Fig. 4; docs/calovq.md, A14).

A real FFT along the axis, keep the low-frequency bins (down-sampling) or zero-pad them
(up-sampling), inverse FFT at the new length, and scale by n_out / n_in so that values keep
their size. This is the ``scipy.signal.resample`` convention, including its handling of
the Nyquist bin of even lengths:

* up-sampling from an even n_in: the input's Nyquist bin stands for the pair of bins
  ±n_in/2 of the longer spectrum, so it is split in half between them;
* down-sampling to an even n_out: the two bins ±n_out/2 of the input fold onto the single
  Nyquist bin of the output (their sum, i.e. twice the real part for a real signal).

For signals band-limited below min(n_in, n_out)/2 the resampling is exact both ways, and
it commutes with shifts by whole bins whenever the shift maps to whole output bins.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["fft_resample", "fft_resample_matrix", "FFTResample"]


def fft_resample(x: Tensor, size: int, dim: int = -1) -> Tensor:
    """Resample ``x`` periodically to ``size`` samples along ``dim``.

    Args:
        x: real tensor of any shape (…, n_in, …).
        size: target length n_out >= 1.
        dim: the periodic axis.

    Returns:
        real tensor (…, n_out, …) of x's dtype.
    """
    n_in = x.shape[dim]
    n_out = int(size)
    if n_out < 1:
        raise ValueError(f"target size must be >= 1, got {size}")
    if n_out == n_in:
        return x
    if x.dtype in (torch.float16, torch.bfloat16):
        # half-precision FFTs are limited to power-of-two sizes on GPU; compute in float32
        return fft_resample(x.float(), size, dim).to(x.dtype)
    spec = torch.fft.rfft(x, dim=dim)
    spec = spec.movedim(dim, -1)
    n_keep = min(n_in, n_out) // 2 + 1
    out = spec.new_zeros(spec.shape[:-1] + (n_out // 2 + 1,))
    out[..., :n_keep] = spec[..., :n_keep]
    if n_out > n_in and n_in % 2 == 0:
        # split the input Nyquist bin between +n_in/2 and -n_in/2 of the longer spectrum
        out[..., n_in // 2] = out[..., n_in // 2] * 0.5
    elif n_out < n_in and n_out % 2 == 0:
        # bins +n_out/2 and -n_out/2 fold onto the output's Nyquist bin: X + conj(X) = 2 Re X
        out[..., n_out // 2] = 2.0 * out[..., n_out // 2].real
    y = torch.fft.irfft(out, n=n_out, dim=-1) * (n_out / n_in)
    return y.movedim(-1, dim).to(x.dtype)


def fft_resample_matrix(n_in: int, n_out: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """The (n_out, n_in) matrix M with fft_resample(x, n_out) = x @ M.T along the last axis.

    FFT resampling is linear, so for the small angular sizes of calorimeters (16, 50) a
    matrix product is exact (to rounding), faster than FFTs, and exportable (ONNX has no
    general real FFT).
    """
    eye = torch.eye(n_in, dtype=torch.float64)
    return fft_resample(eye, n_out, -1).t().contiguous().to(dtype)


class FFTResample(nn.Module):
    """Module form of :func:`fft_resample` (no parameters).

    With ``in_size`` given, the resampling is applied as a precomputed matrix
    (:func:`fft_resample_matrix`, a non-persistent buffer, so state dicts are unaffected);
    otherwise by FFT.

    Shapes: (…, n_in) -> (…, size) along ``dim`` (default the last axis, A of a calo-image).
    """

    def __init__(self, size: int, dim: int = -1, in_size: int | None = None) -> None:
        super().__init__()
        self.size = int(size)
        self.dim = int(dim)
        self.in_size = None if in_size is None else int(in_size)
        if self.in_size is not None:
            self.register_buffer(
                "matrix",
                fft_resample_matrix(self.in_size, self.size, torch.float32),
                persistent=False,
            )

    def forward(self, x: Tensor) -> Tensor:
        if self.in_size is None:
            return fft_resample(x, self.size, self.dim)
        if x.shape[self.dim] != self.in_size:
            raise ValueError(
                f"expected {self.in_size} samples along dim {self.dim}, got {x.shape[self.dim]}"
            )
        if self.size == self.in_size:
            return x
        y = x.movedim(self.dim, -1) @ self.matrix.t().to(x.dtype)
        return y.movedim(-1, self.dim)

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, in_size={self.in_size}"
