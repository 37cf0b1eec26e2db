"""Plotting functions draw what they are given, return their artists, and write PNGs."""

import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("mplhep")

from caloforge.errors import CaloforgeError  # noqa: E402
from caloforge.evaluation.plots import (  # noqa: E402
    average_shower,
    average_shower_figure,
    figure_grid,
    hist_with_ratio,
    normalised_histogram,
    plot_average_layer_image,
    plot_classifier_weights,
    plot_layer_profile,
    plot_response_per_energy_bin,
    require_plotting,
)
from caloforge.geometry import get_geometry  # noqa: E402
from caloforge.io import ShowerData, write_showers  # noqa: E402


def _png_ok(fig, path):
    fig.savefig(path, dpi=50)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_missing_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "mplhep", None)  # makes `import mplhep` fail
    with pytest.raises(CaloforgeError, match=r"pip install caloforge\[plot\]"):
        require_plotting()


def test_normalised_histogram_unit_area():
    edges = np.array([0.0, 1.0, 3.0, 4.0])
    h, e = normalised_histogram(np.array([0.5, 0.5, 2.0, 3.5, 10.0]), edges)
    np.testing.assert_allclose(h, [2 / 4, 1 / 8, 1 / 4])  # 4 entries inside the edges
    np.testing.assert_allclose(e, np.sqrt([2, 1, 1]) / (4 * np.diff(edges)))
    assert (h * np.diff(edges)).sum() == pytest.approx(1.0)


def test_hist_with_ratio(tmp_path):
    rng = np.random.default_rng(0)
    ref, gen = rng.normal(0, 1, 5000), rng.normal(0.2, 1, 4000)
    fig, axes = figure_grid(1, ratio=True)
    ax_main, ax_ratio = axes[0]
    art = hist_with_ratio(ref, {"model": gen}, 20, ax_main=ax_main, ax_ratio=ax_ratio,
                          xlabel="x", logy=True)
    edges = art["edges"]
    assert len(edges) == 21 and edges[0] == ref.min() and edges[-1] == ref.max()
    h_ref = np.histogram(ref, edges, density=True)[0]
    h_gen = np.histogram(gen, edges, density=True)[0]
    np.testing.assert_allclose(art["reference"].get_data().values, h_ref)
    np.testing.assert_allclose(art["generated"]["model"].get_data().values, h_gen)
    np.testing.assert_allclose(art["ratios"]["model"].get_data().values, h_gen / h_ref)
    band = art["bands"]["model"].get_data()
    assert np.all(band.values >= h_gen) and np.all(band.baseline <= h_gen)
    assert ax_main.get_yscale() == "log" and ax_ratio.get_xlabel() == "x"
    _png_ok(fig, tmp_path / "hist.png")


def test_hist_with_ratio_log_bins_and_empty_reference_bins():
    fig, ((ax_main, ax_ratio),) = figure_grid(1, ratio=True)
    art = hist_with_ratio(np.array([1.0, 10.0, 100.0]), {"a": np.array([1.0, 50.0])},
                          np.array([0.5, 5, 20, 30, 500]), ax_main=ax_main, ax_ratio=ax_ratio,
                          xlabel="E", logx=True)
    r = art["ratios"]["a"].get_data().values
    assert np.isnan(r[2])  # empty reference bin: no ratio drawn
    assert r[0] == pytest.approx((1 / 2 / 4.5) / (1 / 3 / 4.5))
    assert ax_main.get_xscale() == "log"


def test_layer_profile():
    fig, (ax,) = figure_grid(1)
    ref = np.array([1.0, 5.0, 3.0])
    art = plot_layer_profile(ref, {"a": ref * 2, "b": ref / 2}, ax=ax, ylabel="E")
    np.testing.assert_array_equal(art["reference"].get_data().values, ref)
    np.testing.assert_array_equal(art["generated"]["b"].get_data().values, ref / 2)
    np.testing.assert_array_equal(art["edges"], [-0.5, 0.5, 1.5, 2.5])
    art = plot_layer_profile(ref, {}, ax=ax, edges=[0, 4, 8, 16], xlabel="r [mm]")
    np.testing.assert_array_equal(art["reference"].get_data().edges, [0, 4, 8, 16])
    assert ax.get_xlabel() == "r [mm]"


def test_average_layer_image_values():
    g = get_geometry("ds2")
    mean = np.zeros(g.n_voxels)
    sl = g.layer_slice(10)
    mean[sl] = np.arange(1, sl.stop - sl.start + 1, dtype=float)
    fig, (ax,) = figure_grid(1)
    art = plot_average_layer_image(mean, g, 10, ax=ax)
    n_alpha, n_r = g.n_alpha[10], g.n_r[10]
    drawn = np.asarray(art["mesh"].get_array()).reshape(n_alpha * art["subdivide"], n_r)
    np.testing.assert_array_equal(drawn[::art["subdivide"]], mean[sl].reshape(n_alpha, n_r))
    assert art["mesh"].norm.vmin == 1 and art["mesh"].norm.vmax == n_alpha * n_r
    assert art["colorbar"] is not None
    with pytest.raises(CaloforgeError):
        plot_average_layer_image(mean, g, 99, ax=ax)


def test_response_per_energy_bin_discrete_energies():
    rng = np.random.default_rng(1)
    e = np.repeat([1000.0, 10_000.0, 100_000.0], 300)
    resp = rng.normal(1.0, 0.05, e.size)
    fig, axes = figure_grid(4, ncols=2)
    out = plot_response_per_energy_bin(e, resp, {"m": (e, resp * 1.1)}, axes=axes, bins=10)
    assert len(out) == 3 and not axes[3].get_visible()
    lo, hi = out[1]["energy_range"]
    assert lo < 10_000 < hi
    sel = resp[300:600]
    expect = np.histogram(sel, out[1]["edges"], density=True)[0]
    np.testing.assert_allclose(out[1]["reference"].get_data().values, expect)
    assert out[1]["generated"]["m"].get_data().values.sum() > 0


def test_classifier_weights():
    fig, (ax,) = figure_grid(1)
    w_ref = np.array([0.5, 1.0, 1.0, 2.0])
    w_gen = np.array([1.0, 4.0, 0.0])  # the zero weight is left out
    art = plot_classifier_weights(w_ref, w_gen, ax=ax, bins=np.array([-1, -0.1, 0.1, 1]))
    np.testing.assert_allclose(art["reference"].get_data().values * np.diff(art["edges"]),
                               [0.25, 0.5, 0.25])
    np.testing.assert_allclose(art["generated"].get_data().values * np.diff(art["edges"]),
                               [0.0, 0.5, 0.5])


def test_figure_grid_hides_nothing_and_counts_panels():
    fig, axes = figure_grid(5, ncols=4)
    assert len(axes) == 5 and len(fig.axes) == 5


def _ds2_showers(n=40, seed=0):
    g = get_geometry("ds2")
    rng = np.random.default_rng(seed)
    img = np.zeros((n,) + g.image_shape)
    # Mean energy peaks in layer 12 and falls with radius.
    layer_w = np.exp(-0.5 * ((np.arange(45) - 12) / 5.0) ** 2)
    r_w = np.exp(-np.arange(9) / 2.0)
    img += layer_w[None, :, None, None] * r_w[None, None, None, :]
    img *= rng.uniform(0.5, 1.5, (n, 1, 16, 1))
    return ShowerData(rng.uniform(1e3, 1e6, n), g.from_image(img), g)


def test_average_shower_from_file_in_chunks(tmp_path):
    data = _ds2_showers()
    path = tmp_path / "s.h5"
    write_showers(path, data)
    mean, g, n = average_shower(path, chunk_size=7)
    assert n == 40 and g.name == "ds2"
    np.testing.assert_allclose(mean, data.showers.mean(axis=0), rtol=1e-6)
    mean2, _, _ = average_shower(data.showers, g)
    np.testing.assert_allclose(mean2, mean, rtol=1e-6)


def test_average_shower_figure(tmp_path):
    data = _ds2_showers()
    path = tmp_path / "s.h5"
    write_showers(path, data)
    fig = average_shower_figure(path, chunk_size=16)
    assert len(fig.axes) == 3  # profile, image, colour bar
    profile_ax, image_ax = fig.axes[:2]
    assert image_ax.get_title() == "layer 12"  # the layer of largest mean energy
    steps = [p for p in profile_ax.patches if hasattr(p, "get_data")]
    expect = data.geometry.layer_energies(data.showers.mean(axis=0)[None])[0]
    np.testing.assert_allclose(steps[0].get_data().values, expect, rtol=1e-5)
    _png_ok(fig, tmp_path / "avg.png")
    fig = average_shower_figure(data, layer=3)
    assert fig.axes[1].get_title() == "layer 3"
