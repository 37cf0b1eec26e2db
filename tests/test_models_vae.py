"""The CaloDREAM convolutional VAE and the shared autoencoder interface."""

from __future__ import annotations

import pytest
import torch

from caloforge.errors import ConfigError
from caloforge.models import (
    Autoencoder,
    ConvVAE3d,
    CylindricalVQVAE,
    DenseVQVAE,
    DenseVQVAEConfig,
    VAEConfig,
    VQVAEConfig,
    build_model,
)
from caloforge.models.autoencoders import (
    VariationalAutoencoder,
    coord_channels,
    flat_to_volume,
    volume_to_flat,
)

# tiny tensors: one torch thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(**kw) -> VAEConfig:
    base = dict(
        data_shape=(7, 5, 4),
        channels=(4, 6),
        cond_in_dim=3,
        cond_dim=4,
        cond_hidden_dim=8,
    )
    base.update(kw)
    return VAEConfig(**base)


def test_ds2_config_is_table_4():
    cfg = VAEConfig()
    assert cfg.data_shape == (45, 16, 9) and cfg.channels == (64, 64)
    assert cfg.block_shapes == ((45, 16, 9), (15, 9, 9), (15, 9, 9))
    assert cfg.latent_shape == (2, 15, 9, 9)
    assert cfg.output_paddings == ((0, 0, 0), (0, 0, 0))
    assert cfg.reduction_factor == pytest.approx(6480 / 2430)
    assert VAEConfig.ds2() == cfg
    # ds3 as printed kernels/strides (the printed bottleneck's 9 layers cannot come out)
    ds3 = VAEConfig.ds3()
    assert ds3.latent_shape == (2, 21, 26, 16)
    assert ds3.reduction_factor == pytest.approx(40500 / (2 * 21 * 26 * 16))


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError):
        _tiny(norm="layer")
    with pytest.raises(ConfigError):
        _tiny(kernels=((3, 2, 1),))  # one kernel for two blocks
    with pytest.raises(ConfigError):
        _tiny(kernels=((9, 2, 1), (1, 1, 1)))  # 7 layers cannot take a kernel of 9
    with pytest.raises(ConfigError):
        _tiny(channels=())
    with pytest.raises(ConfigError):
        _tiny(kernels=((3, 2), (1, 1)), strides=((3, 2), (1, 1)), paddings=((0, 1), (0, 0)))
    with pytest.raises(ConfigError, match="unknown config key"):
        build_model("vae_conv3d", {"chanels": (4,)})


@pytest.mark.parametrize("layout", ["ds2", "tiny"])
def test_output_shape_equals_input_shape_and_lies_in_unit_interval(layout):
    torch.manual_seed(0)
    cfg = VAEConfig() if layout == "ds2" else _tiny()
    m = ConvVAE3d(cfg).eval()
    x = torch.rand(2, 1, *cfg.data_shape)
    cond = torch.rand(2, cfg.cond_in_dim)
    with torch.no_grad():
        x_hat, mu, logvar = m(x, cond)
        z = m.encode(x, cond)
        d1, d2 = m.decode(z, cond), m.decode(z, cond)
    assert x_hat.shape == x.shape
    assert mu.shape == logvar.shape == z.shape == (2, *cfg.latent_shape)
    assert ((x_hat > 0) & (x_hat < 1)).all()
    # decoding is deterministic (the sigmoid mean, no Bernoulli draw), and eval-mode
    # forward decodes the mean
    assert torch.equal(d1, d2) and torch.equal(x_hat, d1) and torch.equal(z, mu)


def test_tiny_layout_needs_output_padding():
    cfg = _tiny()
    assert cfg.block_shapes == ((7, 5, 4), (2, 3, 4), (2, 3, 4))
    assert cfg.output_paddings == ((1, 1, 0), (0, 0, 0))
    # three blocks of different widths, strides and paddings still come back to the input
    cfg3 = _tiny(
        data_shape=(11, 7, 6),
        channels=(4, 6, 8),
        kernels=((3, 2, 1), (2, 2, 3), (1, 1, 1)),
        strides=((2, 2, 1), (2, 1, 2), (1, 1, 1)),
        paddings=((0, 1, 0), (1, 0, 0), (0, 0, 0)),
    )
    assert cfg3.output_paddings == ((0, 1, 0), (1, 0, 1), (0, 0, 0))
    x_hat, mu, _ = ConvVAE3d(cfg3)(torch.rand(2, 1, 11, 7, 6), torch.rand(2, 3))
    assert x_hat.shape == (2, 1, 11, 7, 6) and mu.shape == (2, 2, 3, 3, 2)


def test_sample_latent_is_mu_plus_sigma_times_generator_noise():
    torch.manual_seed(1)
    m = ConvVAE3d(_tiny()).eval()
    x, cond = torch.rand(3, 1, 7, 5, 4), torch.rand(3, 3)
    with torch.no_grad():
        mu, logvar = m.encode_distribution(x, cond)
        r1 = m.sample_latent(x, cond, torch.Generator().manual_seed(5))
        r2 = m.sample_latent(x, cond, torch.Generator().manual_seed(5))
        r3 = m.sample_latent(x, cond, torch.Generator().manual_seed(6))
    z = torch.randn(mu.shape, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(r1, mu + torch.exp(0.5 * logvar) * z)
    assert torch.equal(r1, r2) and not torch.equal(r1, r3)
    # training-mode forward samples, eval-mode forward does not
    m.train()
    torch.manual_seed(0)
    a = m(x, cond)[0]
    torch.manual_seed(1)
    b = m(x, cond)[0]
    assert not torch.equal(a, b)
    torch.testing.assert_close(m(x, cond, sample=False)[0], m.decode(mu, cond))


def test_condition_reaches_encoder_and_decoder():
    torch.manual_seed(2)
    m = ConvVAE3d(_tiny()).eval()
    x = torch.rand(1, 1, 7, 5, 4)
    c1, c2 = torch.zeros(1, 3), torch.ones(1, 3)
    with torch.no_grad():
        assert (m.encode(x, c1) - m.encode(x, c2)).abs().max() > 1e-3
        z = m.encode(x, c1)
        assert (m.decode(z, c1) - m.decode(z, c2)).abs().max() > 1e-3


def test_group_norm_makes_each_shower_independent_of_its_batch():
    torch.manual_seed(3)
    m = ConvVAE3d(_tiny()).train()  # even in training mode
    x, cond = torch.rand(4, 1, 7, 5, 4), torch.rand(4, 3)
    mu_all, _ = m.encode_distribution(x, cond)
    mu_one, _ = m.encode_distribution(x[1:2], cond[1:2])
    torch.testing.assert_close(mu_one, mu_all[1:2])


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_other_norms_and_no_coordconv_run(norm):
    torch.manual_seed(4)
    m = ConvVAE3d(_tiny(norm=norm, coord_conv=False))
    x, cond = torch.rand(2, 1, 7, 5, 4), torch.rand(2, 3)
    x_hat, mu, _ = m(x, cond)
    assert x_hat.shape == x.shape and mu.shape == (2, 2, 2, 3, 4)


def test_coordconv_channels():
    c = coord_channels((3, 4, 1), torch.zeros(1, dtype=torch.float64))
    assert c.shape == (1, 3, 3, 4, 1) and c.dtype == torch.float64
    torch.testing.assert_close(c[0, 0, :, 0, 0], torch.tensor([-1.0, 0.0, 1.0], dtype=c.dtype))
    assert torch.equal(c[0, 0], c[0, 0, :, :1, :].expand(3, 4, 1))  # layer coord: layer only
    torch.testing.assert_close(c[0, 1, 0, :, 0], torch.linspace(-1, 1, 4, dtype=c.dtype))
    assert (c[0, 2] == 0).all()  # an axis of size 1 has coordinate 0


def test_coordconv_breaks_translation_equivariance():
    # one block, no resizing: away from the borders a plain conv stack is equivariant to
    # shifts along r; with the coordinate channels it is not
    x = torch.zeros(1, 1, 3, 3, 20)
    x[0, 0, 1, 1, 8] = 1.0
    xs = torch.roll(x, 1, -1)
    cond = torch.zeros(1, 3)
    for cc in (False, True):
        torch.manual_seed(5)
        cfg = _tiny(
            data_shape=(3, 3, 20),
            channels=(4,),
            kernels=((1, 1, 1),),
            strides=((1, 1, 1),),
            paddings=((0, 0, 0),),
            norm="none",
            coord_conv=cc,
        )
        m = ConvVAE3d(cfg).eval()
        with torch.no_grad():
            diff = (m.encode(xs, cond)[..., 10] - m.encode(x, cond)[..., 9]).abs().max()
        assert (diff < 1e-6) == (not cc), (cc, diff)


def test_flat_volume_round_trip():
    x = torch.arange(2 * 7 * 5 * 4, dtype=torch.float32).reshape(2, -1)
    v = flat_to_volume(x, (7, 5, 4))
    assert v.shape == (2, 1, 7, 5, 4)
    assert v[1, 0, 2, 3, 1] == x[1, 2 * 20 + 3 * 4 + 1]  # (layer, alpha, r), r fastest
    assert torch.equal(volume_to_flat(v), x)


def test_every_autoencoder_satisfies_the_interface():
    torch.manual_seed(6)
    vae = ConvVAE3d(_tiny())
    cyl = CylindricalVQVAE(
        VQVAEConfig(
            in_channels=3,
            n_layers=6,
            n_alpha=8,
            channels=(8,),
            resolutions=((3, 4),),
            vq_dim=4,
            n_codes=8,
            cond_dim=4,
            cond_hidden_dim=8,
            attention=False,
        )
    )
    dense = DenseVQVAE(
        DenseVQVAEConfig(
            layer_sizes=(3, 5),
            hidden_dim=8,
            n_hidden=1,
            conv_channels=2,
            n_shower_codes=3,
            vq_dim=4,
            n_codes=8,
        )
    )
    cases = [
        (vae, torch.rand(2, 1, 7, 5, 4), torch.rand(2, 3)),
        (cyl, torch.rand(2, 3, 6, 8), torch.rand(2, 1)),
        (dense, torch.rand(2, 8), torch.rand(2, 1)),
    ]
    for model, x, cond in cases:
        assert isinstance(model, Autoencoder)
        model.eval()
        with torch.no_grad():
            z = model.encode(x, cond)
            assert tuple(z.shape) == (2, *model.latent_shape)
            assert model.decode(z, cond).shape == x.shape
    assert isinstance(vae, VariationalAutoencoder)
    assert not isinstance(cyl, VariationalAutoencoder)
    assert cyl.latent_shape == (4, 3, 4) and dense.latent_shape == (4, 3)
