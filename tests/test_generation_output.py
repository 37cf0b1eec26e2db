"""Generation to disk: background writes, compression choices, gzip chunks compressed
outside h5py, and nothing left under the final name when a run is interrupted."""

from __future__ import annotations

import threading
import time

import h5py
import numpy as np
import pytest
import torch

from caloforge.errors import CaloforgeError
from caloforge.geometry import get_geometry
from caloforge.io import BackgroundWrites, ShowerData, ShowerWriter, read_showers
from caloforge.io.deflate_rows import GZIP_LEVEL, write_rows
from caloforge.pipelines import generate_to_file

DS2 = get_geometry("ds2")


class _SparseModel:
    """Random sparse showers from the caller's generator (a stand-in for a model)."""

    geometry = DS2

    def __init__(self, fail_at: int | None = None):
        self.calls, self.fail_at = 0, fail_at

    def sample(self, incident_energy, *, batch_size=1000, generator=None):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt("interrupted while sampling")
        x = torch.rand(len(incident_energy), DS2.n_voxels, generator=generator)
        return torch.where(x > 0.8, 100 * x, torch.zeros(()))


def _rows(n, seed=0):
    x = np.random.default_rng(seed).exponential(1.0, (n, DS2.n_voxels)).astype(np.float32)
    x[x < 1.5] = 0.0
    return x


def _dataset(path, compression, n_rows, rows_per_chunk=8):
    f = h5py.File(path, "w")
    opts = GZIP_LEVEL if compression == "gzip" else None
    return f, f.create_dataset("s", shape=(n_rows, DS2.n_voxels), maxshape=(None, DS2.n_voxels),
                               dtype=np.float32,
                               chunks=(rows_per_chunk, DS2.n_voxels),
                               compression=compression, compression_opts=opts)


@pytest.mark.parametrize("lo,n", [(0, 32), (3, 29), (5, 2), (0, 37), (8, 16)])
def test_gzip_chunks_compressed_outside_h5py_are_hdf5s_own(tmp_path, lo, n):
    """Same values, and every whole chunk byte for byte what HDF5's deflate filter wrote."""
    rows = _rows(n)
    f1, ref = _dataset(tmp_path / "ref.h5", "gzip", lo + n)
    f2, ours = _dataset(tmp_path / "ours.h5", "gzip", lo + n)
    ref[lo:] = rows
    write_rows(ours, lo, rows)
    np.testing.assert_array_equal(ours[lo:], rows)
    for c in range(-(-lo // 8), (lo + n) // 8):
        assert ours.id.read_direct_chunk((8 * c, 0)) == ref.id.read_direct_chunk((8 * c, 0))
    f1.close()
    f2.close()


@pytest.mark.parametrize("compression", ["gzip", "lzf", None])
def test_every_compression_stores_the_same_values(tmp_path, compression):
    data = ShowerData(np.linspace(1e3, 1e6, 90), _rows(90, seed=1), DS2)
    for threads in (1, 3):
        path = tmp_path / f"{compression}-{threads}.h5"
        with ShowerWriter(path, DS2, compression=compression, compress_threads=threads) as w:
            w.write(ShowerData(data.incident_energies[:13], data.showers[:13], DS2))
            w.write(ShowerData(data.incident_energies[13:], data.showers[13:], DS2))
        back = read_showers(path)
        np.testing.assert_array_equal(back.showers, data.showers)
        np.testing.assert_array_equal(back.incident_energies,
                                      data.incident_energies.astype(np.float32))
        with h5py.File(path) as f:
            assert f["showers"].compression == compression


def test_unknown_compression_is_one_clear_error(tmp_path):
    with pytest.raises(CaloforgeError, match="compression must be one of gzip, lzf, none"):
        ShowerWriter(tmp_path / "x.h5", DS2, compression="zstd")
    assert list(tmp_path.iterdir()) == []


def test_generated_files_do_not_depend_on_compression_or_chunking(tmp_path):
    e = np.geomspace(1e3, 1e6, 70)
    ref = None
    for compression, chunk in (("gzip", 70), ("gzip", 20), ("lzf", 30), (None, 10)):
        path = tmp_path / f"{compression}-{chunk}.h5"
        generate_to_file(_SparseModel(), e, path, batch_size=10, seed=4, chunk_size=chunk,
                         progress=False, compression=compression)
        got = read_showers(path)
        if ref is None:
            ref = got
        np.testing.assert_array_equal(got.showers, ref.showers)
    assert (ref.showers > 0).mean() == pytest.approx(0.2, abs=0.02)


def test_interrupted_generation_leaves_no_file(tmp_path):
    """An interrupt while a chunk is being written in the background: the write finishes,
    then the temporary is removed; nothing appears under the final name."""
    path = tmp_path / "out.h5"
    model = _SparseModel(fail_at=5)  # batches of 10, chunks of 20: two chunks submitted
    with pytest.raises(KeyboardInterrupt):
        generate_to_file(model, np.full(100, 5e4), path, batch_size=10, chunk_size=20,
                         progress=False)
    assert list(tmp_path.iterdir()) == []


def test_background_writes_run_one_at_a_time_and_report_errors():
    release, started = threading.Event(), threading.Event()
    done, active, overlap = [], [], []

    def blocked(item):
        active.append(item)
        overlap.append(len(active))
        started.set()
        release.wait(timeout=30)  # held until the test lets it go
        done.append(item)
        active.remove(item)

    with BackgroundWrites(blocked) as bg:
        bg.submit(1)
        assert started.wait(timeout=30) and done == []  # submit returned, write in flight
        release.set()
        bg.submit(2)
        assert done[:1] == [1]  # the second submission waited for the first write
    assert done == [1, 2] and max(overlap) == 1

    def broken(item):
        raise OSError(f"disk gone at {item}")

    with pytest.raises(OSError, match="disk gone at 1"):
        with BackgroundWrites(broken) as bg:
            bg.submit(1)
            bg.submit(2)  # raises the first write's error here


def test_block_error_waits_for_the_write_in_flight():
    finished = threading.Event()

    def slow(item):
        time.sleep(0.05)
        finished.set()

    with pytest.raises(ZeroDivisionError):
        with BackgroundWrites(slow) as bg:
            bg.submit(1)
            raise ZeroDivisionError
    assert finished.is_set()


def test_whole_gzip_chunks_bypass_h5pys_compression(tmp_path, monkeypatch):
    calls = []
    real = h5py.Dataset.__setitem__
    monkeypatch.setattr(h5py.Dataset, "__setitem__",
                        lambda self, k, v: (calls.append(k), real(self, k, v))[1])
    f, ds = _dataset(tmp_path / "d.h5", "gzip", 40)
    write_rows(ds, 0, _rows(32))   # four whole chunks: all compressed by zlib here
    assert calls == []
    write_rows(ds, 32, _rows(5))   # a partial chunk goes through h5py
    assert len(calls) == 1
    f.close()


def test_cli_compression_flag(tmp_path, capsys):
    from caloforge.cli.main import main

    out = tmp_path / "lzf.h5"
    assert main(["generate", "calovq-ds2-tiny", "-n", "20", "--compression", "lzf",
                 "--no-progress", "-o", str(out)]) == 0
    with h5py.File(out) as f:
        assert f["showers"].compression == "lzf" and f["showers"].shape == (20, DS2.n_voxels)
    capsys.readouterr()
    assert main(["generate", "caloclouds2-ild-tiny", "-n", "2", "--compression", "none",
                 "--no-progress", "-o", str(tmp_path / "p.h5")]) != 0
    err = capsys.readouterr().err.strip()
    assert "--compression applies to voxel files" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "p.h5").exists()
