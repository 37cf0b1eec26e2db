"""FFT resampling along the angle: exact for band-limited signals, scipy's convention."""

import math

import numpy as np
import pytest
import torch

from caloforge.nn import FFTResample, fft_resample


def band_limited(n: int, k_max: int, phase: float = 0.3) -> torch.Tensor:
    """Samples of a periodic signal with harmonics 0..k_max at n points on [0, 2 pi)."""
    t = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n
    out = torch.full_like(t, 0.7)
    for k in range(1, k_max + 1):
        out = out + (1.0 / k) * torch.cos(k * t + phase * k) + 0.5 * torch.sin(k * t)
    return out


@pytest.mark.parametrize(
    "n_in,n_out,k_max",
    [
        (16, 8, 3),
        (16, 4, 1),
        (50, 26, 12),
        (50, 13, 6),
        (8, 16, 3),
        (16, 50, 7),
        (9, 16, 4),
        (7, 5, 2),
    ],
)
def test_band_limited_signal_is_resampled_exactly(n_in, n_out, k_max):
    x = band_limited(n_in, k_max)
    y = fft_resample(x, n_out)
    torch.testing.assert_close(y, band_limited(n_out, k_max), atol=1e-12, rtol=0)


def test_up_then_down_round_trip_is_identity():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 7, 16, dtype=torch.float64)
    torch.testing.assert_close(fft_resample(fft_resample(x, 50), 16), x)


@pytest.mark.parametrize("n_in,n_out", [(16, 8), (16, 7), (8, 16), (50, 26), (9, 4)])
def test_matches_scipy_resample_on_random_input(n_in, n_out):
    scipy_signal = pytest.importorskip("scipy.signal")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, n_in))
    ref = scipy_signal.resample(x, n_out, axis=-1)
    np.testing.assert_allclose(fft_resample(torch.from_numpy(x), n_out).numpy(), ref, atol=1e-12)


def test_commutes_with_whole_bin_shifts():
    torch.manual_seed(2)
    x = torch.randn(2, 3, 5, 16, dtype=torch.float64)
    torch.testing.assert_close(
        fft_resample(torch.roll(x, 2, -1), 8), torch.roll(fft_resample(x, 8), 1, -1)
    )
    torch.testing.assert_close(
        fft_resample(torch.roll(x, 1, -1), 32), torch.roll(fft_resample(x, 32), 2, -1)
    )


def test_module_dim_and_dtype():
    m = FFTResample(4, dim=1)
    x = torch.randn(2, 8, 3)
    y = m(x)
    assert y.shape == (2, 4, 3) and y.dtype == torch.float32
    with pytest.raises(ValueError):
        fft_resample(x, 0)


def test_matrix_form_equals_fft_and_is_not_in_the_state_dict():
    torch.manual_seed(3)
    x = torch.randn(2, 3, 5, 50)
    for n_out in (26, 13, 64):
        m = FFTResample(n_out, in_size=50)
        torch.testing.assert_close(m(x), fft_resample(x, n_out), atol=1e-5, rtol=1e-5)
        assert len(m.state_dict()) == 0
    with pytest.raises(ValueError):
        FFTResample(8, in_size=16)(torch.randn(1, 12))
    # half precision is computed in float32 and returned in the input's dtype
    assert fft_resample(torch.randn(2, 16, dtype=torch.bfloat16), 8).dtype == torch.bfloat16
