"""``caloforge evaluate`` on point-cloud (showerdata) files: the CaloClouds II scores with
the reference floor, random subsets, file-kind detection and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from caloforge.cli.main import main
from caloforge.errors import CaloforgeError, ConfigError, InputFileError
from caloforge.evaluation.pointcloud import ObservableBins
from caloforge.evaluation.pointcloud_report import (
    FLOOR,
    POINT_CLOUD_METRICS,
    PointCloudEvaluationOptions,
    evaluate_point_cloud_files,
    format_point_cloud_table,
    parse_point_cloud_geometry,
    write_point_cloud_report,
)
from caloforge.evaluation.toy import toy_showers
from caloforge.geometry import get_geometry, ild_ecal
from caloforge.io import (
    PointCloudData,
    is_point_cloud_file,
    read_point_clouds,
    write_point_clouds,
    write_showers,
)
from caloforge.simulation import point_clouds_to_file

W1_KEYS = [k for k, _ in POINT_CLOUD_METRICS if k.startswith("w1/")]
NO_CLS = PointCloudEvaluationOptions(classifier="none")


def _rewrite(src, dst, *, energy_scale=1.0, order=None, n=None):
    """A copy of a point-cloud file, point energies scaled, showers reordered/truncated."""
    d = read_point_clouds(src)
    idx = np.arange(len(d)) if order is None else np.asarray(order)
    d = d[idx[:n] if n is not None else idx]
    pts = d.points.copy()
    pts[:, 3] *= energy_scale
    write_point_clouds(dst, PointCloudData(d.incident_energies, pts, d.n_points))
    return dst


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """GFlash point clouds (about 0.5 s per 600 showers): a reference, an independent
    simulation (a perfect model), a distorted one (point energies x1.3), the independent
    one sorted by incident energy and shuffled, and a few broken or foreign files."""
    d = tmp_path_factory.mktemp("pc")
    point_clouds_to_file(d / "ref.h5", 800, seed=1, progress=False)
    point_clouds_to_file(d / "good.h5", 400, seed=2, progress=False)
    point_clouds_to_file(d / "more.h5", 800, seed=4, progress=False)
    point_clouds_to_file(d / "other.h5", 400, seed=3, progress=False)
    _rewrite(d / "other.h5", d / "bad.h5", energy_scale=1.3)
    e = read_point_clouds(d / "more.h5").incident_energies
    _rewrite(d / "more.h5", d / "sorted.h5", order=np.argsort(e, kind="stable"))
    _rewrite(d / "more.h5", d / "shuffled.h5",
             order=np.random.default_rng(5).permutation(len(e)))
    _rewrite(d / "good.h5", d / "few.h5", n=15)
    _rewrite(d / "ref.h5", d / "small_ref.h5", n=30)
    _rewrite(d / "good.h5", d / "faint.h5", energy_scale=1e-6)  # every cell below 0.1 MeV
    _rewrite(d / "good.h5", d / "empty.h5", n=0)
    write_showers(d / "voxels.h5", toy_showers(get_geometry("ds2"), 20, rng=0), compression=None)
    return d


def _one_line_error(capsys, rc):
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def _cli(files, out, *generated, extra=()):
    return main(["evaluate", "--reference", str(files / "ref.h5"), "--generated",
                 *(str(files / g) for g in generated), "-o", str(out), "--quiet", *extra])


# ---------------------------------------------------------------------------- detection
def test_file_kind_is_detected(files, tmp_path):
    assert is_point_cloud_file(files / "ref.h5")
    assert is_point_cloud_file(files / "empty.h5")
    assert not is_point_cloud_file(files / "voxels.h5")
    (tmp_path / "x.h5").write_text("not hdf5")
    with pytest.raises(InputFileError, match="--reference .*x.h5: not an HDF5 file"):
        is_point_cloud_file(tmp_path / "x.h5", option="--reference")


@pytest.mark.parametrize("ref, gen, named", [("ref.h5", "voxels.h5", "voxels.h5"),
                                             ("voxels.h5", "ref.h5", "ref.h5")])
def test_mixing_kinds_is_one_line(files, tmp_path, capsys, ref, gen, named):
    rc = main(["evaluate", "--reference", str(files / ref), "--generated", str(files / gen),
               "-o", str(tmp_path / "o"), "--classifier", "none", "--quiet"])
    err = _one_line_error(capsys, rc)
    assert f"--generated {files / named}" in err and "one kind" in err
    assert not (tmp_path / "o" / "metrics.json").exists()


# ------------------------------------------------------------------ scores and the floor
def test_cli_scores_a_good_and_a_distorted_model(files, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = _cli(files, out, "good.h5", "bad.h5",
              extra=["--labels", "good", "bad", "--seed", "1", "--threads", "1", "--no-plots"])
    assert rc == 0
    text = capsys.readouterr().out
    data = json.loads((out / "metrics.json").read_text())
    floor, good, bad = data["floor"], data["models"]["good"], data["models"]["bad"]
    assert data["kind"] == "point_clouds" and set(data["models"]) == {"good", "bad"}
    # every score of both rows, with the showers it used: 400 per reference half
    assert data["meta"]["n_per_half"] == 400 and data["meta"]["n_reference"] == 800
    for row in (floor, good, bad):
        assert set(row) == {k for k, _ in POINT_CLOUD_METRICS}
        for k in W1_KEYS:
            assert row[k]["n"] == [400, 400] and row[k]["value"] > 0 and row[k]["error"] > 0
        assert row["cls_high/auc"]["n"] == [400, 400]
    # an independent simulation is as close to the reference as the reference to itself
    for k in W1_KEYS:
        tol = 2.5 * floor[k]["value"] + 2 * floor[k]["error"]
        assert good[k]["value"] < tol, (k, good[k], floor[k])
    assert abs(floor["cls_high/auc"]["value"] - 0.5) < 0.12
    assert abs(good["cls_high/auc"]["value"] - 0.5) < 0.12
    # energies x1.3: the energy observables far above the floor, the classifier sees it
    for k in ("w1/e_vis_over_e_inc", "w1/e_cell"):
        assert bad[k]["value"] > 5 * floor[k]["value"], (k, bad[k], floor[k])
        assert data["vs_floor"]["bad"][k] > 5
    assert bad["cls_high/auc"]["value"] > 0.9
    # the table: W1 x100 with its std, the unit, the floor column, ratios, the AUC
    assert "W1 x100" in text and "CaloClouds II Tab. 1" in text and FLOOR in text
    row = next(line for line in text.splitlines() if line.startswith("W1 x100: E_vis / E_inc"))
    assert f"{bad['w1/e_vis_over_e_inc']['value']:.4g} ± " in row and "(x" in row
    assert "classifier AUC" in text and "showers used" in text and "400 vs 400" in text
    html = (out / "report.html").read_text()
    assert "reference floor" in html and "<table>" in html and "--no-plots" in html
    assert not (out / "plots").exists()


def test_report_with_plots(files, tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("mplhep")
    res = evaluate_point_cloud_files(files / "ref.h5", [files / "bad.h5"], ["bad"],
                                     options=PointCloudEvaluationOptions(classifier="none",
                                                                         max_showers=400))
    paths = write_point_cloud_report(res, tmp_path, plots=True)
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names[0] == "pc-00-n-hits.png" and len(names) == 8
    html = open(paths["html"]).read()
    assert html.count("<img") == 8 and "radial profile" in html
    data = json.loads(open(paths["json"]).read())
    assert not data["warnings"] and len(data["profiles"]["rows"]["bad"]["layer"]) == 30


def test_sorted_file_scores_as_the_shuffled_one(files):
    opts = PointCloudEvaluationOptions(classifier="none", max_showers=400)
    res = evaluate_point_cloud_files(files / "ref.h5", [files / "sorted.h5", files / "shuffled.h5"],
                                     ["sorted", "shuffled"], options=opts)
    n = res.meta["n_per_half"]
    assert n == 200 and res.meta["n_compared"] == {"sorted": 200, "shuffled": 200}
    for k in W1_KEYS:
        a, b = res.models["sorted"][k].value, res.models["shuffled"][k].value
        # two random subsets of the same showers: equal within the noise the floor measures
        tol = 2 * res.floor[k].value + 2 * res.floor[k].error
        assert abs(a - b) < tol, (k, a, b, tol)
    # the showers scored are a random subset: their incident energies follow the file's
    # (uniform 10-90 GeV); the first rows of the sorted file fail the same check
    e_file = read_point_clouds(files / "sorted.h5").incident_energies.astype(np.float64)
    bound = 4 * e_file.std() / np.sqrt(n)

    def follows_file(e):
        return abs(np.mean(e) - e_file.mean()) < bound

    assert follows_file(res.observables["sorted"].incident_energies)
    assert not follows_file(e_file[:n])
    # nor is the file's order kept: the scored showers are not sorted
    assert not np.all(np.diff(res.observables["sorted"].incident_energies) >= 0)


def test_same_seed_same_numbers_other_seed_other_subsets(files):
    opts = PointCloudEvaluationOptions(classifier="none", max_showers=300)
    a = evaluate_point_cloud_files(files / "ref.h5", [files / "good.h5"], options=opts)
    b = evaluate_point_cloud_files(files / "ref.h5", [files / "good.h5"], options=opts)
    c = evaluate_point_cloud_files(files / "ref.h5", [files / "good.h5"],
                                   options=PointCloudEvaluationOptions(classifier="none",
                                                                      max_showers=300, seed=3))
    assert a.floor["w1/n_hits"].value == b.floor["w1/n_hits"].value
    assert a.models["good"]["w1/e_cell"].value == b.models["good"]["w1/e_cell"].value
    assert a.floor["w1/n_hits"].value != c.floor["w1/n_hits"].value
    # the bins of an earlier run, given back, reproduce its numbers (bins from metrics.json)
    bins = ObservableBins.from_dict(json.loads(json.dumps(a.to_json()["bins"])))
    d = evaluate_point_cloud_files(files / "ref.h5", [files / "good.h5"], options=opts, bins=bins)
    assert d.models["good"]["w1/e_radial"].value == a.models["good"]["w1/e_radial"].value
    assert d.meta["n_bin_showers"] is None and a.meta["n_bin_showers"] == 300


def test_official_classifier_repeats_the_training(files):
    opts = PointCloudEvaluationOptions(classifier="official", official_runs=3, classifier_epochs=3)
    res = evaluate_point_cloud_files(files / "ref.h5", [files / "bad.h5"], options=opts)
    auc = res.models["bad"]["cls_high/auc"]
    runs = res.details["bad"]["classifier"]
    assert runs["runs"] == 3 and runs["hidden"] == [32, 16, 8] and len(set(runs["seeds"])) == 3
    assert auc.value == pytest.approx(np.mean(runs["auc"])) and auc.error is not None
    assert auc.error == pytest.approx(np.std(runs["auc"]))


def test_small_window_warns_and_cell_sample_is_capped(files):
    # 10 x 10 cells (50 mm) cut the tails the 30 x 30 window of the simulation holds
    opts = PointCloudEvaluationOptions(classifier="none", max_cell_hits=3_000, chunk_size=64)
    res = evaluate_point_cloud_files(files / "ref.h5", [files / "good.h5"], options=opts,
                                     geometry="ild-ecal:10")
    lost = res.meta["lost_energy_fraction"]["reference"]
    assert 0.01 < lost < 0.5
    assert any("outside the 10 x 10-cell window" in w for w in res.warnings)
    assert any("WARNING" in line for line in format_point_cloud_table(res).splitlines())
    # a uniform sample of at most 3000 of the reference's cell energies, split by half
    assert 1000 < len(res.observables["reference"].e_cell) < 2000
    ok = evaluate_point_cloud_files(files / "ref.h5", [files / "good.h5"], options=NO_CLS)
    assert ok.meta["lost_energy_fraction"]["reference"] == 0.0 and not ok.warnings


def test_default_geometry_is_the_simulation_window():
    g = parse_point_cloud_geometry(None)
    assert g == ild_ecal() and g.n_cells_x == 30
    assert parse_point_cloud_geometry("ild-ecal:80") == ild_ecal(n_cells=80)
    for bad in ("ds2", "ild-ecal:0", "ild-ecal:x"):
        with pytest.raises(ConfigError, match="ild-ecal"):
            parse_point_cloud_geometry(bad)


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("ref, gen, extra, words", [
    ("empty.h5", "good.h5", [], "--reference {d}/empty.h5: holds no showers"),
    ("ref.h5", "empty.h5", [], "--generated {d}/empty.h5: holds no showers"),
    ("small_ref.h5", "good.h5", [], "--reference {d}/small_ref.h5: 30 showers"),
    ("ref.h5", "few.h5", [], "--generated {d}/few.h5: 15 showers"),
    ("ref.h5", "faint.h5", [], "--generated {d}/faint.h5: no showers have a cell above"),
    ("ref.h5", "good.h5", ["--threshold", "1e9"], "--reference {d}/ref.h5: no cell reaches"),
    ("ref.h5", "good.h5", ["--geometry", "ds2"], "--geometry ds2: point clouds take"),
    ("ref.h5", "good.h5", ["--convention", "official"], "--convention official"),
    ("voxels.h5", "voxels.h5", ["--geometry", "ild-ecal"], "--geometry ild-ecal: a point-cloud"),
])
def test_bad_input_is_one_line(files, tmp_path, capsys, ref, gen, extra, words):
    rc = main(["evaluate", "--reference", str(files / ref), "--generated", str(files / gen),
               "-o", str(tmp_path / "o"), "--classifier", "none", "--quiet", "--no-plots",
               *extra])
    err = _one_line_error(capsys, rc)
    assert words.format(d=files) in err, err


def test_labels_and_options_are_checked(files):
    with pytest.raises(CaloforgeError, match="distinct"):
        evaluate_point_cloud_files(files / "ref.h5", [files / "good.h5", files / "bad.h5"],
                                   ["a", "a"], options=NO_CLS)
    with pytest.raises(ConfigError, match="classifier"):
        PointCloudEvaluationOptions(classifier="gpu")
    with pytest.raises(ConfigError, match="threshold"):
        PointCloudEvaluationOptions(threshold_mev=-1.0)


def test_cell_energy_sample_is_uniform_over_chunks():
    # three chunks of 10 showers x 100 hits: 1 MeV, then 2 MeV, then 3 MeV cells; a sample
    # of 600 of the 3000 must hold about 200 of each (keeping the first hits, or thinning
    # each chunk on arrival, would not)
    from caloforge.evaluation.pointcloud import CellHits
    from caloforge.evaluation.pointcloud_report import _Accumulator

    g = ild_ecal()
    bins = ObservableBins(list(range(0, 31, 3)), [0, 5, 10, 15, 20, 25, 30, 40, 50, 70, 200])
    acc = _Accumulator(bins, g, np.arange(0.0, 110.0, 5.0), cap=600,
                       rng=np.random.default_rng(0))
    rng = np.random.default_rng(1)
    for energy in (1.0, 2.0, 3.0):
        shower = np.repeat(np.arange(10), 100)
        acc.add(CellHits(shower, rng.integers(0, 30, 1000), rng.integers(0, 30, 1000),
                         rng.integers(0, 30, 1000), np.full(1000, energy), np.full(10, 5e4),
                         g, 0.1, 0.0, 1000.0 * energy))
    sample = acc.result()
    assert len(sample) == 30 and sample.n_cells == 3000
    counts = [int((sample.obs.e_cell == e).sum()) for e in (1.0, 2.0, 3.0)]
    assert sum(counts) == 600 and all(150 < c < 250 for c in counts), counts
    # every shower keeps its own per-shower observables, and its hits are found by number
    np.testing.assert_allclose(sample.obs.e_vis, np.repeat([100.0, 200.0, 300.0], 10))
    sub = sample.subset(np.arange(20, 30))
    assert np.all(sub.e_cell == 3.0) and 150 < len(sub.e_cell) < 250
