"""CaloClouds II as a pipeline: data batches, generation with a variable N, learning,
the CLI, and bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from caloforge.configs import get_preset, override_config
from caloforge.errors import ConfigError
from caloforge.geometry import ild_ecal
from caloforge.io import read_point_clouds
from caloforge.models import build_model
from caloforge.pipelines import load_generator, train_pipeline
from caloforge.pipelines.caloclouds import micro_overrides
from caloforge.pipelines.caloclouds import model as model_module
from caloforge.pipelines.caloclouds.data import (
    PointCloudShowers,
    PointNormaliser,
    pad_clouds,
    read_showers,
)
from caloforge.simulation import point_clouds_to_file


@pytest.fixture(scope="module")
def clouds(tmp_path_factory):
    path = tmp_path_factory.mktemp("cc") / "points.h5"
    point_clouds_to_file(path, 160, seed=5, progress=False)
    return path


@pytest.fixture(scope="module")
def micro_model(clouds, tmp_path_factory):
    out = tmp_path_factory.mktemp("ccm") / "model"
    cfg = override_config(get_preset("caloclouds2-ild-tiny"), overrides=micro_overrides(4))
    return train_pipeline(cfg, clouds, out, progress=False), out


def test_normaliser_round_trips_and_maps_the_window_to_unit_range():
    g = ild_ecal()
    n = PointNormaliser.for_geometry(g, 1e5, 6000)
    p = torch.tensor([[-g.half_width_x_mm, g.half_width_y_mm, 0.0, 3.0],
                      [0.0, 0.0, g.n_layers, 0.5]])
    x = n.encode(p)
    torch.testing.assert_close(x[:, :3], torch.tensor([[-1.0, 1.0, -1.0], [0.0, 0.0, 1.0]]))
    torch.testing.assert_close(x[:, 3], p[:, 3])  # MeV, unscaled
    torch.testing.assert_close(n.decode(x), p)
    c = n.condition(torch.tensor([1e5, 5e4]), torch.tensor([6000, 0]))
    torch.testing.assert_close(c, torch.tensor([[1.0, 1.0], [0.0, -1.0]]))


def test_batches_are_padded_masked_and_read_from_the_file(clouds):
    ref = read_point_clouds(clouds)
    rows = np.array([9, 2, 40])
    got = read_showers(clouds, rows)
    np.testing.assert_array_equal(got.n_points, ref.n_points[rows])
    np.testing.assert_array_equal(got.points, ref[rows].points)
    norm = PointNormaliser.for_geometry(ild_ecal(), 1e5, 6000)
    ds = PointCloudShowers(clouds, np.arange(len(ref)), norm)
    b = ds.__getitems__(list(rows))
    assert b["points"].shape == (3, ref.n_points[rows].max(), 4)
    np.testing.assert_array_equal(b["mask"].sum(1).numpy(), ref.n_points[rows])
    assert (b["points"][~b["mask"]] == 0).all()
    torch.testing.assert_close(norm.decode(b["points"][0, : ref.n_points[9]]),
                               torch.from_numpy(ref.shower(9)), atol=1e-3, rtol=1e-5)
    # the N condition is the true count even when a subset of points is drawn
    sub = PointCloudShowers(clouds, np.arange(len(ref)), norm, points_per_shower=16,
                            jitter_mm=0.5, seed=3).__getitems__(list(rows))
    assert sub["points"].shape[1] == 16
    torch.testing.assert_close(sub["cond"], b["cond"])
    again = PointCloudShowers(clouds, np.arange(len(ref)), norm, points_per_shower=16,
                              jitter_mm=0.5, seed=3).__getitems__(list(rows))
    torch.testing.assert_close(again["points"], sub["points"])  # reproducible draws


def test_pad_clouds_handles_empty_showers():
    p, m = pad_clouds([np.ones((2, 4), np.float32), np.zeros((0, 4), np.float32)])
    assert p.shape == (2, 2, 4) and m.tolist() == [[True, True], [False, False]]


def test_batched_generation_keeps_each_showers_own_number_of_points(micro_model, monkeypatch):
    model, _ = micro_model
    seen = []
    real = model_module.calibrate

    def spy(points, n_valid, summary, layer_points):
        out = real(points, n_valid, summary, layer_points)
        seen.append((points.shape[1], n_valid.clone(), layer_points.sum(1).clone(),
                     out.n_points.clone(), (points[..., 3] <= 0)))
        return out

    monkeypatch.setattr(model_module, "calibrate", spy)
    e = torch.tensor([8e4, 1.2e4, 5e4, 3e4, 1.1e4, 7e4])
    clouds = model.sample(e, batch_size=6, generator=torch.Generator().manual_seed(0))
    (width, n_valid, n_layers, n_out, non_positive), = seen
    assert width == int(n_valid.max())  # the batch maximum is generated ...
    assert len(set(n_valid.tolist())) > 1  # ... for showers of different N
    torch.testing.assert_close(n_valid, n_layers)  # N condition = sum of layer counts
    # ... and each keeps exactly its own N, less the points with E <= 0 among its own
    removed = torch.stack([non_positive[i, : n_valid[i]].sum() for i in range(len(e))])
    torch.testing.assert_close(n_out, n_valid - removed)
    order = torch.argsort(e, stable=True)  # the batch ran sorted by energy
    np.testing.assert_array_equal(clouds.n_points[order.numpy()], n_out.numpy())
    np.testing.assert_array_equal(clouds.incident_energies, e.numpy())
    assert (clouds.points[:, 3] >= 0).all()  # a layer the flow leaves empty keeps E = 0 points


def test_sampler_choice_and_nfe(micro_model):
    model, _ = micro_model
    model.set_solver("heun-13")
    assert model.nfe() == 25
    model.set_solver("consistency-1")
    assert model.nfe() == 1 and model.model_kind == "distilled"
    with pytest.raises(ConfigError):
        model.set_solver("rk4-13")
    model.set_solver("heun-3")


def test_every_calibrated_layer_carries_the_flow_energy(micro_model):
    model, _ = micro_model
    e = torch.tensor([2e4, 6e4])
    clouds = model.sample(e, generator=torch.Generator().manual_seed(1))
    for i in range(2):
        z = clouds.shower(i)[:, 2]
        # layer assignment snaps every point to a layer centre
        np.testing.assert_allclose(z - np.floor(z), 0.5)


def test_calibration_stages_record_the_check_of_their_fit(micro_model):
    # every N calibration is checked over the reference's point counts when it is fitted
    # (a cubic p_gen that turns over made the first shipped distilled model's N_hits
    # 15x the floor, docs/caloclouds.md) and the check is kept with the stage
    import json

    model, out = micro_model
    stages = json.loads((out / "checkpoint.json").read_text())["stages"]
    for stage, sampler in (("calibrate", "heun-3"), ("calibrate_distilled", "consistency-1")):
        extra = stages[stage]["extra"]
        assert extra["sampler"] == sampler
        check = extra["check"]
        assert set(check) == {"n_range", "monotone", "worst_drop", "clipped_fraction",
                              "cells_reached", "cells_wanted"}
        assert isinstance(check["monotone"], bool) and check["worst_drop"] >= 0
        assert check["monotone"] == (check["worst_drop"] == 0)
        lo, hi = check["n_range"]
        assert 1 <= lo <= hi and 0.0 <= check["clipped_fraction"] <= 1.0
        assert check["cells_wanted"] > 0


def test_calibration_stages_fit_a_radial_map_that_generation_applies(micro_model, tmp_path):
    # docs/caloclouds.md, 'The radial map': fitted with the N calibration, stored with it,
    # applied as the last step; a model saved without it loads and generates without it
    model, out = micro_model
    assert sorted(model.radial_maps) == ["diffusion", "distilled"]
    assert model.describe()["radial_map"] == ["diffusion", "distilled"]
    e = torch.tensor([2e4, 6e4, 9e4])
    with_map = model.sample(e, generator=torch.Generator().manual_seed(3))
    maps = dict(model.radial_maps)
    try:
        model.radial_maps.clear()
        without = model.sample(e, generator=torch.Generator().manual_seed(3))
        model.save(tmp_path / "no_map")
    finally:
        model.radial_maps.update(maps)
    np.testing.assert_array_equal(with_map.n_points, without.n_points)
    np.testing.assert_array_equal(with_map.points[:, 2:], without.points[:, 2:])
    assert not np.array_equal(with_map.points[:, :2], without.points[:, :2])
    reloaded = load_generator(tmp_path / "no_map")
    assert reloaded.radial_maps == {} and reloaded.calibrations.keys() == maps.keys()
    again = load_generator(out)
    torch.testing.assert_close(again.radial_maps["diffusion"].data_knots,
                               maps["diffusion"].data_knots)
    # a stored config from before the map (layout 1) migrates to "no radial map" and no
    # random symmetry
    import json

    from caloforge.pipelines.registry import config_from_manifest
    stored = json.loads((out / "checkpoint.json").read_text())["config"]
    old = {k: v for k, v in stored.items()
           if not k.startswith("radial_map") and k != "symmetrise"}
    old["config_version"] = 1
    _, migrated = config_from_manifest(old, "old", expect="caloclouds")
    assert migrated.radial_map_bins == 0 and migrated.radial_map_quantiles == 64
    assert migrated.symmetrise is False  # such a model generates as it did


def test_diffusion_loss_falls_and_samples_move_toward_the_data(clouds, tmp_path):
    sets = micro_overrides(1) + [
        "pointwise.widths=[32, 32]", "edm.points_per_shower=64", "edm.ema_power=0",
        "edm.ema_max=0.0", "training.diffusion.max_steps=300",
        "training.diffusion.batch_size=16", "training.diffusion.lr=3e-3",
        "training.diffusion.val_every=300", "training.diffusion.log_every=10"]
    cfg = override_config(get_preset("caloclouds2-ild-tiny"), overrides=sets)
    train_pipeline(cfg, clouds, tmp_path / "m", stages=("showerflow", "diffusion"),
                   progress=False)
    import json

    logs = [json.loads(line) for line in (tmp_path / "m" / "diffusion.log.jsonl").open()]
    train_losses = [r["pointwise"] for r in logs if "pointwise" in r]
    first, last = np.mean(train_losses[:3]), np.mean(train_losses[-3:])
    assert last < 0.7 * first, train_losses
    # samples: the radial distribution of the points (no calibration sets it: the clean
    # test of the diffusion model, docs/caloclouds.md) is closer to the data's than that of the
    # network at its initialisation, sampled with the same noise
    ref = read_point_clouds(clouds)
    trained = load_generator(tmp_path / "m")
    trained.set_solver("heun-13")
    untrained = load_generator(tmp_path / "m")
    untrained.set_solver("heun-13")
    torch.manual_seed(0)
    untrained.pointwise = build_model("pointwise_net", untrained.config.pointwise).eval()
    e = torch.from_numpy(ref.incident_energies[:24].astype(np.float64))

    def radius(pts: np.ndarray) -> np.ndarray:
        return np.hypot(pts[:, 0], pts[:, 1])

    def sampled_radius(m) -> np.ndarray:
        out = m.sample(e, generator=torch.Generator().manual_seed(4), calibrate_n=False)
        return radius(out.points)

    from scipy.stats import wasserstein_distance

    target = radius(ref[:24].points)
    d_trained = wasserstein_distance(sampled_radius(trained), target)
    d_untrained = wasserstein_distance(sampled_radius(untrained), target)
    assert d_trained < 0.7 * d_untrained, (d_trained, d_untrained)


def test_generate_cli_writes_points_and_projected_cells(micro_model, tmp_path):
    _, out = micro_model
    run = [sys.executable, "-m", "caloforge", "generate", str(out), "-n", "6", "--no-progress",
           "--threads", "1"]
    r = subprocess.run(run + ["-o", str(tmp_path / "p.h5")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    p = read_point_clouds(tmp_path / "p.h5")
    assert len(p) == 6 and (p.incident_energies >= 1e4).all() and (p.incident_energies <= 9e4).all()
    r = subprocess.run(run + ["-o", str(tmp_path / "c.h5"), "--project", "ild-ecal:40"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    c = read_point_clouds(tmp_path / "c.h5")
    assert (c.points[:, 3] >= 0.1).all()  # cells at or above half a MIP
    pitch = 5.0
    np.testing.assert_allclose((c.points[:, 0] + 100.0) % pitch, pitch / 2, atol=1e-3)
    r = subprocess.run(run + ["-o", str(tmp_path / "t.h5"), "--threshold", "0.2"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--project" in r.stderr and "Traceback" not in r.stderr


def test_training_on_a_voxel_file_is_a_clear_error(tmp_path):
    from caloforge.simulation import simulate_to_file

    vox = tmp_path / "ds2.h5"
    simulate_to_file(vox, "ds2", 30, seed=1, progress=False)
    r = subprocess.run([sys.executable, "-m", "caloforge", "train", "caloclouds2-ild-tiny",
                        "--data", str(vox), "--out", str(tmp_path / "m"), "--no-progress"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "point-cloud" in r.stderr and str(vox) in r.stderr
