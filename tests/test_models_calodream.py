"""The two CaloDREAM networks: the transfusion energy net and the 3-D ViT velocity field."""

import pytest
import torch

from caloforge.errors import ConfigError
from caloforge.models import (
    TransfusionConfig,
    TransfusionEnergyNet,
    ViTConfig,
    ViTVelocityField,
    build_model,
)
from caloforge.sampling import solve_ode, uniform_times

# tiny tensors: one torch thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def _perturb(module, std=0.1):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn_like(p))


def _rk4(n_steps=4):
    return lambda f, x0: solve_ode(f, x0, uniform_times(0.0, 1.0, n_steps), "rk4")


TINY_VIT = dict(
    in_channels=2,
    volume=(6, 3, 3),
    patch=(3, 1, 1),
    dim=16,
    n_heads=2,
    mlp_hidden=32,
    n_blocks=2,
    cond_dim=6,
    time_freq_dim=16,
)
TINY_ENERGY = dict(
    n_layers_energy=6,
    d_model=12,
    n_heads=2,
    n_encoder_layers=1,
    n_decoder_layers=2,
    ff_dim=24,
    head_hidden=16,
    head_layers=4,
    time_embed_dim=8,
)


# ------------------------------------------------------------------ ViT


def test_vit_outputs_exactly_zero_at_initialisation():
    torch.manual_seed(0)
    vit = ViTVelocityField(ViTConfig(**TINY_VIT))
    x = torch.randn(3, 2, 6, 3, 3)
    out = vit(x, torch.rand(3), torch.randn(3, 6))
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(x))


def test_vit_depends_on_state_time_and_condition_once_trained_off_zero():
    torch.manual_seed(1)
    vit = ViTVelocityField(ViTConfig(**TINY_VIT)).double()
    _perturb(vit)
    x = torch.randn(2, 2, 6, 3, 3, dtype=torch.float64)
    t = torch.tensor([0.3, 0.3], dtype=torch.float64)
    cond = torch.randn(2, 6, dtype=torch.float64)
    out = vit(x, t, cond)
    # one number for all showers, as ODE solvers pass t, equals the (N,) form
    torch.testing.assert_close(vit(x, torch.tensor(0.3, dtype=torch.float64), cond), out)
    torch.testing.assert_close(vit(x, 0.3, cond), out)
    assert not torch.allclose(vit(x, t + 0.2, cond), out)
    assert not torch.allclose(vit(x, t, cond + 1.0), out)
    assert not torch.allclose(vit(x + 1.0, t, cond), out)
    # each shower's output depends on its own inputs only
    torch.testing.assert_close(vit(x[:1], t[:1], cond[:1]), out[:1])
    # learnable positions break the patch permutation symmetry: swapping two patches of
    # the input does not just swap their outputs
    x2 = x.clone()
    x2[:, :, 0:3], x2[:, :, 3:6] = x[:, :, 3:6], x[:, :, 0:3]
    swapped = out.clone()
    swapped[:, :, 0:3], swapped[:, :, 3:6] = out[:, :, 3:6], out[:, :, 0:3]
    assert not torch.allclose(vit(x2, t, cond), swapped)


def test_vit_integrates_as_an_ode_velocity():
    torch.manual_seed(2)
    vit = ViTVelocityField(ViTConfig(**TINY_VIT)).eval()
    _perturb(vit)
    cond = torch.randn(2, 6)
    x0 = torch.randn(2, 2, 6, 3, 3)
    with torch.no_grad():
        x1 = solve_ode(vit, x0, uniform_times(0.0, 1.0, 3), "euler", cond=cond)
        euler = x0
        for k in range(3):
            euler = euler + vit(euler, torch.full((2,), k / 3), cond) / 3
    torch.testing.assert_close(x1, euler)


def test_vit_config_checks_patch_and_widths():
    msg = r"patch \(3,16,2\) does not divide the volume \(45,16,9\)"
    with pytest.raises(ConfigError, match=msg):
        ViTConfig(patch=(3, 16, 2))
    with pytest.raises(ConfigError, match="divisible"):
        ViTConfig(dim=100, n_heads=6)
    with pytest.raises(ConfigError):
        ViTConfig(n_blocks=0)
    cfg = ViTConfig(in_channels=2, volume=[15, 9, 9], patch=[3, 1, 1])  # lists from JSON
    assert cfg.volume == (15, 9, 9) and cfg.grid == (5, 9, 9)
    assert cfg.n_tokens == 405 and cfg.patch_dim == 6
    assert ViTConfig().n_tokens == 135 and ViTConfig().patch_dim == 48
    with pytest.raises(ValueError, match="cond"):
        ViTVelocityField(ViTConfig(**TINY_VIT))(
            torch.randn(1, 2, 6, 3, 3), torch.rand(1), torch.randn(1, 5)
        )


def _token_outputs(layer_or_vit, n=64):
    """Rank of the velocities a model outputs per patch over random inputs."""
    torch.manual_seed(3)
    _perturb(layer_or_vit, std=0.5)
    if isinstance(layer_or_vit, ViTVelocityField):
        cfg = layer_or_vit.config
        x = torch.randn(n, cfg.in_channels, *cfg.volume)
        out = layer_or_vit(x, torch.rand(n), torch.randn(n, cfg.cond_dim))
        # one row per (shower, patch): the patch axes are (3, 1, 1) here, channels first
        rows = out.reshape(n, cfg.in_channels, 2, 3, 3, 3).permute(0, 2, 4, 5, 1, 3)
        rows = rows.reshape(-1, cfg.patch_dim)
    else:
        rows = layer_or_vit(torch.randn(n, 5, layer_or_vit.linear.in_features),
                            torch.randn(n, layer_or_vit.linear.in_features)).reshape(n * 5, -1)
    rows = rows - rows.mean(0)
    return int(torch.linalg.matrix_rank(rows.double(), rtol=1e-6))


def test_vit_tokens_narrower_than_their_patch_are_refused():
    # why: a final projection of a dim-wide token spans at most dim directions of a
    # patch, so the remaining directions of the noise are never transported
    from caloforge.nn import DiTFinalLayer

    assert _token_outputs(DiTFinalLayer(4, 6)) == 4
    with pytest.raises(ConfigError, match="dim 4 is smaller than the patch size 6"):
        ViTConfig(**{**TINY_VIT, "dim": 4})
    # as wide as the patch: the velocities of a patch reach all its directions
    vit = ViTVelocityField(ViTConfig(**{**TINY_VIT, "dim": 6, "mlp_hidden": 12}))
    assert _token_outputs(vit) == 6


# ------------------------------------------------------------------ energy network


def _energy(seed=0, **kw):
    torch.manual_seed(seed)
    return TransfusionEnergyNet(TransfusionConfig(**{**TINY_ENERGY, **kw})).double().eval()


def test_conditions_are_causal_with_the_input_shifted_right():
    m = _energy()
    e = torch.rand(3, 1, dtype=torch.float64)
    u = torch.rand(3, 6, dtype=torch.float64)
    c = m.conditions(e, u)
    assert c.shape == (3, 6, 12)
    for k in range(6):
        u2 = u.clone()
        u2[:, k] += 0.5
        c2 = m.conditions(e, u2)
        # c_0 … c_k do not see u_k (Eq. 9: c_i depends on u_<i only) ...
        torch.testing.assert_close(c2[:, : k + 1], c[:, : k + 1], rtol=0, atol=0)
        # ... and every later condition does
        if k < 5:
            assert (c2[:, k + 1 :] - c[:, k + 1 :]).abs().amax(-1).min() > 1e-8
    # c_0 depends on E_inc alone, and every condition sees E_inc
    assert (m.conditions(e + 0.3, u) - c).abs().amax(-1).min() > 1e-8
    # a prefix gives the same leading conditions
    torch.testing.assert_close(m.conditions(e, u[:, :3]), c[:, :3], rtol=1e-12, atol=1e-12)


def test_forward_is_the_shared_head_on_teacher_forced_conditions():
    m = _energy(1)
    n = 4
    e = torch.rand(n, 1, dtype=torch.float64)
    u_data = torch.rand(n, 6, dtype=torch.float64)
    u_t = torch.randn(n, 6, dtype=torch.float64)
    t = torch.rand(n, 6, dtype=torch.float64)
    v = m(u_t, t, e, u_data)
    assert v.shape == (n, 6)
    c = m.conditions(e, u_data)
    torch.testing.assert_close(v, m.velocity(u_t, t, c))
    # one shared head: position i's velocity is the same function of (u_i(t), c_i, t)
    for i in (0, 3, 5):
        torch.testing.assert_close(v[:, i], m.velocity(u_t[:, i], t[:, i], c[:, i]))
    # one t per shower broadcasts over the layers
    t1 = torch.rand(n, dtype=torch.float64)
    torch.testing.assert_close(m(u_t, t1, e, u_data), m(u_t, t1[:, None].expand(n, 6), e, u_data))
    # the head depends on time and on the state
    assert not torch.allclose(m(u_t, t + 0.1, e, u_data), v)
    assert not torch.allclose(m(u_t + 0.1, t, e, u_data), v)


def test_sample_is_finite_deterministic_and_equals_layer_by_layer_recomputation():
    m = _energy(2)
    n = 5
    e = torch.rand(n, 1, dtype=torch.float64)
    solve = _rk4()
    a = m.sample(e, solve, generator=torch.Generator().manual_seed(11))
    b = m.sample(e, solve, generator=torch.Generator().manual_seed(11))
    c = m.sample(e, solve, generator=torch.Generator().manual_seed(12))
    assert a.shape == (n, 6) and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    # the same chain without the cache: full teacher-forced conditions of the finished
    # prefix, then a full 1-D solve per layer, with the same noise draws
    gen = torch.Generator().manual_seed(11)
    u = torch.zeros(n, 0, dtype=torch.float64)
    with torch.no_grad():
        for i in range(6):
            prefix = torch.cat([u, torch.zeros(n, 1, dtype=torch.float64)], 1)  # last unused
            cond_i = m.conditions(e, prefix)[:, i]
            x0 = torch.randn(n, generator=gen, dtype=torch.float64)
            u_i = solve(lambda x, t, c=cond_i: m.velocity(x, t, c), x0)
            u = torch.cat([u, u_i[:, None]], 1)
    torch.testing.assert_close(a, u, rtol=1e-10, atol=1e-10)


def test_sample_in_float32_with_the_global_generator():
    torch.manual_seed(3)
    m = TransfusionEnergyNet(TransfusionConfig(**TINY_ENERGY)).eval()
    u = m.sample(torch.rand(7), _rk4(2))  # (N,) E_inc is accepted for one condition
    assert u.shape == (7, 6) and u.dtype == torch.float32 and torch.isfinite(u).all()
    assert all(p.grad is None for p in m.parameters())


def test_energy_config_checks():
    with pytest.raises(ConfigError, match="one-hot"):
        TransfusionConfig(d_model=32)  # 1 + 46 slots do not fit
    with pytest.raises(ConfigError):
        TransfusionConfig(d_model=66, n_heads=4)
    with pytest.raises(ConfigError):
        TransfusionConfig(time_embed_dim=63)
    with pytest.raises(ConfigError):
        TransfusionConfig(head_layers=0)
    m = _energy()
    with pytest.raises(ValueError, match="u_t and u_data"):
        m(torch.zeros(2, 5), torch.zeros(2), torch.zeros(2, 1), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="condition"):
        m.conditions(torch.zeros(2, 2), torch.zeros(2, 6))


# ------------------------------------------------------------------ paper sizes


def _count(name, **cfg):
    with torch.device("meta"):  # counts only: no memory, no initialisation work
        model = build_model(name, cfg)
    return sum(p.numel() for p in model.parameters())


def test_paper_size_parameter_counts():
    # Energy net, Tab. 1 widths. Transformer: per encoder layer 4 (64^2 + 64) attention
    # + (2 * 64 * 1024 + 1024 + 64) MLP + 2 LayerNorms = 149,056; per decoder layer one
    # more attention and LayerNorm = 165,824; plus two final LayerNorms: 1,259,776.
    # Head: Linear(129, 256), six Linear(256, 256), Linear(256, 1), 7 LayerNorms and the
    # time Linear(64, 64): 436,033. Total 1,695,809 ~ 1.70 M.
    energy = _count("transfusion")
    print(f"energy net (Tab. 1 widths): {energy:,}")
    assert energy == 1_695_809
    code_widths = _count("transfusion", ff_dim=512, head_hidden=512)
    print(f"energy net (ff 512, head 512): {code_widths:,}")
    assert abs(code_widths - 2.38e6) / 2.38e6 < 0.01
    # ViT ds2: 6 blocks of 4 (D^2 + D) + 2 D M + M + D + 6 D^2 + 6 D, D = 480, M = 1920,
    # plus patch, time, condition embeddings and the final layer: ~26.0 M
    vit = _count("vit_velocity")
    print(f"ViT ds2: {vit:,}")
    assert abs(vit - 26.0e6) / 26.0e6 < 0.02
    vit3 = _count("vit_velocity", volume=(45, 50, 18), patch=(3, 5, 2), dim=240, mlp_hidden=720)
    print(f"ViT ds3: {vit3:,}")
    assert abs(vit3 - 5.9e6) / 5.9e6 < 0.03
    lavit = _count(
        "vit_velocity",
        in_channels=2,
        volume=(15, 9, 9),
        patch=(3, 1, 1),
        dim=240,
        mlp_hidden=960,
        n_blocks=10,
    )
    print(f"laViT ds2: {lavit:,}")
    # 10 blocks of 1,040,400 (D = 240, M = 960) plus 0.31 M of embeddings and final layer
    assert abs(lavit - 10.71e6) / 10.71e6 < 0.01
    # with the code widths, ViT ds2 + energy net is the challenge entry's 2.84e7 parameters
    assert abs(vit + code_widths - 2.84e7) / 2.84e7 < 0.01
