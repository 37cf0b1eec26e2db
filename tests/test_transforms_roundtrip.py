"""Round trips, state save/load and edge cases of caloforge.transforms."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import caloforge.transforms as T
from caloforge.errors import CheckpointError, ConfigError


def _showers(n=64, sizes=(10, 0, 20, 5), seed=0, empty_layer=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, sum(sizes), generator=g, dtype=torch.float64) ** 4 * 1000
    x[x < 50] = 0.0
    if empty_layer:
        x[0, 10:30] = 0.0  # second active layer of shower 0 empty
        x[1] = 0.0  # an empty shower
    return x


def _reload(t: T.Transform) -> T.Transform:
    # through JSON text, as in a checkpoint
    return T.transform_from_state(json.loads(json.dumps(t.state_dict())))


def test_every_exported_name_imports():
    for name in T.__all__:
        assert getattr(T, name) is not None


@pytest.mark.parametrize("mode", ["global", "layer"])
def test_normalization_round_trip_and_empty_layers(mode):
    sizes = (10, 0, 20, 5)
    x = _showers(sizes=sizes)
    t = T.ShowerNormalization(mode, layer_sizes=sizes)
    frac, r = t(x)
    assert r.shape == ((64, 1) if mode == "global" else (64, 3))
    assert torch.isfinite(frac).all()
    assert torch.allclose(t.inverse(frac, r), x, rtol=1e-12, atol=0)
    if mode == "layer":
        assert r[0, 1] == 0 and (frac[0, 10:30] == 0).all()
        sums = T.layer_energies(frac, sizes)
        assert torch.allclose(sums, (r > 0).to(sums.dtype))
    assert (frac[1] == 0).all() and (r[1] == 0).all()
    t2 = _reload(t)
    f2, r2 = t2(x)
    assert torch.equal(f2, frac) and torch.equal(r2, r)


def test_normalization_gradients_finite_and_numpy():
    sizes = (4, 4)
    x = torch.zeros(2, 8, requires_grad=True)
    t = T.ShowerNormalization("layer", sizes)
    frac, r = t(x)
    (frac.sum() + r.sum()).backward()
    assert torch.isfinite(x.grad).all()
    xn = np.abs(np.random.default_rng(0).normal(size=(3, 8)))
    fn, rn = t(xn)
    assert isinstance(fn, np.ndarray) and np.allclose(t.inverse(fn, rn), xn)


def test_normalization_from_geometry():
    from caloforge.geometry import get_geometry

    g = get_geometry("ds1-photons")
    t = T.ShowerNormalization.from_geometry(g, "layer")
    assert t.n_r == len(g.active_layers)


def test_log_transform_round_trip():
    t = T.LogTransform(1, 3000, 7)
    f = torch.rand(100, 30, dtype=torch.float64)
    f[:, 0] = 0
    x = t(f)
    assert (x[:, 0] == 0).all()
    assert x.max() <= np.log(3001) / 7 + 1e-12
    assert torch.allclose(_reload(t).inverse(x), f, atol=1e-12)
    with pytest.raises(ConfigError):
        T.LogTransform(0, 1, 1)


def test_logit_round_trip_and_clip():
    t = T.Logit(1e-6)
    x = torch.rand(50, 7, dtype=torch.float64)
    x[0, 0], x[0, 1] = 0.0, 1.0
    y = t(x)
    assert torch.isfinite(y).all()
    assert torch.allclose(t.inverse(y), x, atol=1e-12)
    assert t.inverse(torch.tensor([[-1e3, 1e3]], dtype=torch.float64)).tolist() == [[0.0, 1.0]]


@pytest.mark.parametrize("cls", [T.Standardize, T.MinMaxScale])
@pytest.mark.parametrize("per_feature", [True, False])
def test_affine_scalings(cls, per_feature):
    x = torch.randn(200, 6, dtype=torch.float64) * torch.arange(1, 7) + 3
    x[:, 2] = 5.0  # constant feature must not divide by zero
    t = cls(per_feature=per_feature)
    with pytest.raises(T.NotFittedError):
        t(x)
    y = t.fit(x)(x)
    assert torch.isfinite(y).all()
    if cls is T.Standardize and per_feature:
        assert torch.allclose(y.mean(0), torch.zeros(6, dtype=torch.float64), atol=1e-10)
        assert (y[:, 2] == 0).all()
    if cls is T.MinMaxScale and per_feature:
        assert y.min() >= 0 and y.max() <= 1 + 1e-12
    t2 = _reload(t)
    assert torch.equal(t2(x), y)
    assert torch.allclose(t2.inverse(y), x, atol=1e-12)
    # float32 input keeps its dtype
    assert t2(x.float()).dtype == torch.float32


@pytest.mark.parametrize(
    "mode,kw",
    [
        ("log_minmax", {}),
        ("log_minmax", {"e_min": 1e3, "e_max": 1e6}),
        ("log_standardize", {}),
        ("minmax", {}),
    ],
)
def test_incident_energy_scaling(mode, kw):
    e = torch.tensor(10 ** np.random.default_rng(1).uniform(3, 6, size=(100, 1)))
    t = T.IncidentEnergyScaling(mode, **kw).fit(e)
    c = t(e)
    if mode.endswith("minmax"):
        assert c.min() >= -1e-12 and c.max() <= 1 + 1e-12
    if kw:  # CaloDREAM's fixed range
        assert torch.allclose(c, (torch.log(e) - np.log(1e3)) / (np.log(1e6) - np.log(1e3)))
    assert torch.allclose(_reload(t).inverse(c), e, rtol=1e-12)


def test_layer_ratios_round_trip_and_definition():
    g = torch.Generator().manual_seed(3)
    e = torch.rand(32, 5, generator=g, dtype=torch.float64) * 100
    e[0, 2:] = 0.0  # trailing empty layers: 0/0 -> 0
    e[1] = 0.0
    e_inc = torch.full((32,), 400.0, dtype=torch.float64)
    t = T.LayerEnergyRatios(u0_scale=2.0)
    u = t(e, incident_energy=e_inc)
    assert torch.allclose(u[:, 0], e.sum(1) / 800.0)
    assert torch.allclose(u[2:, 1], e[2:, 0] / e[2:].sum(1))
    assert torch.allclose(u[2:, 4], e[2:, 3] / e[2:, 3:].sum(1))
    assert torch.isfinite(u).all() and u[:, 1:].max() <= 1 and u.min() >= 0
    back = _reload(t).inverse(u, incident_energy=e_inc.reshape(-1, 1))
    assert torch.allclose(back, e, atol=1e-10)
    with pytest.raises(TypeError):
        t(e)


def test_logit_standardize_chain_on_ratios():
    """The CaloLatent/CaloDREAM chain: u -> minmax -> logit -> standardise, inverted."""
    e = torch.rand(100, 45, dtype=torch.float64) * 50
    u = T.LayerEnergyRatios(1 / 0.35)(e, incident_energy=torch.full((100,), 5e3))
    chain = T.Compose([T.MinMaxScale(), T.Logit(1e-6), T.Standardize()]).fit(u)
    y = chain(u)
    assert torch.allclose(y.mean(0), torch.zeros(45, dtype=torch.float64), atol=1e-8)
    chain2 = _reload(chain)
    assert torch.equal(chain2(u), y)
    assert torch.allclose(chain2.inverse(y), u, atol=1e-8)


def test_tokenizer_layout_and_exact_levels():
    t = T.DigitTokenizer().fit(torch.tensor([[0.0, 0.0], [1.0, 2.0]]))
    tok = t.encode(torch.tensor([[0.0, 2.0], [1.0, 1.0]]))
    assert tok.dtype == torch.long and tok.shape == (2, 4)
    top = 2**20 - 1
    assert tok[0].tolist() == [0, 0, top // 1024, top % 1024]  # most significant first
    assert tok[1, :2].tolist() == [1023, 1023]
    lvl = 123456
    v = torch.tensor([[lvl / top, 2 * lvl / top]], dtype=torch.float64)
    assert t.encode(v)[0].tolist() == [lvl // 1024, lvl % 1024] * 2
    assert torch.allclose(t.decode(t.encode(v)), v, rtol=0, atol=1e-15)
    assert int(t.encode(torch.tensor([[5.0, -1.0]])).max()) <= 1023  # clipped into range


@pytest.mark.parametrize("mapping", ["linear", "log"])
def test_tokenizer_round_trip_small_layer_fractions(mapping, capsys):
    """Round-trip error of R = E_layer / E_inc, including small layer fractions (docs/calovq.md, A4)."""
    rng = np.random.default_rng(0)
    # layer fractions spanning 1e-6 .. 2 (dimensionless, E_layer / E_inc), plus exact zeros
    r = 10 ** rng.uniform(-6, np.log10(2), size=(5000, 5))
    r[:10, 2] = 0.0
    r = torch.tensor(r)
    t = T.DigitTokenizer(mapping=mapping).fit(r)
    back = _reload(t).decode(t.encode(r))
    assert (back[:10, 2] == 0).all()  # empty layers stay exactly 0
    nz = r > 0
    rel = ((back - r).abs() / r)[nz]
    small = nz & (r < 1e-3)
    max_rel, max_rel_small = float(rel.max()), float(((back - r).abs() / r)[small].max())
    abs_err = float((back - r).abs().max())
    with capsys.disabled():
        print(
            f"\n[tokeniser {mapping}] max rel error {max_rel:.3g}; for r < 1e-3: "
            f"{max_rel_small:.3g}; max abs error {abs_err:.3g}"
        )
    if mapping == "linear":
        # uniform 2**20 levels over [min, max]: absolute error at most half a level
        assert abs_err <= 0.5 * 2 / (2**20 - 1) + 1e-15
    else:
        # the zeros put the bottom of the range at ln(eps)
        step = (np.log(2 + 1e-8) - np.log(1e-8)) / (2**20 - 1)
        assert max_rel <= np.expm1(0.5 * step) * 1.01


def test_unknown_state_type_and_version():
    with pytest.raises(CheckpointError, match="unknown transform type 'nope'.*log"):
        T.transform_from_state({"type": "nope"})
    s = T.LogTransform().state_dict()
    s["version"] = 99
    with pytest.raises(CheckpointError, match="version 99"):
        T.transform_from_state(s)
    with pytest.raises(CheckpointError):
        T.Logit().load_state_dict(T.LogTransform().state_dict())
