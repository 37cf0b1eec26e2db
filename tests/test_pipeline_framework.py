"""The pipeline framework: registry, generic staged training, seeding, resume, NaN guards.

Every registered pipeline trains, saves, loads and generates through the same framework
calls; a new pipeline must add a micro configuration to ``MICRO`` below.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from caloforge.checkpoints import load_checkpoint
from caloforge.configs import get_preset, override_config
from caloforge.errors import CheckpointError, ConfigError, GenerationError
from caloforge.geometry import get_geometry
from caloforge.io import read_point_clouds
from caloforge.pipelines import (
    generate_to_file,
    get_pipeline,
    load_generator,
    pipeline_for_config,
    pipeline_for_preset,
    pretrained_models,
    registered_pipelines,
    train_pipeline,
)
from caloforge.simulation import point_clouds_to_file, simulate_to_file

DS2 = get_geometry("ds2")
pytestmark = pytest.mark.usefixtures("one_thread")


def _calovq_micro(steps: int = 6) -> list[str]:
    sets = ["vqvae.channels=[8, 8]", "discriminator.channels=[8]", "gan.start=2", "gan.ramp=1",
            "gpt.n_layers=1", "gpt.d_model=16"]
    for stage in ("vqvae", "gpt"):
        sets += [f"training.{stage}.max_steps={steps}", f"training.{stage}.warmup_steps=1",
                 f"training.{stage}.batch_size=16", f"training.{stage}.checkpoint_every=2",
                 f"training.{stage}.val_every=0", f"training.{stage}.ema_decay=0.9"]
    return sets


def _calodream_micro(steps: int = 6) -> list[str]:
    from caloforge.pipelines.calodream import micro_overrides

    return micro_overrides(steps)


def _calolatent_micro(steps: int = 6) -> list[str]:
    from caloforge.pipelines.calolatent import micro_overrides

    return micro_overrides(steps)


def _caloclouds_micro(steps: int = 6) -> list[str]:
    from caloforge.pipelines.caloclouds import micro_overrides

    return micro_overrides(steps)


#: pipeline -> (tiny preset, overrides that make it train in seconds)
MICRO = {
    "calovq": ("calovq-ds2-tiny", _calovq_micro),
    "calodream": ("calodream-ds2-tiny", _calodream_micro),
    "calolatent": ("calolatent-ds2-tiny", _calolatent_micro),
    "caloclouds": ("caloclouds2-ild-tiny", _caloclouds_micro),
}


def micro_config(pipeline: str, steps: int = 6):
    preset, sets = MICRO[pipeline]
    return override_config(get_preset(preset), overrides=sets(steps))


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "ds2.h5"
    simulate_to_file(path, DS2, 120, seed=11, progress=False)
    return path


@pytest.fixture(scope="module")
def point_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "points.h5"
    point_clouds_to_file(path, 120, seed=11, progress=False)
    return path


@pytest.fixture
def data_of(data_file, point_file):
    """The training file a pipeline reads: voxels (ds2) or point clouds (ILD-like ECAL)."""
    return lambda pipeline: point_file if get_pipeline(pipeline).data_kind == "points" \
        else data_file


def _weights(out: Path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(out)
    tensors = {}
    for stage in ckpt.stages:
        for k, v in load_file(str(out / ckpt.stage_info(stage)["weights"])).items():
            tensors[f"{stage}:{k}"] = v
    return tensors


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_every_pipeline_has_a_micro_config_and_presets():
    assert set(registered_pipelines()) == set(MICRO)
    for name in registered_pipelines():
        spec = get_pipeline(name)
        assert spec.presets and spec.stages
        for preset in spec.presets:
            assert pipeline_for_preset(preset) is spec
            assert pipeline_for_config(get_preset(preset)) is spec


def test_unknown_pipeline_and_preset_suggest():
    with pytest.raises(ConfigError, match="did you mean 'calovq'"):
        get_pipeline("calovqq")
    with pytest.raises(ConfigError, match="did you mean 'calovq-ds2-tiny'"):
        pipeline_for_preset("calovq-ds2-tinny")


@pytest.mark.parametrize("pipeline", sorted(MICRO))
def test_pipeline_trains_saves_loads_generates(pipeline, data_of, tmp_path):
    out = tmp_path / "m"
    model = train_pipeline(micro_config(pipeline), data_of(pipeline), out, progress=False)
    assert model is not None
    if get_pipeline(pipeline).data_kind == "points":
        e = torch.tensor([1.5e4, 4e4, 8e4])
        a = model.sample(e, generator=torch.Generator().manual_seed(3))
        assert len(a) == 3 and np.isfinite(a.points).all() and (a.points[:, 3] >= 0).all()
        np.testing.assert_array_equal(a.incident_energies, e.numpy())
        model.save(tmp_path / "copy")
        b = load_generator(tmp_path / "copy").sample(e, generator=torch.Generator().manual_seed(3))
        np.testing.assert_array_equal(a.n_points, b.n_points)
        np.testing.assert_allclose(a.points, b.points, rtol=1e-5, atol=1e-5)
        generate_to_file(model, np.array([2e4, 5e4]), tmp_path / "g.h5", progress=False)
        assert len(read_point_clouds(tmp_path / "g.h5")) == 2
        return
    e = torch.tensor([2e3, 4e4, 6e5])
    a = model.sample(e, generator=torch.Generator().manual_seed(3))
    assert a.shape == (3, DS2.n_voxels) and torch.isfinite(a).all() and (a >= 0).all()
    model.save(tmp_path / "copy")
    back = load_generator(tmp_path / "copy")
    b = back.sample(e, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    generate_to_file(back, np.array([1e3, 1e4, 1e5]), tmp_path / "g.h5", progress=False)
    assert (tmp_path / "g.h5").stat().st_size > 0


@pytest.mark.parametrize("pipeline", sorted(MICRO))
def test_identical_runs_give_identical_weights(pipeline, data_of, tmp_path):
    train_pipeline(micro_config(pipeline, 3), data_of(pipeline), tmp_path / "a", progress=False)
    torch.manual_seed(1234)  # the global state before the run must not matter
    train_pipeline(micro_config(pipeline, 3), data_of(pipeline), tmp_path / "b", progress=False)
    _assert_same_weights(tmp_path / "a", tmp_path / "b")


def test_resume_between_stages_and_before_any_checkpoint(data_file, tmp_path):
    """Resume finishes from wherever a run stopped, in-process: between stages (stage 1
    complete, no stage-2 state) and before the first checkpoint (nothing written)."""
    train_pipeline(micro_config("calovq"), data_file, tmp_path / "full", progress=False)
    between = tmp_path / "between"
    train_pipeline(micro_config("calovq"), data_file, between, stages=("vqvae",),
                   progress=False)
    train_pipeline(micro_config("calovq"), data_file, between, resume=True, progress=False)
    _assert_same_weights(tmp_path / "full", between)
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    train_pipeline(micro_config("calovq"), data_file, nothing, resume=True, progress=False)
    _assert_same_weights(tmp_path / "full", nothing)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "caloforge", *args]


def _train_args(data_file: Path, out: Path, steps: int) -> list[str]:
    sets = [x for s in _calovq_micro(steps) for x in ("--set", s)]
    return ["train", "calovq-ds2-tiny", "--data", str(data_file), "-o", str(out),
            "--no-progress", "--threads", "1", *sets]


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 300.0) -> None:
    t0 = time.time()
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"training ended before the kill point (exit {proc.returncode})")
        if time.time() - t0 > timeout:
            proc.kill()
            pytest.skip("machine too slow to reach the kill point")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _stage_step(out: Path, stage: str) -> int:
    try:
        info = json.loads((out / "checkpoint.json").read_text())["stages"][stage]
    except (OSError, ValueError, KeyError):
        return -1
    return info.get("step") or 0


@pytest.mark.parametrize("where", ["stage1", "between", "stage2"])
def test_kill_9_then_resume_matches_uninterrupted(where, data_file, tmp_path):
    """A real ``caloforge train`` process killed with SIGKILL, then ``--resume``."""
    steps = 40
    full = tmp_path / "full"
    assert subprocess.run(_cli(*_train_args(data_file, full, steps)),
                          capture_output=True).returncode == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli(*_train_args(data_file, out, steps)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if where == "stage1":
        _kill_when(proc, lambda: 2 <= _stage_step(out, "vqvae") < steps)
    elif where == "between":
        _kill_when(proc, lambda: _stage_step(out, "vqvae") >= steps)
    else:
        _kill_when(proc, lambda: _stage_step(out, "gpt") >= 2)
    r = subprocess.run(_cli(*_train_args(data_file, out, steps), "--resume"),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    _assert_same_weights(full, out)
    # resumed logs do not repeat steps
    log = [json.loads(x) for x in (out / "vqvae.log.jsonl").read_text().splitlines()]
    loss_steps = [x["step"] for x in log if "generator" in x]
    assert len(loss_steps) == len(set(loss_steps))


def test_nan_weights_are_refused_on_save_and_load(data_file, tmp_path):
    out = tmp_path / "m"
    model = train_pipeline(micro_config("calovq", 3), data_file, out, progress=False)
    with torch.no_grad():
        next(model.vqvae.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(CheckpointError, match="NaN"):
        model.save(tmp_path / "bad")
    # a NaN written behind the format's back (with a fresh, valid sha256)
    w = out / "vqvae.safetensors"
    tensors = load_file(str(w))
    k = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[k].view(-1)[0] = float("nan")
    save_file(tensors, str(w), metadata={"format": "pt"})
    import hashlib

    manifest = json.loads((out / "checkpoint.json").read_text())
    manifest["stages"]["vqvae"]["sha256"] = hashlib.sha256(w.read_bytes()).hexdigest()
    manifest["stages"]["vqvae"]["size"] = w.stat().st_size
    (out / "checkpoint.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="NaN"):
        load_generator(out)


def test_nan_generator_fails_loudly_instead_of_writing_empty_showers(data_file, tmp_path):
    model = train_pipeline(micro_config("calovq", 3), data_file, tmp_path / "m", progress=False)
    with torch.no_grad():
        for p in model.vqvae.parameters():
            p.fill_(float("nan"))
    with pytest.raises(GenerationError, match="NaN"):
        model.sample(torch.tensor([1e4, 1e5]))
    with pytest.raises(GenerationError):
        generate_to_file(model, np.array([1e4]), tmp_path / "g.h5", progress=False)
    assert not (tmp_path / "g.h5").exists()


def test_checkpoint_without_hash_or_escaping_path_is_refused(data_file, tmp_path):
    out = tmp_path / "m"
    train_pipeline(micro_config("calovq", 3), data_file, out, progress=False)
    manifest = json.loads((out / "checkpoint.json").read_text())
    del manifest["stages"]["gpt"]["sha256"]
    (out / "checkpoint.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="no sha256"):
        load_generator(out)
    assert load_generator(out, verify=False) is not None  # explicit opt-out
    manifest["stages"]["gpt"]["weights"] = "../../elsewhere.safetensors"
    (out / "checkpoint.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="outside"):
        load_generator(out, verify=False)
    del manifest["stages"]
    (out / "checkpoint.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="stages"):
        load_generator(out)


def test_stored_config_is_strict(data_file, tmp_path):
    out = tmp_path / "m"
    train_pipeline(micro_config("calovq", 3), data_file, out, progress=False)
    manifest = json.loads((out / "checkpoint.json").read_text())
    good = json.dumps(manifest)
    del manifest["config"]["gpt"]["n_layers"]
    (out / "checkpoint.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="gpt.n_layers"):
        load_generator(out)
    manifest = json.loads(good)
    manifest["config"]["temprature"] = 1.0
    (out / "checkpoint.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="temprature"):
        load_generator(out)


def test_shipped_model_of_an_older_layout_is_migrated():
    model = load_generator("calovq-ds2-tiny")
    assert model.config.training.vqvae.max_steps > 0


def test_generation_does_not_import_the_training_loop():
    code = ("import sys, torch; from caloforge.pipelines import load_generator, generate_to_file; "
            "m = load_generator('calodream-ds2-tiny'); m.sample(torch.tensor([1e4])); "
            "print('caloforge.training.trainer' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "False"


@pytest.mark.parametrize("name", sorted(pretrained_models()))
def test_every_shipped_model_loads_verified_and_generates(name):
    # the installed package's weights, checked against their sha256, make showers of the
    # model's kind: finite, non-negative, one per energy
    model = load_generator(name)
    gen = torch.Generator().manual_seed(0)
    if getattr(model, "data_kind", "voxels") == "points":
        if hasattr(model, "set_solver"):
            model.set_solver("consistency-1")  # one network pass: seconds, not minutes
        out = model.sample(torch.tensor([2e4, 7e4]), generator=gen)
        assert len(out) == 2 and (out.n_points > 0).all()
        assert np.isfinite(out.points).all() and (out.points[:, 3] >= 0).all()
    else:
        out = model.sample(torch.tensor([1e4, 1e5]), generator=gen)
        assert out.shape == (2, model.geometry.n_voxels)
        assert torch.isfinite(out).all() and (out >= 0).all() and (out.sum(1) > 0).all()
