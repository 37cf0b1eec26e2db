import subprocess
import sys

import numpy as np

from caloforge.cli import COMMANDS, main
from caloforge.geometry import get_geometry
from caloforge.io import ShowerData, write_showers


def test_every_command_registered(capsys):
    parser_help = subprocess.run([sys.executable, "-m", "caloforge", "--help"],
                                 capture_output=True, text=True, check=True).stdout
    for name in COMMANDS:
        assert name in parser_help


def test_info_prints_summary(tmp_path, capsys):
    g = get_geometry("ds2")
    write_showers(tmp_path / "a.h5", ShowerData(np.full(3, 2000.0), np.ones((3, g.n_voxels)), g))
    assert main(["info", str(tmp_path / "a.h5")]) == 0
    out = capsys.readouterr().out
    assert "ds2 (6480 voxels)" in out and "showers:           3" in out


def test_bad_input_is_one_line_not_traceback(tmp_path):
    (tmp_path / "x.h5").write_text("not hdf5")
    r = subprocess.run([sys.executable, "-m", "caloforge", "info", str(tmp_path / "x.h5")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "not an HDF5 file" in r.stderr
