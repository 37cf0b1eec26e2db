"""Stages of two systems generating together (caloforge.pipelines.compose).

Micro CaloDREAM and CaloLatent models (seconds of training on 120 GFlash ds2 showers)
prove end to end that each one's layer energies drive the other's shapes, through the
Python API and ``caloforge generate SHAPE --layer-energies-from ENERGY``; that models
without the needed half, or of another geometry, are refused in one line; and that
splitting the two generators into halves left their own ``sample`` bit-identical.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from caloforge.cli.main import main
from caloforge.configs import get_preset, override_config
from caloforge.errors import ConfigError
from caloforge.geometry import get_geometry
from caloforge.io import ShowerFile
from caloforge.pipelines import (
    ComposedGenerator,
    LayerEnergyModel,
    ShapeModel,
    ShowerGenerator,
    check_layer_energies,
    compose_checkpoints,
    load_generator,
    train_pipeline,
)
from caloforge.sampling import parse_sde_sampler
from caloforge.simulation import simulate_to_file

DS2 = get_geometry("ds2")
L = DS2.n_layers
pytestmark = pytest.mark.usefixtures("one_thread")

#: incident energies across the ds2 range, MeV
E = torch.tensor([2e3, 1.5e4, 8e4, 3e5, 9e5])


def _micro(pipeline: str) -> object:
    """The framework's micro configuration of a pipeline (tests/test_pipeline_framework.py),
    2 steps per stage and no bespoke-solver stage: the models only need to be trained
    checkpoints, not good ones."""
    if pipeline == "calodream":
        from caloforge.pipelines.calodream import micro_overrides

        return override_config(get_preset("calodream-ds2-tiny"),
                               overrides=micro_overrides(2) + ["bns.enabled=false"])
    from caloforge.pipelines.calolatent import micro_overrides

    return override_config(get_preset("calolatent-ds2-tiny"), overrides=micro_overrides(2))


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compose")
    data = root / "ds2.h5"
    simulate_to_file(data, DS2, 120, seed=11, progress=False)
    torch.set_num_threads(1)
    for p in ("calodream", "calolatent"):
        train_pipeline(_micro(p), data, root / p, progress=False)
    return {"calodream": root / "calodream", "calolatent": root / "calolatent"}


@pytest.fixture
def dream(ckpts):
    return load_generator(ckpts["calodream"])


@pytest.fixture
def latent(ckpts):
    return load_generator(ckpts["calolatent"])


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _layer_sums(showers: torch.Tensor) -> torch.Tensor:
    return showers.to(torch.float64).reshape(len(showers), L, -1).sum(-1)


def _assert_layers_match(showers: torch.Tensor, target: torch.Tensor, threshold: float) -> None:
    """Per-layer sums equal ``target`` up to the output threshold and float32 rounding.

    A threshold sets voxels below ``threshold`` to 0 after the renormalisation, so a layer
    loses less than ``threshold`` per voxel it zeroed: 0 <= target - sum <
    n_zeroed * threshold. Everything else differs by the float32 cast of the output
    (relative 2^-24 per voxel, summed over at most 144 voxels: 1e-5 of the layer is ample).
    """
    sums = _layer_sums(showers)
    zeroed = (showers == 0).reshape(len(showers), L, -1).sum(-1).to(torch.float64)
    tol = 1e-5 * target + 1e-9
    lost = target - sums
    assert (lost >= -tol).all(), (lost.min(), "layer sums above the given energies")
    assert (lost <= zeroed * threshold + tol).all(), (lost.max(), "energy lost beyond threshold")


def _check_showers(showers: torch.Tensor, n: int) -> None:
    assert showers.shape == (n, DS2.n_voxels) and showers.dtype == torch.float32
    assert torch.isfinite(showers).all() and (showers >= 0).all()


# ------------------------------------------------------------------ (1), (2) end to end
def test_calodream_energies_with_calolatent_shapes(dream, latent):
    composed = ComposedGenerator(dream, latent)
    assert isinstance(composed, ShowerGenerator)
    assert isinstance(dream, LayerEnergyModel) and isinstance(latent, ShapeModel)
    showers = composed.sample(E, generator=_gen(7))
    _check_showers(showers, len(E))
    # the same generator stream: the energy model draws first, from a fresh seed 7
    layers = dream.sample_layer_energies(E, generator=_gen(7))
    assert layers.shape == (len(E), L) and (layers.sum(1) > 0).all()
    thr = latent.config.output_threshold_mev
    assert thr > 0
    _assert_layers_match(showers, layers, thr)
    # the check can fail: CaloDREAM's energies of another stream, and CaloLatent's own
    # layer model on the same stream, are not what the showers were scaled to
    with pytest.raises(AssertionError):
        _assert_layers_match(showers, dream.sample_layer_energies(E, generator=_gen(8)), thr)
    with pytest.raises(AssertionError):
        _assert_layers_match(showers, latent.sample_layer_energies(E, generator=_gen(7)), thr)
    # without the threshold the layer sums are the energies up to float32 rounding
    # (and without the voxel map, which empties voxels below its own fitted threshold)
    latent.config.output_threshold_mev = 0.0
    calibration, latent.calibration = latent.calibration, None
    try:
        exact = composed.sample(E, generator=_gen(7))
    finally:
        latent.calibration = calibration
    torch.testing.assert_close(_layer_sums(exact), layers, rtol=1e-5, atol=1e-9)


def test_calolatent_energies_with_calodream_shapes(dream, latent):
    composed = ComposedGenerator(latent, dream)
    showers = composed.sample(E, batch_size=2, generator=_gen(3))
    _check_showers(showers, len(E))
    # batch by batch, each batch's layer energies come first from the stream
    gen = _gen(3)
    layers = []
    for lo in range(0, len(E), 2):
        layers.append(latent.sample_layer_energies(E[lo:lo + 2], generator=gen))
        dream.sample_given_layer_energies(E[lo:lo + 2], layers[-1], generator=gen)
    layers = torch.cat(layers)
    assert (layers.sum(1) > 0).all()
    # CaloDREAM's tiny preset: no output threshold, no normalised cut (full space), so
    # every layer holds exactly its energy (up to the float32 output)
    assert dream.config.output_threshold_mev == 0 and dream.config.normalised_cut == 0
    torch.testing.assert_close(_layer_sums(showers), layers, rtol=1e-5, atol=1e-9)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(_layer_sums(showers),
                                   dream.sample_layer_energies(E, generator=_gen(3)),
                                   rtol=1e-5, atol=1e-9)


def test_same_system_halves_compose_and_ranges_warn(dream, latent, ckpts):
    # a system's own halves compose too; CaloDREAM's sample scales its layers to exactly
    # the energies its sample_layer_energies gives for the same stream
    own = dream.sample(E, generator=_gen(5))
    torch.testing.assert_close(_layer_sums(own), dream.sample_layer_energies(E, generator=_gen(5)),
                               rtol=1e-5, atol=1e-9)
    other = load_generator(ckpts["calodream"])
    other.config.energy_range = (1e3, 1e5)
    with pytest.warns(UserWarning, match="outside the overlap"):
        c = ComposedGenerator(dream, other)
    assert c.training_energy_range == (1e3, 1e5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ComposedGenerator(dream, latent).training_energy_range == (1e3, 1e6)


def test_shape_model_refuses_bad_layer_energies(latent, dream):
    good = torch.full((2, L), 10.0)
    with pytest.raises(ConfigError, match=r"shape \(2, 45\)"):
        latent.sample_given_layer_energies(E[:2], good[:, :44])
    with pytest.raises(ConfigError, match="finite and >= 0"):
        dream.sample_given_layer_energies(E[:2], -good)
    assert check_layer_energies(good, 2, L).dtype == torch.float64
    with pytest.raises(ConfigError, match="two checkpoints"):
        ComposedGenerator(dream, latent).save("somewhere")


# ------------------------------------------------------------------ (3) the CLI
def test_cli_composes_two_checkpoints(ckpts, tmp_path, capsys):
    out = tmp_path / "mixed.h5"
    args = ["generate", str(ckpts["calolatent"]), "--layer-energies-from",
            str(ckpts["calodream"]), "-n", "3", "--energy", "log-uniform:2GeV:500GeV",
            "--seed", "4", "--solver", "em-2", "--no-progress", "--threads", "1",
            "-o", str(out)]
    assert main(args) == 0
    assert "wrote 3 showers" in capsys.readouterr().out
    with ShowerFile(out) as f:
        data = f.read()
        assert f.attrs["layer_energies_from"] == str(ckpts["calodream"])
    assert data.showers.shape == (3, DS2.n_voxels) and np.isfinite(data.showers).all()
    # the file is the composition's sample for the file's energies and seed, with
    # --solver applied to the shape model (CaloLatent's em-4 default would differ)
    composed = compose_checkpoints(ckpts["calolatent"], ckpts["calodream"])
    energies = torch.from_numpy(data.incident_energies)
    default = composed.sample(energies, generator=_gen(4)).numpy()
    composed.set_solver("em-2")
    assert composed.shape_model.latent_sampler.name == parse_sde_sampler("em-2").name
    expected = composed.sample(energies, generator=_gen(4)).numpy()
    # float32 rounding differs between the CLI's batched path and this one by a few
    # 1e-7 relative, which the solve can grow past 1e-6 on some CPUs; another solver or
    # seed differs at order 1
    np.testing.assert_allclose(data.showers, expected, rtol=1e-5, atol=0)
    assert not np.allclose(data.showers, default, rtol=1e-3)


# ------------------------------------------------------------------ (4) refusals
def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_calovq_has_no_layer_energy_stage_to_lend(ckpts, tmp_path, capsys):
    base = ["-n", "2", "--no-progress", "-o", str(tmp_path / "x.h5")]
    assert main(["generate", str(ckpts["calolatent"]), "--layer-energies-from",
                 "calovq-ds2-tiny", *base]) == 2
    assert "no separate layer-energy model" in _one_line_error(capsys)
    assert main(["generate", "calovq-ds2-tiny", "--layer-energies-from",
                 str(ckpts["calodream"]), *base]) == 2
    assert "cannot generate shapes for given layer energies" in _one_line_error(capsys)
    assert not (tmp_path / "x.h5").exists()


def test_models_of_different_geometries_are_refused(ckpts, tmp_path, capsys):
    # an untrained ds3 CaloLatent checkpoint: composition is refused before any sampling
    from caloforge.pipelines.calolatent import micro_overrides
    from caloforge.pipelines.calolatent.model import (
        CaloLatent,
        CaloLatentTransforms,
        build_calolatent_models,
    )

    ds3 = get_geometry("ds3")
    config = override_config(get_preset("calolatent-ds2-tiny"), overrides=micro_overrides(2) + [
        "geometry=ds3", f"vae.data_shape={list(ds3.image_shape)}",
        "vae.padding=[[2, 1], [1, 1], [1, 1]]", "latent_model.latent_dim=780"])
    CaloLatent(config, ds3, *build_calolatent_models(config),
               CaloLatentTransforms.new(config, ds3)).save(tmp_path / "ds3")
    assert main(["generate", str(tmp_path / "ds3"), "--layer-energies-from",
                 str(ckpts["calodream"]), "-n", "2", "--no-progress",
                 "-o", str(tmp_path / "x.h5")]) == 2
    assert "bin their voxels differently" in _one_line_error(capsys)
    assert not (tmp_path / "x.h5").exists()


def test_models_of_different_layer_counts_are_refused(dream):
    class Shapes:  # the check reads only the geometry: no network needed
        geometry = get_geometry("ds1-photons")

        def sample_given_layer_energies(self, incident_energy, layer_energies, *,
                                        generator=None):
            raise AssertionError("never reached")

    with pytest.raises(ConfigError, match=r"different layer counts \(45 vs 24\)"):
        ComposedGenerator(dream, Shapes())


# ------------------------------------------------------------------ (5) bit-identical
def _calodream_reference(m, e: torch.Tensor, batch_size: int, gen: torch.Generator):
    """CaloDREAM.sample as it was before the split into halves (git history), written
    from the networks, solvers and transforms alone."""
    t, out = m.transforms, []
    with torch.inference_mode():
        for lo in range(0, len(e), batch_size):
            eb = e[lo:lo + batch_size].to(torch.float64)
            c = t.condition(eb)
            u = m.energy_net.sample(c, lambda f, x0: m.energy_solver.solve(f, x0), generator=gen)
            cond = torch.cat([t.condition(eb), u], dim=1)
            x0 = torch.randn((len(cond), m.config.shape.in_channels, *m.config.shape.volume),
                             generator=gen)
            x1 = m.shape_solver.solve(lambda x, s, cond: m.shape_net(x, s, cond), x0, cond=cond)
            fractions = t.fractions_from_voxel_features(x1.reshape(len(x1), -1))
            showers = t.showers(fractions, t.layer_energies(u, eb), cut=m.config.normalised_cut)
            thr = m.config.output_threshold_mev
            if thr > 0:
                showers = torch.where(showers < thr, torch.zeros_like(showers), showers)
            showers = showers.to(torch.float32)
            if m.calibration is not None:      # added after the split: the voxel map
                showers = m.calibration(showers, eb)
            out.append(showers)
    return torch.cat(out)


def _calolatent_reference(m, e: torch.Tensor, batch_size: int, gen: torch.Generator):
    """CaloLatent.sample as it was before the split, from its parts."""
    t, out = m.transforms, []
    layer_s = parse_sde_sampler(m.config.layer_sampler, rho=m.config.ode_rho)
    latent_s = parse_sde_sampler(m.config.latent_sampler, rho=m.config.ode_rho)
    with torch.inference_mode():
        for lo in range(0, len(e), batch_size):
            eb = e[lo:lo + batch_size].to(torch.float64)
            c = t.condition(eb)
            x = torch.randn((len(c), m.config.layer_model.dim), generator=gen)
            u = layer_s.sample(m.path, m.layer_model, x, generator=gen, cond=c)
            x = torch.randn((len(c), m.config.vae.latent_dim), generator=gen)
            cond = torch.cat([c, u], dim=1)
            z = latent_s.sample(m.path, m.latent_model, x, generator=gen, cond=cond)
            f_model = m.vae.decode(z, cond)
            if m.decoder_noise is not None:   # added after the split: a draw of the decoder
                flat = f_model.reshape(len(eb), -1)
                f_model = m.decoder_noise(flat, eb, torch.randn(flat.shape, generator=gen))
            fractions, soft = t.decode_voxels(f_model.reshape(len(eb), -1))
            showers = t.showers(fractions, t.decode_layers(u, eb), fallback=soft)
            thr = m.config.output_threshold_mev
            showers = torch.where(showers < thr, torch.zeros_like(showers), showers)
            showers = showers.to(torch.float32)
            if m.calibration is not None:      # added after the split: the voxel map
                showers = m.calibration(showers, eb)
            out.append(showers)
    return torch.cat(out)


@pytest.mark.parametrize("system", ["calodream", "calolatent"])
def test_sample_is_bit_identical_to_before_the_split(system, dream, latent):
    model, reference = ((dream, _calodream_reference) if system == "calodream"
                        else (latent, _calolatent_reference))
    if system == "calodream":
        assert model.config.space == "full"  # the reference is written for full space
    got = model.sample(E, batch_size=2, generator=_gen(11))
    assert torch.equal(got, reference(model, E, 2, _gen(11)))
    # the check can fail: another seed gives other showers
    assert not torch.equal(got, reference(model, E, 2, _gen(12)))
