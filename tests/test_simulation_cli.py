"""``caloforge simulate`` writes files the I/O layer reads back; bad input is one line."""

from __future__ import annotations

import numpy as np
import pytest

from caloforge.cli.main import main
from caloforge.io import read_point_clouds, read_showers


def test_cli_writes_readable_file(tmp_path, capsys):
    out = tmp_path / "ds2.h5"
    rc = main(["simulate", "--geometry", "ds2", "--particle", "electron", "-n", "40",
               "--energy", "log-uniform:1GeV:1TeV", "--seed", "1", "-o", str(out),
               "--chunk-size", "16", "--no-progress"])
    assert rc == 0
    d = read_showers(out)
    assert len(d) == 40 and d.geometry.name == "ds2" and d.showers.sum() > 0
    assert d.incident_energies.min() >= 1e3 and d.incident_energies.max() <= 1e6
    assert "wrote 40 showers" in capsys.readouterr().out


def test_cli_points(tmp_path):
    out = tmp_path / "pc.h5"
    assert main(["simulate", "--points", "-n", "12", "--energy", "fixed:50GeV", "-o", str(out),
                 "--no-progress"]) == 0
    pc = read_point_clouds(out)
    assert len(pc) == 12 and np.allclose(pc.incident_energies, 5e4)


@pytest.mark.parametrize("args, needle", [
    (["--geometry", "ds9"], "unknown geometry"),
    (["--geometry", "ds1-pions"], "hadronic"),
    (["--energy", "uniform:5GeV"], "expected uniform:LO:HI"),
    (["--particle", "muon"], "unknown particle"),
    (["--chunk-size", "0"], "chunk-size"),
    (["--energy", "fixed:5MeV"], "E >= 10 E_c"),
])
def test_cli_bad_arguments_one_line(tmp_path, capsys, args, needle):
    out = tmp_path / "x.h5"
    rc = main(["simulate", "-n", "3", "-o", str(out), "--no-progress", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and len(err.splitlines()) == 1
    assert not out.exists()
