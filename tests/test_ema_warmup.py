"""EMA with the inverse-decay warm-up (CaloClouds II diffusion EMA, docs/caloclouds.md, A13), and the
constant decay left as it was."""

import pytest
import torch

from caloforge.training import EMA


def _linear(value: float) -> torch.nn.Linear:
    lin = torch.nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.fill_(value)
        lin.bias.fill_(value)
    return lin


def test_warmup_decay_values_by_the_formula():
    """decay_k = min(max, 1 - (1 + k / inv_gamma)^-power), k the 0-based update number."""
    ema = EMA(_linear(0.0), 0.9999, warmup_power=2 / 3, inv_gamma=1.0)
    for k, want in [(0, 0.0), (1, 1 - 2 ** (-2 / 3)), (7, 0.75), (26, 1 - 27 ** (-2 / 3)),
                    (999, 0.99), (10**5, 1 - (1 + 1e5) ** (-2 / 3))]:
        assert ema.decay_at(k) == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert ema.decay_at(26) == pytest.approx(8 / 9)
    # capped at the maximum from about 10^6 updates on
    assert ema.decay_at(10**6) == pytest.approx(0.9999, abs=1e-9)
    assert ema.decay_at(10**7) == 0.9999
    # inv_gamma stretches the warm-up: k / inv_gamma is what counts
    slow = EMA(_linear(0.0), 0.9999, warmup_power=1.0, inv_gamma=10.0)
    assert slow.decay_at(10) == pytest.approx(0.5)
    assert slow.decay_at(90) == pytest.approx(0.9)


def test_warmup_updates_follow_the_schedule():
    lin = _linear(0.0)
    ema = EMA(lin, 0.9, warmup_power=2 / 3)
    assert ema.num_updates == 0 and ema.current_decay == 0.0
    shadow = 0.0
    for k in range(40):
        with torch.no_grad():
            lin.weight.fill_(float(k + 1))
        ema.update()
        d = ema.decay_at(k)
        shadow = d * shadow + (1 - d) * (k + 1)
        assert ema.shadow["weight"][0, 0].item() == pytest.approx(shadow, rel=1e-6)
    assert ema.num_updates == 40 and ema.current_decay == 0.9  # capped
    # the first update copies the weights (decay 0): a fresh EMA jumps to them
    fresh = EMA(_linear(0.0), 0.9, warmup_power=2 / 3)
    with torch.no_grad():
        fresh.module.weight.fill_(5.0)
    fresh.update()
    assert fresh.shadow["weight"][0, 0].item() == 5.0
    # a resumed EMA continues the schedule where it stopped
    resumed = EMA(_linear(0.0), 0.9, warmup_power=2 / 3)
    resumed.num_updates = 7
    assert resumed.current_decay == pytest.approx(0.75)


def test_constant_decay_is_unchanged():
    """Without warm-up: s_k = p + (s0 - p) d^k, the same as before the option existed."""
    lin = _linear(0.0)
    ema = EMA(lin, 0.9)
    with torch.no_grad():
        lin.weight.fill_(1.0)
        lin.bias.fill_(-2.0)
    for k in range(5):
        assert ema.decay_at(k) == 0.9
        ema.update()
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), 1 - 0.9**5))
    assert torch.allclose(ema.shadow["bias"], torch.full((1,), -2 * (1 - 0.9**5)))
    # the warm-up makes a difference: with it the shadow is nearer the weights
    warm = EMA(_linear(0.0), 0.9, warmup_power=2 / 3)
    with torch.no_grad():
        warm.module.weight.fill_(1.0)
    for _ in range(5):
        warm.update()
    assert warm.shadow["weight"][0, 0].item() == pytest.approx(1.0)
    assert ema.shadow["weight"][0, 0].item() < 0.5


def test_bad_options_raise():
    for kw in ({"warmup_power": 0.0}, {"warmup_power": -1.0}, {"inv_gamma": 0.0}):
        with pytest.raises(ValueError):
            EMA(_linear(0.0), 0.999, **kw)
    with pytest.raises(ValueError):
        EMA(_linear(0.0), 1.0, warmup_power=2 / 3)
