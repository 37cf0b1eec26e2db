"""Thread choices: ``set_threads`` and the small-batch rule of ``generate_to_file``.

No timing here: the thread count each sampling call sees is read inside a fake
generator's ``sample``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from caloforge.errors import ConfigError
from caloforge.geometry import get_geometry
from caloforge.io import read_showers
from caloforge.pipelines import generate_to_file
from caloforge.pipelines.generate import SMALL_BATCH
from caloforge.threads import available_cpus, set_threads


class _ThreadSpy:
    """A generator of constant showers that records torch's thread count per call."""

    def __init__(self, geometry):
        self.geometry = geometry
        self.seen: list[int] = []

    def sample(self, incident_energy, *, batch_size=1000, generator=None):
        self.seen.append(torch.get_num_threads())
        return torch.ones(len(incident_energy), self.geometry.n_voxels)


@pytest.fixture
def three_threads():
    """Run the test with the process set to 3 torch threads, restored afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(3)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def geometry():
    return get_geometry("ds2")


def _energies(n):
    return np.full(n, 1e4)


def test_small_batches_sample_on_one_thread_and_restore(three_threads, geometry, tmp_path):
    spy = _ThreadSpy(geometry)
    generate_to_file(spy, _energies(10), tmp_path / "g.h5", batch_size=4, progress=False)
    assert spy.seen == [1, 1, 1]  # batches of 4, 4, 2
    assert torch.get_num_threads() == 3  # restored
    assert len(read_showers(tmp_path / "g.h5")) == 10


def test_few_showers_count_as_a_small_batch_whatever_batch_size(three_threads, geometry,
                                                                 tmp_path):
    # 5 showers with batch_size 1000 make one call of 5: small
    spy = _ThreadSpy(geometry)
    generate_to_file(spy, _energies(5), tmp_path / "g.h5", batch_size=1000, progress=False)
    assert spy.seen == [1]


def test_large_batches_keep_the_process_setting(three_threads, geometry, tmp_path):
    spy = _ThreadSpy(geometry)
    n = 2 * SMALL_BATCH
    generate_to_file(spy, _energies(n), tmp_path / "g.h5", batch_size=SMALL_BATCH,
                     progress=False)
    assert spy.seen == [3, 3]


def test_explicit_threads_win_over_the_small_batch_rule(three_threads, geometry, tmp_path):
    spy = _ThreadSpy(geometry)
    generate_to_file(spy, _energies(6), tmp_path / "g.h5", batch_size=3, progress=False,
                     threads=2)
    assert spy.seen == [2, 2]
    assert torch.get_num_threads() == 3
    with pytest.raises(ConfigError):
        generate_to_file(spy, _energies(6), tmp_path / "h.h5", progress=False, threads=0)


def test_threads_are_restored_when_sampling_fails(three_threads, geometry, tmp_path):
    class Broken(_ThreadSpy):
        def sample(self, incident_energy, **kw):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        generate_to_file(Broken(geometry), _energies(2), tmp_path / "g.h5", progress=False)
    assert torch.get_num_threads() == 3


def test_generate_cli_passes_threads_through(monkeypatch, tmp_path):
    import caloforge.pipelines as pipelines
    from caloforge.cli.main import main

    seen = {}

    def fake_generate(model, energies, path, **kw):
        seen.update(kw)

    monkeypatch.setattr(pipelines, "generate_to_file", fake_generate)
    monkeypatch.setattr(pipelines, "load_generator", lambda *a, **k: object())
    old = torch.get_num_threads()
    try:
        assert main(["generate", "m", "-n", "3", "-o", str(tmp_path / "g.h5"),
                     "--threads", "1", "--no-progress"]) == 0
        assert seen["threads"] == 1
        assert main(["generate", "m", "-n", "3", "-o", str(tmp_path / "g.h5"),
                     "--no-progress"]) == 0
        assert seen["threads"] is None  # the small-batch rule decides
    finally:
        torch.set_num_threads(old)


def test_set_threads_default_and_bounds():
    old = torch.get_num_threads()
    try:
        assert set_threads() == available_cpus() == torch.get_num_threads()
        assert set_threads(1) == 1 == torch.get_num_threads()
        torch.set_num_threads(2)
        assert set_threads(1, include_torch=False) == 1
        assert torch.get_num_threads() == 2  # torch left alone
        with pytest.raises(ConfigError, match="--threads"):
            set_threads(0)
        threadpoolctl = pytest.importorskip("threadpoolctl")
        blas = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
        assert blas and all(p["num_threads"] == 1 for p in blas)  # numpy's pool follows
        set_threads(2, include_torch=False)
        blas = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
        assert all(p["num_threads"] == min(2, p["num_threads"]) for p in blas)
    finally:
        torch.set_num_threads(old)
