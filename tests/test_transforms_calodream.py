"""CaloDREAM's transforms: layer fractions with the normalised cut, and the u chain
LayerEnergyRatios(f = 2.85) -> Logit(1e-6) -> per-feature Standardize."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import caloforge.transforms as T
from caloforge.errors import ConfigError

SIZES = (6, 0, 8, 4, 4)  # a zero-size layer in the middle, as irregular geometries have


def _showers(n: int = 40, sizes=SIZES, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, sum(sizes), generator=g, dtype=torch.float64) ** 3 * 500
    x[x < 20] = 0.0  # sparse
    x[0, 6:14] = 0.0  # shower 0: second active layer empty
    x[1] = 0.0  # an empty shower
    x[2, 14:] = 0.0  # shower 2: empty trailing layers
    return x


def _reload(t: T.Transform) -> T.Transform:
    return T.transform_from_state(json.loads(json.dumps(t.state_dict())))


# --------------------------------------------------------------------------- fractions
@pytest.mark.parametrize("eps", [1e-10, 0.0])
def test_layer_fractions_round_trip_is_exact(eps):
    x = _showers()
    t = T.LayerFractions(SIZES, eps=eps)
    frac, e = t(x)
    assert frac.shape == x.shape and e.shape == (40, 4)
    torch.testing.assert_close(e, T.layer_energies(x, SIZES), rtol=0, atol=0)
    # each layer sums to 1 (up to eps / E) or is all zero
    sums = T.layer_energies(frac, SIZES)
    torch.testing.assert_close(sums, (e > 0).to(sums.dtype), rtol=0, atol=1e-11)
    assert (frac[0, 6:14] == 0).all() and (frac[1] == 0).all() and (frac[2, 14:] == 0).all()
    assert torch.isfinite(frac).all() and (frac >= 0).all()
    # the renormalisation of the inverse removes the eps bias: exact round trip
    torch.testing.assert_close(t.inverse(frac, e), x, rtol=1e-14, atol=0)
    # state through JSON, numpy in and out
    t2 = _reload(t)
    assert t2.config() == t.config()
    fn, en = t2(x.numpy())
    assert isinstance(fn, np.ndarray)
    np.testing.assert_allclose(t2.inverse(fn, en), x.numpy(), rtol=1e-14, atol=0)


def test_normalised_cut_keeps_layer_energies_and_never_gives_nan():
    # decoder-like output: sigmoid values, never exactly 0, many below the cut
    g = torch.Generator().manual_seed(1)
    probs = torch.sigmoid(torch.randn(30, sum(SIZES), generator=g, dtype=torch.float64) * 8 - 10)
    probs[0, 6:14] = 1e-9  # a layer entirely below the cut
    probs[1, 14:18] = 0.0  # a layer of exact zeros
    targets = torch.rand(30, 4, generator=g, dtype=torch.float64) * 1000
    targets[2, 3] = 0.0  # zero target energy
    cut = 1e-6
    t = T.LayerFractions(SIZES, cut=cut)
    out = t.inverse(probs, targets)
    assert torch.isfinite(out).all() and (out >= 0).all()
    assert (out[probs <= cut] == 0).all()
    got = T.layer_energies(out, SIZES)
    survived = T.layer_energies((probs > cut).to(probs.dtype), SIZES) > 0
    torch.testing.assert_close(got[survived], targets[survived], rtol=1e-13, atol=0)
    # a layer with nothing above the cut comes back empty (no voxel to hold its energy)
    assert not survived[0, 1] and (out[0, 6:14] == 0).all()
    assert not survived[1, 2] and (out[1, 14:18] == 0).all()
    assert (out[2, 18:] == 0).all()
    # the shape within a layer is kept: ratios of surviving voxels are unchanged
    keep = probs[3, :6] > cut
    ref = probs[3, :6][keep]
    torch.testing.assert_close(out[3, :6][keep] / out[3, :6][keep].sum(), ref / ref.sum())
    # a per-call cut overrides the stored one; cut 0 removes only non-positive values
    kept = probs > 0
    kept[2, 18:] = False  # zero target energy
    assert (t.inverse(probs, targets, cut=0.0)[kept] > 0).all()
    with pytest.raises(ConfigError):
        t.inverse(probs, targets, cut=-1.0)


def test_layer_fractions_gradients_finite_and_from_geometry():
    x = torch.zeros(2, sum(SIZES), dtype=torch.float64, requires_grad=True)
    for eps in (0.0, 1e-10):
        frac, e = T.LayerFractions(SIZES, eps=eps)(x)
        (frac.sum() + e.sum()).backward()
        assert torch.isfinite(x.grad).all()
    from caloforge.geometry import get_geometry

    t = T.LayerFractions.from_geometry(get_geometry("ds2"), cut=1e-6)
    assert t.n_layers == 45 and sum(t.layer_sizes) == 6480 and t.cut == 1e-6
    with pytest.raises(ConfigError):
        T.LayerFractions((0, 0))
    with pytest.raises(ValueError):
        t(torch.zeros(1, 10))


# ------------------------------------------------------------------------------ u chain
def _layers(n: int = 64, n_layers: int = 45, seed: int = 2):
    """Layer energies with empty layers, an empty trailing part, an all-in-one-layer shower."""
    g = torch.Generator().manual_seed(seed)
    e_inc = 10 ** (3 + 3 * torch.rand(n, generator=g, dtype=torch.float64))
    depth = torch.arange(n_layers, dtype=torch.float64)
    centre = 5 + 30 * torch.rand(n, 1, generator=g, dtype=torch.float64)
    prof = torch.exp(-0.5 * ((depth - centre) / 6) ** 2)
    prof = prof * torch.rand(n, n_layers, generator=g, dtype=torch.float64)
    prof[prof < 0.02] = 0.0  # empty layers
    prof[0, 30:] = 0.0  # empty trailing part
    prof[1, :] = 0.0
    prof[1, 44] = 1.0  # everything in the last layer
    prof[2, :] = 0.0
    prof[2, 3] = 1.0  # everything in one early layer, rest empty
    frac_tot = 0.3 + 1.2 * torch.rand(n, generator=g, dtype=torch.float64)  # E_tot / E_inc
    e = prof / prof.sum(1, keepdim=True) * (frac_tot * e_inc)[:, None]
    return e, e_inc


def _u_chain():
    ratios = T.LayerEnergyRatios(u0_scale=2.85)
    return ratios, T.Compose([T.Logit(alpha=1e-6), T.Standardize(per_feature=True)])


def test_u_chain_round_trip_is_exact_and_conserves_energy():
    e, e_inc = _layers()
    ratios, post = _u_chain()
    u = ratios(e, incident_energy=e_inc)
    assert u.shape == e.shape
    assert (u >= 0).all() and (u <= 1).all()  # f = 2.85 brings u_0 into [0, 1]
    y = post.fit(u)(u)
    assert torch.isfinite(y).all()
    y_mean, y_std = y.mean(0), y.std(0, unbiased=False)
    assert (y_mean.abs() < 1e-10).all()
    assert ((y_std - 1).abs() < 1e-10).logical_or(y_std == 0).all()
    # exact inverse, through JSON state as from a checkpoint
    post2 = _reload(post)
    u_back = post2.inverse(y)
    torch.testing.assert_close(u_back, u, rtol=0, atol=1e-12)
    e_back = ratios.inverse(u_back, incident_energy=e_inc)
    e_tot = e.sum(1, keepdim=True)
    assert ((e_back - e).abs() <= 1e-10 * e_tot).all()
    # energy conservation: sum of layers == f u_0 E_inc == E_tot
    torch.testing.assert_close(e_back.sum(1), 2.85 * u_back[:, 0] * e_inc, rtol=1e-13, atol=0)
    torch.testing.assert_close(e_back.sum(1), e_tot[:, 0], rtol=1e-10, atol=0)
    # empty layers stay empty (to rounding), the empty trailing part too
    assert (e_back[e == 0] <= 1e-10 * e_tot.expand_as(e)[e == 0]).all()
    assert (e_back[0, 30:] <= 1e-10 * e_tot[0]).all()


def test_u_chain_inverse_of_generated_values_conserves_energy():
    # whatever a network generates (any standardised value, u_i outside [0, 1] before the
    # clip) the inverse gives non-negative layers summing to f u_0 E_inc
    e, e_inc = _layers()
    ratios, post = _u_chain()
    post.fit(ratios(e, incident_energy=e_inc))
    g = torch.Generator().manual_seed(3)
    y = 3 * torch.randn(e.shape, generator=g, dtype=torch.float64)
    u = post.inverse(y)
    assert (u >= 0).all() and (u <= 1).all()  # the logit's inverse clips
    e_gen = ratios.inverse(u, incident_energy=e_inc)
    assert (e_gen >= 0).all()
    torch.testing.assert_close(e_gen.sum(1), 2.85 * u[:, 0] * e_inc, rtol=1e-13, atol=0)
    # the ratios clip u_{i>0} to [0, 1] themselves too
    u_bad = u.clone()
    u_bad[:, 1] = 1.3
    u_bad[:, 2] = -0.2
    e_bad = ratios.inverse(u_bad, incident_energy=e_inc)
    assert (e_bad >= 0).all()
    torch.testing.assert_close(e_bad[:, 0], 2.85 * u[:, 0] * e_inc)  # u_1 = 1: all in layer 0
    torch.testing.assert_close(e_bad.sum(1), 2.85 * u[:, 0] * e_inc, rtol=1e-13, atol=0)


def test_logit_is_the_eq3_rescale_not_a_clamp():
    a = 1e-6
    t = T.Logit(alpha=a)
    x = torch.tensor([0.0, 0.5, 1.0, 0.3], dtype=torch.float64)
    want = [math.log(a / (1 - a)), 0.0, math.log((1 - a) / a)]
    xa = a + (1 - 2 * a) * 0.3
    want.append(math.log(xa / (1 - xa)))
    # rel 1e-9: 1 - (1 - alpha) in float64 loses ~1e-10 relative at x = 1. A clamp to
    # [alpha, 1 - alpha] would be off by ~2e-6 relative at x = 0.3.
    assert t(x).tolist() == pytest.approx(want, rel=1e-9)
    assert abs(t(x)[3].item() - math.log(0.3 / 0.7)) > 1e-6
    torch.testing.assert_close(t.inverse(t(x)), x, rtol=0, atol=1e-15)


def test_full_calodream_representation_round_trip():
    # showers -> (fractions, layer energies) -> u -> logit -> standardise, and back
    sizes = (12,) * 45
    g = torch.Generator().manual_seed(4)
    e, e_inc = _layers(n=16)
    shape = torch.rand(16, 45, 12, generator=g, dtype=torch.float64)
    shape[shape < 0.3] = 0.0
    showers = (shape / shape.sum(-1, keepdim=True).clamp_min(1e-300) * e[..., None]).reshape(16, -1)
    lf = T.LayerFractions(sizes, cut=1e-6)
    ratios, post = _u_chain()
    frac, e_layers = lf(showers)
    y = post.fit(ratios(e_layers, incident_energy=e_inc))(ratios(e_layers, incident_energy=e_inc))
    e_back = ratios.inverse(post.inverse(y), incident_energy=e_inc)
    back = lf.inverse(frac, e_back)
    tot = showers.sum(1, keepdim=True)
    assert ((back - showers).abs() <= 1e-10 * tot).all()
    torch.testing.assert_close(back.sum(1), tot[:, 0], rtol=1e-10, atol=0)
