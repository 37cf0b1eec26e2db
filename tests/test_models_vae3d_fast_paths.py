"""The fast paths of CaloLatent's 3-D VAE compute the plain functions: the folded
2x-nearest-upsample + 3x3x3 conv equals upsampling first (values, gradients), the decoder
blocks give the same function with the upsampling moved inside, and the stem's 1x1x1 conv
as a matrix product equals the convolution."""

import pytest
import torch
import torch.nn.functional as F

from caloforge.models.autoencoders.resnet_vae3d import (
    ResNetVAE3d,
    ResNetVAE3dConfig,
    _pointwise_channels_last,
    _ResBlock3d,
)
from caloforge.nn import (
    nearest_up2,
    nearest_up2_conv3d,
    prefers_folded,
)


def _plain(x, conv):
    return conv(F.interpolate(x, scale_factor=2, mode="nearest"))


@pytest.mark.parametrize("shape", [(3, 5, 2, 3, 4), (2, 1, 1, 1, 1), (1, 4, 6, 4, 3)])
@pytest.mark.parametrize("out_ch", [1, 3])
def test_folded_conv_equals_upsample_then_conv(shape, out_ch):
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(shape[1], out_ch, 3, padding=1).double()
    x = torch.randn(shape, dtype=torch.float64)
    got = nearest_up2_conv3d(x, conv)
    want = _plain(x, conv)
    assert got.shape == want.shape == (shape[0], out_ch, *(2 * s for s in shape[2:]))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert got.is_contiguous(memory_format=torch.channels_last_3d) or out_ch == 1


def test_folded_conv_gradients_match():
    torch.manual_seed(1)
    conv = torch.nn.Conv3d(6, 2, 3, padding=1).double()
    x = torch.randn(2, 6, 3, 2, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, 6, 4, 8, dtype=torch.float64)   # a fixed upstream gradient
    (gx,) = torch.autograd.grad((nearest_up2_conv3d(x, conv) * w).sum(), [x])
    gw, gb = torch.autograd.grad((nearest_up2_conv3d(x, conv) * w).sum(),
                                 [conv.weight, conv.bias])
    (gx0,) = torch.autograd.grad((_plain(x, conv) * w).sum(), [x])
    gw0, gb0 = torch.autograd.grad((_plain(x, conv) * w).sum(), [conv.weight, conv.bias])
    for a, b in [(gx, gx0), (gw, gw0), (gb, gb0)]:
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)


def test_folded_conv_refuses_other_convolutions():
    x = torch.randn(1, 2, 2, 2, 2)
    for conv in (torch.nn.Conv3d(2, 2, 1), torch.nn.Conv3d(2, 2, 3, padding=0),
                 torch.nn.Conv3d(2, 2, 3, padding=1, stride=2)):
        with pytest.raises(ValueError, match="3x3x3 conv with stride 1, padding 1"):
            nearest_up2_conv3d(x, conv)


def test_prefers_folded_only_for_a_wide_input():
    assert prefers_folded(16, 4) and not prefers_folded(1, 16) and not prefers_folded(8, 8)
    x = torch.randn(2, 3, 2, 2, 2)
    torch.testing.assert_close(nearest_up2(x), F.interpolate(x, scale_factor=2))


@pytest.mark.parametrize("in_ch,width", [(8, 3), (2, 5), (4, 4)])
def test_block_with_upsample_equals_block_on_upsampled_input(in_ch, width):
    torch.manual_seed(2)
    block = _ResBlock3d(in_ch, width, cond_dim=3, attention=False, heads=1, groups=None).double()
    x = torch.randn(2, in_ch, 3, 2, 2, dtype=torch.float64)
    e = torch.randn(2, 3, dtype=torch.float64)
    want = block(F.interpolate(x, scale_factor=2, mode="nearest"), e)
    torch.testing.assert_close(block(x, e, upsample=True), want, rtol=0, atol=1e-12)


def test_decoder_equals_the_upsample_first_decoder():
    """The whole decoder (its second level folds 6 -> 3 channels) against the same weights
    run the plain way (upsample, then blocks)."""
    torch.manual_seed(3)
    cfg = ResNetVAE3dConfig(stem_channels=2, widths=(3, 6), bottleneck_width=4, n_bottleneck=1,
                            block_depth=2, norm_groups=2, cond_dim=5)
    vae = ResNetVAE3d(cfg).double()
    torch.nn.init.normal_(vae.head_out.weight)           # the zero-initialised head hides all
    z = torch.randn(4, cfg.latent_dim, dtype=torch.float64)
    cond = torch.randn(4, cfg.cond_in_dim, dtype=torch.float64)

    e = F.silu(vae.dec_cond(cond))
    h = z.reshape(4, cfg.latent_channels, *cfg.latent_grid)
    for blocks in vae.up:
        h = F.interpolate(h, scale_factor=2, mode="nearest")
        for b in blocks:
            h = b(h, e)
    want = vae.head_out(vae._crop(h))
    got = vae.decode(z, cond)
    assert want.abs().max() > 0.1
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cin,cout", [(1, 4), (3, 2)])
def test_pointwise_stem_equals_the_convolution(cin, cout):
    torch.manual_seed(4)
    conv = torch.nn.Conv3d(cin, cout, 1).double()
    x = torch.randn(2, cin, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    got, want = _pointwise_channels_last(conv, x), conv(x)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-13)
    assert got.is_contiguous(memory_format=torch.channels_last_3d)
    up = torch.randn_like(want)
    g1 = torch.autograd.grad((got * up).sum(), [x, conv.weight, conv.bias])
    g2 = torch.autograd.grad((conv(x) * up).sum(), [x, conv.weight, conv.bias])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
