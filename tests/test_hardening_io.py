"""Every bad input file is one clean error; writers never leave a temporary behind.

Covers: the error path of every input file (data, ``--energies-from``, reference,
generated), ``info`` on an empty file and into a closed pipe, ``simulate`` with an
impossible energy or a directory as output, full disks, SIGTERM/SIGINT during a write, and
the removal of temporaries left by ``kill -9``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from caloforge.cli.main import main
from caloforge.errors import CaloforgeError, InputFileError, OutputError
from caloforge.geometry import get_geometry
from caloforge.io import (
    ShowerData,
    ShowerDataError,
    ShowerFile,
    ShowerWriter,
    check_output_path,
    checks,
    h5output,
    read_incident_energies,
    read_showers,
    remove_stale_temporaries,
    summarize_file,
    write_showers,
)
from caloforge.simulation import parse_energy_spectrum

DS2 = get_geometry("ds2")


def _sample(n=8, seed=0) -> ShowerData:
    rng = np.random.default_rng(seed)
    s = rng.exponential(1.0, (n, DS2.n_voxels)).astype(np.float32)
    s[rng.random(s.shape) < 0.8] = 0.0
    return ShowerData(rng.uniform(1e3, 1e5, n), s, DS2)


def _raw(path, **datasets):
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f.create_dataset(k, data=v)
    return path


def _one_line_error(capsys, rc):
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def good(tmp_path):
    p = tmp_path / "good.h5"
    write_showers(p, _sample(), compression=None)
    return p


def _bad_files(tmp_path, good):
    """(name, path, words the message must contain) for every kind of bad input file."""
    out = []
    out.append(("missing", tmp_path / "nope.h5", "does not exist"))
    (tmp_path / "adir.h5").mkdir()
    out.append(("directory", tmp_path / "adir.h5", "is a directory"))
    (tmp_path / "text.h5").write_text("not hdf5 at all")
    out.append(("not HDF5", tmp_path / "text.h5", "not an HDF5 file"))
    (tmp_path / "empty.h5").write_bytes(b"")
    out.append(("0 bytes", tmp_path / "empty.h5", "empty (0 bytes)"))
    raw = good.read_bytes()
    (tmp_path / "cut.h5").write_bytes(raw[: len(raw) // 2])
    out.append(("truncated", tmp_path / "cut.h5", "truncated"))
    out.append(("0 showers", _raw(tmp_path / "zero.h5", incident_energies=np.zeros((0, 1)),
                                  showers=np.zeros((0, DS2.n_voxels), np.float32)),
                "no showers"))
    out.append(("missing dataset", _raw(tmp_path / "nos.h5", incident_energies=np.ones((2, 1))),
                "dataset missing"))
    out.append(("wrong shape", _raw(tmp_path / "shape.h5", incident_energies=np.ones((2, 1)),
                                    showers=np.ones((2, 3, 4))), "expected shape"))
    out.append(("strings", _raw(tmp_path / "str.h5", incident_energies=np.ones((2, 1)),
                                showers=np.array([[b"a"] * DS2.n_voxels] * 2)), "not numbers"))
    e, v = np.full((6, 1), 1e4), np.ones((6, DS2.n_voxels))
    out.append(("NaN energy", _raw(tmp_path / "nan.h5", incident_energies=np.where(
        np.arange(6)[:, None] == 4, np.nan, e), showers=v), "NaN"))
    out.append(("inf voxel", _raw(tmp_path / "inf.h5", incident_energies=e,
                                  showers=np.where(np.eye(6, DS2.n_voxels) > 0, np.inf, 0.0)),
                "infinite"))
    out.append(("negative energy", _raw(tmp_path / "neg.h5", incident_energies=-e, showers=v),
                "non-positive"))
    out.append(("unknown geometry", _raw(tmp_path / "geo.h5", incident_energies=np.ones((2, 1)),
                                         showers=np.ones((2, 77))), "77 voxels"))
    return out


def test_every_bad_input_file_is_one_line_in_info_and_evaluate(tmp_path, good, capsys):
    for name, path, words in _bad_files(tmp_path, good):
        rc = main(["info", str(path)])
        if name == "0 showers":  # info describes an empty file instead of failing
            out = capsys.readouterr().out
            assert rc == 0 and "holds no showers" in out and "nan" not in out.lower()
        else:
            err = _one_line_error(capsys, rc)
            assert str(path) in err and words in err, (name, err)
        for option, argv in (("--reference", ["--reference", str(path), "--generated", str(good)]),
                             ("--generated", ["--reference", str(good), "--generated", str(path)])):
            rc = main(["evaluate", *argv, "--out", str(tmp_path / "ev"), "--classifier", "none",
                       "--no-plots", "--quiet", "--no-cache"])
            err = _one_line_error(capsys, rc)
            assert f"{option} {path}" in err and words in err, (name, option, err)


def test_unreadable_file_is_one_line(tmp_path, good, capsys, monkeypatch):
    # as root (CI) permission bits never stop a read; the probe is where a
    # PermissionError would surface, so it is made to raise there
    def denied(path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(checks, "_open_for_probe", denied)
    err = _one_line_error(capsys, main(["info", str(good)]))
    assert "permission denied" in err and str(good) in err
    with pytest.raises(InputFileError, match="--energies-from .*permission denied"):
        read_incident_energies(good, option="--energies-from")


def test_wrong_geometry_names_the_option(tmp_path, good, capsys):
    rc = main(["evaluate", "--reference", str(good), "--generated", str(good), "--geometry", "ds3",
               "--out", str(tmp_path / "o"), "--classifier", "none", "--quiet", "--no-plots"])
    err = _one_line_error(capsys, rc)
    assert "--reference" in err and "40500" in err


def test_energies_from_is_validated_like_any_input(tmp_path, good):
    assert np.allclose(read_incident_energies(good), _sample().incident_energies, rtol=1e-6)
    flat = _raw(tmp_path / "flat.h5", incident_energies=np.array([1e3, 2e3]))
    assert read_incident_energies(flat).tolist() == [1e3, 2e3]
    cases = [
        (_raw(tmp_path / "two.h5", incident_energies=np.ones((3, 2))), r"shape \(N, 1\) or \(N,\)"),
        (_raw(tmp_path / "nan.h5", incident_energies=np.array([1.0, np.nan])), "NaN"),
        (_raw(tmp_path / "zero.h5", incident_energies=np.array([1.0, 0.0])), "non-positive"),
        (_raw(tmp_path / "none.h5", incident_energies=np.zeros((0, 1))), "no incident energies"),
        (_raw(tmp_path / "other.h5", x=np.ones(3)), "no 'incident_energies'"),
        (tmp_path, "is a directory"),
    ]
    for path, match in cases:
        with pytest.raises(ShowerDataError, match=match) as exc:
            parse_energy_spectrum(f"file:{path}", option="--energies-from")
        assert str(exc.value).startswith(f"--energies-from {path}")
        assert len(str(exc.value).splitlines()) == 1


def test_info_on_empty_file_says_so(tmp_path):
    p = _raw(tmp_path / "zero.h5", incident_energies=np.zeros((0, 1)),
             showers=np.zeros((0, DS2.n_voxels), np.float32))
    s = summarize_file(p)
    assert s["n_showers"] == 0 and s["response_mean"] is None and s["sparsity_mean"] is None


def test_info_streams_in_small_chunks(tmp_path, monkeypatch):
    # the summary of a dataset-3 file holds at most ~500 showers at a time
    from caloforge.io import summary

    seen = []
    real = ShowerFile.iter_chunks

    def spy(self, chunk_size=10_000, start=0, stop=None):
        seen.append(chunk_size)
        return real(self, chunk_size, start, stop)

    monkeypatch.setattr(ShowerFile, "iter_chunks", spy)
    g3 = get_geometry("ds3")
    write_showers(tmp_path / "d3.h5", ShowerData(np.full(3, 1e4), np.ones((3, g3.n_voxels)), g3))
    summary.summarize_file(tmp_path / "d3.h5")
    assert seen == [500]


def test_info_into_a_closed_pipe_has_no_traceback(good):
    p = subprocess.Popen([sys.executable, "-m", "caloforge", "info", str(good)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # the reader is gone before caloforge prints (as `| head -0`)
    err = p.stderr.read().decode()
    p.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert p.returncode == 141


@pytest.mark.parametrize("args, needle", [
    (["--energy", "fixed:1e9TeV"], "10 TeV"),
    (["--energy", "uniform:1TeV:20TeV"], "10 TeV"),
])
def test_simulate_refuses_energies_beyond_the_model(tmp_path, capsys, args, needle):
    out = tmp_path / "x.h5"
    err = _one_line_error(capsys, main(["simulate", "-n", "3", "-o", str(out), "--no-progress", *args]))
    assert needle in err
    assert list(tmp_path.iterdir()) == []


def test_simulate_into_a_directory_fails_before_simulating(tmp_path, capsys):
    d = tmp_path / "out"
    d.mkdir()
    err = _one_line_error(capsys, main(["simulate", "-n", "3", "-o", str(d), "--no-progress"]))
    assert "is a directory" in err
    assert list(d.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(OutputError, match="directory"):
        check_output_path(d)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputError, match="not a directory"):
        check_output_path(f / "x.h5")


def test_simulate_energy_file_errors_name_the_option(tmp_path, capsys):
    err = _one_line_error(capsys, main(["simulate", "-n", "3", "-o", str(tmp_path / "x.h5"),
                                        "--energy", f"file:{tmp_path}", "--no-progress"]))
    assert f"--energy file:{tmp_path}: is a directory" in err


def test_full_disk_is_one_error_and_removes_the_temporary(tmp_path, good, monkeypatch):
    target = tmp_path / "w.h5"
    write_showers(target, _sample(n=2))
    before = target.read_bytes()
    real = h5py.Dataset.__setitem__

    def full(self, key, value):
        if self.name == "/showers":
            raise OSError(28, "Can't write data (file write failed: errno = 28, "
                              "error message = 'No space left on device')")
        return real(self, key, value)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", full)
    with pytest.raises(OutputError, match="no space left on device; the temporary file was removed"):
        write_showers(target, _sample(n=5))
    monkeypatch.setattr(h5py.Dataset, "__setitem__", real)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert target.read_bytes() == before  # the old file untouched

    # too little free space is refused before the first byte is written
    monkeypatch.setattr(h5output, "free_bytes", lambda d: 1000)
    with pytest.raises(OutputError, match="no space left on device"):
        write_showers(tmp_path / "new.h5", _sample(n=2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.h5", "w.h5"]


def test_exception_inside_a_writer_removes_the_temporary(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with ShowerWriter(tmp_path / "a.h5", DS2) as w:
            w.write(_sample(n=2))
            raise ZeroDivisionError("a bug inside the with block")
    assert list(tmp_path.iterdir()) == []


def _wait_for(pred, timeout=60.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.05)
    return False


def _temporaries(d):
    return [p for p in d.iterdir() if p.name.endswith(".tmp")]


def _start_simulate(out):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "caloforge", "simulate", "-n", "1000000", "--chunk-size", "128",
         "--no-progress", "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env)


@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "SIGTERM"),
                                             (signal.SIGINT, 130, "SIGINT")])
def test_signal_during_a_write_removes_the_temporary(tmp_path, sig, code, word):
    out = tmp_path / "big.h5"
    p = _start_simulate(out)
    try:
        # wait until the first chunk is in the temporary file
        assert _wait_for(lambda: any(t.stat().st_size > 20_000 for t in _temporaries(tmp_path)))
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    err = err.decode().strip()
    assert p.returncode == code, err
    assert len(err.splitlines()) == 1 and word in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_kill_9_leftovers_are_removed_by_the_next_write(tmp_path):
    out = tmp_path / "big.h5"
    p = _start_simulate(out)
    try:
        assert _wait_for(lambda: bool(_temporaries(tmp_path)))
        p.kill()
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    left = _temporaries(tmp_path)
    assert len(left) == 1 and left[0].name.startswith(".big.h5.")
    # an older naming without a process id, older than this process: also stale
    old = tmp_path / ".big.h5.abc123.h5.tmp"
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 86400, time.time() - 86400))
    # a temporary of a live writer (this very process) and other files stay
    live = tmp_path / f".big.h5.p{os.getpid()}-live.h5.tmp"
    live.write_bytes(b"x")
    other = tmp_path / ".other.h5.p999999999-x.h5.tmp"
    other.write_bytes(b"x")
    write_showers(out, _sample(n=2))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["big.h5", live.name, other.name])
    assert len(read_showers(out)) == 2
    assert remove_stale_temporaries(out) == []


def test_errors_are_caloforge_errors_with_the_option():
    e = ShowerDataError("broken", path="a.h5", dataset="showers").with_option("--reference")
    assert isinstance(e, CaloforgeError) and str(e) == "--reference a.h5 [showers]: broken"
    assert str(ShowerDataError("x", path="a.h5")) == "a.h5: x"
