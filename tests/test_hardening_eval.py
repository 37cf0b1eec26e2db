"""Evaluation that is never silently wrong: random subsets, honest error bars, PRDC known
answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from caloforge.evaluation import (
    EvaluationOptions,
    compare,
    compute_features,
    evaluate,
    format_table,
    kpd,
    separation_power_samples,
    toy_showers,
    write_report,
)
from caloforge.evaluation.binning import feature_bins
from caloforge.evaluation.fpd_kpd import kpd_error_note
from caloforge.evaluation.prdc import prdc
from caloforge.geometry import get_geometry
from caloforge.io import ShowerData, write_showers

G = get_geometry("ds2")
OPTS = EvaluationOptions(classifier="none", fpd_min_samples=200, fpd_sizes=3, fpd_batches=2,
                         kpd_batch_size=100, kpd_batches=3, max_prdc=100, w1_subsamples=4)


@pytest.fixture(scope="module")
def sorted_and_shuffled(tmp_path_factory):
    d = tmp_path_factory.mktemp("sorted")
    write_showers(d / "ref.h5", toy_showers(G, 600, rng=1), compression=None)
    gen = toy_showers(G, 1000, rng=2)
    response = gen.showers.sum(axis=1, dtype=np.float64) / gen.incident_energies
    order = np.argsort(response)
    shuffled = np.random.default_rng(3).permutation(len(gen))
    write_showers(d / "sorted.h5", ShowerData(gen.incident_energies[order], gen.showers[order], G),
                  compression=None)
    write_showers(d / "shuffled.h5", ShowerData(gen.incident_energies[shuffled],
                                                gen.showers[shuffled], G), compression=None)
    return d, gen, response


@pytest.mark.parametrize("max_showers", [None, 500])
def test_sorted_file_scores_as_the_shuffled_one(sorted_and_shuffled, max_showers, tmp_path):
    d, gen, response = sorted_and_shuffled
    res = evaluate(d / "ref.h5", [d / "sorted.h5", d / "shuffled.h5"], ["sorted", "shuffled"],
                   options=OPTS, max_showers=max_showers)
    n_half = res.meta["n_per_half"]
    assert n_half == (300 if max_showers is None else 250)
    floor = res.floor["sep/response"].value
    for key in ("sep/response", "sep/e_tot", "sep/e_layer", "w1/response"):
        a, b = res.models["sorted"][key].value, res.models["shuffled"][key].value
        # two random subsets of the same showers: equal within the statistical noise,
        # which the floor (two halves of one reference) measures
        tol = 3 * max(res.floor[key].value, 1e-3) + 3 * (res.floor[key].error or 0)
        assert abs(a - b) < tol, (key, a, b, tol)
    # the same test fails on the first rows of the sorted file: it can tell
    first = compute_features(ShowerData(gen.incident_energies[np.argsort(response)][:n_half],
                                        gen.showers[np.argsort(response)][:n_half], G))
    ref_b = res.features["reference"].subset(slice(1, None, 2))
    biased = separation_power_samples(ref_b.response, first.response, feature_bins("response", G))
    assert biased > 3 * floor + 0.05
    # every metric says how many showers it used
    for row in [res.floor, *res.models.values()]:
        assert row["sep/response"].n == (n_half, n_half)
        assert row["prdc/recall"].n == (100, 100)
    assert res.meta["n_generated_file"] == {"sorted": 1000, "shuffled": 1000}
    table = format_table(res)
    assert "showers used" in table and f"features (separation, W1, FPD, KPD) {n_half} vs {n_half}" in table
    data = json.load(open(write_report(res, tmp_path, plots=False)["json"]))
    assert data["models"]["sorted"]["sep/response"]["n"] == [n_half, n_half]
    assert "random" in data["meta"]["subsampling"]


def test_kpd_error_is_not_reported_when_batches_are_the_sample():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 4)), rng.normal(size=(300, 4))
    v, e = kpd(x, y, batch_size=300, n_batches=5)
    assert np.isfinite(v) and e is None
    assert "N = batch size" in kpd_error_note(300, 300, 300)
    assert kpd(x, y, batch_size=200, n_batches=5)[1] is None  # batches overlap by 1/3 at least
    v, e = kpd(x, y, batch_size=100, n_batches=5)
    assert e is not None and e > 0
    # drawn with replacement (the official convention) every batch differs, so the spread
    # estimates the error even at N = batch size
    v, e = kpd(x, y, batch_size=300, n_batches=5, replace=True)
    assert e is not None and e > 0


def test_report_marks_a_degenerate_error_instead_of_printing_it():
    f = compute_features(toy_showers(G, 400, rng=5))
    a, b = f.subset(slice(0, 200)), f.subset(slice(200, 400))
    opts = EvaluationOptions(classifier="none", kpd_batch_size=200, kpd_batches=4,
                             fpd_min_samples=100, fpd_sizes=3, fpd_batches=2,
                             convention="caloforge")
    m, _, _ = compare(a, b, G, options=opts)
    assert m["kpd"].value is not None and m["kpd"].error is None
    assert "N = batch size" in m["kpd"].note


def _prdc_brute(real, fake, k):
    """PRDC straight from the definitions (Naeem et al. 2020), full distance matrices."""
    drr = np.linalg.norm(real[:, None] - real[None], axis=-1)
    dff = np.linalg.norm(fake[:, None] - fake[None], axis=-1)
    drf = np.linalg.norm(real[:, None] - fake[None], axis=-1)  # (n, m)
    rad_r = np.sort(drr, axis=1)[:, k]  # column 0 is the point itself
    rad_f = np.sort(dff, axis=1)[:, k]
    inside = drf <= rad_r[:, None]
    return {
        "precision": inside.any(axis=0).mean(),
        "recall": (drf <= rad_f[None, :]).any(axis=1).mean(),
        "density": inside.sum() / (k * fake.shape[0]),
        "coverage": (drf.min(axis=1) <= rad_r).mean(),
    }


def test_prdc_equals_its_definition():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(80, 3)), rng.normal(0.3, 1.2, size=(70, 3))
    got, want = prdc(real, fake, k=5), _prdc_brute(real, fake, 5)
    for name in want:
        assert got[name] == pytest.approx(want[name], abs=1e-12), name


def test_prdc_known_answers():
    rng = np.random.default_rng(2)
    k = 5
    real = rng.normal(size=(500, 5))
    same = prdc(real, real.copy(), k=k)
    # identical samples: every point is in its own ball and k others' balls, so the
    # density is exactly (k + 1) / k
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert same["density"] == pytest.approx((k + 1) / k)
    apart = prdc(real, real + 100.0, k=k)
    assert apart == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # a collapsed sample (every generated point the same, inside the reference): perfect
    # precision, no recall, and coverage ~0 as well: only the few reference balls around
    # that one point are covered
    collapsed = prdc(real, np.repeat(real[:1], 400, axis=0), k=k)
    assert collapsed["precision"] == 1.0
    assert collapsed["recall"] == pytest.approx(1 / 500)
    assert collapsed["coverage"] < 0.05
    at_mode = prdc(real, np.zeros((400, 5)), k=k)
    assert at_mode["recall"] == 0.0 and at_mode["coverage"] < 0.15
    # ... but its density exceeds 1: the mode of a 5-d Gaussian lies in more balls than
    # a typical point (hubness, which grows with the dimension; see the report caveat)
    assert at_mode["density"] > 1.5


def test_report_warns_where_prdc_misleads(tmp_path):
    ref = toy_showers(G, 600, rng=7)
    mean = ref.showers.mean(axis=0, keepdims=True)
    collapsed = ShowerData(ref.incident_energies[:300], np.repeat(mean, 300, axis=0), G)
    write_showers(tmp_path / "ref.h5", ref, compression=None)
    write_showers(tmp_path / "col.h5", collapsed, compression=None)
    res = evaluate(tmp_path / "ref.h5", [tmp_path / "col.h5"], ["collapsed"], options=OPTS)
    m = res.models["collapsed"]
    assert m["prdc/recall"].value < 0.1
    assert any("collapsed: PRDC recall" in w for w in res.warnings), res.warnings


# ------------------------------------------------------------- official convention
def _fd_by_hand(a, b):
    from scipy.linalg import sqrtm

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1 + s2 - 2 * sqrtm(s1 @ s2).real))


def test_official_fpd_by_hand():
    from caloforge.evaluation import fpd_official

    data = np.random.default_rng(4)
    x, y = data.normal(size=(400, 3)), data.normal(0.2, 1.1, size=(300, 3))
    lo, hi, points, batches = 200, 500, 5, 4
    # the official definition, written out: sizes evenly spaced in 1/N, batches drawn with
    # replacement, mean FD per size, straight line in 1/N, intercept and its standard error
    sizes = (1.0 / np.linspace(1 / lo, 1 / hi, points)).astype(np.int32)
    rng = np.random.default_rng(42)
    vals = [np.mean([_fd_by_hand(x[rng.choice(len(x), size=int(n))], y[rng.choice(len(y), size=int(n))])
                     for _ in range(batches)]) for n in sizes]
    A = np.stack([np.ones(points), 1.0 / sizes], axis=1)
    coef, ssr, *_ = np.linalg.lstsq(A, vals, rcond=None)
    assert coef[0] > 0 and coef[1] > 0  # inside the bounds: the bounded fit is this one
    err = np.sqrt(np.linalg.inv(A.T @ A)[0, 0] * ssr[0] / (points - 2))
    v, e = fpd_official(x, y, min_samples=lo, max_samples=hi, n_points=points, n_batches=batches,
                        rng=42)
    assert v == pytest.approx(coef[0], rel=1e-5) and e == pytest.approx(err, rel=1e-3)
    # the bound: a sample against itself cannot go below 0 (the caloforge FPD can)
    assert fpd_official(x, x, min_samples=lo, max_samples=hi, n_points=points,
                        n_batches=batches)[0] >= 0.0


def test_official_fpd_fits_distances_far_from_one():
    """A poor model's scaled features give distances of 1e12; the fit must follow them
    (scipy's curve_fit from its default start stopped there and returned exactly 1.0)."""
    from caloforge.evaluation import fpd_official

    data = np.random.default_rng(5)
    x, y = data.normal(size=(400, 3)), data.normal(size=(400, 3)) + 1e6
    v, e = fpd_official(x, y, min_samples=200, max_samples=500, n_points=5, n_batches=3)
    assert v == pytest.approx(3e12, rel=1e-3) and e < 1e-3 * v


def test_official_kpd_by_hand():
    from caloforge.evaluation import mmd2_unbiased_poly

    data = np.random.default_rng(5)
    x, y = data.normal(size=(150, 3)), data.normal(0.3, 1.0, size=(120, 3))
    rng = np.random.default_rng(7)
    vals = [mmd2_unbiased_poly(x[rng.choice(150, 150)], y[rng.choice(120, 150)]) for _ in range(10)]
    lo, hi = np.percentile(vals, [16.275, 83.725])
    v, e = kpd(x, y, batch_size=150, n_batches=10, rng=7, replace=True, quantiles=(16.275, 83.725))
    assert v == pytest.approx(np.median(vals)) and e == pytest.approx((hi - lo) / 2)


def test_official_e_layer_separation_by_hand():
    from caloforge.evaluation import separation_powers

    ref = compute_features(toy_showers(G, 400, rng=8))
    gen = compute_features(toy_showers(G, 400, rng=9, energy_scale=1.1))
    thr = ref.threshold
    assert len(feature_bins("e_layer", G, reference=ref.e_layer[:, 3], threshold=thr,
                            convention="official")) == 40  # 39 bins
    sp = separation_powers(ref, gen, G, convention="official")["e_layer"]["per_layer"]
    for lay in (1, 5, 20):
        # edges in float64 (the features are stored in float32; a float32 log10 of the
        # maximum would round the top edge below it and drop the largest shower)
        a, b = ref.e_layer[:, lay], gen.e_layer[:, lay]
        edges = np.logspace(np.log10(thr), np.log10(float(a.max())), 40)
        p = np.histogram(a, edges)[0] / np.histogram(a, edges)[0].sum()
        q = np.histogram(b, edges)[0] / np.histogram(b, edges)[0].sum()
        m = (p + q) > 0
        assert sp[lay] == pytest.approx(0.5 * np.sum((p[m] - q[m]) ** 2 / (p[m] + q[m])), rel=1e-12)
    mine = separation_powers(ref, gen, G)["e_layer"]["per_layer"]
    assert any(abs(mine[lay] - sp[lay]) > 1e-6 for lay in (1, 5, 20))  # conventions differ


def test_evaluate_with_the_official_convention(tmp_path):
    g1 = get_geometry("ds1-photons")  # few features: 2 x 200 FDs stay fast
    write_showers(tmp_path / "ref.h5", toy_showers(g1, 400, rng=1), compression=None)
    write_showers(tmp_path / "gen.h5", toy_showers(g1, 300, rng=2), compression=None)
    opts = EvaluationOptions(classifier="none", convention="official", max_prdc=50,
                             official_fpd_samples=(200, 400), official_kpd_batch_size=200,
                             w1_subsamples=4)
    res = evaluate(tmp_path / "ref.h5", [tmp_path / "gen.h5"], ["m"], options=opts)
    for row in (res.floor, res.models["m"]):
        assert row["fpd"].value is not None and row["fpd"].value >= 0 and row["fpd"].error is not None
        assert row["kpd"].error is not None  # with replacement the spread is meaningful
    assert "convention: official" in format_table(res)
    with pytest.raises(Exception, match="convention"):
        EvaluationOptions(convention="jetnet")
