import h5py
import numpy as np
import pytest
import showerdata

from caloforge.geometry import get_geometry, ild_ecal
from caloforge.io import (
    PointCloudData,
    ShowerData,
    ShowerDataError,
    ShowerWriter,
    iter_showers,
    read_point_clouds,
    read_showers,
    summarize_file,
    write_point_clouds,
    write_showers,
)

DS2 = get_geometry("ds2")


def _sample(n=7, geometry=DS2, seed=0):
    rng = np.random.default_rng(seed)
    showers = rng.exponential(1.0, (n, geometry.n_voxels)).astype(np.float32)
    showers[rng.random(showers.shape) < 0.7] = 0.0
    return ShowerData(rng.uniform(1e3, 1e6, n), showers, geometry)


def _raw_file(path, energies, showers):
    with h5py.File(path, "w") as f:
        if energies is not None:
            f.create_dataset("incident_energies", data=energies)
        if showers is not None:
            f.create_dataset("showers", data=showers)


def test_round_trip_bit_exact(tmp_path):
    d = _sample()
    write_showers(tmp_path / "a.h5", d)
    r = read_showers(tmp_path / "a.h5")
    assert r.geometry.same_binning(DS2)
    np.testing.assert_array_equal(r.showers, d.showers)
    np.testing.assert_array_equal(r.incident_energies, d.incident_energies.astype(np.float32))
    with h5py.File(tmp_path / "a.h5") as f:  # the CaloChallenge layout
        assert f["incident_energies"].shape == (7, 1)
        assert f["showers"].shape == (7, 6480)
        assert f["showers"].compression == "gzip"


def test_reads_plain_calochallenge_file_and_detects_geometry(tmp_path):
    for name in ("ds1-photons", "ds1-pions", "ds3"):
        g = get_geometry(name)
        _raw_file(tmp_path / f"{name}.h5", np.full((3, 1), 1000.0), np.ones((3, g.n_voxels)))
        assert read_showers(tmp_path / f"{name}.h5").geometry == g


def test_chunked_streaming_equals_whole(tmp_path):
    d = _sample(n=25)
    write_showers(tmp_path / "a.h5", d)
    chunks = list(iter_showers(tmp_path / "a.h5", chunk_size=10))
    assert [len(c) for c in chunks] == [10, 10, 5]
    np.testing.assert_array_equal(np.concatenate([c.showers for c in chunks]), d.showers)


def test_streaming_writer(tmp_path):
    parts = [_sample(n=4, seed=s) for s in range(3)]
    with ShowerWriter(tmp_path / "w.h5", DS2) as w:
        for p in parts:
            w.write(p)
    assert len(read_showers(tmp_path / "w.h5")) == 12


def test_interrupted_write_leaves_no_file_and_keeps_old(tmp_path):
    target = tmp_path / "w.h5"
    write_showers(target, _sample(n=2))
    with pytest.raises(RuntimeError):
        with ShowerWriter(target, DS2) as w:
            w.write(_sample(n=5))
            raise RuntimeError("killed")
    assert len(read_showers(target)) == 2  # old file intact
    assert [p.name for p in tmp_path.iterdir()] == ["w.h5"]  # no temporary left


@pytest.mark.parametrize("energies,showers,match", [
    (None, np.ones((2, 6480)), r"incident_energies.*dataset missing"),
    (np.ones((2, 1)), None, r"showers.*dataset missing"),
    (np.ones((3, 1)), np.ones((2, 6480)), "3 incident energies but 2 showers"),
    (np.ones((2, 1)), np.ones((2, 6481)), "match no known geometry"),
    (np.ones((2, 1)), np.ones((2, 2, 3)), r"expected shape \(N, V\)"),
    (np.array([[1.0], [np.nan]]), np.ones((2, 6480)), "NaN"),
    (np.array([[1.0], [-5.0]]), np.ones((2, 6480)), "non-positive"),
    (np.ones((2, 1)), np.where(np.eye(2, 6480) > 0, -1.0, 1.0), "negative"),
    (np.ones((2, 1)), np.where(np.eye(2, 6480) > 0, np.inf, 1.0), "infinite"),
])
def test_bad_files_give_clear_errors(tmp_path, energies, showers, match):
    p = tmp_path / "bad.h5"
    _raw_file(p, energies, showers)
    with pytest.raises(ShowerDataError, match=match) as exc:
        read_showers(p)
    assert "bad.h5" in str(exc.value)


def test_wrong_geometry_and_not_hdf5(tmp_path):
    _raw_file(tmp_path / "a.h5", np.ones((2, 1)), np.ones((2, 6480)))
    with pytest.raises(ShowerDataError, match="geometry 'ds3' has 40500"):
        read_showers(tmp_path / "a.h5", geometry="ds3")
    (tmp_path / "t.h5").write_text("hello")
    with pytest.raises(ShowerDataError, match="not an HDF5 file"):
        read_showers(tmp_path / "t.h5")
    with pytest.raises(ShowerDataError, match="does not exist"):
        read_showers(tmp_path / "missing.h5")


def test_container_validation():
    with pytest.raises(ShowerDataError, match="6480"):
        ShowerData(np.ones(2), np.ones((2, 10)), DS2)
    with pytest.raises(ShowerDataError, match="2 incident energies but 3"):
        ShowerData(np.ones(2), np.ones((3, 6480)), DS2)
    with pytest.raises(ShowerDataError, match="negative"):
        ShowerData(np.ones(1), -np.ones((1, 6480)), DS2).validate()
    with pytest.raises(ShowerDataError, match="negative"), ShowerWriter("/tmp/never.h5", DS2) as w:
        w.write(ShowerData(np.ones(1), -np.ones((1, 6480)), DS2))


def _clouds():
    pts = np.array([[0, 0, 0.5, 1.0], [1, 2, 3.5, 2.0], [5, 5, 1.5, 0.5],
                    [-1, 0, 2.5, 4.0], [2, 2, 29.5, 0.25]], np.float32)
    return PointCloudData([10_000.0, 20_000.0], pts, [2, 3], ild_ecal(), pdg=22)


def test_point_cloud_round_trip_and_showerdata_compatibility(tmp_path):
    pc = _clouds()
    write_point_clouds(tmp_path / "p.h5", pc)
    back = read_point_clouds(tmp_path / "p.h5")
    np.testing.assert_allclose(back.points, pc.points, rtol=1e-6)
    np.testing.assert_array_equal(back.n_points, pc.n_points)
    np.testing.assert_allclose(back.incident_energies, pc.incident_energies)
    # the CaloClouds group's own reader sees the same showers (GeV, padded array)
    sd = showerdata.load(tmp_path / "p.h5")
    assert sd.points.shape == (2, 3, 4)
    np.testing.assert_allclose(sd.energies.ravel(), [10.0, 20.0])
    np.testing.assert_allclose(sd.points[1, :3, 3], [0.0005, 0.004, 0.00025])
    # and files written by showerdata read back here
    showerdata.save(sd, tmp_path / "q.h5")
    np.testing.assert_allclose(read_point_clouds(tmp_path / "q.h5").points, pc.points, rtol=1e-6)


def test_point_cloud_errors(tmp_path):
    with pytest.raises(ShowerDataError, match="sum to"):
        PointCloudData([1.0], np.zeros((3, 4)), [2])
    _raw_file(tmp_path / "a.h5", np.ones((2, 1)), np.ones((2, 6480)))
    with pytest.raises(ShowerDataError, match="not a point-cloud"):
        read_point_clouds(tmp_path / "a.h5")


def test_summary(tmp_path):
    d = _sample(n=10)
    write_showers(tmp_path / "a.h5", d)
    s = summarize_file(tmp_path / "a.h5")
    assert s["geometry"] == "ds2" and s["n_showers"] == 10
    assert s["sparsity_mean"] == pytest.approx(float(np.mean(d.showers == 0)))
    assert s["response_mean"] == pytest.approx(
        float(np.mean(d.showers.sum(1, dtype=np.float64) / d.incident_energies.astype(np.float32))), rel=1e-5)
    write_point_clouds(tmp_path / "p.h5", _clouds())
    assert summarize_file(tmp_path / "p.h5")["n_showers"] == 2


def test_written_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    write_showers(tmp_path / "a.h5", _sample(n=1))
    mode = stat.S_IMODE(os.stat(tmp_path / "a.h5").st_mode)
    mask = os.umask(0)
    os.umask(mask)
    assert mode == 0o666 & ~mask
