"""CaloClouds II Shower Flow features: encoding on hand-built clouds, decoding and its
post-processing (clips, the 40 MeV floor, renormalised fractions, floored layer counts)."""

import numpy as np
import pytest
import torch

from caloforge.errors import CaloforgeError, ConfigError
from caloforge.io import PointCloudData
from caloforge.pipelines.caloclouds.features import (
    N_LAYERS,
    ShowerFlowSampleError,
    ShowerFlowScales,
    ShowerFlowSummary,
    decode_shower_flow,
    n_shower_flow_features,
    shower_flow_context,
    shower_flow_features,
)


def _cloud(showers, e_inc=None):
    pts = [np.asarray(s, np.float32).reshape(-1, 4) for s in showers]
    e_inc = np.full(len(showers), 50_000.0) if e_inc is None else e_inc
    return PointCloudData(e_inc, np.concatenate(pts), [len(p) for p in pts])


# Three layers keep the hand computation short.
SHOWER0 = [(10.0, 0.0, 0.5, 1000.0), (-10.0, 20.0, 1.5, 3000.0)]
SHOWER2 = [(0.0, 0.0, 2.5, 500.0), (5.0, -5.0, 2.7, 500.0), (-5.0, 5.0, 2.2, 0.0)]
SHOWER3 = [(1.0, 2.0, 0.5, 0.0), (3.0, 4.0, 0.5, 0.0), (3.0, 4.0, 2.0, 0.0)]  # no energy


def test_features_hand_built():
    data = _cloud([SHOWER0, [], SHOWER2, SHOWER3])
    f = shower_flow_features(data, n_layers=3)
    assert f.shape == (4, 11) and f.dtype == np.float32
    expected = np.array([
        # N/5000, E[GeV]/2.5, CoG_X/25, (CoG_Z-15)/15, CoG_Y/20, points/max, energy/max
        # shower 0: CoG_X = (10*1000 - 10*3000)/4000 = -5, CoG_Z = (0.5+4.5)/4 = 1.25,
        # CoG_Y = 20*3000/4000 = 15
        [2 / 5000, 4 / 2.5, -5 / 25, (1.25 - 15) / 15, 15 / 20, 1, 1, 0, 1 / 3, 1, 0],
        [0.0] * 11,  # empty shower
        # shower 2: E = 1 GeV, CoG_X = 2.5, CoG_Y = -2.5, CoG_Z = 2.6 (zero-E point ignored)
        [3 / 5000, 1 / 2.5, 2.5 / 25, (2.6 - 15) / 15, -2.5 / 20, 0, 0, 1, 0, 0, 1],
        # shower 3: points but no energy: counts kept, everything energy-weighted is 0
        [3 / 5000, 0, 0, 0, 0, 1, 0, 0.5, 0, 0, 0],
    ])
    np.testing.assert_allclose(f, expected, rtol=1e-6, atol=1e-7)
    assert np.isfinite(f).all()
    # The check can fail: an unweighted CoG_X of shower 0 (0 mm) would not pass it.
    assert not np.isclose(f[0, 2], 0.0)


def test_features_axis_and_custom_scales():
    data = _cloud([SHOWER0])
    scales = ShowerFlowScales(axis_x_mm=2.0, axis_y_mm=40.0, cog_z_centre=1.5,
                              cog_z_scale=1.5, n_points=10.0, e_vis_gev=4.0)
    f = shower_flow_features(data, scales, n_layers=3)[0]
    np.testing.assert_allclose(f[:5], [0.2, 1.0, (-5 - 2) / 25, (1.25 - 1.5) / 1.5,
                                       (15 - 40) / 20], rtol=1e-6)


def test_features_default_layers_and_edges():
    # z = 30.0 (far face of the last layer) counts in layer 29; z = 0 in layer 0.
    data = _cloud([[(0.0, 0.0, 0.0, 2.0), (0.0, 0.0, 30.0, 1.0), (0.0, 0.0, 29.5, 1.0)]])
    f = shower_flow_features(data)
    assert f.shape == (1, n_shower_flow_features()) == (1, 65)
    pts, en = f[0, 5:5 + N_LAYERS], f[0, 5 + N_LAYERS:]
    np.testing.assert_allclose(pts[[0, 29]], [0.5, 1.0])
    np.testing.assert_allclose(en[[0, 29]], [1.0, 1.0])
    assert pts[1:29].sum() == 0 and en[1:29].sum() == 0
    with pytest.raises(ValueError, match="outside"):
        shower_flow_features(_cloud([[(0.0, 0.0, 30.5, 1.0)]]))
    with pytest.raises(ValueError, match="outside"):
        shower_flow_features(_cloud([[(0.0, 0.0, -0.1, 1.0)]]))


def test_features_vectorised_matches_per_shower_loop():
    rng = np.random.default_rng(3)
    showers = []
    for n in rng.integers(0, 40, size=25):
        showers.append(np.stack([rng.normal(0, 20, n), rng.normal(0, 20, n),
                                 rng.uniform(0, 5, n), rng.exponential(2.0, n)], 1))
    f = shower_flow_features(_cloud(showers), n_layers=5)
    for i, s in enumerate(showers):
        if len(s) == 0:
            np.testing.assert_array_equal(f[i], 0)
            continue
        e = s[:, 3]
        layer = np.floor(s[:, 2]).astype(int)
        cnt = np.array([(layer == k).sum() for k in range(5)], float)
        el = np.array([e[layer == k].sum() for k in range(5)])
        ref = [len(s) / 5000, e.sum() / 2500, (e @ s[:, 0]) / e.sum() / 25,
               ((e @ s[:, 2]) / e.sum() - 15) / 15, (e @ s[:, 1]) / e.sum() / 20,
               *(cnt / cnt.max()), *(el / el.max())]
        np.testing.assert_allclose(f[i], ref, rtol=2e-5, atol=1e-6)


def test_context():
    c = shower_flow_context(np.array([10_000.0, 90_000.0]))
    assert c.shape == (2, 1) and c.dtype == np.float32
    np.testing.assert_allclose(c[:, 0], [0.1, 0.9], rtol=1e-6)
    t = shower_flow_context(torch.tensor([50_000.0]))
    assert isinstance(t, torch.Tensor) and t.shape == (1, 1)
    assert t.item() == pytest.approx(0.5)


def test_scales_dict_round_trip_and_errors():
    s = ShowerFlowScales(axis_y_mm=40.0)
    assert ShowerFlowScales.from_dict(s.to_dict()) == s
    assert ShowerFlowScales.from_dict({}) == ShowerFlowScales()
    with pytest.raises(ConfigError, match="unknown"):
        ShowerFlowScales.from_dict({"cog_x": 25.0})
    with pytest.raises(ConfigError, match="> 0"):
        ShowerFlowScales(e_vis_gev=0.0)


# ---------------------------------------------------------------------------- decoding
def _sample_row(n, e, cx, cz, cy, pts, en):
    return [n, e, cx, cz, cy, *pts, *en]


def test_decode_post_processing():
    samples = torch.tensor([
        # N = -0.1*5000 -> 1; E = 0.001*2.5 GeV = 2.5 MeV -> 40 MeV floor
        _sample_row(-0.1, 0.001, 0.4, 9.0, -0.5, [0.5, 2.0, -1.0], [1.0, 1.0, 2.0]),
        # N = 2*5000 -> 6000; all-negative fractions -> uniform
        _sample_row(2.0, 0.4, 0.0, 0.0, 1.0, [-1.0, -2.0, -0.5], [-3.0, -3.0, -3.0]),
        # N = 0.1*5000 = 500 (float32 0.1 is 500.0000074 -> rounds to 500); E = 1000 MeV
        _sample_row(0.1, 0.4, -1.0, 0.0, 0.25, [0.2, 0.2, 0.6], [0.0, 0.5, 0.5]),
    ], dtype=torch.float32)
    s = decode_shower_flow(samples, n_layers=3)
    assert s.n_points.dtype == torch.int64
    assert s.n_points.tolist() == [1, 6000, 500]
    torch.testing.assert_close(s.e_vis_mev, torch.tensor([40.0, 1000.0, 1000.0]))
    torch.testing.assert_close(s.cog_x_mm, torch.tensor([10.0, 0.0, -25.0]))
    torch.testing.assert_close(s.cog_y_mm, torch.tensor([-10.0, 20.0, 5.0]))
    third = 1 / 3
    torch.testing.assert_close(s.layer_fraction_points, torch.tensor(
        [[third, 2 * third, 0.0], [third, third, third], [0.2, 0.2, 0.6]]))
    torch.testing.assert_close(s.layer_fraction_energy, torch.tensor(
        [[third, third, third], [third, third, third], [0.0, 0.5, 0.5]]))
    torch.testing.assert_close(s.layer_energy_mev(), torch.tensor(
        [[40 / 3, 40 / 3, 40 / 3], [1000 / 3] * 3, [0.0, 500.0, 500.0]]))
    # floor(frac * N_cal): 10 -> [3.33, 6.67, 0] -> [3, 6, 0]; uniform 10 -> [3, 3, 3];
    # 7 -> [1.4, 1.4, 4.2] -> [1, 1, 4]: row sums 9, 9, 6 <= N_cal
    lp = s.layer_points(torch.tensor([10, 10, 7]))
    assert lp.dtype == torch.int64
    assert lp.tolist() == [[3, 6, 0], [3, 3, 3], [1, 1, 4]]
    assert (lp.sum(1) <= torch.tensor([10, 10, 7])).all()


def test_decode_custom_limits_and_axis():
    row = _sample_row(0.5, 0.0, 0.0, 0.0, 0.0, [1.0, 0.0, 0.0], [1.0, 0.0, 0.0])
    s = decode_shower_flow(torch.tensor([row]), ShowerFlowScales(axis_y_mm=40.0),
                           n_layers=3, max_points=1000, min_e_vis_mev=5.0)
    assert s.n_points.tolist() == [1000]
    assert s.e_vis_mev.tolist() == [5.0]
    assert s.cog_y_mm.tolist() == [40.0]


def test_decode_inverts_features():
    # Encode a cloud, decode the features: N, E_vis and the CoG come back.
    data = _cloud([SHOWER0, SHOWER2])
    f = torch.from_numpy(shower_flow_features(data, n_layers=3))
    s = decode_shower_flow(f, n_layers=3)
    assert s.n_points.tolist() == [2, 3]
    torch.testing.assert_close(s.e_vis_mev, torch.tensor([4000.0, 1000.0]))
    torch.testing.assert_close(s.cog_x_mm, torch.tensor([-5.0, 2.5]))
    torch.testing.assert_close(s.cog_y_mm, torch.tensor([15.0, -2.5]))
    torch.testing.assert_close(s.layer_fraction_energy[0], torch.tensor([0.25, 0.75, 0.0]))


def test_decode_rejects_bad_samples():
    good = _sample_row(0.1, 0.4, 0, 0, 0, [1, 1, 1], [1, 1, 1])
    bad = list(good)
    bad[7] = float("nan")
    with pytest.raises(ShowerFlowSampleError, match="row 2"):
        decode_shower_flow(torch.tensor([good, good, bad]), n_layers=3)
    inf = list(good)
    inf[0] = float("inf")
    with pytest.raises(ValueError, match="row 0"):
        decode_shower_flow(torch.tensor([inf]), n_layers=3)
    assert issubclass(ShowerFlowSampleError, CaloforgeError)
    with pytest.raises(ValueError, match="shape"):
        decode_shower_flow(torch.zeros(2, 65), n_layers=3)


def test_layer_points_never_exceed_n_cal():
    torch.manual_seed(0)
    frac = torch.rand(200, 30)
    frac = frac / frac.sum(1, keepdim=True)
    n_cal = torch.randint(1, 6001, (200,))
    s = ShowerFlowSummary(n_cal, torch.full((200,), 100.0), torch.zeros(200), torch.zeros(200),
                          frac, frac)
    lp = s.layer_points(n_cal)
    assert (lp >= 0).all() and (lp.sum(1) <= n_cal).all()
    assert (lp.sum(1) >= n_cal - 29).all()  # each layer loses less than one point
    exact = torch.floor(frac.double() * n_cal[:, None].double()).long()
    assert torch.equal(lp, exact)
