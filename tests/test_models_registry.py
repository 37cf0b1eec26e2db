"""One property test over every registered model, the registry, and the paper sizes."""

import pytest
import torch
from safetensors.torch import load, save

from caloforge.errors import ConfigError
from caloforge.models import (
    CylindricalVQVAE,
    DenseVQVAE,
    DenseVQVAEConfig,
    GPTConfig,
    VQVAEConfig,
    available_models,
    build_model,
)

# tiny tensors: one torch thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


# tiny configuration of every registered model; a new registration must add one here
TINY = {
    "vqvae_cylindrical": dict(
        in_channels=3,
        n_layers=6,
        n_alpha=8,
        channels=(8, 16),
        resolutions=((4, 4), (3, 2)),
        vq_dim=4,
        n_codes=16,
        cond_hidden_dim=8,
        cond_dim=4,
        dropout=0.1,
    ),
    "vqvae_dense": dict(
        layer_sizes=(3, 5, 4),
        hidden_dim=16,
        n_hidden=2,
        conv_channels=4,
        n_shower_codes=3,
        vq_dim=4,
        n_codes=16,
        cond_dim=3,
        cond_hidden_dim=8,
        dropout=0.1,
    ),
    "discriminator_cylindrical": dict(in_channels=3, channels=(8, 8), cond_dim=4),
    "discriminator_dense": dict(n_voxels=12, hidden_dim=16, n_hidden=2, cond_dim=4),
    "gpt": dict(vocab_size=16, seq_len=6, n_layers=2, n_heads=2, d_model=8, dropout=0.1),
    "vit_velocity": dict(
        in_channels=2,
        volume=(6, 4, 3),
        patch=(3, 2, 1),
        dim=12,  # at least the 12 values of a patch (ViTConfig refuses narrower tokens)
        n_heads=2,
        mlp_hidden=16,
        n_blocks=2,
        cond_dim=4,
        time_freq_dim=8,
    ),
    # two condition tokens: with one, attention over the memory is a 1x1 softmax (always 1)
    # and its query/key projections get no gradient by construction
    "transfusion": dict(
        n_layers_energy=5,
        n_cond=2,
        d_model=8,
        n_heads=2,
        n_encoder_layers=1,
        n_decoder_layers=2,
        ff_dim=16,
        head_hidden=8,
        head_layers=3,
        time_embed_dim=4,
        dropout=0.1,
    ),
    "vae_conv3d": dict(
        data_shape=(7, 5, 4),  # ConvTranspose3d needs output_padding (1, 1, 0) here
        channels=(4, 6),
        cond_in_dim=3,
        cond_dim=4,
        cond_hidden_dim=8,
    ),
    "layer_diffusion": dict(
        dim=5, cond_in_dim=1, hidden_dim=8, n_layers=3, embed_dim=4, time_freqs=4, time_hidden=8
    ),
    "latent_score_mlp": dict(
        latent_dim=6, cond_in_dim=3, hidden_dim=8, n_layers=2, embed_dim=4, time_freqs=4,
        time_hidden=8,
    ),
    # padded (8, 4, 4) -> latent grid (2, 1, 1); the mirror decoder covers every block kind
    "pointwise_net": dict(widths=(8, 16), time_dim=8, fourier_frequencies=4),
    "shower_flow": dict(features=5, blocks=1, couplings=1, hidden=8, spline_hidden=8),
    "vae_resnet3d": dict(
        data_shape=(6, 4, 3),
        padding=((1, 1), (0, 0), (0, 1)),
        stem_channels=2,
        widths=(2, 4),
        bottleneck_width=8,
        n_bottleneck=1,
        block_depth=1,
        attention_heads=2,
        cond_in_dim=3,
        cond_dim=4,
        mirror_decoder=True,
    ),
}


def make_inputs(name: str, n: int = 3):
    cond = torch.rand(n, 1)
    if name in ("vqvae_cylindrical", "discriminator_cylindrical"):
        return (torch.rand(n, 3, 6, 8), cond)
    if name in ("vqvae_dense", "discriminator_dense"):
        return (torch.rand(n, 12), cond)
    if name == "vae_conv3d":
        return (torch.rand(n, 1, 7, 5, 4), torch.rand(n, 3))
    if name == "vit_velocity":
        return (torch.randn(n, 2, 6, 4, 3), torch.rand(n), torch.randn(n, 4))
    if name == "layer_diffusion":  # x_t, t, E_inc
        return (torch.randn(n, 5), torch.rand(n), cond)
    if name == "latent_score_mlp":  # z_t, t, (E_inc, u)
        return (torch.randn(n, 6), torch.rand(n), torch.rand(n, 3))
    if name == "vae_resnet3d":
        return (torch.randn(n, 1, 6, 4, 3), torch.rand(n, 3))
    if name == "pointwise_net":  # points (N, P, 4), c_noise (N,), (E', N')
        return (torch.randn(n, 7, 4), torch.randn(n), torch.rand(n, 2))
    if name == "shower_flow":  # x (N, features), E_inc / 100 GeV: log_prob
        return (torch.randn(n, 5), cond)
    if name == "transfusion":  # u_t, one t per layer, 2 condition values, u_data
        return (torch.randn(n, 5), torch.rand(n, 5), torch.rand(n, 2), torch.rand(n, 5))
    return (torch.randint(0, 16, (n, 6)), cond)


# adaLN-Zero models: every gate and the output projection start at 0, so the output is
# exactly 0 and no gradient passes the output layer at initialisation; the property test
# moves their weights off that point first
ZERO_INIT = {"vit_velocity", "vae_resnet3d"}  # the VAE: zero-initialised heads


def scalar_of(name: str, out) -> torch.Tensor:
    if name.startswith("vqvae"):
        # the reconstruction, plus the codebook terms that train the codebook
        return (
            (out.logits**2).mean()
            + (out.fractions**2).sum()
            + out.losses.codebook
            + out.losses.commitment
        )
    if isinstance(out, tuple):  # vae: (x_hat, mu, logvar)
        return sum((t**2).mean() for t in out)
    return (out.float() ** 2).mean()


def test_every_registered_model_has_a_tiny_config():
    assert set(available_models()) == set(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_model_properties(name):
    torch.manual_seed(0)
    model = build_model(name, TINY[name])
    if name in ZERO_INIT:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
    inputs = make_inputs(name)
    # shapes
    model.train()
    out = model(*inputs)
    n = inputs[0].shape[0]
    if name == "vqvae_cylindrical":
        assert out.fractions.shape == (n, 3, 6, 8) and out.indices.shape == (n, 3, 2)
        torch.testing.assert_close(out.fractions.sum((1, 2, 3)), torch.ones(n))
    elif name == "vqvae_dense":
        assert out.fractions.shape == (n, 12) and out.indices.shape == (n, 3)
        torch.testing.assert_close(out.fractions[:, 3:8].sum(1), torch.ones(n))  # layer-wise
    elif name == "discriminator_cylindrical":
        assert out.shape[:2] == (n, 1) and out.shape[-1] == 8
    elif name == "discriminator_dense":
        assert out.shape == (n, 1)
    elif name == "vae_conv3d":
        assert out[0].shape == inputs[0].shape and out[1].shape == out[2].shape == (n, 2, 2, 3, 4)
    elif name == "vit_velocity":
        assert out.shape == inputs[0].shape
    elif name == "transfusion":
        assert out.shape == (n, 5)
    elif name in ("layer_diffusion", "latent_score_mlp"):
        assert out.shape == inputs[0].shape
    elif name == "pointwise_net":
        assert out.shape == inputs[0].shape
    elif name == "shower_flow":
        assert out.shape == (n,)
    elif name == "vae_resnet3d":
        assert out[0].shape == inputs[0].shape and out[1].shape == out[2].shape == (n, 2)
    else:
        assert out.shape == (n, 6, 16)
    # gradients reach every parameter
    model.zero_grad()
    scalar_of(name, out).backward()
    missing = [
        k
        for k, p in model.named_parameters()
        if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0
    ]
    assert not missing, f"no gradient for {missing}"
    # save / load (safetensors, no pickle) gives identical outputs with the same seed
    blob = save({k: v.contiguous() for k, v in model.state_dict().items()})
    torch.manual_seed(123)
    other = build_model(name, TINY[name])
    other.load_state_dict(load(blob))
    for mode in ("eval", "train"):  # train mode: dropout draws must match too
        getattr(model, mode)()
        getattr(other, mode)()
        torch.manual_seed(7)
        a = model(*inputs)
        torch.manual_seed(7)
        b = other(*inputs)
        a = a.fractions if name.startswith("vqvae") else a
        b = b.fractions if name.startswith("vqvae") else b
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_registry_rejects_unknown_names_and_keys():
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("vqvae_cylindrcal", {})
    with pytest.raises(ConfigError, match="unknown config key"):
        build_model("gpt", {"n_layer": 2})
    with pytest.raises(ConfigError):
        build_model("vqvae_cylindrical", {"normalisation": "per-voxel"})
    with pytest.raises(ConfigError):
        GPTConfig(d_model=10, n_heads=3)


def test_cylindrical_vqvae_encoder_and_decoder_commute_with_rotations():
    # rotations by A / A' angular bins are whole latent bins: roll 4 of 16 -> 1 of 4
    torch.manual_seed(1)
    cfg = VQVAEConfig(
        in_channels=3,
        n_layers=10,
        n_alpha=16,
        channels=(8, 8),
        resolutions=((7, 8), (5, 4)),
        vq_dim=4,
        n_codes=16,
        cond_dim=4,
        cond_hidden_dim=8,
    )
    m = CylindricalVQVAE(cfg).double().eval()
    x, c = torch.rand(2, 3, 10, 16, dtype=torch.float64), torch.rand(2, 1, dtype=torch.float64)
    z = m.encode(x, c)
    torch.testing.assert_close(m.encode(torch.roll(x, 4, -1), c), torch.roll(z, 1, -1))
    f = m.decode(z, c)
    torch.testing.assert_close(m.decode(torch.roll(z, 1, -1), c), torch.roll(f, 4, -1))


def test_layerwise_softmax_and_decode_indices_raster_order():
    torch.manual_seed(2)
    cfg = VQVAEConfig(
        in_channels=2,
        n_layers=4,
        n_alpha=6,
        channels=(8,),
        resolutions=((2, 3),),
        vq_dim=4,
        n_codes=8,
        normalisation="layer",
        attention=False,
    )
    m = CylindricalVQVAE(cfg).eval()
    x, c = torch.rand(3, 2, 4, 6), torch.rand(3, 1)
    out = m(x, c)
    torch.testing.assert_close(out.fractions.sum((1, 3)), torch.ones(3, 4))
    flat = out.indices.reshape(3, -1)  # Z' outer, A' inner
    torch.testing.assert_close(m.decode_indices(flat, c), out.fractions)
    assert cfg.n_shower_codes == 6


def test_paper_size_parameter_counts():
    # Table 6/7: ds2 stage 1 about 3.08 M (without the discriminator), stage 2 about 0.235 M
    ds2 = CylindricalVQVAE(VQVAEConfig())
    assert VQVAEConfig().n_shower_codes == 68
    assert abs(ds2.n_parameters() - 3.08e6) / 3.08e6 < 0.05
    gpt = build_model("gpt", GPTConfig(seq_len=2 + 68))
    assert abs(gpt.n_parameters() - 235_000) / 235_000 < 0.01
    photons = DenseVQVAE(DenseVQVAEConfig())
    assert DenseVQVAEConfig().n_voxels == 368
    assert abs(photons.n_parameters() - 3.83e6) / 3.83e6 < 0.05


def test_dense_vqvae_accepts_empty_layers_and_normalises_each_layer():
    torch.manual_seed(3)
    cfg = DenseVQVAEConfig(
        layer_sizes=(2, 0, 3, 0),
        hidden_dim=8,
        n_hidden=1,
        conv_channels=2,
        n_shower_codes=2,
        vq_dim=4,
        n_codes=8,
    )
    out = DenseVQVAE(cfg)(torch.rand(4, 5), torch.rand(4, 1))
    torch.testing.assert_close(out.fractions[:, :2].sum(1), torch.ones(4))
    torch.testing.assert_close(out.fractions[:, 2:].sum(1), torch.ones(4))
    assert cfg.layer_offsets == (0, 2, 2, 5, 5)
    with pytest.raises(ConfigError):
        DenseVQVAEConfig(layer_sizes=(0, 0))
