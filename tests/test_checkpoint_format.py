"""Checkpoint directories: round trip, stages, fingerprints and clear errors."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import caloforge
from caloforge.errors import CheckpointError
from caloforge.geometry import get_geometry
from caloforge.training import (
    FORMAT_VERSION,
    data_fingerprint,
    load_checkpoint,
    load_trainer_state,
    save_checkpoint,
    save_trainer_state,
)
from caloforge.transforms import LogTransform, ShowerNormalization, Standardize


@dataclasses.dataclass
class _Cfg:
    width: int = 4
    name: str = "toy"


def _net(seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    net[1].running_mean.uniform_()
    return net


def _save(tmp_path, geometry=None, stage="vqvae", seed=0, **kw):
    geometry = geometry or get_geometry("ds2")
    net = _net(seed)
    std = Standardize().fit(torch.randn(10, 3))
    save_checkpoint(
        tmp_path,
        stage,
        {"encoder": net},
        config=_Cfg(),
        geometry=geometry,
        transforms={
            "norm": ShowerNormalization.from_geometry(geometry, "global"),
            "log": LogTransform(1, 3000, 7),
            "std": std,
        },
        data_fingerprint="sha256:abc",
        step=5,
        **kw,
    )
    return net


def test_round_trip(tmp_path):
    net = _save(tmp_path)
    ck = load_checkpoint(tmp_path, expect_geometry=get_geometry("ds2"))
    m = ck.manifest
    assert m["format_version"] == FORMAT_VERSION and m["caloforge_version"] == caloforge.__version__
    assert ck.config == {"width": 4, "name": "toy"}
    assert ck.geometry == get_geometry("ds2")
    info = ck.stage_info("vqvae")
    assert info["step"] == 5 and info["data_fingerprint"] == "sha256:abc"
    assert info["provenance"]["host"] and info["provenance"]["argv"]
    other = _net(seed=1)
    ck.load_modules("vqvae", {"encoder": other})
    for k, v in net.state_dict().items():
        assert torch.equal(v, other.state_dict()[k])
    tr = ck.transforms()
    assert isinstance(tr["log"], LogTransform) and tr["norm"].mode == "global"
    assert tr["std"].is_fitted and tr["std"].state_dict() == m["transforms"]["std"]
    # the manifest is plain JSON
    json.loads((tmp_path / "checkpoint.json").read_text())


def test_stages_accumulate_and_geometry_must_agree(tmp_path):
    _save(tmp_path, stage="vqvae")
    _save(tmp_path, stage="prior", seed=3)
    ck = load_checkpoint(tmp_path)
    assert ck.stages == ["vqvae", "prior"]
    assert set(ck.state_dicts("prior")) == {"encoder"}
    with pytest.raises(CheckpointError, match="geometry 'ds2'.*'ds3'"):
        _save(tmp_path, geometry=get_geometry("ds3"), stage="third")
    with pytest.raises(CheckpointError, match="no stage 'nope'.*vqvae"):
        ck.stage_info("nope")


def test_wrong_geometry(tmp_path):
    _save(tmp_path)
    with pytest.raises(CheckpointError, match="made for geometry 'ds2', not for 'ds3'"):
        load_checkpoint(tmp_path, expect_geometry=get_geometry("ds3"))


def test_wrong_format_version(tmp_path):
    _save(tmp_path)
    p = tmp_path / "checkpoint.json"
    m = json.loads(p.read_text())
    m["format_version"] = FORMAT_VERSION + 1
    p.write_text(json.dumps(m))
    with pytest.raises(
        CheckpointError,
        match=f"format version {FORMAT_VERSION + 1}.*reads format version {FORMAT_VERSION}",
    ):
        load_checkpoint(tmp_path)


def test_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="no checkpoint.json"):
        load_checkpoint(tmp_path)
    _save(tmp_path)
    w = tmp_path / "vqvae.safetensors"
    good = w.read_bytes()
    w.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path).state_dicts("vqvae")
    flipped = bytearray(good)
    flipped[-3] ^= 0xFF  # same size, different bytes
    w.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(tmp_path).state_dicts("vqvae")
    # without a recorded hash the weights are refused, unless the user opts out; then
    # garbage still fails cleanly in safetensors parsing
    w.write_bytes(b"\x00" * len(good))
    m = json.loads((tmp_path / "checkpoint.json").read_text())
    m["stages"]["vqvae"]["sha256"] = None
    (tmp_path / "checkpoint.json").write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match="no sha256"):
        load_checkpoint(tmp_path).state_dicts("vqvae")
    with pytest.raises(CheckpointError, match="corrupt or truncated weights"):
        load_checkpoint(tmp_path, verify=False).state_dicts("vqvae")
    (tmp_path / "checkpoint.json").write_text('{"format": "caloforge-checkpoint", "format_ver')
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path)


def test_load_into_wrong_model(tmp_path):
    _save(tmp_path)
    with pytest.raises(CheckpointError, match="do not fit") as info:
        load_checkpoint(tmp_path).load_modules("vqvae", {"encoder": torch.nn.Linear(3, 3)})
    assert "\n" not in str(info.value)   # one line, whatever torch says
    # a shape mismatch names the first tensor, both shapes and how many more differ
    wider = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.BatchNorm1d(5),
                                torch.nn.Linear(5, 2))
    with pytest.raises(CheckpointError, match=r"0\.weight is \(4, 3\) in the file but "
                       r"\(5, 3\) in the model \(and 6 more tensor\(s\)\)"):
        load_checkpoint(tmp_path).load_modules("vqvae", {"encoder": wider})


def test_trainer_state_round_trip(tmp_path):
    t = {"a": torch.arange(5.0), "b": torch.zeros(2, dtype=torch.uint8)}
    save_trainer_state(tmp_path, "s", t, {"step": 3})
    save_trainer_state(tmp_path, "s", t, {"step": 4})  # replaces the old state
    tensors, meta = load_trainer_state(tmp_path, "s")
    assert meta["step"] == 4 and torch.equal(tensors["a"], t["a"])
    assert not list(tmp_path.glob(".s.trainer*"))
    with pytest.raises(CheckpointError, match="no resume state"):
        load_trainer_state(tmp_path, "other")


def test_data_fingerprint(tmp_path):
    rng = np.random.default_rng(0)
    x, e = rng.random((100, 8)), rng.random((100, 1))
    f = data_fingerprint({"showers": x, "energies": e})
    assert f.startswith("sha256:") and f == data_fingerprint({"energies": e, "showers": x})
    assert f == data_fingerprint({"showers": torch.from_numpy(x), "energies": torch.from_numpy(e)})
    assert f != data_fingerprint({"showers": x[:99], "energies": e[:99]})
    x2 = x.copy()
    x2[-1, 0] += 1
    assert f != data_fingerprint({"showers": x2, "energies": e})
    p = tmp_path / "d.h5"
    p.write_bytes(b"1234")
    assert data_fingerprint(x, path=p) != data_fingerprint(x)


def test_no_pickle_in_sources():
    root = Path(caloforge.__file__).parent
    pattern = re.compile(r"\bimport pickle\b|torch\.save\(|torch\.load\((?![^)]*weights_only=True)")
    for sub in ("training", "transforms", "configs"):
        for f in (root / sub).rglob("*.py"):
            assert not pattern.search(f.read_text()), f


def test_a_planar_geometry_is_stored_with_its_type(tmp_path):
    # a planar geometry is a dataclass too: its stored form must keep the "type" tag, or
    # the checkpoint could not be reopened for the same geometry
    import torch

    from caloforge.checkpoints import load_checkpoint, save_checkpoint
    from caloforge.geometry import PlanarGeometry, ild_ecal

    save_checkpoint(tmp_path / "c", "s", {"m": torch.nn.Linear(2, 2)}, geometry=ild_ecal())
    ckpt = load_checkpoint(tmp_path / "c", expect_geometry=ild_ecal())
    assert isinstance(ckpt.geometry, PlanarGeometry) and ckpt.geometry == ild_ecal()
