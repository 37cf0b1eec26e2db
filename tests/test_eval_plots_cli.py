"""``caloforge plot average``."""

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("mplhep")

from caloforge.cli.main import main  # noqa: E402
from caloforge.geometry import get_geometry  # noqa: E402
from caloforge.io import ShowerData, write_showers  # noqa: E402


@pytest.fixture()
def ds2_file(tmp_path):
    g = get_geometry("ds2")
    rng = np.random.default_rng(0)
    showers = rng.exponential(1.0, (25, g.n_voxels)).astype(np.float32)
    path = tmp_path / "ref.h5"
    write_showers(path, ShowerData(rng.uniform(1e3, 1e5, 25), showers, g))
    return path


def test_plot_average_writes_png(ds2_file, tmp_path, capsys):
    out = tmp_path / "pics" / "avg.png"
    assert main(["plot", "average", str(ds2_file), "-o", str(out), "--layer", "7",
                 "--chunk-size", "10", "--dpi", "40"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in capsys.readouterr().out


def test_plot_average_errors(ds2_file, tmp_path, capsys):
    assert main(["plot", "average", str(tmp_path / "missing.h5"), "-o",
                 str(tmp_path / "a.png")]) == 2
    assert main(["plot", "average", str(ds2_file), "-o", str(tmp_path / "a.png"),
                 "--layer", "99"]) == 2
    assert main(["plot", "average", str(ds2_file), "-o", str(tmp_path / "a.xyz")]) == 2
    err = capsys.readouterr().err
    assert "layer 99" in err and "unknown image format" in err
    assert not (tmp_path / "a.png").exists()
    assert main(["plot"]) == 2
