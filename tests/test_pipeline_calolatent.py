"""CaloLatent assembled: preprocessing, renormalisation, the VAE's KL weight, the three stages
on a small GFlash set, sampling, save/load and the baseline VAE."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from caloforge.configs import get_preset, override_config
from caloforge.errors import ConfigError, GenerationError
from caloforge.evaluation.separation import separation_power_samples
from caloforge.geometry import get_geometry
from caloforge.io import read_showers
from caloforge.models import ResNetVAE3d, ResNetVAE3dConfig
from caloforge.pipelines import load_generator, train_pipeline
from caloforge.pipelines.calolatent import (
    CaloLatent,
    CaloLatentConfig,
    CaloLatentTransforms,
    build_calolatent_models,
    clip_each_gradient,
    micro_overrides,
    vae_loss,
)
from caloforge.simulation import simulate_to_file
from caloforge.transforms import LayerEnergyRatios

DS2 = get_geometry("ds2")


# tiny tensors: one torch thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "ds2.h5"
    simulate_to_file(path, DS2, 300, seed=3, progress=False)
    return path


@pytest.fixture(scope="module")
def data(data_file):
    ref = read_showers(data_file)
    return (torch.from_numpy(ref.showers.astype(np.float32)),
            torch.from_numpy(ref.incident_energies.astype(np.float64)))


@pytest.fixture(scope="module")
def transforms(data):
    showers, energies = data
    return CaloLatentTransforms.new(get_preset("calolatent-ds2-tiny"), DS2).fit(showers, energies)


# ----------------------------------------------------------------- preprocessing
def test_u_encoding_round_trips_exactly_and_conserves_energy_with_empty_layers():
    g = torch.Generator().manual_seed(0)
    e_layers = torch.rand(6, 45, generator=g, dtype=torch.float64) * 100
    e_layers[0, :3] = 0  # empty first layers
    e_layers[1, 40:] = 0  # empty last layers
    e_layers[2, 10:30] = 0  # a hole
    e_layers[3, :44] = 0  # only the last layer
    e_layers[4] = 0  # no energy at all
    e_inc = torch.full((6,), 500.0, dtype=torch.float64)
    ratios = LayerEnergyRatios(u0_scale=2.0)
    u = ratios(e_layers, incident_energy=e_inc)
    torch.testing.assert_close(u[:, 0], e_layers.sum(1) / (2 * e_inc), rtol=1e-15, atol=0)
    assert (u >= 0).all() and (u[:, 1:] <= 1).all()
    back = ratios.inverse(u, incident_energy=e_inc)
    torch.testing.assert_close(back, e_layers, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(back.sum(1), e_layers.sum(1), rtol=1e-14, atol=0)
    assert (back[e_layers == 0] == 0).all()


def test_fitted_preprocessing_round_trips_layers_and_voxels(transforms, data):
    showers, energies = data
    s, e = showers[:50].to(torch.float64), energies[:50]
    layers = transforms.layer_energies(s)
    u = transforms.encode_layers(layers, e)
    assert u.dtype == torch.float32 and u.shape == (50, 45) and torch.isfinite(u).all()
    # the model's u is standardised: roughly zero mean, unit spread per feature
    all_u = transforms.encode_layers(transforms.layer_energies(showers.double()), energies)
    assert all_u.mean(0).abs().max() < 1e-4 and (all_u.std(0) < 1.1).all()
    back = transforms.decode_layers(u, e)
    torch.testing.assert_close(back, layers, rtol=2e-4, atol=1e-3)
    # the total is exactly 2 u_0 E_inc of the decoded u_0: energy is conserved
    torch.testing.assert_close(back.sum(1), layers.sum(1), rtol=2e-5, atol=0)
    f = transforms.encode_voxels(s)
    assert f.shape == (50, 6480) and torch.isfinite(f).all()
    fractions, soft = transforms.decode_voxels(f)
    rec = transforms.showers(fractions, layers, fallback=soft)
    torch.testing.assert_close(rec, s, rtol=1e-3, atol=1e-4)
    # the fitted state survives its JSON form exactly
    state = json.loads(json.dumps(transforms.state()))
    again = CaloLatentTransforms.from_state(state, 144)
    assert torch.equal(again.encode_voxels(s), f) and torch.equal(again.encode_layers(layers, e), u)


def test_values_outside_the_training_range_stay_finite(transforms, data):
    showers, energies = data
    s = showers[:4].double() * 3.0  # u_0 beyond its training maximum
    u = transforms.encode_layers(transforms.layer_energies(s), energies[:4])
    assert torch.isfinite(u).all() and torch.isfinite(transforms.encode_voxels(s)).all()


def test_per_layer_renormalisation_puts_exactly_the_layer_energies(transforms):
    g = torch.Generator().manual_seed(1)
    fractions = torch.rand(3, 6480, generator=g, dtype=torch.float64)
    fractions[0, :144] = 0  # a layer decoded as all zero
    fractions[1, 144 * 7:144 * 8] = 0
    fractions[2, 144 * 44:] = 0
    target = torch.rand(3, 45, generator=g, dtype=torch.float64) * 50
    target[1, 3] = 0  # an empty target layer stays empty
    for fallback in (None, torch.rand(3, 6480, generator=g, dtype=torch.float64)):
        out = transforms.showers(fractions, target, fallback=fallback)
        torch.testing.assert_close(out.reshape(3, 45, 144).sum(-1), target, rtol=1e-12, atol=0)
        assert (out >= 0).all() and (out.reshape(3, 45, 144)[1, 3] == 0).all()
    # where the decoded fractions exist they set the shape
    out = transforms.showers(fractions, target)
    per = out.reshape(3, 45, 144)[0, 5]
    torch.testing.assert_close(per / per.sum(), fractions[0, 720:864] / fractions[0, 720:864].sum())


# ----------------------------------------------------------------- the VAE's KL weight
def test_kl_weight_changes_the_latent_spread_in_the_expected_direction():
    """A small VAE on data with two latent factors: with beta = 1e-6 the posteriors shrink
    to points spread over the latent (an autoencoder), with beta = 1 they stay near N(0, 1)
    (aggregate second moment near 1) and the means collapse."""
    cfg = ResNetVAE3dConfig(data_shape=(6, 4, 3), padding=((1, 1), (0, 0), (0, 1)),
                            stem_channels=2, widths=(2, 4), bottleneck_width=8,
                            n_bottleneck=1, block_depth=1, cond_in_dim=2, cond_dim=8)
    assert cfg.latent_dim == 2
    g = torch.Generator().manual_seed(0)
    templates = torch.randn(2, 1, 6, 4, 3, generator=g)
    ab = torch.randn(2000, 2, generator=g)
    x = (ab[:, 0, None, None, None, None] * templates[0]
         + ab[:, 1, None, None, None, None] * templates[1]
         + 0.05 * torch.randn(2000, 1, 6, 4, 3, generator=g))
    cond = torch.zeros(2000, 2)
    result = {}
    for beta in (1e-6, 1.0):
        torch.manual_seed(0)
        vae = ResNetVAE3d(cfg)
        opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
        for _ in range(150):
            idx = torch.randint(0, 2000, (32,), generator=g)
            loss = vae_loss(vae, x[idx], cond[idx], beta)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            mu, log_sigma = vae.encode_posterior(x, cond)
        result[beta] = (log_sigma.exp().mean().item(), mu.std(0).min().item(),
                        (mu.square() + (2 * log_sigma).exp()).mean().item())
    (s_small, spread_small, m2_small), (s_one, spread_one, m2_one) = result[1e-6], result[1.0]
    assert s_small < 0.2 < 0.8 < s_one
    assert spread_small > 0.3 > 0.05 > spread_one
    assert abs(m2_one - 1) < 0.1 and abs(m2_one - 1) < abs(m2_small - 1)


def test_vae_loss_estimators_agree_in_expectation():
    torch.manual_seed(3)
    cfg = ResNetVAE3dConfig(data_shape=(6, 4, 3), padding=((1, 1), (0, 0), (0, 1)),
                            stem_channels=2, widths=(2, 4), bottleneck_width=8,
                            n_bottleneck=1, block_depth=1, cond_in_dim=2, cond_dim=8)
    vae = ResNetVAE3d(cfg)
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.3 * torch.randn_like(p))
        x, c = torch.randn(4000, 1, 6, 4, 3), torch.rand(4000, 2)
        mc = vae_loss(vae, x, c, 1.0, "mc")["kl"]
        exact = vae_loss(vae, x, c, 1.0, "analytic")["kl"]
    assert exact > 0.1 and mc.item() == pytest.approx(exact.item(), rel=0.05)


def test_each_gradient_tensor_is_clipped_alone():
    a = torch.nn.Parameter(torch.zeros(3))
    b = torch.nn.Parameter(torch.zeros(2))
    clip_each_gradient([a, b], 1.0)
    (a * torch.tensor([30.0, 40.0, 0.0])).sum().backward()
    (b * torch.tensor([0.3, 0.4])).sum().backward()
    torch.testing.assert_close(a.grad, torch.tensor([0.6, 0.8, 0.0]))  # norm 50 -> 1
    torch.testing.assert_close(b.grad, torch.tensor([0.3, 0.4]))  # norm 0.5 stays


# ----------------------------------------------------------------- presets and config
def test_presets_and_paper_sizes():
    paper = get_preset("calolatent-ds2")
    assert paper.vae.latent_dim == 144 and paper.vae.padded_shape == (48, 16, 12)
    assert paper.vae.latent_grid == (12, 4, 3) and paper.vae.attention == "bottleneck"
    assert (paper.layer_model.hidden_dim, paper.layer_model.n_layers) == (512, 3)
    assert paper.kl_weight == 1e-6 and paper.latent_prior == "diffusion"
    assert paper.layer_sampler == paper.latent_sampler == "em-200"
    for stage in ("layer", "vae", "latent"):
        tc = getattr(paper.training, stage)
        assert (tc.optimizer, tc.schedule, tc.lr, tc.batch_size) == ("adamax", "cosine", 4e-4, 128)
    assert paper.training.layer.max_steps == paper.training.vae.max_steps == 156_250
    assert paper.training.latent.max_steps == 109_375
    layer, vae, latent = build_calolatent_models(paper)
    assert abs(sum(p.numel() for p in layer.parameters()) - 2.20e6) < 0.02e6
    base = get_preset("calolatent-ds2-vae-baseline")
    assert base.kl_weight == 1.0 and base.latent_prior == "normal"
    assert build_calolatent_models(base)[2] is None
    tiny = get_preset("calolatent-ds2-vae-baseline-tiny")
    assert tiny.vae == get_preset("calolatent-ds2-tiny").vae and tiny.kl_weight == 1.0


def test_config_checks():
    with pytest.raises(ConfigError, match="cond_in_dim"):
        CaloLatentConfig(vae=ResNetVAE3dConfig(cond_in_dim=45))
    with pytest.raises(ConfigError, match="latent_dim"):
        override_config(get_preset("calolatent-ds2"), overrides=["vae.latent_channels=2"])
    with pytest.raises(ConfigError, match="sampler"):
        CaloLatentConfig(layer_sampler="em-1")
    with pytest.raises(ConfigError, match="beta"):
        override_config(get_preset("calolatent-ds2"), overrides=["beta_max=10.0"])
    with pytest.raises(ConfigError, match="fp16"):
        override_config(get_preset("calolatent-ds2"), overrides=["training.vae.amp=fp16"])
    with pytest.raises(ConfigError, match="regular"):
        CaloLatentConfig(geometry="ds1-pions")


# ----------------------------------------------------------------- the pipeline on GFlash
def small_config(layer=500, vae=60, latent=300):
    sets = ["vae.stem_channels=2", "vae.widths=[2, 4]", "vae.bottleneck_width=8",
            "vae.cond_dim=8", "layer_model.hidden_dim=64", "latent_model.hidden_dim=64",
            "layer_sampler=em-50", "latent_sampler=em-50", "validation_fraction=0.1"]
    for stage, (steps, batch) in dict(layer=(layer, 64), vae=(vae, 16),
                                      latent=(latent, 64)).items():
        sets += [f"training.{stage}.max_steps={steps}", f"training.{stage}.batch_size={batch}",
                 f"training.{stage}.lr=1e-2", f"training.{stage}.checkpoint_every=0",
                 f"training.{stage}.val_every=0", f"training.{stage}.log_every=10"]
    return override_config(get_preset("calolatent-ds2-tiny"), overrides=sets)


@pytest.fixture(scope="module")
def trained(data_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "calolatent"
    model = train_pipeline(small_config(), data_file, out, progress=False)
    return model, out


def _log(path, key):
    return [r[key] for r in map(json.loads, path.read_text().splitlines()) if key in r]


def test_the_three_losses_fall(trained):
    _, out = trained
    layer = _log(out / "layer.log.jsonl", "layer")
    assert layer[-1] < 0.4 * layer[0]
    rec = _log(out / "vae.log.jsonl", "rec")
    assert rec[-1] < 0.95 * rec[0]
    latent = _log(out / "latent.log.jsonl", "latent")
    assert latent[-1] < 0.85 * latent[0]


def _distances(model, data):
    showers, energies = data
    s = model.sample(energies, generator=torch.Generator().manual_seed(1)).double()
    ref = showers.double()
    resp = separation_power_samples((s.sum(1) / energies).numpy(),
                                    (ref.sum(1) / energies).numpy(), np.linspace(0, 1.5, 61))
    mean_layers, ref_layers = (x.reshape(len(x), 45, -1).sum(-1).mean(0) for x in (s, ref))
    layers = ((mean_layers - ref_layers).abs().sum() / ref_layers.sum()).item()

    def radial(x):
        p = x.reshape(len(x), 45, 16, 9).sum((1, 2))
        return (p / p.sum(1, keepdim=True)).mean(0)

    shape = (radial(s) - radial(ref)).abs().sum().item()
    return resp, layers, shape


def test_samples_move_toward_the_data(trained, data):
    model, _ = trained
    torch.manual_seed(5)
    untrained = CaloLatent(model.config, model.geometry, *build_calolatent_models(model.config),
                           model.transforms)
    resp, layers, shape = _distances(model, data)
    resp0, layers0, shape0 = _distances(untrained, data)
    # E_tot / E_inc and the longitudinal profile come from the layer model
    assert resp < 0.5 * resp0 and layers < 0.5 * layers0
    # the mean radial profile from the decoder (an untrained one already gives each voxel
    # its training mean, a good start)
    assert shape < 0.95 * shape0


def test_decoded_layers_hold_the_sampled_layer_energies(trained, data):
    model, _ = trained
    _, energies = data
    e = energies[:20]
    g = torch.Generator().manual_seed(4)
    u = model.sample_layer_features(e, generator=g)
    z = model.sample_latent(e, u, generator=g)
    target = model.transforms.decode_layers(u, e)
    exact = CaloLatent(dataclasses.replace(model.config, output_threshold_mev=0.0),
                       model.geometry, model.layer_model, model.vae, model.latent_model,
                       model.transforms, model.decoder_noise)
    assert exact.use_decoder_noise          # the decoder's Gaussian is drawn, same stream
    s = exact.decode(z, u, e, generator=torch.Generator().manual_seed(5)).double()
    torch.testing.assert_close(s.reshape(20, 45, -1).sum(-1), target, rtol=1e-5, atol=1e-4)
    # with the 15.15 keV threshold only voxels below it go (without the voxel map)
    plain = CaloLatent(model.config, model.geometry, model.layer_model, model.vae,
                       model.latent_model, model.transforms, model.decoder_noise)
    cut = plain.decode(z, u, e, generator=torch.Generator().manual_seed(5)).double()
    assert ((cut == 0) | (cut >= model.config.output_threshold_mev)).all()
    assert ((s - cut).abs() <= model.config.output_threshold_mev).all()


def test_save_load_samplers_and_nan_guard(trained, tmp_path):
    model, _ = trained
    e = torch.tensor([2e3, 5e4, 8e5])
    a = model.sample(e, generator=torch.Generator().manual_seed(3))
    model.save(tmp_path / "copy")
    back = load_generator(tmp_path / "copy")
    assert isinstance(back, CaloLatent)
    torch.testing.assert_close(back.sample(e, generator=torch.Generator().manual_seed(3)), a)
    assert back.nfe() == {"layer": 50, "latent": 50, "decoder": 1}
    assert back.nfe("rk4-5", "heun-4") == {"layer": 20, "latent": 8, "decoder": 1}
    fast = back.sample(e, layer_sampler="rk4-5", latent_sampler="rk4-5",
                       generator=torch.Generator().manual_seed(3))
    assert fast.shape == a.shape and torch.isfinite(fast).all() and (fast >= 0).all()
    back.set_solver("rk4-5")  # what `caloforge generate --solver` calls
    torch.testing.assert_close(back.sample(e, generator=torch.Generator().manual_seed(3)), fast)
    back.set_solver("em-7", network="latent")
    assert back.nfe() == {"layer": 20, "latent": 7, "decoder": 1}
    assert back.describe()["latent_sampler"] == "em-7"
    with pytest.raises(ConfigError):
        back.set_solver("rk5-3")
    with torch.no_grad():
        for p in back.vae.parameters():
            p.fill_(float("nan"))
    with pytest.raises(GenerationError, match="decoder"):
        back.sample(e)


def test_calibration_stage_is_fitted_last_stored_and_applied(trained, data):
    model, out = trained
    manifest = json.loads((out / "checkpoint.json").read_text())
    assert list(manifest["stages"])[-1] == "calibration"
    assert 0 < manifest["stages"]["calibration"]["extra"]["showers"] <= model.config.calibration.showers
    assert model.calibration is not None and "quantile map" in model.describe()["calibration"]
    _, energies = data
    e = energies[:30]
    mapped = model.sample(e, generator=torch.Generator().manual_seed(2))
    own = CaloLatent(model.config, model.geometry, model.layer_model, model.vae,
                     model.latent_model, model.transforms, model.decoder_noise)
    raw = own.sample(e, generator=torch.Generator().manual_seed(2))
    # the same draws: the map moves voxels, the layer energies stay
    assert not torch.equal(mapped, raw)
    torch.testing.assert_close(mapped.double().reshape(30, 45, -1).sum(-1),
                               raw.double().reshape(30, 45, -1).sum(-1), rtol=1e-4, atol=1e-3)
    # a stored config from before the stage migrates to "no calibration"
    from caloforge.pipelines.registry import config_from_manifest
    old = {k: v for k, v in manifest["config"].items() if k != "calibration"}
    old["config_version"] = 2
    _, migrated = config_from_manifest(old, "old", expect="calolatent")
    assert migrated.calibration.showers == 0 and not migrated.calibration.enabled
    # maps fitted before the layer-energy bins were binned in E_inc, and say so
    assert model.calibration.binning == model.config.calibration.binning == "layer"
    assert manifest["stages"]["calibration"]["extra"]["binning"] == "layer"
    old = dict(manifest["config"], config_version=3)
    old["calibration"] = {k: v for k, v in old["calibration"].items() if k != "binning"}
    _, migrated = config_from_manifest(old, "old", expect="calolatent")
    assert migrated.calibration.binning == "incident" and migrated.calibration.enabled
    with pytest.raises(ConfigError, match="calibration.binning must be one of"):
        override_config(small_config(), overrides=["calibration.binning=shower"])
    # maps fitted before the hit-count map leave the counts alone, and say so
    assert manifest["stages"]["calibration"]["extra"]["hit_count_bins"] == \
        model.config.calibration.hit_count_bins > 0
    old = dict(manifest["config"], config_version=4)
    old["calibration"] = {k: v for k, v in old["calibration"].items() if k != "hit_count_bins"}
    _, migrated = config_from_manifest(old, "old", expect="calolatent")
    assert migrated.calibration.hit_count_bins == 0 and migrated.calibration.enabled
    with pytest.raises(ConfigError, match="calibration.hit_count_bins must be >= 0"):
        override_config(small_config(), overrides=["calibration.hit_count_bins=-2"])


def test_a_run_whose_settings_no_longer_fit_a_kept_stage_is_refused_before_writing(
        trained, data_file, tmp_path):
    # refitting the calibration with another layer-network width used to overwrite the
    # stored config with the run's and leave a directory that no longer loads
    import shutil

    _, out = trained
    run = tmp_path / "copy"
    shutil.copytree(out, run)
    before = (run / "checkpoint.json").read_bytes()
    wider = override_config(small_config(), overrides=["layer_model.hidden_dim=96",
                                                       "calibration.showers=40"])
    with pytest.raises(ConfigError, match="no longer fit the kept stage 'layer'"):
        train_pipeline(wider, data_file, run, stages=("calibration",), progress=False)
    assert (run / "checkpoint.json").read_bytes() == before
    assert load_generator(run).layer_model is not None


def test_baseline_vae_trains_without_a_latent_model(data_file, tmp_path):
    cfg = override_config(get_preset("calolatent-ds2-vae-baseline-tiny"),
                          overrides=micro_overrides(3))
    model = train_pipeline(cfg, data_file, tmp_path / "b", progress=False)
    assert model.latent_model is None and model.config.kl_weight == 1.0
    manifest = json.loads((tmp_path / "b" / "checkpoint.json").read_text())
    # no latent model
    assert set(manifest["stages"]) == {"layer", "vae", "decoder_noise", "calibration"}
    with pytest.raises(ConfigError, match="does not apply"):
        train_pipeline(cfg, data_file, tmp_path / "c", stages=("latent",), progress=False)
    assert model.nfe()["latent"] == 0
    s = model.sample(torch.tensor([1e4, 1e5]), generator=torch.Generator().manual_seed(0))
    assert s.shape == (2, 6480) and torch.isfinite(s).all()
    back = load_generator(tmp_path / "b")
    torch.testing.assert_close(back.sample(torch.tensor([1e4, 1e5]),
                                           generator=torch.Generator().manual_seed(0)), s)
