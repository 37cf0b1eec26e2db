"""The linear flow-matching path: end points, target, conversions, time broadcasting."""

import pytest
import torch

from caloforge.paths import PREDICTIONS, LinearFlowPath, ProbabilityPath, broadcast_time


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(5, 3, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(5, 3, 4, generator=g, dtype=torch.float64)
    return x1, eps


def test_interface():
    path = LinearFlowPath()
    assert isinstance(path, ProbabilityPath)
    assert path.prediction == "velocity" and path.prediction in PREDICTIONS
    assert (path.t_noise, path.t_data) == (0.0, 1.0)


def test_end_points_and_target(data):
    x1, eps = data
    path = LinearFlowPath()
    x_t, target = path.sample(x1, 0.0, eps)
    assert torch.equal(x_t, eps)
    x_t, _ = path.sample(x1, torch.ones(5, dtype=torch.float64), eps)
    assert torch.equal(x_t, x1)
    torch.testing.assert_close(target, x1 - eps, rtol=0, atol=0)
    # halfway is the mean of the ends
    x_t, _ = path.sample(x1, 0.5, eps)
    torch.testing.assert_close(x_t, 0.5 * (x1 + eps))


def test_target_is_the_time_derivative_of_x_t(data):
    x1, eps = data
    t = torch.rand(5, dtype=torch.float64, requires_grad=True)
    x_t, target = LinearFlowPath().sample(x1, t, eps)
    # d x_t[n] / d t[n], summed over the elements of sample n, equals the target's sum
    (grad,) = torch.autograd.grad(x_t.sum(), t)
    torch.testing.assert_close(grad, target.sum(dim=(1, 2)))


def test_conversions_recover_data_and_noise(data):
    x1, eps = data
    path = LinearFlowPath()
    for t in (0.0, torch.rand(5, dtype=torch.float64), 1.0):
        x_t, v = path.sample(x1, t, eps)
        torch.testing.assert_close(path.velocity_to_data(x_t, v, t), x1)
        torch.testing.assert_close(path.velocity_to_noise(x_t, v, t), eps)
        torch.testing.assert_close(path.to_data(x_t, v, t), x1)
        torch.testing.assert_close(path.to_noise(x_t, v, t), eps)
        assert torch.equal(path.to_velocity(x_t, v, t), v)


def test_conversions_invert_each_other(data):
    x_t, v = data
    path = LinearFlowPath()
    t = 0.05 + 0.9 * torch.rand(5, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(
        path.data_to_velocity(x_t, path.velocity_to_data(x_t, v, t), t), v
    )
    torch.testing.assert_close(
        path.noise_to_velocity(x_t, path.velocity_to_noise(x_t, v, t), t), v
    )
    # and the other way round, through the velocity
    x1 = path.velocity_to_data(x_t, v, t)
    eps = path.velocity_to_noise(x_t, v, t)
    torch.testing.assert_close(
        path.noise_to_velocity(x_t, eps, t), path.data_to_velocity(x_t, x1, t)
    )


def test_singular_ends_are_not_hidden(data):
    x_t, v = data
    path = LinearFlowPath()
    # at t = 1 the data says nothing about the velocity, at t = 0 the noise neither
    assert not torch.isfinite(path.data_to_velocity(x_t, x_t + 1.0, 1.0)).any()
    assert not torch.isfinite(path.noise_to_velocity(x_t, x_t + 1.0, 0.0)).any()
    # the velocity-based conversions stay exact there
    assert torch.equal(path.velocity_to_data(x_t, v, 1.0), x_t)
    assert torch.equal(path.velocity_to_noise(x_t, v, 0.0), x_t)


def test_time_broadcasting(data):
    x1, eps = data
    path = LinearFlowPath()
    t = torch.rand(5, dtype=torch.float64)
    x_t, _ = path.sample(x1, t, eps)
    for n in range(5):
        torch.testing.assert_close(x_t[n], path.sample(x1[n], float(t[n]), eps[n])[0])
    # a leading part of the shape: one t per (sample, layer)
    t2 = torch.rand(5, 3, dtype=torch.float64)
    x_t2, _ = path.sample(x1, t2, eps)
    torch.testing.assert_close(x_t2[2, 1], (1 - t2[2, 1]) * eps[2, 1] + t2[2, 1] * x1[2, 1])
    # an independent t per element
    t3 = torch.rand(5, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(path.sample(x1, t3, eps)[0], (1 - t3) * eps + t3 * x1)
    assert broadcast_time(t, x1).shape == (5, 1, 1)
    assert broadcast_time(0.3, x1).shape == ()
    with pytest.raises(ValueError, match="does not broadcast"):
        path.sample(x1, torch.rand(3), eps)
    with pytest.raises(ValueError, match="does not broadcast"):
        path.velocity_to_data(x1, eps, torch.rand(5, 4))
    with pytest.raises(ValueError, match="differ"):
        path.sample(x1, t, eps[:, :2])


def test_sample_time_is_uniform_and_reproducible():
    path = LinearFlowPath()
    t = path.sample_time((20000,), generator=torch.Generator().manual_seed(1))
    assert t.shape == (20000,) and float(t.min()) >= 0.0 and float(t.max()) < 1.0
    assert abs(float(t.mean()) - 0.5) < 0.01 and abs(float(t.var()) - 1 / 12) < 0.003
    again = path.sample_time((20000,), generator=torch.Generator().manual_seed(1))
    assert torch.equal(t, again)
    assert path.sample_time((4, 3), dtype=torch.float64).dtype == torch.float64
