"""3-D patching of (C, L, A, R) volumes, patch embedding and learnable positions."""

import pytest
import torch

from caloforge.errors import ConfigError
from caloforge.nn import (
    LearnablePositionEncoding,
    PatchEmbed3d,
    patch_grid,
    patchify3d,
    unpatchify3d,
)

# tiny tensors: one torch thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "shape, patch, n_tokens, patch_dim",
    [
        ((1, 45, 16, 9), (3, 16, 1), 135, 48),  # ds2 full space
        ((2, 15, 9, 9), (3, 1, 1), 405, 6),  # ds2 VAE latent
        ((1, 45, 50, 18), (3, 5, 2), 1350, 30),  # ds3 full space
    ],
)
def test_round_trip_is_exact(shape, patch, n_tokens, patch_dim):
    torch.manual_seed(0)
    x = torch.randn(2, *shape)
    tokens = patchify3d(x, patch)
    assert tokens.shape == (2, n_tokens, patch_dim)
    assert torch.equal(unpatchify3d(tokens, patch, shape), x)
    # and the other way round: every token layout is reachable
    t = torch.randn(2, n_tokens, patch_dim)
    assert torch.equal(patchify3d(unpatchify3d(t, patch, shape), patch), t)


def test_token_order_and_contents():
    # token k of patch indices (l, a, r) is k = (l * nA + a) * nR + r; inside (C, pL, pA, pR)
    x = torch.arange(2 * 2 * 45 * 16 * 9, dtype=torch.float32).reshape(2, 2, 45, 16, 9)
    tokens = patchify3d(x, (3, 16, 1))
    assert patch_grid((45, 16, 9), (3, 16, 1)) == (15, 1, 9)
    for li, r in ((0, 0), (1, 2), (14, 8)):
        k = li * 9 + r
        expected = x[:, :, 3 * li : 3 * li + 3, :, r : r + 1].reshape(2, -1)
        assert torch.equal(tokens[:, k], expected)
    latent = torch.randn(1, 2, 15, 9, 9)
    tok = patchify3d(latent, (3, 1, 1))
    li, a, r = 2, 5, 7
    expected = latent[0, :, 3 * li : 3 * li + 3, a, r].reshape(-1)
    assert torch.equal(tok[0, (li * 9 + a) * 9 + r], expected)


def test_non_dividing_patch_is_a_config_error():
    msg = r"patch \(3,16,2\) does not divide the volume \(45,16,9\)"
    with pytest.raises(ConfigError, match=msg):
        patchify3d(torch.zeros(1, 1, 45, 16, 9), (3, 16, 2))
    with pytest.raises(ConfigError, match="alpha 9 % 2"):
        patch_grid((15, 9, 9), (3, 2, 1))
    with pytest.raises(ConfigError, match="not positive"):
        patch_grid((15, 9, 9), (0, 1, 1))
    with pytest.raises(ConfigError):
        PatchEmbed3d(1, (45, 16, 9), (4, 16, 1), 8)
    with pytest.raises(ValueError, match="do not fit"):
        unpatchify3d(torch.zeros(1, 135, 47), (3, 16, 1), (1, 45, 16, 9))


def test_patch_embed_is_one_shared_linear():
    torch.manual_seed(1)
    emb = PatchEmbed3d(2, (15, 9, 9), (3, 1, 1), 8)
    assert emb.n_tokens == 405 and emb.patch_dim == 6
    x = torch.randn(3, 2, 15, 9, 9)
    out = emb(x)
    assert out.shape == (3, 405, 8)
    torch.testing.assert_close(out, patchify3d(x, (3, 1, 1)) @ emb.proj.weight.T + emb.proj.bias)
    with pytest.raises(ValueError):
        emb(torch.randn(3, 1, 15, 9, 9))


def test_position_encoding_distinguishes_patches_and_learns():
    torch.manual_seed(2)
    pe = LearnablePositionEncoding((15, 1, 9), 16)
    assert pe.positions.shape == (135, 3)
    assert pe.positions[:, 1].abs().max() == 0  # one angular patch: index 0
    assert pe.positions[-1].tolist() == [1.0, 0.0, 1.0]
    enc = pe.encoding()
    assert enc.shape == (135, 16)
    assert torch.cdist(enc, enc).add(torch.eye(135) * 1e3).min() > 1e-3  # all distinct
    x = torch.zeros(2, 135, 16)
    out = pe(x)
    torch.testing.assert_close(out[0], enc)
    out.sum().backward()
    assert pe.freqs.grad is not None and pe.freqs.grad.abs().sum() > 0
    assert "freqs" in pe.state_dict() and "positions" not in pe.state_dict()
