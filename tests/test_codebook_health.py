"""Codebook health of the Calo-VQ quantiser: k-means start, EMA codes, dead-code revival,
cosine look-up, the usage warning, the stored-config migration, and a short training in
which the plain quantiser collapses and the healthy one does not (docs/calovq.md)."""

import dataclasses
import warnings

import numpy as np
import pytest
import torch

from caloforge.configs import get_preset, list_presets
from caloforge.geometry import get_geometry
from caloforge.io import read_showers
from caloforge.models import CylindricalVQVAE, VectorQuantizer, VQVAEConfig
from caloforge.models.autoencoders import flat_to_calo_image
from caloforge.models.autoencoders.quantizer import code_statistics
from caloforge.objectives import VQObjective
from caloforge.pipelines import load_generator
from caloforge.pipelines.calovq import (
    CaloVQAutoencoderStage,
    CaloVQTransforms,
    CodebookCollapseWarning,
)
from caloforge.pipelines.calovq import _migrate as migrate_calovq
from caloforge.pipelines.calovq.training import init_codebook_from_data
from caloforge.simulation import simulate_to_file
from caloforge.training import TensorDictDataset

CODEBOOK_FIELDS = ("codebook_init", "codebook_update", "codebook_decay", "revive_dead_codes",
                   "dead_code_threshold", "dead_code_decay", "l2_normalize_codes")


# tiny tensors: one torch thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def _clusters(k=6, per=40, dim=3, seed=0):
    """k well separated Gaussian blobs: (per*k, dim) points and their centres."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=g) * 10
    pts = centres.repeat_interleave(per, 0) + 0.05 * torch.randn(k * per, dim, generator=g)
    return pts, centres


# ---------------------------------------------------------------------------- quantiser
def test_kmeans_initialisation_finds_the_clusters():
    torch.manual_seed(0)
    pts, centres = _clusters()
    q = VectorQuantizer(6, 3)
    q.init_from_data(pts.t()[None])  # (1, D, N) channel-first
    # every true centre has a code within the blobs' spread, and every code is used
    d = torch.cdist(centres, q.codebook.weight.detach())
    assert float(d.min(1).values.max()) < 0.05
    _, idx, losses = q.eval()(pts.t()[None])
    assert float(losses.usage) == 1.0
    torch.testing.assert_close(losses.perplexity, torch.tensor(6.0))


def test_kmeans_with_fewer_vectors_than_codes_gives_distinct_codes():
    torch.manual_seed(1)
    pts, _ = _clusters(k=2, per=3)
    q = VectorQuantizer(16, 3)
    q.init_from_data(pts.t()[None])
    book = q.codebook.weight.detach()
    assert torch.unique(book, dim=0).shape[0] == 16  # jittered apart
    assert float(torch.cdist(book, pts).min(1).values.max()) < 1.0


def test_ema_codes_move_to_the_mean_of_their_vectors():
    q = VectorQuantizer(2, 2, update="ema", ema_decay=0.0, eps=1e-12).train()
    with torch.no_grad():
        q.codebook.weight.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    z = torch.tensor([[1.0, 1.0], [3.0, -1.0], [9.0, 12.0]]).t()[None]  # (1, 2, 3)
    _, idx, losses = q(z)
    assert idx.tolist() == [[0, 0, 1]]
    # decay 0: each code becomes the mean of the vectors assigned to it (k-means step)
    torch.testing.assert_close(q.codebook.weight, torch.tensor([[2.0, 0.0], [9.0, 12.0]]))
    assert float(losses.codebook) == 0.0 and float(losses.commitment) > 0.0


def test_ema_codebook_is_a_buffer_under_the_usual_key():
    q = VectorQuantizer(8, 4, update="ema")
    assert "codebook.weight" in q.state_dict()
    assert not any(n.startswith("codebook") for n, _ in q.named_parameters())
    plain = VectorQuantizer(8, 4)
    assert set(plain.state_dict()) == {"codebook.weight", "ema_counts"}  # unchanged layout
    # the parameter count of a model still includes the codebook
    cfg = VQVAEConfig(in_channels=2, n_layers=4, n_alpha=6, channels=(4,), resolutions=((2, 3),),
                      vq_dim=4, n_codes=8, attention=False, cond_hidden_dim=4)
    a = CylindricalVQVAE(cfg)
    b = CylindricalVQVAE(dataclasses.replace(cfg, codebook_update="ema"))
    assert a.n_parameters() == b.n_parameters()
    assert a.n_parameters(include_codebook=False) == a.n_parameters() - 32


def test_ema_revival_resets_the_statistics_too():
    torch.manual_seed(2)
    q = VectorQuantizer(16, 2, revive_dead_codes=True, dead_code_threshold=0.5, usage_decay=0.5,
                        update="ema").train()
    z = torch.randn(2, 2, 10) + 5.0
    for _ in range(4):
        q(z)
    flat = z.permute(0, 2, 1).reshape(-1, 2)
    # revived codes sit on encoder outputs and their running sums agree with them
    near = torch.cdist(q.codebook.weight, flat).min(1).values
    assert int((near < 1e-4).sum()) > 1
    size = q.ema_cluster_size
    n = size.sum()
    smoothed = (size + q.eps) / (n + q.n_codes * q.eps) * n
    torch.testing.assert_close(q.ema_embed_sum / smoothed[:, None], q.codebook.weight)


def test_l2_normalised_lookup_uses_cosine_similarity():
    torch.manual_seed(3)
    q = VectorQuantizer(5, 3, l2_normalize=True)
    with torch.no_grad():
        q.codebook.weight.copy_(torch.randn(5, 3) * torch.tensor([[1.0], [5.0], [0.1], [2], [9]]))
    z = torch.randn(2, 3, 4) * 3
    zq, idx, _ = q(z)
    unit = torch.nn.functional.normalize
    cos = unit(z.permute(0, 2, 1), dim=-1) @ unit(q.codebook.weight, dim=-1).t()
    assert torch.equal(idx, cos.argmax(-1))
    torch.testing.assert_close(zq.norm(dim=1), torch.ones(2, 4))


def test_code_statistics_known_values():
    u, p = code_statistics(torch.tensor([0, 1, 2, 3]), 8)
    assert float(u) == 0.5 and abs(float(p) - 4.0) < 1e-5
    u, p = code_statistics(torch.tensor([[5, 5], [5, 5]]), 8)
    assert float(u) == 1 / 8 and abs(float(p) - 1.0) < 1e-6


# ------------------------------------------------------------------ presets and configs
def test_every_calovq_preset_uses_the_healthy_codebook():
    names = [n for n in list_presets() if n.startswith("calovq")]
    assert len(names) >= 10
    for name in names:
        ae = get_preset(name).autoencoder_config
        assert (ae.codebook_init, ae.codebook_update, ae.revive_dead_codes) == (
            "data", "ema", True), name


def test_stored_configs_migrate_to_the_plain_codebook():
    # a layout-1 config written before the codebook options: defaults = old behaviour
    body = {"vqvae": {"n_codes": 256}, "dense_vqvae": None}
    out = migrate_calovq(body, 1)
    assert {k: out["vqvae"][k] for k in CODEBOOK_FIELDS if k in out["vqvae"]} == {
        "codebook_init": "uniform", "codebook_update": "gradient", "codebook_decay": 0.99,
        "dead_code_decay": 0.99, "l2_normalize_codes": False}
    assert out["dense_vqvae"] is None and out["codebook_usage_warning"] == 0.1
    # the shipped model (layout 0) loads with the plain quantiser it was trained with
    model = load_generator("calovq-ds2-tiny")
    ae = model.config.autoencoder_config
    assert (ae.codebook_init, ae.codebook_update, ae.l2_normalize_codes) == (
        "uniform", "gradient", False)
    assert isinstance(model.vqvae.quantizer.codebook, torch.nn.Embedding)


# ------------------------------------------------------------ a short training, both ways
@pytest.fixture(scope="module")
def ds2_images(tmp_path_factory):
    """600 GFlash ds2 showers as stage-1 inputs (x of Eq. 5, layer-wise), 500 + 100."""
    path = tmp_path_factory.mktemp("data") / "ds2.h5"
    simulate_to_file(path, "ds2", 600, seed=5, progress=False)
    data = read_showers(path)
    cfg = get_preset("calovq-ds2-tiny")
    showers = torch.from_numpy(np.ascontiguousarray(data.showers, dtype=np.float64))
    energies = torch.from_numpy(data.incident_energies.reshape(-1).astype(np.float64))
    t = CaloVQTransforms.new(cfg, get_geometry("ds2")).fit(showers, energies)
    x = flat_to_calo_image(t.log(t.normalisation(showers)[0]).float(), 45, 16, 9).contiguous()
    cond = t.condition(energies)
    return (x[:500], cond[:500]), (x[500:], cond[500:])


def _train(config: VQVAEConfig, train, steps=200, batch=32):
    torch.manual_seed(0)
    model = CylindricalVQVAE(config)
    if config.codebook_init == "data":
        init_codebook_from_data(model, TensorDictDataset(x=train[0], cond=train[1]), batch)
    objective = VQObjective(1.0, 3000.0, 7.0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        i = torch.randint(0, len(train[0]), (batch,), generator=g)
        loss = objective(model, {"x": train[0][i], "cond": train[1][i]})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _usage(model, held_out):
    with torch.no_grad():
        _, idx, _ = model.quantizer(model.encode(*held_out))
    u, p = code_statistics(idx, model.config.n_codes)
    return float(u), float(p)


def test_plain_codebook_collapses_and_the_healthy_one_does_not(ds2_images):
    """Same network, data, seed and 200 steps; only the codebook options differ. The
    healthy options are the paper-size presets' own."""
    train, held_out = ds2_images
    base = VQVAEConfig(channels=(8, 8), resolutions=((23, 8), (12, 4)), vq_dim=128,
                       n_codes=256, cond_hidden_dim=16, attention=False, normalisation="layer")
    paper = get_preset("calovq-ds2").vqvae
    healthy = dataclasses.replace(base, **{k: getattr(paper, k) for k in CODEBOOK_FIELDS})
    u_plain, p_plain = _usage(_train(base, train), held_out)
    u_healthy, p_healthy = _usage(_train(healthy, train), held_out)
    print(f"codebook usage plain {u_plain:.3f} (perplexity {p_plain:.1f}), healthy "
          f"{u_healthy:.3f} (perplexity {p_healthy:.1f})")
    assert u_plain < 0.15 and p_plain < 20  # collapsed: a handful of codes
    assert u_healthy >= 0.30
    assert p_healthy > 3 * p_plain


def test_data_initialisation_uses_the_codebook_from_the_first_step(ds2_images):
    train, held_out = ds2_images
    cfg = VQVAEConfig(channels=(8, 8), resolutions=((23, 8), (12, 4)), vq_dim=128, n_codes=256,
                      cond_hidden_dim=16, attention=False, normalisation="layer")
    torch.manual_seed(0)
    plain = CylindricalVQVAE(cfg).eval()
    torch.manual_seed(0)
    init = CylindricalVQVAE(dataclasses.replace(cfg, codebook_init="data")).train()
    n = init_codebook_from_data(init, TensorDictDataset(x=train[0], cond=train[1]), 32)
    assert n == 43 and init.training  # 8 vectors per code: 43 showers x 48 positions
    u_plain, u_init = _usage(plain, held_out)[0], _usage(init.eval(), held_out)[0]
    print(f"usage before training: uniform codes {u_plain:.3f}, k-means codes {u_init:.3f}")
    assert u_init > 0.5 and u_init > 2.5 * u_plain


# ------------------------------------------------------------------ validation warning
def test_validation_reports_usage_and_warns_once_per_round():
    torch.manual_seed(4)
    cfg = VQVAEConfig(in_channels=2, n_layers=4, n_alpha=6, channels=(4,), resolutions=((2, 3),),
                      vq_dim=4, n_codes=16, attention=False, cond_hidden_dim=4)
    model = CylindricalVQVAE(cfg).eval()
    with torch.no_grad():
        model.quantizer.codebook.weight.zero_()  # every position picks code 0: collapsed
    stage = CaloVQAutoencoderStage(model, VQObjective(), usage_warning=0.5)
    batch = {"x": torch.rand(4, 2, 4, 6), "cond": torch.rand(4, 1)}
    with pytest.warns(CodebookCollapseWarning, match="1 of|6.2%|collapsing"):
        out = stage.validation_step(batch)
    assert out["usage"] == pytest.approx(1 / 16) and out["perplexity"] == pytest.approx(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stage.validation_step(batch)  # same validation round: no second warning
        CaloVQAutoencoderStage(model, VQObjective(), usage_warning=0.0).validation_step(batch)
    stage.training_step(batch, 10)
    with pytest.warns(CodebookCollapseWarning, match="after 11 steps"):
        stage.validation_step(batch)
