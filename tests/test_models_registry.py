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


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny tensors: thread hand-offs cost more than they save on a shared 2-core machine
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


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
}


def make_inputs(name: str, n: int = 3):
    cond = torch.rand(n, 1)
    if name in ("vqvae_cylindrical", "discriminator_cylindrical"):
        return (torch.rand(n, 3, 6, 8), cond)
    if name in ("vqvae_dense", "discriminator_dense"):
        return (torch.rand(n, 12), cond)
    return (torch.randint(0, 16, (n, 6)), cond)


def scalar_of(name: str, out) -> torch.Tensor:
    if name.startswith("vqvae"):
        # the reconstruction, plus the codebook terms that train the codebook
        return (
            (out.logits**2).mean()
            + (out.fractions**2).sum()
            + out.losses.codebook
            + out.losses.commitment
        )
    return (out.float() ** 2).mean()


def test_every_registered_model_has_a_tiny_config():
    assert set(available_models()) == set(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_model_properties(name):
    torch.manual_seed(0)
    model = build_model(name, TINY[name])
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
