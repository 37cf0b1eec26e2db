"""CaloDREAM assembled: transforms, stages, solvers at generation, latent path, learning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from caloforge.configs import get_preset, override_config
from caloforge.errors import ConfigError
from caloforge.evaluation.separation import separation_power
from caloforge.geometry import get_geometry
from caloforge.io import read_showers
from caloforge.pipelines import load_generator, train_pipeline
from caloforge.pipelines.calodream import (
    CaloDREAM,
    CaloDREAMTransforms,
    build_calodream_models,
    micro_overrides,
)
from caloforge.simulation import simulate_showers, simulate_to_file

DS2 = get_geometry("ds2")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "ds2.h5"
    simulate_to_file(path, DS2, 300, seed=5, progress=False)
    return path


def micro(steps: int = 6, *extra: str):
    return override_config(get_preset("calodream-ds2-tiny"),
                           overrides=[*micro_overrides(steps), *extra])


def test_transforms_round_trip_on_showers():
    data = simulate_showers(DS2, 200, seed=1)
    s = torch.from_numpy(data.showers).double()
    e = torch.from_numpy(data.incident_energies)
    config = get_preset("calodream-ds2")
    t = CaloDREAMTransforms.new(config, DS2).fit(s, e, full_space=True)
    t = CaloDREAMTransforms.from_state(json.loads(json.dumps(t.state())))  # as stored
    u = t.u_features(s, e)
    x = t.voxel_features(s)
    assert u.shape == (200, 45) and x.shape == (200, DS2.n_voxels)
    assert torch.isfinite(u).all() and torch.isfinite(x).all()
    layers = t.layer_energies(u.double(), e)
    back = t.showers(t.fractions_from_voxel_features(x.double()), layers, cut=0.0)
    # float32 features: the round trip holds to float32 precision, energy exactly per layer
    np.testing.assert_allclose(back.sum(1), s.sum(1), rtol=2e-4)
    big = s > 1e-3 * s.sum(1, keepdim=True)
    assert ((back - s).abs()[big] / s[big]).max() < 5e-3


def test_config_validation():
    with pytest.raises(ConfigError, match="bns"):
        override_config(get_preset("calodream-ds2-tiny"), overrides=["bns.enabled=false"])
    with pytest.raises(ConfigError, match="unknown solver"):
        override_config(get_preset("calodream-ds2"), overrides=["shape_solver=rk5-20"])
    with pytest.raises(ConfigError, match="latent"):
        override_config(get_preset("calodream-ds2"), overrides=["space=latent"])
    with pytest.raises(ConfigError, match="patch"):
        override_config(get_preset("calodream-ds2"), overrides=["shape.patch=[4, 16, 1]"])


def test_vae_stage_does_not_apply_to_full_space(data_file, tmp_path):
    with pytest.raises(ConfigError, match="does not apply"):
        train_pipeline(micro(), data_file, tmp_path / "m", stages=("vae",), progress=False)


def test_bespoke_solver_is_trained_saved_and_selectable(data_file, tmp_path):
    out = tmp_path / "m"
    model = train_pipeline(micro(), data_file, out, progress=False)
    assert sorted(model.bespoke) == ["bns-2"]
    info = json.loads((out / "checkpoint.json").read_text())["stages"]["bns"]
    assert info["extra"]["loss"] == "local" and info["sha256"]
    back = load_generator(out)
    e = torch.tensor([5e3, 5e4])
    for name in ("bns-2", "rk4-2", "midpoint-3", "euler-4"):
        back.set_solver(name)
        assert back.shape_solver.name == name
        s = back.sample(e, generator=torch.Generator().manual_seed(0))
        assert s.shape == (2, DS2.n_voxels) and torch.isfinite(s).all()
    with pytest.raises(ConfigError, match="bns-4"):
        back.set_solver("bns-4")


def test_generate_cli_solver_option(data_file, tmp_path):
    from caloforge.cli import main

    out = tmp_path / "m"
    train_pipeline(micro(), data_file, out, progress=False)
    assert main(["generate", str(out), "-n", "5", "--solver", "bns-2", "-o",
                 str(tmp_path / "g.h5"), "--no-progress"]) == 0
    assert read_showers(tmp_path / "g.h5").showers.shape == (5, DS2.n_voxels)
    assert main(["generate", str(out), "-n", "5", "--solver", "bns-16", "-o",
                 str(tmp_path / "g2.h5"), "--no-progress"]) == 2
    assert not (tmp_path / "g2.h5").exists()


def test_generated_layers_carry_the_energy_networks_energies(data_file, tmp_path):
    """Per-layer renormalisation: every generated layer sums to the energy the energy
    network gave it (energy conservation comes from the u's alone)."""
    model = train_pipeline(micro(), data_file, tmp_path / "m", progress=False)
    e = torch.tensor([2e3, 3e4, 4e5])
    gen = torch.Generator().manual_seed(1)
    u = model.sample_energies(e, generator=gen)
    x1 = model.sample_shapes(model.shape_condition(e, u), generator=gen)
    showers = model.decode(x1, model.shape_condition(e, u), u, e).double()
    layers = model.transforms.layer_energies(u, e)
    got = showers.reshape(3, 45, -1).sum(-1)
    np.testing.assert_allclose(got, layers, rtol=1e-5, atol=1e-6)


def test_latent_path_trains_and_generates(data_file, tmp_path):
    cfg = override_config(get_preset("calodream-ds2-latent-tiny"), overrides=[
        *micro_overrides(4), "vae.channels=[4, 4]", "vae.cond_dim=8", "vae.cond_hidden_dim=8",
        "training.vae.max_steps=4", "training.vae.batch_size=16",
        "training.vae.checkpoint_every=2", "training.vae.val_every=0"])
    model = train_pipeline(cfg, data_file, tmp_path / "m", progress=False)
    assert isinstance(model, CaloDREAM) and model.is_latent
    s = model.sample(torch.tensor([1e4, 1e5]), generator=torch.Generator().manual_seed(0))
    assert s.shape == (2, DS2.n_voxels) and torch.isfinite(s).all() and (s >= 0).all()
    assert set(json.loads((tmp_path / "m" / "checkpoint.json").read_text())["stages"]) == {
        "energy", "vae", "shape", "bns", "calibration"}


def test_energy_network_learns_the_response(data_file, tmp_path):
    """The loss falls and the generated E_tot / E_inc moves toward the data's."""
    cfg = micro(150, "energy_solver=rk4-8", "training.energy.lr=3e-3",
                "training.energy.batch_size=64", "energy.head_hidden=32",
                "energy.head_layers=3", "energy.ff_dim=64")
    model = train_pipeline(cfg, data_file, tmp_path / "m", stages=("energy",), progress=False)
    assert model is None  # the shape stages are not trained yet
    log = [json.loads(x) for x in (tmp_path / "m" / "energy.log.jsonl").read_text().splitlines()]
    losses = [r["energy"] for r in log if "energy" in r]
    assert losses[-1] < 0.8 * losses[0]

    ref = read_showers(data_file)
    e = torch.from_numpy(ref.incident_energies)
    t = CaloDREAMTransforms.from_state(
        json.loads((tmp_path / "m" / "checkpoint.json").read_text())["transforms"])
    from caloforge.checkpoints import load_checkpoint
    from caloforge.training.trainer import seed_everything

    def response(trained: bool) -> np.ndarray:
        # untrained: the network this run started from (the stage seeds, then builds it
        # first), not an arbitrary initialisation
        seed_everything(cfg.training.energy.seed)
        models = build_calodream_models(cfg)
        if trained:
            load_checkpoint(tmp_path / "m").load_modules("energy", {"energy": models["energy"]})
        m = CaloDREAM(cfg, DS2, models, t)
        u = m.sample_energies(e, generator=torch.Generator().manual_seed(2))
        return (t.layer_energies(u, e).sum(1) / e).numpy()

    bins = np.linspace(0.0, 1.6, 41)
    truth = np.histogram(ref.showers.sum(1) / ref.incident_energies, bins)[0]
    sep_trained = separation_power(truth, np.histogram(response(True), bins)[0])
    sep_untrained = separation_power(truth, np.histogram(response(False), bins)[0])
    assert sep_trained < 0.5 * sep_untrained


def test_shape_stages_retrain_over_a_directory_whose_stored_shape_is_now_refused(
        data_file, tmp_path):
    """A run whose ViT tokens were narrower than their patches (refused since) keeps its
    energy network: retraining the shape stages with valid settings warns and works,
    while loading the old directory as a model is a one-line error."""
    from caloforge.checkpoints import MANIFEST_NAME
    from caloforge.errors import CheckpointError
    from caloforge.pipelines.calodream import CaloDREAM

    out = tmp_path / "m"
    train_pipeline(micro(), data_file, out, stages=("energy",), progress=False)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    manifest["config"]["shape"]["dim"] = 16  # the patch holds 144 voxels
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="dim 16 is smaller than the patch size 144"):
        CaloDREAM.load(out, verify=False)
    energy_before = (out / "energy.safetensors").read_bytes()
    with pytest.warns(UserWarning, match="cannot be read"):
        model = train_pipeline(micro(), data_file, out, progress=False,
                               stages=("shape", "bns", "calibration"))
    assert isinstance(model, CaloDREAM) and model.config.shape.dim == 144
    assert (out / "energy.safetensors").read_bytes() == energy_before
