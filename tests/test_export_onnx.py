"""ONNX export (docs/export.md): the shipped Calo-VQ model as one graph, run in
onnxruntime on CPU, against the torch model fed the same random numbers."""

import json

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from caloforge.cli.main import main  # noqa: E402
from caloforge.errors import ConfigError  # noqa: E402
from caloforge.export import export_onnx, par04_permutation, shower_rel_diff  # noqa: E402
from caloforge.geometry import get_geometry  # noqa: E402
from caloforge.pipelines import load_generator  # noqa: E402
from caloforge.sampling.tokens import _invert_cdf, draw_token_uniforms, invert_cdf  # noqa: E402

MODEL = "calovq-ds2-tiny"


# tiny tensors: one torch thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return load_generator(MODEL)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    """The shipped model in CaloChallenge order, with the sampled tokens as a second
    output (a debugging output; the graph is otherwise the one `caloforge export` writes)."""
    path = tmp_path_factory.mktemp("onnx") / "calovq.onnx"
    report = export_onnx(model, path, source=MODEL, verify=False, state_outputs=("tokens",))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return path, report, session


def _inputs(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    e = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(np.log(1e3), np.log(1e6),
                                                              generator=g))
    return e, torch.rand(n, 140, generator=g)


def _draw_margin(model, e, u, tokens, row: int, t: int) -> float:
    """Distance of the torch draw at (row, t) from the nearest boundary of its cumulative
    distribution (teacher-forced on the torch tokens)."""
    cond = model.transforms.condition(e[row:row + 1])
    with torch.no_grad():
        logits = model.gpt(tokens[row:row + 1], cond)[0, t]
    cdf = torch.softmax(logits.float(), -1).cumsum(-1)
    return float((cdf - u[row, t] * cdf[-1]).abs().min())


@pytest.mark.parametrize("n", [1, 100])
def test_onnxruntime_gives_the_showers_of_the_torch_model(model, exported, n):
    """Same random numbers, same showers: the tokens are identical and each shower agrees
    to 1e-5 (Euclidean norm over its voxels, relative). Two float32 runtimes may still
    tip a discrete decision: a token drawn at a boundary of the cumulative distribution
    (about 1 shower in 400; it must be a tie within 1e-6), or a shower whose float32
    decoder rounding reaches 1e-5 (about 1 in 100; torch float32 is as far from float64
    there, see the next test). The batch of 100 tolerates such cases, batch 1 none."""
    _, _, session = exported
    e, u = _inputs(n, seed=n)
    showers, tokens = session.run(None, {"incident_energy": e.numpy(), "token_uniforms": u.numpy()})
    ref_tokens = model.sample_tokens(e, uniforms=u)
    ref = model.sample(e, batch_size=n, uniforms=u)
    assert showers.shape == (n, 6480) and showers.dtype == np.float32
    tokens = torch.from_numpy(tokens)
    differ = (tokens != ref_tokens).any(1)
    for row in differ.nonzero().flatten().tolist():
        t = int((tokens[row] != ref_tokens[row]).nonzero()[0])
        assert _draw_margin(model, e, u, ref_tokens, row, t) < 1e-6, (row, t)
    got = torch.from_numpy(showers)[~differ]
    ref = ref[~differ]
    rel = shower_rel_diff(got, ref)
    print(f"batch {n}: {int(differ.sum())} shower(s) with a token drawn differently; per-shower "
          f"relative difference max {float(rel.max()):.2g}, "
          f"{int((rel <= 1e-5).sum())}/{len(rel)} within 1e-5")
    if n == 1:
        assert not differ.any() and float(rel.max()) <= 1e-5
    else:
        assert int(differ.sum()) <= 2
        assert int((rel <= 1e-5).sum()) >= 0.97 * len(rel) and float(rel.max()) <= 1e-4
    torch.testing.assert_close(got.sum(1), ref.sum(1), rtol=1e-6, atol=0.0)


def test_voxel_differences_are_float32_rounding(model, exported):
    """Single voxels of onnxruntime and torch differ by no more than the torch decoder in
    float32 differs from the same decoder in float64: the graph computes the model's
    function, to the precision the model itself has."""
    import copy

    _, _, session = exported
    e, u = _inputs(20, seed=3)
    showers, tokens = session.run(None, {"incident_energy": e.numpy(),
                                          "token_uniforms": u.numpy()})
    ref_tokens = model.sample_tokens(e, uniforms=u)
    assert torch.equal(torch.from_numpy(tokens), ref_tokens)
    ref = model.sample(e, uniforms=u)
    got = torch.from_numpy(showers)
    both = (got > 0) & (ref > 0)
    onnx_vs_torch = float(((got - ref).abs() / ref)[both].max())
    n_codes = model.config.autoencoder_config.n_codes
    codes = ref_tokens[:, model.config.n_r_tokens:].clamp_max(n_codes - 1)
    cond = model.transforms.condition(e)
    with torch.no_grad():
        f32 = model.vqvae.decode_indices(codes, cond).double()
        f64 = copy.deepcopy(model.vqvae).double().decode_indices(codes, cond.double())
    f32_vs_f64 = float(((f32 - f64).abs() / f64).max())
    print(f"largest voxel difference: onnxruntime vs torch {onnx_vs_torch:.2g}, torch "
          f"float32 vs float64 {f32_vs_f64:.2g}")
    assert f32_vs_f64 > 1e-5  # torch's own float32 rounding exceeds 1e-5 on some voxels
    assert onnx_vs_torch < 3 * f32_vs_f64


def test_eager_export_module_is_the_sampler(model):
    spec = model.export_module()
    e, u = _inputs(5, seed=7)
    with torch.no_grad():
        assert torch.equal(spec.module(e, u), model.sample(e, uniforms=u))
    # explicit uniforms drawn as the sampler draws them give its showers bit for bit
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    a = model.sample(e, batch_size=5, generator=g1)
    b = model.sample(e, batch_size=5, uniforms=draw_token_uniforms(5, 140, g2))
    assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="uniforms"):
        model.sample(e, uniforms=u[:, :10])


def test_invert_cdf_is_the_samplers_draw():
    torch.manual_seed(0)
    logits = torch.randn(500, 1024) * 6
    logits[:, ::7] = float("-inf")  # zero-probability entries
    probs = torch.softmax(logits, -1)
    u = torch.rand(500)
    u[:3] = torch.tensor([0.0, 1.0 - 2**-24, 0.5])
    assert torch.equal(invert_cdf(probs, u), _invert_cdf(probs, u))


def test_par04_permutation_known_indices():
    g = get_geometry("ds2")
    p = par04_permutation(g)
    assert sorted(p.tolist()) == list(range(6480))
    # CaloChallenge (layer z=2, alpha a=3, r=4) -> (2*16 + 3)*9 + 4 = 319;
    # Par04 (r=4, phi=3, z=2) -> (4*16 + 3)*45 + 2 = 3017
    assert int(p[3017]) == 319
    assert int(p[0]) == 0 and int(p[1]) == 9 * 16  # z runs fastest in Par04
    with pytest.raises(ConfigError, match="irregular"):
        par04_permutation(get_geometry("ds1-photons"))


def test_metadata_and_signature(exported):
    path, report, session = exported
    m = onnx.load(str(path))
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["pipeline"] == "calovq" and meta["source_model"] == MODEL
    assert meta["voxel_order"] == "calochallenge" and meta["units"].count("MeV") == 2
    assert json.loads(meta["voxel_shape"]) == {"layer": 45, "alpha": 16, "r": 9}
    g = get_geometry("ds2")
    stored = json.loads(meta["geometry"])
    assert stored["name"] == "ds2" and tuple(stored["n_alpha"]) == tuple(g.n_alpha)
    from caloforge import __version__

    assert meta["caloforge_version"] == __version__
    inputs = json.loads(meta["inputs"])
    assert [x["name"] for x in inputs] == [i.name for i in session.get_inputs()]
    assert inputs[1]["shape"] == ["batch", 140] and inputs[1]["distribution"] == "uniform"
    assert session.get_outputs()[0].name == "voxel_energies"
    # the token loop is one ONNX Loop, not 140 unrolled copies of the GPT
    assert [n.op_type for n in m.graph.node].count("Loop") == 1
    assert len(m.graph.node) < 5000


def test_cli_export_par04_order(exported, tmp_path, capsys):
    _, _, session = exported
    out = tmp_path / "par04.onnx"
    assert main(["export", MODEL, "-o", str(out), "--voxel-order", "par04", "--no-check"]) == 0
    assert "par04" in capsys.readouterr().out
    e, u = _inputs(3, seed=11)
    feeds = {"incident_energy": e.numpy(), "token_uniforms": u.numpy()}
    cc = session.run(None, feeds)[0]
    par04 = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    perm = par04_permutation(get_geometry("ds2")).numpy()
    np.testing.assert_array_equal(par04, cc[:, perm])
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["voxel_order"] == "par04"
    assert json.loads(meta["voxel_shape"]) == {"r": 9, "phi": 16, "z": 45}
    # errors are one line, exit status 2
    assert main(["export", "no-such-model", "-o", str(tmp_path / "x.onnx")]) == 2
    assert not (tmp_path / "x.onnx").exists()


def test_dense_ds1_model_exports_too(tmp_path):
    """The irregular-geometry (dense) Calo-VQ, untrained, with transforms fitted on
    synthetic showers: the same graph structure reproduces its sampler."""
    from caloforge.configs import get_preset
    from caloforge.export import verify_onnx
    from caloforge.pipelines.calovq import CaloVQ, CaloVQTransforms, build_calovq_models

    torch.manual_seed(0)
    cfg = get_preset("calovq-ds1-photons-tiny")
    g = get_geometry(cfg.geometry)
    showers = torch.rand(100, g.n_voxels, dtype=torch.float64) ** 4 * 100
    energies = torch.exp(torch.empty(100, dtype=torch.float64).uniform_(7, 13))
    transforms = CaloVQTransforms.new(cfg, g).fit(showers, energies)
    model = CaloVQ(cfg, g, *build_calovq_models(cfg), transforms)
    path = tmp_path / "ds1.onnx"
    report = export_onnx(model, path, verify=False)
    assert report.outputs[0]["shape"] == ["batch", g.n_voxels]
    agreement = verify_onnx(path, model.export_module(), 8, seed=2)
    assert agreement.within >= 7 and agreement.max_rel_diff < 1e-4
    with pytest.raises(ConfigError, match="irregular"):
        export_onnx(model, tmp_path / "par04.onnx", voxel_order="par04", verify=False)
