"""Defects found by ``scripts/hostile_inputs.py`` (issue 13's table re-run), each one a
clean error now: a full disk while training saves its state, ``train -o FILE``,
``train``/``generate --device tpu``, ``train --config DIR``."""

from __future__ import annotations

import os

import pytest
import torch

from caloforge.checkpoints.format import save_trainer_state
from caloforge.cli._common import check_output_dir
from caloforge.cli.main import main
from caloforge.configs import load_toml
from caloforge.errors import ConfigError, OutputError
from caloforge.io.atomic import is_environment_error, output_error


def _safetensors_error(text: str) -> Exception:
    from safetensors import SafetensorError

    return SafetensorError(text)


def test_safetensors_io_errors_are_environment_errors():
    full = _safetensors_error("Error while serializing: I/O error: No space left on device "
                              "(os error 28)")
    assert is_environment_error(full)
    assert "no space left on device" in str(output_error("x.safetensors", full))
    assert not is_environment_error(_safetensors_error("Error while deserializing header"))
    assert not is_environment_error(ValueError("os error 28"))  # only I/O error types


def test_full_disk_while_saving_the_resume_state_is_one_error(tmp_path, monkeypatch):
    import safetensors.torch

    def full(*args, **kwargs):
        raise _safetensors_error("Error while serializing: I/O error: No space left on device "
                                 "(os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(OutputError, match="vqvae.trainer: no space left on device"):
        save_trainer_state(tmp_path, "vqvae", {"w": torch.zeros(3)}, {"step": 1})
    assert os.listdir(tmp_path) == []  # the temporary state directory is gone


def test_unreadable_toml_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_toml(tmp_path)
    binary = tmp_path / "x.toml"
    binary.write_bytes(b"\xff\xfe\x00beta = 1")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_toml(binary)


def test_check_output_dir(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputError, match="exists and is not a directory"):
        check_output_dir(f)
    with pytest.raises(OutputError, match="is not a directory"):
        check_output_dir(f / "below" / "deeper")
    assert check_output_dir(tmp_path / "new" / "nested") == str(tmp_path / "new" / "nested")
    assert not (tmp_path / "new").exists()  # nothing created
    assert check_output_dir(tmp_path) == str(tmp_path)


@pytest.mark.parametrize("extra, words", [
    (["-o", "FILE"], "exists and is not a directory"),
    (["--device", "tpu"], "--device tpu"),
    (["--config", "DIR"], "is a directory"),
])
def test_train_rejects_bad_arguments_before_work(tmp_path, capsys, extra, words):
    data = tmp_path / "data.h5"
    data.write_bytes(b"not read before the arguments are checked")
    (tmp_path / "FILE").write_text("x")
    (tmp_path / "DIR").mkdir()
    argv = ["train", "calovq-ds2-tiny", "--data", str(data), "-o", str(tmp_path / "out")]
    extra = [str(tmp_path / x) if x in ("FILE", "DIR") else x for x in extra]
    if extra[0] == "-o":
        argv = argv[:-2]
    rc = main([*argv, *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and words in err, err
    assert not (tmp_path / "out").exists()


def test_generate_with_an_unknown_device_is_one_error(tmp_path, capsys):
    rc = main(["generate", "calovq-ds2-tiny", "-n", "2", "-o", str(tmp_path / "g.h5"),
               "--device", "tpu", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "tpu" in err, err
    assert not (tmp_path / "g.h5").exists()


def test_the_command_lets_idle_openmp_threads_sleep(tmp_path, monkeypatch, capsys):
    # spinning libgomp threads made `generate` 4-6x slower on a busy 2-core machine; the
    # policy is read when torch is imported, so the command sets it before any import
    import subprocess
    import sys

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    main(["train", "--list"])
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "active")
    main(["train", "--list"])
    assert os.environ["OMP_WAIT_POLICY"] == "active"  # the user's choice stays
    code = ("import sys; from caloforge.cli.main import build_parser; build_parser(); "
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "False", r.stderr[-500:]


def _shipped_copy(tmp_path):
    import shutil

    from caloforge.pipelines.loading import PRETRAINED_DIR

    d = tmp_path / "ckpt"
    shutil.copytree(PRETRAINED_DIR / "calovq-ds2-tiny", d)
    return d


def _deny(monkeypatch, target):
    """Make opening ``target`` fail with EACCES (as root, permission bits never do)."""
    import builtins
    import pathlib

    import caloforge.checkpoints.format as fmt

    real_open, real_read_text = builtins.open, pathlib.Path.read_text

    def guarded_open(path, *args, **kwargs):
        if os.fspath(path) == os.fspath(target):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, *args, **kwargs)

    def guarded_read_text(self, *args, **kwargs):
        if os.fspath(self) == os.fspath(target):
            raise PermissionError(13, "Permission denied", os.fspath(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(fmt, "open", guarded_open, raising=False)
    monkeypatch.setattr(pathlib.Path, "read_text", guarded_read_text)


@pytest.mark.parametrize("name", ["checkpoint.json", "vqvae.safetensors"])
def test_unreadable_checkpoint_files_are_one_error(tmp_path, monkeypatch, capsys, name):
    d = _shipped_copy(tmp_path)
    _deny(monkeypatch, d / name)
    rc = main(["generate", str(d), "-n", "2", "-o", str(tmp_path / "g.h5"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert f"cannot read {d / name}: permission denied" in err


def test_unreadable_weights_without_verification_are_one_error(tmp_path, monkeypatch):
    # safetensors reports a file it may not open as "No such file or directory"
    import safetensors.torch

    from caloforge.errors import CheckpointError
    from caloforge.pipelines import load_generator

    d = _shipped_copy(tmp_path)

    def not_found(path, device="cpu"):
        raise FileNotFoundError(f"No such file or directory: {path}")

    monkeypatch.setattr(safetensors.torch, "load_file", not_found)
    _deny(monkeypatch, d / "vqvae.safetensors")
    with pytest.raises(CheckpointError, match="vqvae.safetensors: permission denied"):
        load_generator(d, verify=False)


def test_too_small_training_file_names_the_option(tmp_path):
    import numpy as np

    from caloforge.geometry import get_geometry
    from caloforge.io import ShowerData, write_showers
    from caloforge.pipelines.staged import _read

    g = get_geometry("ds2")
    path = tmp_path / "five.h5"
    write_showers(path, ShowerData(np.full(5, 1e4), np.ones((5, g.n_voxels), np.float32), g))
    with pytest.raises(ConfigError, match=r"^--data .*five.h5: 5 showers are too few"):
        _read(path, g, None)


def test_an_output_error_is_not_wrapped_twice():
    # a writer's own free-space check raised "cannot write X: ...; the temporary file was
    # removed", which the writer's OSError handler wrapped into "cannot write X: cannot
    # write X: ...; the temporary file was removed; the temporary file was removed"
    first = OutputError("cannot write x.h5: no space left on device (1.0 MB free, about 4.2 MB "
                        "needed); the temporary file was removed")
    assert output_error("x.h5", first) is first


def test_bench_rejects_an_unknown_device_before_loading(capsys):
    rc = main(["bench", "calovq-ds2-tiny", "--device", "tpu"])
    err = capsys.readouterr()
    assert rc == 2 and "--device tpu" in err.err and "timing" not in err.out


def test_half_written_resume_states_of_killed_runs_are_removed(tmp_path):
    # `kill -9` while a stage saved its resume state left `.vqvae.trainer.<random>/` (with a
    # copy of the optimiser state) beside the checkpoint for good; the next save of that
    # stage removes such leftovers of dead processes and keeps everything else
    import time

    dead = tmp_path / ".vqvae.trainer.p999999999-abcd1234"
    live = tmp_path / f".vqvae.trainer.p{os.getpid()}-live0000"
    older = tmp_path / ".vqvae.trainer.k2j4_x9a"  # the naming before process ids
    other = tmp_path / ".gpt.trainer.p999999999-abcd1234"
    for d in (dead, live, older, other):
        d.mkdir()
        (d / "state.safetensors").write_bytes(b"x" * 10)
    os.utime(older, (time.time() - 86400, time.time() - 86400))
    save_trainer_state(tmp_path, "vqvae", {"w": torch.zeros(3)}, {"step": 1})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([live.name, other.name, "vqvae.trainer"]), names
    # the new state is complete and verified on load
    from caloforge.checkpoints.format import load_trainer_state

    tensors, meta = load_trainer_state(tmp_path, "vqvae")
    assert meta["step"] == 1 and torch.equal(tensors["w"], torch.zeros(3))
