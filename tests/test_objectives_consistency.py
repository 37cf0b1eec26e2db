"""Consistency distillation (CaloClouds II CM, spec section 5): the loss on teachers whose
probability-flow trajectories are known in closed form."""

import math

import pytest
import torch

from caloforge.errors import ConfigError
from caloforge.objectives import (
    ConsistencyDistillation,
    cd_boundaries,
    consistency_distillation_loss,
    heun_step,
)
from caloforge.paths import ConsistencyPreconditioning, EDMPreconditioning
from caloforge.sampling import karras_sigmas

EPS = 0.002
M, V = 0.5, 0.25


# tiny tensors: one torch thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def _col(s, x):
    return s.reshape(-1, *([1] * (x.dim() - 1)))


def gaussian_denoiser(mean, var):
    """Exact denoiser of N(mean, var) data."""
    return lambda x, s: mean + var / (var + _col(s, x) ** 2) * (x - mean)


def gaussian_consistency(mean, var):
    """Exact consistency function of N(mean, var) data: the flow map from sigma to EPS,
    affine, f(x, s) = mean + (x - mean) sqrt(var + EPS^2) / sqrt(var + s^2)."""
    return lambda x, s: mean + (x - mean) * math.sqrt(var + EPS**2) / torch.sqrt(
        var + _col(s, x) ** 2)


def data(n=4096, shape=(3,), seed=0):
    g = torch.Generator().manual_seed(seed)
    return M + math.sqrt(V) * torch.randn(n, *shape, generator=g, dtype=torch.float64)


def loss_of(student, target, teacher, x0, boundaries, seed=1, **kw):
    return consistency_distillation_loss(student, target, teacher, x0, boundaries,
                                         generator=torch.Generator().manual_seed(seed),
                                         **kw).item()


def test_boundaries():
    b = cd_boundaries()
    assert b.shape == (18,) and b.dtype == torch.float64
    assert b[0].item() == EPS and b[-1].item() == 80.0
    assert (b[1:] > b[:-1]).all()
    torch.testing.assert_close(b, karras_sigmas(18)[:-1].flip(0))
    assert cd_boundaries(2).tolist() == [EPS, 80.0]
    with pytest.raises(ConfigError):
        cd_boundaries(1)


def test_zero_loss_for_straight_line_trajectories():
    """Teacher D(x; s) = x - s b: the ODE is dx/ds = b, its trajectories are straight
    lines, on which a Heun step is exact; the exact consistency function is
    f(x, s) = x + b (EPS - s). Student = target = f gives zero loss to rounding, a student
    with the wrong slope does not."""
    b = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)

    def f(x, s):
        return x + b * (EPS - _col(s, x))

    x0 = data()
    assert loss_of(f, f, lambda x, s: x - _col(s, x) * b, x0, cd_boundaries()) < 1e-20
    wrong = lambda x, s: x + 1.1 * b * (EPS - _col(s, x))  # noqa: E731
    assert loss_of(wrong, f, lambda x, s: x - _col(s, x) * b, x0, cd_boundaries()) > 1e-2


def test_loss_vanishes_for_the_exact_gaussian_flow_map_as_the_teacher_step_converges():
    """Gaussian data with its exact denoiser and exact consistency function: the loss is
    only the Heun step's local error, O(h^3) squared: 1e-5 with the 18 CaloClouds
    boundaries, below 1e-10 with 144, falling about 64x per doubling. A student for the
    wrong variance stays at 6e-3 however fine the boundaries."""
    x0 = data()
    f, den = gaussian_consistency(M, V), gaussian_denoiser(M, V)
    wrong = gaussian_consistency(M, 0.36)
    losses = {n: loss_of(f, f, den, x0, cd_boundaries(n)) for n in (18, 36, 72, 144)}
    assert losses[18] < 1e-4
    assert losses[144] < 1e-10
    for n in (18, 36, 72):
        assert losses[n] / losses[2 * n] > 30
    for n in (18, 144):
        assert loss_of(wrong, f, den, x0, cd_boundaries(n)) > 3e-3
    # the student paired with a wrong target fails too
    assert loss_of(f, wrong, den, x0, cd_boundaries(144)) > 3e-3


def test_intervals_and_noising_follow_the_recipe():
    """The student sees x_{n+1} = x0 + s_{n+1} z at an upper boundary, the target the
    teacher's Heun step from there at the boundary just below; the interval index is
    uniform over the N - 1 intervals."""
    b = cd_boundaries()
    seen = {}

    def student(x, s):
        seen["x_hi"], seen["s_hi"] = x, s
        return x

    def target(x, s):
        seen["x_lo"], seen["s_lo"] = x, s
        return x

    den = gaussian_denoiser(M, V)
    x0 = data(n=17_000, shape=(2,))
    consistency_distillation_loss(student, target, den, x0, b,
                                  generator=torch.Generator().manual_seed(2))
    s_hi, s_lo = seen["s_hi"], seen["s_lo"]
    idx = torch.searchsorted(b, s_hi)
    torch.testing.assert_close(b[idx], s_hi)
    torch.testing.assert_close(b[idx - 1], s_lo)  # adjacent boundaries
    counts = torch.bincount(idx - 1, minlength=17)
    assert counts.shape == (17,) and counts.min() > 850 and counts.max() < 1150  # ~1000 each
    z = (seen["x_hi"] - x0) / _col(s_hi, x0)
    assert z.mean().item() == pytest.approx(0.0, abs=0.02)
    assert z.std().item() == pytest.approx(1.0, abs=0.02)
    torch.testing.assert_close(seen["x_lo"], heun_step(den, seen["x_hi"], s_hi, s_lo))
    # decreasing boundaries are the same schedule
    again = loss_of(gaussian_consistency(M, 0.3), gaussian_consistency(M, V), den, x0, b.flip(0),
                    seed=2)
    assert again == pytest.approx(loss_of(gaussian_consistency(M, 0.3),
                                          gaussian_consistency(M, V), den, x0, b, seed=2))


class PointNet(torch.nn.Module):
    """A per-point network net(x_in, c_noise) on (N, P, F): points never see each other."""

    def __init__(self, features=3, seed=0):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.lin = torch.nn.Linear(features + 1, features).double()

    def forward(self, x, c_noise):
        c = c_noise[:, None, None].expand(*x.shape[:-1], 1)
        return self.lin(torch.cat([x, c], -1))


def test_gradients_reach_only_the_student():
    student, target, teacher = PointNet(seed=0), PointNet(seed=1), PointNet(seed=2)
    cm, edm = ConsistencyPreconditioning(), EDMPreconditioning()
    x0 = data(n=16, shape=(5, 3))
    loss = consistency_distillation_loss(
        lambda x, s: cm.denoise(student, x, s), lambda x, s: cm.denoise(target, x, s),
        lambda x, s: edm.denoise(teacher, x, s), x0, cd_boundaries(),
        generator=torch.Generator().manual_seed(3))
    loss.backward()
    assert loss.item() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in target.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_mask_excludes_padded_points():
    student, target, teacher = PointNet(seed=0), PointNet(seed=1), PointNet(seed=2)
    cd = ConsistencyDistillation()
    x0 = data(n=6, shape=(8, 3))
    mask = torch.arange(8)[None, :] < torch.tensor([8, 2, 5, 1, 7, 3])[:, None]
    padded = x0.clone()
    padded[~mask] = 50.0

    def loss(x, m):
        cd.generator = torch.Generator().manual_seed(4)
        return cd(student, target, teacher, x, m)["loss"].item()

    assert loss(x0, mask) == pytest.approx(loss(padded, mask), rel=1e-12)
    assert loss(padded, None) > 2 * loss(x0, None)


def test_wrapper_matches_the_function():
    student, target, teacher = PointNet(seed=0), PointNet(seed=1), PointNet(seed=2)
    cd = ConsistencyDistillation(generator=torch.Generator().manual_seed(5))
    assert cd.boundaries.shape == (18,)
    x0 = data(n=4, shape=(6, 3))
    got = cd(student, target, teacher, x0)
    cm, edm = ConsistencyPreconditioning(), EDMPreconditioning()
    want = consistency_distillation_loss(
        lambda x, s: cm.denoise(student, x, s), lambda x, s: cm.denoise(target, x, s),
        lambda x, s: edm.denoise(teacher, x, s), x0, cd_boundaries(),
        generator=torch.Generator().manual_seed(5))
    assert set(got) == {"loss"}
    assert got["loss"].item() == pytest.approx(want.item(), rel=1e-12)
    with pytest.raises(ConfigError):
        ConsistencyDistillation(precond=EDMPreconditioning())
    with pytest.raises(ConfigError):
        ConsistencyDistillation(n_boundaries=1)


def test_bad_boundaries_raise():
    x0 = data(n=4)
    f = gaussian_consistency(M, V)
    for bad in ([1.0], [0.0, 1.0], [1.0, 3.0, 2.0], [[1.0, 2.0]]):
        with pytest.raises(ValueError):
            consistency_distillation_loss(f, f, f, x0, torch.tensor(bad))
