"""CaloLatent's decoder noise: the fitted width of the decoder's Gaussian (known answers),
and generation that samples it, reproducibly, or decodes the mean when asked or when a
checkpoint has no such stage."""

import json
import math

import pytest
import torch

from caloforge.configs import get_preset, override_config
from caloforge.geometry import get_geometry
from caloforge.pipelines import load_generator, train_pipeline
from caloforge.pipelines.calolatent import (
    CaloLatent,
    DecoderNoise,
    fit_decoder_noise,
    micro_overrides,
)
from caloforge.simulation import simulate_to_file

pytestmark = pytest.mark.usefixtures("one_thread")


def test_fitted_widths_are_the_rms_residual_per_energy_bin():
    """Residuals N(0, s_k,v^2) in two energy ranges: the fit finds the median edge between
    them and each bin's per-voxel width, within its sampling error."""
    g = torch.Generator().manual_seed(0)
    n, v = 4000, 5
    e = torch.cat([torch.full((n,), 2e3), torch.full((n,), 5e5)]).double()
    e = e * torch.exp(0.01 * torch.randn(2 * n, generator=g, dtype=torch.float64))
    s = torch.tensor([[0.2, 0.5, 1.0, 1.5, 3.0], [1.0, 0.1, 2.0, 0.7, 0.4]])
    r = torch.randn(2 * n, v, generator=g) * torch.cat([s[0].expand(n, v), s[1].expand(n, v)])
    noise = fit_decoder_noise(r, e, n_bins=2)
    assert math.log(2e3) < float(noise.log_e_edges[0]) < math.log(5e5)
    torch.testing.assert_close(noise.sigma, s, rtol=4 / math.sqrt(2 * n), atol=0)
    # the right row for each energy
    torch.testing.assert_close(noise.widths(torch.tensor([1e3, 1e6]).double()), noise.sigma)
    # and draws of the Gaussian have that spread about the mean
    mean = torch.full((2 * n, v), 3.0)
    x = noise(mean, e, torch.randn(2 * n, v, generator=g))
    torch.testing.assert_close(x[:n].std(0), s[0], rtol=0.05, atol=0)
    torch.testing.assert_close(x[n:].mean(0), torch.full((v,), 3.0), rtol=0, atol=0.15)


def test_an_empty_energy_bin_takes_the_width_of_all_showers():
    """Two discrete energies in three bins (ds1-like): no bin is left without a width."""
    e = torch.tensor([1e3] * 50 + [1e5] * 50).double()
    r = torch.cat([torch.ones(50, 2), 3 * torch.ones(50, 2)])
    noise = fit_decoder_noise(r, e, n_bins=3)
    assert torch.isfinite(noise.sigma).all() and (noise.sigma > 0).all()
    # the edges fall on the two energies: bins (<= 1e3], (1e3, 1e5], (1e5, ...) of which
    # the last is empty and takes the RMS of all residuals, sqrt((1 + 9) / 2)
    torch.testing.assert_close(noise.sigma[:, 0], torch.tensor([1.0, 3.0, math.sqrt(5.0)]))


def test_fit_refuses_too_few_showers():
    with pytest.raises(Exception, match="at least 8 showers"):
        fit_decoder_noise(torch.zeros(5, 3), torch.full((5,), 1e3).double(), n_bins=4)
    with pytest.raises(Exception, match="n_bins >= 1"):
        DecoderNoise(0, 3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dn")
    simulate_to_file(tmp / "ds2.h5", get_geometry("ds2"), 200, seed=5, progress=False)
    cfg = override_config(get_preset("calolatent-ds2-tiny"), overrides=micro_overrides(3))
    return train_pipeline(cfg, tmp / "ds2.h5", tmp / "m", progress=False), tmp


def test_the_stage_is_fitted_stored_and_sampled(trained):
    model, tmp = trained
    manifest = json.loads((tmp / "m" / "checkpoint.json").read_text())
    assert "decoder_noise" in manifest["stages"]
    assert manifest["stages"]["decoder_noise"]["extra"]["showers"] == 40
    assert model.use_decoder_noise and model.decoder_noise is not None
    assert (model.decoder_noise.sigma > 0).any()
    e = torch.tensor([3e3, 4e4, 6e5]).double()

    def draw(m, seed):
        return m.sample(e, generator=torch.Generator().manual_seed(seed))

    a = draw(model, 1)
    torch.testing.assert_close(draw(model, 1), a, rtol=0, atol=0)       # reproducible
    assert not torch.equal(draw(model, 2), a)
    back = load_generator(tmp / "m")
    torch.testing.assert_close(back.decoder_noise.sigma, model.decoder_noise.sigma)
    torch.testing.assert_close(draw(back, 1), a, rtol=0, atol=0)
    assert back.describe()["decoder"].startswith("Gaussian")

    # the mean decoding: switched off, or a model without the stage (older checkpoints)
    back.use_decoder_noise = False
    back.calibration = None             # the voxel map is another stage's business
    plain = CaloLatent(model.config, model.geometry, model.layer_model, model.vae,
                       model.latent_model, model.transforms)
    assert not plain.use_decoder_noise and plain.describe()["decoder"] == "mean"
    mean = draw(back, 1)
    torch.testing.assert_close(draw(plain, 1), mean, rtol=0, atol=0)
    assert not torch.equal(mean, a)


def test_a_checkpoint_without_the_stage_loads_and_decodes_the_mean(trained, tmp_path):
    model, _ = trained
    plain = CaloLatent(model.config, model.geometry, model.layer_model, model.vae,
                       model.latent_model, model.transforms)
    plain.save(tmp_path / "old")
    manifest = json.loads((tmp_path / "old" / "checkpoint.json").read_text())
    assert "decoder_noise" not in manifest["stages"]
    back = load_generator(tmp_path / "old")
    assert back.decoder_noise is None and not back.use_decoder_noise


def test_decode_spreads_a_layer_decoded_all_zero_by_the_fallback_weights(trained):
    """The fallback weights are computed only when a layer decodes to all-zero fractions;
    the showers are those of the always-computed path, every layer holding its energy."""
    model, _ = trained
    t = model.transforms
    e = torch.tensor([5e3, 2e5]).double()
    g = torch.Generator().manual_seed(3)
    u = model.sample_layer_features(e, generator=g)
    z = model.sample_latent(e, u, generator=g)
    layers = t.decode_layers(u, e)
    real_decode = model.vae.decode

    def decode_with_a_dead_layer(zz, cond):
        out = real_decode(zz, cond).clone()
        out[0, 0, 3] = -1e4            # layer 3 of the first shower: far below the minimum
        return out

    model.vae.decode = decode_with_a_dead_layer
    old = model.use_decoder_noise, model.config.output_threshold_mev, model.calibration
    try:
        # the mean decoding, no threshold and no voxel map: the fallback alone is checked
        model.use_decoder_noise, model.config.output_threshold_mev = False, 0.0
        model.calibration = None
        got = model.decode(z, u, e).double()
        with torch.inference_mode():
            flat = decode_with_a_dead_layer(z.float(), torch.cat([t.condition(e), u], 1))
        frac, soft = t.decode_voxels(flat.reshape(2, -1))
        assert t.has_empty_layer(frac) and not t.has_empty_layer(frac[1:])
        assert t.decode_voxels(flat.reshape(2, -1), fallback=False)[1] is None
        want = t.showers(frac, layers, fallback=soft).to(torch.float32).double()
    finally:
        model.vae.decode = real_decode
        model.use_decoder_noise, model.config.output_threshold_mev, model.calibration = old
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    sums = got.reshape(2, 45, -1).sum(-1)
    torch.testing.assert_close(sums, layers, rtol=1e-5, atol=1e-4)
    assert (got.reshape(2, 45, -1)[0, 3] > 0).sum() > 1       # spread, not one voxel


def test_retraining_the_vae_alone_is_refused_while_stages_built_on_it_exist(trained, tmp_path):
    """Stale dependents would be silently wrong (widths and latent model of an old VAE)."""
    import shutil

    from caloforge.errors import CheckpointError

    _, tmp = trained
    shutil.copytree(tmp / "m", tmp_path / "m")
    cfg = override_config(get_preset("calolatent-ds2-tiny"), overrides=micro_overrides(3))
    before = (tmp_path / "m" / "checkpoint.json").read_text()
    with pytest.raises(CheckpointError, match=r"retraining stage 'vae' would leave the trained "
                       r"stage\(s\) latent, decoder_noise, calibration .* \(--stage vae "
                       r"--stage latent --stage decoder_noise --stage calibration\)"):
        train_pipeline(cfg, tmp / "ds2.h5", tmp_path / "m", stages=("vae",), progress=False)
    with pytest.raises(CheckpointError, match="decoder_noise"):
        train_pipeline(cfg, tmp / "ds2.h5", tmp_path / "m", stages=("vae", "latent"),
                       progress=False)
    assert (tmp_path / "m" / "checkpoint.json").read_text() == before   # nothing written
    # retrained together is fine; the voxel map reads every network, the layer model too
    model = train_pipeline(cfg, tmp / "ds2.h5", tmp_path / "m",
                           stages=("vae", "latent", "decoder_noise", "calibration"),
                           progress=False)
    assert model is not None
    with pytest.raises(CheckpointError, match=r"\(--stage layer --stage calibration\)"):
        train_pipeline(cfg, tmp / "ds2.h5", tmp_path / "m", stages=("layer",), progress=False)
    train_pipeline(cfg, tmp / "ds2.h5", tmp_path / "m", stages=("layer", "calibration"),
                   progress=False)


def test_adding_a_stage_with_other_settings_names_them(trained, tmp_path):
    """The directory takes the run's settings: kept stages trained with others are named."""
    import shutil
    import warnings

    _, tmp = trained
    shutil.copytree(tmp / "m", tmp_path / "m")
    same = override_config(get_preset("calolatent-ds2-tiny"), overrides=micro_overrides(3))
    other = override_config(get_preset("calolatent-ds2-tiny"),
                            overrides=[*micro_overrides(3), "layer_sampler=em-3"])
    with pytest.warns(UserWarning, match=r"layer_sampler 'em-4' -> 'em-3'\); the kept "
                      r"stage\(s\) layer, vae, latent, decoder_noise keep their weights"):
        train_pipeline(other, tmp / "ds2.h5", tmp_path / "m", stages=("calibration",),
                       progress=False)
    shutil.rmtree(tmp_path / "m")
    shutil.copytree(tmp / "m", tmp_path / "m")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_pipeline(same, tmp / "ds2.h5", tmp_path / "m", stages=("calibration",),
                       progress=False)
    assert not [w for w in caught if "other settings" in str(w.message)]
    # the settings of the stage the run refits are its own: no warning either
    refit = override_config(get_preset("calolatent-ds2-tiny"),
                            overrides=[*micro_overrides(3), "calibration.quantiles=16"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_pipeline(refit, tmp / "ds2.h5", tmp_path / "m", stages=("calibration",),
                       progress=False)
    assert not [w for w in caught if "other settings" in str(w.message)]
    assert load_generator(tmp_path / "m").calibration.n_quantiles == 16
