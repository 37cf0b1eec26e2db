"""CaloClouds II's PointWise Net: shapes, per-point independence, conditioning, size."""

import pytest
import torch
from safetensors.torch import load, save

from caloforge.errors import ConfigError
from caloforge.models import (
    MODEL_REGISTRY,
    ConcatSquashLinear,
    PointWiseNet,
    PointWiseNetConfig,
    build_model,
)

SMALL = dict(widths=(16, 8), time_dim=8, fourier_frequencies=4)


# tiny tensors: one torch thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def inputs(n=3, p=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, p, 4, generator=g), torch.randn(n, generator=g),
            torch.rand(n, 2, generator=g) * 2 - 1)


@pytest.mark.parametrize("p", [0, 1, 7])
def test_shapes_including_empty_and_single_point_clouds(p):
    torch.manual_seed(0)
    net = PointWiseNet(PointWiseNetConfig(**SMALL))
    x, c_noise, cond = inputs(p=p)
    out = net(x, c_noise, cond)
    assert out.shape == (3, p, 4) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # a 0-d c_noise is shared by the batch
    torch.testing.assert_close(net(x, c_noise[0], cond), net(x, c_noise[0].expand(3), cond))


def test_bad_shapes_raise_one_line_errors():
    net = PointWiseNet(PointWiseNetConfig(**SMALL))
    x, c_noise, cond = inputs()
    with pytest.raises(ValueError, match="x must have shape"):
        net(x[..., :3], c_noise, cond)
    with pytest.raises(ValueError, match="c_noise"):
        net(x, c_noise[:2], cond)
    with pytest.raises(ValueError, match="cond"):
        net(x, c_noise, cond[:, :1])


def test_points_are_processed_independently_and_equivariantly():
    torch.manual_seed(1)
    net = PointWiseNet(PointWiseNetConfig(**SMALL))
    x, c_noise, cond = inputs(n=2, p=6)
    out = net(x, c_noise, cond)
    perm = torch.randperm(6)
    torch.testing.assert_close(net(x[:, perm], c_noise, cond), out[:, perm])
    # a point's output is the same alone as among others (no interaction between points)
    torch.testing.assert_close(net(x[:, 2:3], c_noise, cond), out[:, 2:3])
    # ... but the showers' conditions do differ per shower: swapping them changes the output
    swapped = net(x, c_noise, cond.flip(0))
    assert not torch.allclose(swapped, out)


def test_condition_and_time_reach_every_layer():
    torch.manual_seed(2)
    net = PointWiseNet(PointWiseNetConfig(**SMALL))
    x, c_noise, cond = inputs()
    cond = cond.clone().requires_grad_(True)
    c_noise = c_noise.clone().requires_grad_(True)
    out = net(x, c_noise, cond)
    out.square().sum().backward()
    assert cond.grad.abs().min() > 0 and c_noise.grad.abs().min() > 0
    # every ConcatSquash layer's gate and shift receive gradient through the context
    csl = [m for m in net.modules() if isinstance(m, ConcatSquashLinear)]
    assert len(csl) == 3
    for layer in csl:
        assert layer.gate.weight.grad.abs().sum() > 0
        assert layer.shift.weight.grad.abs().sum() > 0
        assert layer.shift.bias is None


def test_every_layer_sees_the_same_shower_context():
    torch.manual_seed(3)
    net = PointWiseNet(PointWiseNetConfig(**SMALL))
    x, c_noise, cond = inputs()
    seen = []
    hooks = [m.register_forward_hook(lambda mod, args, out: seen.append(args[1]))
             for m in net.modules() if isinstance(m, ConcatSquashLinear)]
    net(x, c_noise, cond)
    for h in hooks:
        h.remove()
    expected = net.context(c_noise, cond)[:, None]  # (N, 1, time_dim + cond_dim)
    assert len(seen) == 3 and expected.shape == (3, 1, 10)
    for c in seen:
        torch.testing.assert_close(c, expected)
    torch.testing.assert_close(expected[:, 0, -2:], cond)


def _concat_squash_by_hand(layer, h, c):
    return (h @ layer.layer.weight.T + layer.layer.bias) * torch.sigmoid(
        c @ layer.gate.weight.T + layer.gate.bias
    ) + c @ layer.shift.weight.T


def test_concat_squash_formula():
    torch.manual_seed(4)
    layer = ConcatSquashLinear(3, 2, 5)
    h, c = torch.randn(4, 6, 3), torch.randn(4, 1, 5)
    torch.testing.assert_close(layer(h, c), _concat_squash_by_hand(layer, h, c))


def test_generation_folds_the_context_into_the_weights_with_the_same_result():
    torch.manual_seed(4)
    layer = ConcatSquashLinear(3, 2, 5)
    h, c = torch.randn(4, 6, 3), torch.randn(4, 1, 5)
    expected = _concat_squash_by_hand(layer, h, c).detach()
    with torch.no_grad():
        assert layer._folds(h, c)  # 3 inputs < 2 x 6 points: the folded product is cheaper
        torch.testing.assert_close(layer(h, c), expected)
        assert not layer._folds(h[:, :1], c)  # one point per shower: the plain form
        torch.testing.assert_close(layer(h[:, :1], c), expected[:, :1])
    assert not layer._folds(h, c)  # training keeps the plain form
    net = PointWiseNet(PointWiseNetConfig(**SMALL))
    x, c_noise, cond = inputs(n=3, p=40)
    trained_form = net(x, c_noise, cond).detach()
    with torch.no_grad():
        torch.testing.assert_close(net(x, c_noise, cond), trained_form)


def test_residual_adds_the_input():
    torch.manual_seed(5)
    plain = PointWiseNet(PointWiseNetConfig(**SMALL))
    res = PointWiseNet(PointWiseNetConfig(**SMALL, residual=True))
    res.load_state_dict(plain.state_dict())
    x, c_noise, cond = inputs()
    torch.testing.assert_close(res(x, c_noise, cond), x + plain(x, c_noise, cond))


def test_paper_size_parameter_count():
    # the paper's network: 4-128-256-512-256-128-4, context 66, time Linear(64, 64): 504,920
    net = PointWiseNet()
    assert net.n_parameters() == 504_920
    assert net.fourier.w.shape == (32,) and "fourier.w" in net.state_dict()
    # (in + 1) * out (W, b) + (66 + 1) * out (gate) + 66 * out (shift) per layer
    dims = (4, 128, 256, 512, 256, 128, 4)
    by_hand = sum(b * (a + 134) for a, b in zip(dims[:-1], dims[1:])) + 64 * 64 + 64
    assert by_hand == 504_920


def test_fourier_frequencies_are_fixed_by_seed_not_the_global_rng():
    torch.manual_seed(0)
    a = PointWiseNet(PointWiseNetConfig(**SMALL))
    torch.manual_seed(1)
    b = PointWiseNet(PointWiseNetConfig(**SMALL))
    torch.testing.assert_close(a.fourier.w, b.fourier.w, rtol=0, atol=0)
    assert not torch.equal(a.time_linear.weight, b.time_linear.weight)  # weights do differ
    # std 16 frequencies (32 of them at paper size)
    w = PointWiseNet().fourier.w
    assert 8 < w.std() < 24


def test_state_dict_round_trip_gives_identical_output():
    torch.manual_seed(6)
    net = PointWiseNet(PointWiseNetConfig(**SMALL))
    blob = save({k: v.contiguous() for k, v in net.state_dict().items()})
    torch.manual_seed(7)
    other = PointWiseNet(PointWiseNetConfig(**SMALL))
    x, c_noise, cond = inputs()
    assert not torch.equal(other(x, c_noise, cond), net(x, c_noise, cond))
    other.load_state_dict(load(blob))
    torch.testing.assert_close(other(x, c_noise, cond), net(x, c_noise, cond), rtol=0, atol=0)


def test_registry_build_and_strict_config():
    assert MODEL_REGISTRY["pointwise_net"] == (PointWiseNet, PointWiseNetConfig)
    net = build_model("pointwise_net", {"widths": [16, 8], "time_dim": 8, "cond_dim": 3})
    assert net.config.widths == (16, 8) and len(net.layers) == 3
    assert net(torch.randn(2, 4, 4), torch.zeros(2), torch.zeros(2, 3)).shape == (2, 4, 4)
    with pytest.raises(ConfigError, match="unknown config key"):
        build_model("pointwise_net", {"width": (16, 8)})
    with pytest.raises(ConfigError, match="widths"):
        PointWiseNetConfig(widths=(16, 0))
    with pytest.raises(ConfigError, match="fourier_std"):
        PointWiseNetConfig(fourier_std=0.0)
    with pytest.raises(ConfigError, match="point_dim"):
        PointWiseNetConfig(point_dim=0)


def test_float64_and_empty_batch():
    net = PointWiseNet(PointWiseNetConfig(**SMALL)).double()
    out = net(torch.randn(2, 3, 4, dtype=torch.float64), torch.zeros(2, dtype=torch.float64),
              torch.zeros(2, 2, dtype=torch.float64))
    assert out.dtype == torch.float64
    assert net(torch.zeros(0, 3, 4, dtype=torch.float64), torch.zeros(0, dtype=torch.float64),
               torch.zeros(0, 2, dtype=torch.float64)).shape == (0, 3, 4)
