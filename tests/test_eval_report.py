"""Monotonic response of the metrics, the evaluation end to end, the CLI, bad input."""

from __future__ import annotations

import json
import os

import pytest

from caloforge.cli.main import main
from caloforge.errors import CaloforgeError
from caloforge.evaluation import (
    METRIC_KEYS,
    EvaluationOptions,
    compare,
    compute_features,
    evaluate,
    format_table,
    make_plots,
    split_halves,
    toy_showers,
    write_report,
)
from caloforge.geometry import get_geometry
from caloforge.io import write_showers

G = get_geometry("ds2")
# the caloforge convention: these tests check the bias-corrected FPD at small sizes (the
# official one is tested in test_hardening_eval.py)
SMALL = EvaluationOptions(classifier="none", fpd_min_samples=600, fpd_sizes=5, fpd_batches=3,
                          kpd_batch_size=500, kpd_batches=5, max_prdc=300, convention="caloforge")


@pytest.fixture(scope="module")
def ref_features():
    return compute_features(toy_showers(G, 3000, rng=10))


@pytest.fixture(scope="module")
def floor_metrics(ref_features):
    a, b = split_halves(len(ref_features))
    return compare(ref_features.subset(a), ref_features.subset(b), G, options=SMALL)[0]


def _model(ref, gen):
    _, b = split_halves(len(ref))
    model, details, _ = compare(ref.subset(b), gen, G, options=SMALL)
    return model, details


def test_identical_samples_give_zero(ref_features):
    f = ref_features.subset(slice(0, 1000))
    m, _, _ = compare(f, f, G, options=SMALL)
    assert set(m) == set(METRIC_KEYS)
    for key in METRIC_KEYS:
        if key.startswith("sep/"):
            assert m[key].value == 0.0, key
    # W1 compares disjoint subsamples (CaloClouds II): identical inputs give its noise floor
    assert m["w1/response"].value < 0.2
    # (FPD is not 0 here: its 1/N extrapolation assumes independent samples, see the docs;
    # the floor test below uses independent halves)


def test_independent_halves_fpd_near_zero(ref_features, floor_metrics):
    gen = compute_features(toy_showers(G, 1500, rng=13, energy_scale=1.05))
    bad, _ = _model(ref_features, gen)
    assert abs(floor_metrics["fpd"].value) < 0.2 * bad["fpd"].value


def test_energy_scale_1_02_scores_worse_than_floor(ref_features, floor_metrics):
    gen = compute_features(toy_showers(G, 1500, rng=11, energy_scale=1.02))
    floor = floor_metrics
    model, _ = _model(ref_features, gen)
    # E_tot spans three decades of incident energy: its 40 log bins are too coarse to
    # see 2 %, the response E_tot/E_inc is the feature that must
    for key in ("sep/response", "w1/response", "fpd", "kpd"):
        assert model[key].value > floor[key].value, key
    assert model["sep/response"].value > 3 * floor["sep/response"].value


def test_dropped_layer_scores_worse_than_floor(ref_features, floor_metrics):
    gen = compute_features(toy_showers(G, 1500, rng=12, drop_layer=10))
    floor = floor_metrics
    model, details = _model(ref_features, gen)
    for key in ("sep/e_layer", "sep/sparsity", "sep/ec_r", "w1/e_layer", "w1/sparsity", "fpd", "kpd"):
        assert model[key].value > floor[key].value, key
    assert details["separation_power"]["e_layer"]["per_layer"][10] > 0.9
    assert details["separation_power"]["sparsity"]["per_layer"][10] > 0.9


def test_fixed_metric_set_whatever_is_computed(ref_features):
    m, _, _ = compare(ref_features.subset(slice(0, 50)), ref_features.subset(slice(50, 100)), G,
                      options=EvaluationOptions(classifier="none"))
    assert list(m) == list(METRIC_KEYS)
    # the official FPD resamples any sample size; the bias-corrected one needs 10000
    assert m["fpd"].value is not None
    assert m["fpd_bias_corrected"].value is None and "10000" in m["fpd_bias_corrected"].note
    assert m["cls_low/auc"].value is None and "classifier" in m["cls_low/auc"].note
    assert m["prdc/precision"].value is None


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    paths = {
        "ref": d / "ref.h5", "good": d / "good.h5", "scaled": d / "scaled.h5",
        "ds1": d / "ds1.h5", "far": d / "far.h5", "narrow": d / "narrow.h5",
    }
    write_showers(paths["narrow"], toy_showers(G, 300, rng=6, e_range=(1e3, 3e3)))
    write_showers(paths["ref"], toy_showers(G, 1200, rng=1), compression=None)
    write_showers(paths["good"], toy_showers(G, 600, rng=2), compression=None)
    write_showers(paths["scaled"], toy_showers(G, 600, rng=3, energy_scale=1.02), compression=None)
    write_showers(paths["ds1"], toy_showers(get_geometry("ds1-photons"), 100, rng=4))
    write_showers(paths["far"], toy_showers(G, 100, rng=5, e_range=(1e7, 2e7)))
    return paths


@pytest.mark.parametrize("classifier", [
    "none", pytest.param("cpu", marks=pytest.mark.slow)])
def test_evaluate_end_to_end_and_cache(files, tmp_path, classifier):
    opts = EvaluationOptions(classifier=classifier, classifier_epochs=1, fpd_min_samples=300,
                             fpd_batches=3, fpd_sizes=4, kpd_batch_size=200, kpd_batches=3,
                             max_prdc=150, max_lowlevel=200)
    res = evaluate(files["ref"], [files["good"], files["scaled"]], ["good", "scaled"],
                   options=opts, cache_dir=tmp_path / "cache")
    assert not any(res.meta["cache_hits"].values())
    assert list(res.models) == ["good", "scaled"]
    for row in [res.floor, *res.models.values()]:
        assert list(row) == list(METRIC_KEYS)
        assert all(m.value is not None for k, m in row.items()
                   if classifier != "none" or not k.startswith("cls_")), row
    # voxels read: the classifier's 200 per class, else PRDC's 150
    assert res.meta["n_per_half"] == 600
    assert res.meta["n_voxel_showers"] == (200 if classifier == "cpu" else 150)
    assert res.models["scaled"]["sep/response"].value > res.floor["sep/response"].value
    assert ("good vs scaled" in res.type_one) == (classifier != "none")
    table = format_table(res)
    assert "reference floor" in table and "scaled" in table and "FPD x1e3" in table
    assert "separation power: centre in eta" in table and "ec_eta" not in table
    assert "separation power: E_tot / E_inc (response)" in table
    paths = write_report(res, tmp_path / "out", plots=False)
    data = json.load(open(paths["json"]))
    assert data["metric_keys"] == list(METRIC_KEYS)
    # added fields, keys unchanged: words, direction, and the ratio to the floor
    assert data["metric_info"]["sep/ec_eta"]["name"] == "separation power: centre in eta"
    ratio = data["vs_floor"]["scaled"]["sep/response"]
    assert ratio == pytest.approx(res.models["scaled"]["sep/response"].value
                                  / res.floor["sep/response"].value)
    assert set(data["models"]) == {"good", "scaled"}
    html = open(paths["html"]).read()
    assert "<table>" in html and "reference floor" in html
    again = evaluate(files["ref"], [files["good"]], ["good"],
                     options=EvaluationOptions(classifier="none", fpd_min_samples=300,
                                               fpd_batches=2, fpd_sizes=3, kpd_batch_size=200,
                                               kpd_batches=2, max_prdc=100),
                     cache_dir=tmp_path / "cache")
    assert again.meta["cache_hits"] == {"reference": True, "good": True}
    assert again.models["good"]["sep/e_layer"].value == res.models["good"]["sep/e_layer"].value


def _result(floor: dict, model: dict):
    from caloforge.evaluation.report import EvaluationResult, Metric

    def row(values):
        return {k: Metric(values.get(k), None, None if k in values else "not computed")
                for k in METRIC_KEYS}

    return EvaluationResult(labels=["model"], floor=row(floor), models={"model": row(model)},
                            details={}, warnings=[], meta={"options": {"seed": 0}}, geometry=G)


def test_table_says_direction_and_distance_from_the_floor():
    from caloforge.evaluation.report import METRIC_INFO, vs_floor

    assert METRIC_INFO["sep/ec_r"]["better"] == "lower"
    assert METRIC_INFO["fpd"]["better"] == METRIC_INFO["w1/ec_phi"]["better"] == "lower"
    assert METRIC_INFO["cls_high/auc"] == {"name": "classifier high-level AUC",
                                           "better": "0.5 ideal", "ideal": 0.5}
    assert METRIC_INFO["prdc/coverage"]["better"] == "1 ideal"
    assert vs_floor("sep/ec_r", 0.03, 0.01) == pytest.approx(3.0)
    assert vs_floor("sep/ec_r", 0.03, 0.0) is None  # no ratio to a zero floor
    assert vs_floor("fpd", 0.5, -0.1) is None  # bias-corrected FPD can be negative
    assert vs_floor("cls_low/auc", 0.9, 0.5) is None
    table = format_table(_result(
        {"sep/ec_r": 0.01, "fpd": 0.2, "cls_high/auc": 0.51},
        {"sep/ec_r": 0.03, "fpd": 3.0, "cls_high/auc": 0.76}))
    lines = {ln.split("  ")[0]: ln for ln in table.splitlines()}
    ec_r = lines["separation power: centre in r"]
    assert "lower" in ec_r and "0.0100" in ec_r and "0.0300 (x3)" in ec_r
    assert "0.2000" in lines["FPD x1e3 (Fréchet physics distance)"]
    assert "3.0000 (x15)" in lines["FPD x1e3 (Fréchet physics distance)"]
    auc = lines["classifier high-level AUC"]
    assert "0.5 ideal" in auc and "0.7600 (+0.25)" in auc
    assert "better:" in table and "(xR)" in table


def test_plots_never_crash_the_report(files, tmp_path):
    res = evaluate(files["ref"], [files["good"]], options=SMALL, max_showers=400)
    plots, warnings = make_plots(res)
    assert plots or warnings  # either plots, or a marked reason why not
    for title, b64 in plots:
        assert isinstance(title, str) and len(b64) > 100
    paths = write_report(res, tmp_path / "o")
    html = open(paths["html"]).read()
    assert ("data:image/png;base64," in html) or ("plot" in html and "Warnings" in html)
    # each embedded plot is also a PNG file of its own, for papers and READMEs
    pngs = sorted(os.listdir(paths["plots"]))
    assert len(pngs) == len(plots)
    for name in pngs:
        with open(os.path.join(paths["plots"], name), "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_bad_inputs(files, tmp_path):
    with pytest.raises(CaloforgeError, match="geometry"):
        evaluate(files["ref"], [files["ds1"]], options=SMALL)
    with pytest.raises(CaloforgeError, match="overlap"):
        evaluate(files["ref"], [files["far"]], options=SMALL)
    with pytest.raises(CaloforgeError, match="labels"):
        evaluate(files["ref"], [files["good"]], ["a", "b"], options=SMALL)
    with pytest.raises(CaloforgeError):
        evaluate(tmp_path / "missing.h5", [files["good"]], options=SMALL)
    with pytest.raises(CaloforgeError):
        EvaluationOptions(classifier="gpu")


def test_different_energy_spectrum_is_a_marked_warning(files):
    res = evaluate(files["ref"], [files["narrow"]], ["narrow"], options=SMALL, max_showers=300)
    assert any("incident-energy spectrum differs" in w for w in res.warnings)
    assert "WARNING: narrow: incident-energy spectrum" in format_table(res)


def test_cli_evaluate(files, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["evaluate", "--reference", str(files["ref"]), "--generated", str(files["good"]),
               "--labels", "model", "--out", str(out), "--classifier", "none", "--no-plots",
               "--max-showers", "400", "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "reference floor" in text and "model" in text and "WARNING" in text  # FPD: too few
    assert (out / "report.html").exists() and (out / "metrics.json").exists()
    assert any((out / ".cache").iterdir())
    rc = main(["evaluate", "--reference", str(files["ref"]), "--generated", str(files["ds1"]),
               "--out", str(tmp_path / "x"), "--classifier", "none", "--quiet"])
    assert rc == 2
    assert "geometry" in capsys.readouterr().err
