"""Calo-VQ assembled: training both stages, sampling, save/load, CLI round trip."""

import numpy as np
import pytest
import torch

from caloforge.configs import get_preset
from caloforge.errors import CaloforgeError, CheckpointError, ConfigError
from caloforge.evaluation.separation import separation_power
from caloforge.geometry import get_geometry
from caloforge.io import read_showers
from caloforge.pipelines import load_generator, train_pipeline
from caloforge.pipelines.calovq import CaloVQ, build_calovq_models
from caloforge.simulation import simulate_to_file

DS2 = get_geometry("ds2")


def micro_config(steps1=40, steps2=100, normalisation="global"):
    cfg = get_preset("calovq-ds2-tiny")
    # global R (two R tokens) learns fastest; the shipped preset's layer-wise R is
    # tested on its own below
    cfg.normalisation = cfg.vqvae.normalisation = normalisation
    cfg.r_token_mapping = "log" if normalisation == "layer" else "linear"
    cfg.r_representation = "total_and_shares" if normalisation == "layer" else "direct"
    cfg.gpt.seq_len = cfg.n_r_tokens + cfg.n_shower_codes
    cfg.vqvae.channels = (16, 16)
    cfg.discriminator.channels = (8, 8)
    cfg.gan.start, cfg.gan.ramp = steps1 // 2, 5
    for tc, steps in ((cfg.training.vqvae, steps1), (cfg.training.gpt, steps2)):
        tc.max_steps, tc.warmup_steps, tc.batch_size = steps, 5, 32
        tc.val_every, tc.checkpoint_every, tc.log_every = steps // 2, 0, 10
        tc.ema_decay = 0.0
    return cfg


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "ds2.h5"
    simulate_to_file(path, DS2, 300, seed=3, progress=False)
    return path


@pytest.fixture(scope="module")
def trained(data_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "calovq"
    torch.manual_seed(0)
    model = train_pipeline(micro_config(), data_file, out, progress=False)
    return model, out


def _log(path):
    import json

    return [json.loads(line) for line in path.read_text().splitlines()]


def test_both_stages_learn(trained):
    _, out = trained
    s1 = [r for r in _log(out / "vqvae.log.jsonl") if "rec" in r]
    assert s1[-1]["rec"] < 0.7 * s1[0]["rec"]
    s2 = [r for r in _log(out / "gpt.log.jsonl") if "loss_r" in r]
    # R digits start near ln(1024) = 6.9 nats and must become predictable
    assert s2[-1]["gpt"] < s2[0]["gpt"] - 1.0
    # the least significant digit stays nearly uniform; the leading one must be learned
    assert s2[-1]["loss_r"] < 6.5


def test_samples_move_toward_the_data(trained, data_file):
    model, _ = trained
    ref = read_showers(data_file)
    e = torch.from_numpy(ref.incident_energies)
    bins = np.linspace(0.5, 1.5, 101)
    resp_ref = ref.showers.sum(1) / ref.incident_energies

    def response(m):
        s = m.sample(e, batch_size=200, generator=torch.Generator().manual_seed(1)).numpy()
        return s.sum(1) / ref.incident_energies

    untrained = CaloVQ(model.config, model.geometry, *build_calovq_models(model.config),
                       model.transforms)
    h = lambda r: np.histogram(r, bins)[0]  # noqa: E731
    sep_trained = separation_power(h(resp_ref), h(response(model)))
    sep_untrained = separation_power(h(resp_ref), h(response(untrained)))
    assert sep_trained < 0.5 * sep_untrained


def test_sample_shapes_units_and_threshold(trained):
    model, _ = trained
    e = torch.tensor([2e3, 5e4, 8e5])
    s = model.sample(e, generator=torch.Generator().manual_seed(0))
    assert s.shape == (3, DS2.n_voxels) and s.dtype == torch.float32
    assert torch.isfinite(s).all() and (s >= 0).all()
    nz = s[s > 0]
    assert nz.min() >= model.config.output_threshold_mev
    # energies in MeV: the response is of order one, not 1e-3 or 1e3
    assert ((s.sum(1) / e) > 0.1).all() and ((s.sum(1) / e) < 3).all()


def test_save_load_identical_samples(trained, tmp_path):
    model, _ = trained
    model.save(tmp_path / "copy")
    back = load_generator(tmp_path / "copy")
    e = torch.tensor([1e3, 1e4, 1e5, 1e6])
    a = model.sample(e, generator=torch.Generator().manual_seed(5))
    b = back.sample(e, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    c = back.sample(e, generator=torch.Generator().manual_seed(6))
    assert not torch.equal(a, c)


def test_bad_energies_and_corrupt_checkpoint(trained, tmp_path):
    model, out = trained
    with pytest.raises(ConfigError, match="positive"):
        model.sample(torch.tensor([1e3, -5.0]))
    model.save(tmp_path / "c")
    w = tmp_path / "c" / "gpt.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated|corrupt"):
        load_generator(tmp_path / "c")


def test_wrong_geometry_data_is_refused(tmp_path):
    g3 = get_geometry("ds1-photons")
    simulate_to_file(tmp_path / "ds1.h5", g3, 30, seed=0, progress=False)
    with pytest.raises(CaloforgeError, match="368 voxels but geometry 'ds2'"):
        train_pipeline(micro_config(2, 2), tmp_path / "ds1.h5", tmp_path / "o", progress=False)


def test_gpt_stage_needs_vqvae(data_file, tmp_path):
    with pytest.raises(CheckpointError, match="needs the trained stage"):
        train_pipeline(micro_config(2, 2), data_file, tmp_path / "o", stages=("gpt",),
                     progress=False)


def test_cli_train_generate_round_trip(data_file, tmp_path):
    from caloforge.cli import main

    sets = ["--set", "vqvae.channels=[8, 8]", "--set", "discriminator.channels=[8]",
            "--set", "training.vqvae.max_steps=4", "--set", "training.gpt.max_steps=4",
            "--set", "training.vqvae.warmup_steps=1", "--set", "training.gpt.warmup_steps=1",
            "--set", "training.vqvae.batch_size=16", "--set", "training.gpt.batch_size=16"]
    assert main(["train", "calovq-ds2-tiny", "--data", str(data_file), "--out",
                 str(tmp_path / "m"), "--no-progress", *sets]) == 0
    assert main(["generate", str(tmp_path / "m"), "--energies-from", str(data_file), "-n", "25",
                 "-o", str(tmp_path / "g.h5"), "--no-progress"]) == 0
    g = read_showers(tmp_path / "g.h5")
    np.testing.assert_allclose(g.incident_energies,
                               read_showers(data_file).incident_energies[:25], rtol=1e-6)
    assert main(["train", "calovq-ds2-tiny", "--data", str(data_file), "--out",
                 str(tmp_path / "m2"), "--set", "stage9.lr=1"]) == 2


def test_occupancy_calibration_brings_sparsity_toward_the_data(trained, data_file):
    model, out = trained
    assert model.transforms.occupancy is not None  # fitted during stage 2, stored
    assert load_generator(out).transforms.occupancy.is_fitted
    ref = read_showers(data_file)
    e = torch.from_numpy(ref.incident_energies)
    thr = model.config.output_threshold_mev
    occ_data = float((ref.showers > thr).sum(1).mean())

    def occupancy(m):
        s = m.sample(e, batch_size=300, generator=torch.Generator().manual_seed(2))
        return float((s > thr).sum(1).double().mean())

    uncalibrated = CaloVQ(model.config, model.geometry, model.vqvae, model.gpt,
                          type(model.transforms)(**{**vars(model.transforms), "occupancy": None}))
    assert abs(occupancy(model) - occ_data) < 0.5 * abs(occupancy(uncalibrated) - occ_data)


def test_layerwise_r_learns_the_layer_energies(data_file, tmp_path):
    """With layer-wise R (the shipped preset) the GPT generates the 45 layer energies."""
    torch.manual_seed(0)
    model = train_pipeline(micro_config(steps2=300, normalisation="layer"), data_file,
                         tmp_path / "m", progress=False)
    # E_tot / E_inc and 45 layer shares, two digits each, then the shower codes
    assert model.config.n_r_tokens == 92 and model.config.gpt.seq_len == 92 + 48
    ref = read_showers(data_file)
    e = torch.from_numpy(ref.incident_energies)

    def log_profile(m):
        s = m.sample(e, batch_size=300, generator=torch.Generator().manual_seed(1)).numpy()
        layers = s.reshape(len(s), 45, -1).sum(-1) / ref.incident_energies[:, None]
        return np.log10(layers.mean(0) + 1e-6)

    untrained = CaloVQ(model.config, model.geometry, *build_calovq_models(model.config),
                       model.transforms)
    truth = np.log10((ref.showers.reshape(len(ref), 45, -1).sum(-1)
                      / ref.incident_energies[:, None]).mean(0) + 1e-6)
    err_trained = np.abs(log_profile(model) - truth).mean()
    err_untrained = np.abs(log_profile(untrained) - truth).mean()
    assert err_trained < 0.5 * err_untrained


def test_total_and_shares_round_trip_and_validation(data_file):
    from caloforge.pipelines.calovq import CaloVQTransforms

    cfg = micro_config(normalisation="layer")
    ref = read_showers(data_file)
    s = torch.from_numpy(ref.showers).double()
    e = torch.from_numpy(ref.incident_energies)
    t = CaloVQTransforms.new(cfg, DS2).fit(s, e)
    ratio = t.r_ratio(s, e)
    assert ratio.shape == (len(s), 46)
    # the first value is the response, the shares of each shower sum to 1
    assert torch.allclose(ratio[:, 0], s.sum(1) / e)
    assert torch.allclose(ratio[:, 1:].sum(1), torch.ones(len(s), dtype=torch.float64))
    layers = t.normalisation(s)[1]
    assert torch.allclose(t.r_from_ratio(ratio, e), layers, rtol=1e-9)
    # through the two-digit tokens: layer energies survive to the tokeniser's precision
    back = t.r_from_ratio(t.r_tokens.decode(t.r_tokens.encode(ratio)), e)
    big = layers > 1e-3 * layers.sum(1, keepdim=True)
    assert ((back - layers).abs()[big] / layers[big]).max() < 1e-3
    cfg.normalisation = cfg.vqvae.normalisation = "global"
    with pytest.raises(ConfigError, match="total_and_shares"):
        type(cfg).__post_init__(cfg)
