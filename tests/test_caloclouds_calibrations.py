"""CaloClouds II calibrations: the N calibration and its fits, and the post-diffusion
steps (layer assignment, E <= 0 removal, layer energies, CoG shift) on hand-built batches."""

import numpy as np
import pytest
import torch

from caloforge.errors import ConfigError
from caloforge.geometry import PlanarGeometry
from caloforge.io import PointCloudData
from caloforge.pipelines.caloclouds.calibrations import (
    CalibratedBatch,
    NCalibration,
    PointCloudSampleError,
    apply_square_symmetry,
    assign_layers,
    calibrate,
    check_n_calibration,
    count_cells,
    fit_cubic,
    fit_p_data,
    fit_p_gen,
    lost_layer_energy,
    rescale_layer_energies,
    shift_centre_of_gravity,
    zero_non_positive,
)
from caloforge.pipelines.caloclouds.features import ShowerFlowSummary

NAN = float("nan")
# 3 layers of 4 x 4 cells of 10 mm: edges -20, -10, 0, 10, 20; centres -15, -5, 5, 15.
GEOM = PlanarGeometry("toy", absorber_mm=(1.0,) * 3, si_mm=0.5, cell_mm=10.0,
                      n_cells_x=4, n_cells_y=4)
CENTRES = [(x, y) for x in (-15.0, -5.0, 5.0, 15.0) for y in (-15.0, -5.0, 5.0, 15.0)]


def _cloud(showers):
    pts = [np.asarray(s, np.float32).reshape(-1, 4) for s in showers]
    return PointCloudData(np.full(len(pts), 1000.0), np.concatenate(pts), [len(p) for p in pts],
                          GEOM)


def _shower(n_points, n_cells):
    """n_points points making exactly n_cells cells >= 0.1 MeV: one cell built from two
    0.06 MeV points, the others from 1 MeV points, and the rest of the points alone in
    cells of layer 1 below threshold (0.05 MeV)."""
    pts = [(CENTRES[i][0], CENTRES[i][1], 0.5, 1.0) for i in range(n_cells - 1)]
    x, y = CENTRES[15]
    pts += [(x - 1, y, 0.5, 0.06), (x + 1, y, 0.5, 0.06)]
    pts += [(*CENTRES[i], 1.5, 0.05) for i in range(n_points - len(pts))]
    assert len(pts) == n_points
    return pts


# ------------------------------------------------------------------ N calibration
def test_count_cells_known():
    shower0 = [(1.0, 1.0, 0.2, 0.06), (2.0, 3.0, 0.7, 0.06),  # one cell: 0.12 MeV
               (-12.0, 5.0, 0.5, 0.05),                      # alone, below threshold
               (100.0, 0.0, 0.5, 5.0),                       # outside the window
               (-5.0, -5.0, 2.9, 1.0)]                       # layer 2
    shower1 = [(0.0, 0.0, 1.0, 0.04), (5.0, 5.0, 1.5, 0.05)]  # same cell, 0.09 MeV
    data = _cloud([shower0, shower1, _shower(8, 5)])
    np.testing.assert_array_equal(count_cells(data, GEOM), [2, 0, 5])
    np.testing.assert_array_equal(count_cells(data, None, threshold_mev=0.01), [3, 1, 7])


def test_calibration_identity_when_not_fitted():
    n = torch.tensor([1, 17, 500, 6000])
    for cal in (NCalibration(), NCalibration(p_data=(0.0, 0.0, 1.0, 0.0))):
        assert not cal.fitted
        out = cal(n)
        assert out.dtype == torch.int64 and torch.equal(out, n)


def test_calibration_known_cubics():
    cal = NCalibration(p_data=(1e-6, 0.0, 0.5, 10.0), p_gen=(0.0, 0.001, 1.0, 0.0))
    assert cal.fitted
    # N=100: p_data = 1 + 50 + 10 = 61, p_gen = 3.721 + 61 = 64.721 -> 64
    # N=1000: p_data = 1000 + 500 + 10 = 1510, p_gen = 2280.1 + 1510 = 3790.1 -> 3790
    # N=6000: far above 6000 -> clipped
    out = cal(torch.tensor([100, 1000, 6000]))
    assert out.dtype == torch.int64 and out.tolist() == [64, 3790, 6000]
    assert cal(torch.tensor([1000]), max_points=3000).tolist() == [3000]
    # a negative scale factor is clipped to 0, and the result to at least one point
    assert NCalibration((0, 0, 1, 0), (0, 0, -1, 0))(torch.tensor([50])).tolist() == [1]
    # exact integer results survive float rounding (3N/3 must give N, not N - 1)
    n = torch.arange(1, 6001)
    assert torch.equal(NCalibration((0, 0, 3.0, 0), (0, 0, 1 / 3, 0))(n), n)


def test_calibration_dict_round_trip_and_errors():
    cal = NCalibration(p_data=[2.42e-9, -2.72e-5, 0.2956, 48.8], p_gen=None)
    assert NCalibration.from_dict(cal.to_dict()) == cal
    assert cal.to_dict()["p_gen"] is None and isinstance(cal.p_data, tuple)
    with pytest.raises(ConfigError, match="unknown"):
        NCalibration.from_dict({"p_data": None, "pgen": None})
    with pytest.raises(ConfigError, match="4 finite"):
        NCalibration(p_data=(1.0, 2.0))
    with pytest.raises(ConfigError, match="4 finite"):
        NCalibration(p_gen=(1.0, 2.0, NAN, 0.0))


def test_fit_cubic_recovers_coefficients():
    coeffs = (2.42091454e-09, -2.72191705e-05, 2.95613817e-01, 4.88328360e01)
    x = np.linspace(50, 6000, 40)
    y = np.polyval(coeffs, x)
    got = fit_cubic(x, y)
    assert len(got) == 4 and all(isinstance(c, float) for c in got)
    np.testing.assert_allclose(got, coeffs, rtol=1e-6)
    with pytest.raises(ValueError, match="4 distinct"):
        fit_cubic([1, 2, 3], [1, 2, 3])
    with pytest.raises(ValueError, match="4 distinct"):
        fit_cubic([1, 1, 2, 2, 3, 3], [1, 2, 3, 4, 5, 6])
    with pytest.raises(ValueError, match="NaN"):
        fit_cubic([1, 2, 3, NAN], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="values but"):
        fit_cubic([1, 2, 3, 4], [1, 2, 3])


def test_fit_p_data_on_known_cell_counts():
    # cells(n) = n - 1 - (n-2)(n-4)(n-6)/48 = -n^3/48 + n^2/4 + n/12: 1, 3, 5, 6, 5 cells
    ns = [2, 4, 6, 8, 10]
    cells = [1, 3, 5, 6, 5]
    data = _cloud([_shower(n, c) for n, c in zip(ns, cells)])
    np.testing.assert_array_equal(count_cells(data, GEOM), cells)
    np.testing.assert_allclose(fit_p_data(data, GEOM), (-1 / 48, 1 / 4, 1 / 12, 0.0),
                               atol=1e-9)
    # a threshold that counts every point alone gives cells = n - 1 (the shared cell)
    np.testing.assert_allclose(fit_p_data(data, GEOM, threshold_mev=0.01), (0, 0, 1, -1),
                               atol=1e-9)


def test_fit_p_gen_swaps_the_axes():
    # cells = n / 2, so p_gen (points as a function of cells) is 2 * cells
    data = _cloud([_shower(n, n // 2) for n in (4, 6, 8, 10, 12)])
    np.testing.assert_allclose(fit_p_gen(data, GEOM), (0, 0, 2.0, 0), atol=1e-9)
    np.testing.assert_allclose(fit_p_data(data, GEOM), (0, 0, 0.5, 0), atol=1e-9)


def test_check_n_calibration_flags_a_calibration_that_turns_over():
    ref_n = np.array([200, 900, 1600, 2900])
    ref_cells = np.array([80, 330, 560, 710])
    # sound: p_data = N / 4, p_gen = 4.4 cells (the model needs 10% more points)
    good = NCalibration((0, 0, 0.25, 0), (0, 0, 4.4, 0))
    check = check_n_calibration(good, ref_n, ref_cells, np.array([60, 400, 650]))
    assert check.ok and check.monotone and check.worst_drop == 0
    assert check.clipped_fraction == 0 and check.n_range == (200, 2900)
    assert check.problem() is None
    assert check.to_dict()["cells_reached"] == 650 and check.to_dict()["cells_wanted"] == 710
    # a model whose cells saturate near 450: p_gen fitted to it is a cubic that turns
    # over (the shipped distilled model's first calibration, docs/caloclouds.md)
    bad = NCalibration((1.2738e-08, -7.5303e-05, 0.39551, -6.5914),
                       (-1.17358e-04, 0.159523, -61.7035, 8039.55))
    assert bad(torch.tensor([100, 2200, 2900])).tolist()[0] == 6000  # clipped
    check = check_n_calibration(bad, ref_n, ref_cells, np.array([300, 485]))
    assert not check.ok and not check.monotone and check.worst_drop > 0
    msg = check.problem()
    assert "falls" in msg and "485 cells" in msg and "710" in msg
    # a calibration that sends part of the range onto max_points is flagged as well
    clip = check_n_calibration(NCalibration((0, 0, 1, 0), (0, 0, 3, 0)), ref_n, ref_cells,
                               np.array([700]), max_points=6000)
    assert clip.monotone and not clip.ok and clip.clipped_fraction > 0.0
    assert "clipped" in clip.problem()
    with pytest.raises(ValueError, match="no reference"):
        check_n_calibration(good, np.array([], np.int64), ref_cells, ref_cells)


# ------------------------------------------------------------- post-diffusion steps
def _batch():
    """Two showers: 4 valid points + padding, 2 valid points + NaN padding."""
    pts = torch.tensor([
        [[0, 10, 2.0, 1], [1, 11, -1.0, 2], [2, 12, 0.3, 3], [3, 13, 5.0, 4], [9, 9, -100, 9]],
        [[5, 15, 1.0, 5], [6, 16, 0.0, 6], [NAN] * 4, [NAN] * 4, [NAN] * 4],
    ], dtype=torch.float32)
    return pts, torch.tensor([4, 2]), torch.tensor([[1, 2, 1], [0, 0, 2]])


def test_assign_layers_hand_result():
    pts, n, lp = _batch()
    out = assign_layers(pts, n, lp)
    expected = torch.tensor([
        [[1, 11, 0.5, 2], [2, 12, 1.5, 3], [0, 10, 1.5, 1], [3, 13, 2.5, 4], [0, 0, 0, 0]],
        [[6, 16, 2.5, 6], [5, 15, 2.5, 5], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
    ], dtype=torch.float32)
    assert torch.equal(out, expected)
    with pytest.raises(ValueError, match="sum to n_valid"):
        assign_layers(pts, n, torch.tensor([[1, 2, 1], [0, 1, 2]]))
    bad = pts.clone()
    bad[0, 1, 2] = NAN
    with pytest.raises(PointCloudSampleError):
        assign_layers(bad, n, lp)


def test_zero_non_positive():
    pts = torch.tensor([
        [[0, 0, 0.5, 1], [1, 1, 0.5, -2], [2, 2, 1.5, 0], [3, 3, 2.5, 3], [4, 4, 2.5, 5]],
        [[5, 5, 0.5, -1], [6, 6, 0.5, -1], [NAN] * 4, [0, 0, 0, 0], [0, 0, 0, 0]],
    ], dtype=torch.float32)
    out, counts = zero_non_positive(pts, torch.tensor([4, 2]))
    assert counts.tolist() == [2, 0]
    expected = torch.zeros(2, 5, 4)
    expected[0, 0] = torch.tensor([0, 0, 0.5, 1])
    expected[0, 1] = torch.tensor([3, 3, 2.5, 3])  # order kept; the padding row (E=5) dropped
    assert torch.equal(out, expected)


def test_rescale_layer_energies_with_empty_and_zero_layers():
    pts = torch.tensor([
        # layer 0: E 1, 3 -> target 8; layer 1: no points (target 5 lost); layer 2: 2 -> 1
        [[0, 0, 0.5, 1], [0, 0, 0.5, 3], [0, 0, 2.5, 2], [0, 0, 0, 0], [7, 7, 1.5, 7]],
        # layer 0: only zero-energy points (target 4 lost); layer 1: 4 -> 2; layer 2: empty
        [[0, 0, 0.5, 0], [0, 0, 0.5, 0], [0, 0, 1.5, 4], [NAN] * 4, [NAN] * 4],
        # no points at all: everything lost
        [[0, 0, 0, 0]] * 5,
    ], dtype=torch.float32)
    n = torch.tensor([3, 3, 0])
    target = torch.tensor([[8.0, 5.0, 1.0], [4.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    out = rescale_layer_energies(pts, n, target)
    assert torch.isfinite(out[0]).all() and torch.isfinite(out[1, :3]).all()
    assert out[0, :, 3].tolist() == [2.0, 6.0, 1.0, 0.0, 7.0]  # padding row untouched
    assert out[1, :3, 3].tolist() == [0.0, 0.0, 2.0]
    assert torch.equal(out[2], pts[2])
    assert torch.equal(out[..., :3][~torch.isnan(pts[..., :3])],
                       pts[..., :3][~torch.isnan(pts[..., :3])])  # positions unchanged
    lost = lost_layer_energy(pts, n, target)
    assert lost.tolist() == [5.0, 7.0, 6.0]


def test_shift_centre_of_gravity_exact():
    pts = torch.tensor([
        [[0, 0, 0.5, 1], [10, 0, 1.5, 3], [100, 100, 0, 5]],   # CoG (7.5, 0) + padding
        [[3, 4, 0.5, 2], [5, 6, 0.5, 1], [7, 8, 0.5, 1]],      # n_valid = 0
        [[3, 4, 0.5, 0], [5, 6, 0.5, 0], [0, 0, 0, 0]],        # no energy
    ], dtype=torch.float32)
    n = torch.tensor([2, 0, 2])
    out = shift_centre_of_gravity(pts, n, torch.tensor([-2.0, 1.0, 1.0]),
                                  torch.tensor([5.0, 1.0, 1.0]))
    assert out[0, :2, :2].tolist() == [[-9.5, 5.0], [0.5, 5.0]]
    assert torch.equal(out[0, 2], pts[0, 2])
    assert torch.equal(out[1:], pts[1:])
    assert torch.equal(out[..., 2:], pts[..., 2:])


def test_shift_centre_of_gravity_random_to_target():
    g = torch.Generator().manual_seed(1)
    pts = torch.randn(6, 50, 4, generator=g) * torch.tensor([80.0, 80.0, 5.0, 1.0])
    pts[..., 3] = pts[..., 3].abs() + 0.01
    n = torch.tensor([50, 1, 10, 33, 2, 49])
    tx, ty = torch.randn(6, generator=g) * 20, torch.randn(6, generator=g) * 20
    out = shift_centre_of_gravity(pts, n, tx, ty)
    for b in range(6):
        p = out[b, :n[b]].double()
        w = p[:, 3] / p[:, 3].sum()
        assert float(w @ p[:, 0]) == pytest.approx(float(tx[b]), abs=1e-5 * 80)
        assert float(w @ p[:, 1]) == pytest.approx(float(ty[b]), abs=1e-5 * 80)
        # the original cloud's CoG is elsewhere: the check is not trivially met
        w0 = pts[b, :n[b], 3].double() / pts[b, :n[b], 3].double().sum()
        assert abs(float(w0 @ pts[b, :n[b], 0].double()) - float(tx[b])) > 1e-3


def _summary(frac_p, frac_e, e_vis, cog_x, cog_y, n):
    return ShowerFlowSummary(torch.as_tensor(n), torch.as_tensor(e_vis), torch.as_tensor(cog_x),
                             torch.as_tensor(cog_y), torch.as_tensor(frac_p),
                             torch.as_tensor(frac_e))


def test_calibrate_end_to_end():
    g = torch.Generator().manual_seed(7)
    b, n_layers = 4, 5
    frac_p = torch.rand(b, n_layers, generator=g)
    frac_p[:, 2] = 0.0                       # layer 2 gets no points but has a target energy
    frac_p /= frac_p.sum(1, keepdim=True)
    frac_e = torch.rand(b, n_layers, generator=g) + 0.05
    frac_e /= frac_e.sum(1, keepdim=True)
    e_vis = torch.tensor([1000.0, 5000.0, 300.0, 800.0])
    cog_x, cog_y = torch.tensor([1.0, -3.0, 0.5, 2.0]), torch.tensor([-2.0, 4.0, 0.0, 1.0])
    summary = _summary(frac_p, frac_e, e_vis, cog_x, cog_y, [40, 25, 12, 6])
    n_cal = torch.tensor([40, 25, 12, 6])
    lp = summary.layer_points(n_cal)
    n_valid = lp.sum(1)
    length = int(n_valid.max()) + 3
    pts = torch.randn(b, length, 4, generator=g) * torch.tensor([20.0, 20.0, 3.0, 1.0])
    pts[..., 3] += 0.7                       # about a quarter of the energies <= 0
    pts[3, :, 3] = -1.0                      # a shower whose points are all removed
    pts[:, -1] = NAN                         # padding may hold anything
    batch = calibrate(pts, n_valid, summary, lp)
    assert isinstance(batch, CalibratedBatch)
    out, n = batch.points, batch.n_points
    assert torch.isfinite(out).all() and torch.isfinite(batch.lost_energy_mev).all()

    # what each layer should hold: its allocated points minus those with E <= 0
    assigned = assign_layers(pts, n_valid, lp)
    valid = torch.arange(length)[None] < n_valid[:, None]
    removed = torch.zeros(b, n_layers, dtype=torch.int64)
    layer_of = assigned[..., 2].floor().long().clamp(0, n_layers - 1)
    removed.scatter_add_(1, layer_of, (valid & (assigned[..., 3] <= 0)).long())
    assert removed.sum() > 0
    kept = torch.arange(length)[None] < n[:, None]
    counts = torch.zeros(b, n_layers, dtype=torch.int64)
    counts.scatter_add_(1, out[..., 2].floor().long().clamp(0, n_layers - 1), kept.long())
    assert torch.equal(counts, lp - removed)
    assert n[3] == 0 and torch.equal(out[3], torch.zeros_like(out[3]))
    assert (out[kept][:, 3] > 0).all()
    assert torch.equal(out[kept][:, 2] % 1, torch.full((int(n.sum()),), 0.5))

    # layer sums hit the targets where the layer kept points; the rest is counted as lost
    sums = torch.zeros(b, n_layers, dtype=torch.float64)
    sums.scatter_add_(1, out[..., 2].floor().long().clamp(0, n_layers - 1),
                      torch.where(kept, out[..., 3].double(), torch.zeros(())))
    target = summary.layer_energy_mev().double()
    has = counts > 0
    torch.testing.assert_close(sums[has], target[has], rtol=1e-5, atol=1e-4)
    assert (sums[~has] == 0).all() and (~has[:, 2]).all()
    torch.testing.assert_close(batch.lost_energy_mev, (target * ~has).sum(1))
    assert batch.lost_energy_mev[3] == pytest.approx(800.0, rel=1e-6)

    # the CoG sits on the target for every shower with energy
    for i in range(3):
        p = out[i, :n[i]].double()
        w = p[:, 3] / p[:, 3].sum()
        assert float(w @ p[:, 0]) == pytest.approx(float(cog_x[i]), abs=1e-4)
        assert float(w @ p[:, 1]) == pytest.approx(float(cog_y[i]), abs=1e-4)

    # the reference order matters: rescaling before the removal breaks the layer sums
    wrong = rescale_layer_energies(assigned, n_valid, summary.layer_energy_mev())
    wrong, n_wrong = zero_non_positive(wrong, n_valid)
    kept_w = torch.arange(length)[None] < n_wrong[:, None]
    sums_w = torch.zeros(b, n_layers, dtype=torch.float64)
    sums_w.scatter_add_(1, wrong[..., 2].floor().long().clamp(0, n_layers - 1),
                        torch.where(kept_w, wrong[..., 3].double(), torch.zeros(())))
    assert not torch.allclose(sums_w[has], target[has], rtol=1e-5, atol=1e-4)

    # to PointCloudData: exactly n points per shower, the valid rows in order
    e_inc = torch.tensor([10_000.0, 50_000.0, 20_000.0, 90_000.0])
    data = batch.to_point_cloud_data(e_inc)
    assert isinstance(data, PointCloudData)
    assert data.n_points.tolist() == n.tolist()
    assert len(data.points) == int(n.sum())
    np.testing.assert_array_equal(data.shower(1), out[1, :n[1]].numpy())
    np.testing.assert_allclose(data.incident_energies, e_inc.numpy())


def test_calibrate_rejects_bad_input():
    pts, n, lp = _batch()
    frac = torch.full((2, 3), 1 / 3)
    summary = _summary(frac, frac, [100.0, 100.0], [0.0, 0.0], [0.0, 0.0], [4, 2])
    bad = pts.clone()
    bad[1, 0, 3] = float("inf")
    with pytest.raises(PointCloudSampleError, match="NaN or infinite"):
        calibrate(bad, n, summary, lp)
    with pytest.raises(ValueError, match="layers"):
        calibrate(pts, n, summary, torch.tensor([[4, 0], [2, 0]]))
    with pytest.raises(ValueError, match="padded length"):
        calibrate(pts, torch.tensor([6, 2]), summary, lp)
    # the NaN padding of shower 1 is not a problem
    out = calibrate(pts, n, summary, lp)
    assert torch.isfinite(out.points).all()


def test_the_eight_square_symmetries_map_a_point_onto_its_eight_images_and_cells_onto_cells():
    pts = torch.tensor([[[1.0, 2.0, 3.5, 4.0]]]).repeat(8, 1, 1)
    out = apply_square_symmetry(pts, torch.ones(8, dtype=torch.long), torch.arange(8))
    images = {(float(x), float(y)) for x, y in out[:, 0, :2]}
    assert images == {(1, 2), (-2, 1), (-1, -2), (2, -1), (-1, 2), (2, 1), (1, -2), (-2, -1)}
    assert torch.equal(out[..., 2:], pts[..., 2:])
    # about another axis, and padding stays where it is
    pad = torch.tensor([[[11.0, 12.0, 0.5, 1.0], [9.0, 9.0, 9.0, 9.0]]])
    moved = apply_square_symmetry(pad, torch.tensor([1]), torch.tensor([1]), axis_xy=(10.0, 10.0))
    assert moved[0, 0, :2].tolist() == [8.0, 11.0] and torch.equal(moved[0, 1], pad[0, 1])
    # a grid with a corner on the axis: every shower keeps its cell energies
    g = PlanarGeometry("sq", absorber_mm=(1.0, 1.0), n_cells_x=6, n_cells_y=6, cell_mm=5.0)
    rng = np.random.default_rng(0)
    cloud = torch.tensor(np.c_[rng.uniform(-15, 15, (40, 2)), rng.uniform(0, 2, 40),
                               rng.uniform(0.1, 1, 40)], dtype=torch.float32)[None]
    for k in range(8):
        turned = apply_square_symmetry(cloud, torch.tensor([40]), torch.tensor([k]))
        cells = []
        for c in (cloud, turned):
            ix, iy, inside = g.cell_of(c[0, :, 0].numpy(), c[0, :, 1].numpy())
            assert inside.all()
            cells.append(np.sort(np.bincount(ix * 6 + iy, weights=c[0, :, 3].numpy(),
                                             minlength=36)))
        np.testing.assert_allclose(cells[0], cells[1], rtol=1e-6)
    with pytest.raises(ValueError, match="0..7"):
        apply_square_symmetry(pts, torch.ones(8, dtype=torch.long), torch.full((8,), 8))
