"""Conditional flow matching: the loss by hand, time modes, and a learned 2-D mixture."""

import pytest
import torch
from torch import nn

from caloforge.errors import ConfigError
from caloforge.objectives import FlowMatchingObjective, flow_matching_loss
from caloforge.sampling import parse_solver


def test_loss_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(6, 3, generator=g)
    eps = torch.randn(6, 3, generator=g)
    t = torch.rand(6, generator=g)

    def model(x, t, scale):
        return scale * x + t[:, None]

    x_t = (1 - t[:, None]) * eps + t[:, None] * x1
    expected = ((2.0 * x_t + t[:, None] - (x1 - eps)) ** 2).mean()
    got = flow_matching_loss(model, x1, {"scale": 2.0}, t=t, noise=eps)
    torch.testing.assert_close(got, expected)
    # the exact conditional target gives zero loss
    assert float(flow_matching_loss(lambda x, t: x1 - eps, x1, t=t, noise=eps)) == 0.0


def _recording_model(store):
    def model(x, t, **cond):
        store.append((x.clone(), t.clone(), cond))
        return torch.zeros_like(x)

    return model


def test_objective_passes_conditions_and_draws_time_per_sample():
    calls = []
    g = torch.Generator().manual_seed(1)
    obj = FlowMatchingObjective(generator=g)
    x = torch.randn(8, 5)
    energy = torch.rand(8, 1)
    terms = obj(_recording_model(calls), {"x": x, "energy": energy})
    (x_t, t, cond), = calls
    assert t.shape == (8,)
    assert set(cond) == {"energy"} and torch.equal(cond["energy"], energy)
    # zero velocity: the loss is the mean square of the target x - eps, with
    # eps = (x_t - t x) / (1 - t) recovered from what the model saw
    eps = (x_t - t[:, None] * x) / (1 - t[:, None])
    torch.testing.assert_close(terms["loss"], ((x - eps) ** 2).mean(), rtol=1e-4, atol=1e-5)


def test_time_per_element_is_independent():
    calls = []
    obj = FlowMatchingObjective(time="element", generator=torch.Generator().manual_seed(2))
    x = torch.randn(16, 45)
    obj(_recording_model(calls), {"x": x})
    _, t, _ = calls[0]
    assert t.shape == (16, 45)
    # every element has its own time: no two equal within a row, rows differ
    for row in t:
        assert row.unique().numel() == 45
    assert not torch.equal(t[0], t[1])
    assert 0.0 <= float(t.min()) and float(t.max()) < 1.0


def test_reproducible_with_a_generator():
    x = torch.randn(4, 3)
    a = FlowMatchingObjective(generator=torch.Generator().manual_seed(5))
    b = FlowMatchingObjective(generator=torch.Generator().manual_seed(5))
    model = nn.Linear(3, 3)

    def f(x, t):
        return model(x) * t[:, None]

    assert torch.equal(a(f, {"x": x})["loss"], b(f, {"x": x})["loss"])


def test_bad_arguments():
    with pytest.raises(ConfigError, match="time must be one of"):
        FlowMatchingObjective(time="layer")
    with pytest.raises(ConfigError, match="ProbabilityPath"):
        FlowMatchingObjective(path="linear")
    obj = FlowMatchingObjective()
    with pytest.raises(KeyError, match="'x'"):
        obj(lambda x, t: x, {"data": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="model returned shape"):
        obj(lambda x, t: x[:, :1], {"x": torch.zeros(2, 2)})


# --- a 2-D Gaussian mixture learned end to end ------------------------------------------

MEANS = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]])
WEIGHTS = torch.tensor([0.5, 0.3, 0.2])
STD = 0.35


def mixture(n, g, means=MEANS):
    k = torch.multinomial(WEIGHTS, n, replacement=True, generator=g)
    return means[k] + STD * torch.randn(n, 2, generator=g)


class VelocityNet(nn.Module):
    def __init__(self, hidden=64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(3, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, 2),
        )

    def forward(self, x, t):
        t = t.expand(x.shape[0]) if t.dim() == 0 else t
        return self.net(torch.cat([x, t[:, None]], dim=1))


def energy_distance(a, b):
    return 2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean()


def permutation_threshold(a, b, n_perm, g, level=0.99):
    """The level-quantile of the energy distance under relabelling (the null a ~ b)."""
    z, n = torch.cat([a, b]), len(a)
    null = []
    for _ in range(n_perm):
        p = torch.randperm(len(z), generator=g)
        null.append(float(energy_distance(z[p[:n]], z[p[n:]])))
    return float(torch.tensor(null).quantile(level))


def test_cfm_learns_a_gaussian_mixture():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    net = VelocityNet()
    obj = FlowMatchingObjective(generator=g)
    steps = 1000
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        loss = obj(net, {"x": mixture(256, g)})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        generated = parse_solver("rk4-20").solve(net, torch.randn(800, 2, generator=g))
    truth = mixture(800, g)
    wrong = mixture(800, g, MEANS + torch.tensor([0.5, 0.0]))

    # two-sample energy-distance test at 1 %: the model passes, a shifted mixture fails
    d_model = float(energy_distance(generated, truth))
    d_wrong = float(energy_distance(wrong, truth))
    assert d_model < permutation_threshold(generated, truth, 60, g), d_model
    assert d_wrong > permutation_threshold(wrong, truth, 60, g), d_wrong

    # and the components come out with their weights and means
    k = torch.cdist(generated, MEANS).argmin(dim=1)
    for i in range(3):
        assert abs(float((k == i).float().mean()) - float(WEIGHTS[i])) < 0.08
        assert float((generated[k == i].mean(0) - MEANS[i]).norm()) < 0.2
