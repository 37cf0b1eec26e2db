"""Cylindrical convolutions: rotation equivariance (Calo-VQ Fig. 3) and adjointness."""

import pytest
import torch

from caloforge.nn import (
    AttentionBlock,
    CylindricalConv2d,
    CylindricalConvTranspose2d,
    ResidualBlock,
    circular_pad_angle,
    wrap_add_angle,
)

# tiny tensors: one torch thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _float64():
    # exact comparisons; restored after each test so other modules are unaffected
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("kernel", [(3, 3), (3, 5), (1, 7), (5, 3)])
@pytest.mark.parametrize("stride_z", [1, 2])
def test_conv_commutes_with_angular_roll(kernel, stride_z):
    torch.manual_seed(0)
    conv = CylindricalConv2d(4, 6, kernel, stride_z=stride_z)
    x = torch.randn(2, 4, 9, 16)
    y = conv(x)
    assert y.shape == (2, 6, (9 + 2 * ((kernel[0] - 1) // 2) - kernel[0]) // stride_z + 1, 16)
    for s in (1, 3, 8, 15):
        torch.testing.assert_close(conv(torch.roll(x, s, dims=-1)), torch.roll(y, s, dims=-1))


def test_plain_zero_padded_conv_is_not_equivariant():
    # the check has teeth: an ordinary conv with zero padding along A fails it
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)
    x = torch.randn(1, 3, 5, 8)
    assert not torch.allclose(conv(torch.roll(x, 2, -1)), torch.roll(conv(x), 2, -1))


@pytest.mark.parametrize("kernel", [(3, 3), (4, 5), (1, 7)])
@pytest.mark.parametrize("stride_z", [1, 2])
def test_transposed_conv_commutes_with_angular_roll(kernel, stride_z):
    torch.manual_seed(1)
    conv = CylindricalConvTranspose2d(5, 3, kernel, stride_z=stride_z, padding_z=0)
    x = torch.randn(2, 5, 6, 10)
    y = conv(x)
    assert y.shape[-1] == 10 and y.shape[1] == 3
    for s in (1, 4, 9):
        torch.testing.assert_close(conv(torch.roll(x, s, dims=-1)), torch.roll(y, s, dims=-1))


def test_literal_algorithm2_is_not_equivariant():
    # docs/calovq.md, A3: trimming without wrap-add drops the wrapped contributions
    torch.manual_seed(2)
    conv = CylindricalConvTranspose2d(2, 2, 3, wrap=False)
    x = torch.randn(1, 2, 4, 8)
    assert not torch.allclose(conv(torch.roll(x, 1, -1)), torch.roll(conv(x), 1, -1))


@pytest.mark.parametrize(
    "kernel,stride_z,pad_z", [((3, 3), 1, 1), ((3, 5), 1, 0), ((4, 3), 2, 1), ((5, 7), 2, 2)]
)
def test_transposed_is_adjoint_of_forward(kernel, stride_z, pad_z):
    torch.manual_seed(3)
    cin, cout, z, a = 3, 4, 10, 12
    conv = CylindricalConv2d(cin, cout, kernel, stride_z=stride_z, padding_z=pad_z, bias=False)
    x = torch.randn(2, cin, z, a)
    y_shape = conv(x).shape
    convt = CylindricalConvTranspose2d(
        cout, cin, kernel, stride_z=stride_z, padding_z=pad_z, bias=False
    )
    # output_padding so that convT maps back onto the input's Z size
    z_back = (y_shape[2] - 1) * stride_z - 2 * pad_z + kernel[0]
    convt.output_padding_z = z - z_back
    with torch.no_grad():
        convt.weight.copy_(conv.weight)
    y = torch.randn(y_shape)
    lhs = (conv(x) * y).sum()
    rhs = (x * convt(y)).sum()
    torch.testing.assert_close(lhs, rhs)


def test_pad_and_wrap_add_are_adjoint_and_handle_wide_padding():
    torch.manual_seed(4)
    for p in (1, 2, 5):  # p = 5 > A = 4: the pattern repeats
        x = torch.randn(2, 3, 4)
        y = torch.randn(2, 3, 4 + 2 * p)
        torch.testing.assert_close(
            (circular_pad_angle(x, p) * y).sum(), (x * wrap_add_angle(y, p, 4)).sum()
        )
    x = torch.arange(4.0).view(1, 4)
    assert circular_pad_angle(x, 2).tolist() == [[2.0, 3.0, 0.0, 1.0, 2.0, 3.0, 0.0, 1.0]]


def test_even_angular_kernel_rejected():
    with pytest.raises(ValueError, match="odd"):
        CylindricalConv2d(1, 1, (3, 4))
    with pytest.raises(ValueError, match="odd"):
        CylindricalConvTranspose2d(1, 1, (3, 2))


def test_residual_and_attention_blocks_commute_with_roll():
    torch.manual_seed(5)
    res = ResidualBlock(8, 16, cond_dim=4)
    att = AttentionBlock(16, n_heads=2)
    # FiLM starts at zero; make it non-trivial so the condition path is exercised
    torch.nn.init.normal_(res.film.proj.weight)
    x, c = torch.randn(2, 8, 5, 12), torch.randn(2, 4)
    y = att(res(x, c))
    torch.testing.assert_close(att(res(torch.roll(x, 5, -1), c)), torch.roll(y, 5, -1))
