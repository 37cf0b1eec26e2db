"""Fuzzing the file readers: corrupted variants of a valid ds2 file through ``caloforge
info`` and ``caloforge evaluate``.

Each variant must end in exit status 2 with one line on stderr (a clean error), or exit 0
with a sensible result (a byte flip inside the float data changes numbers, not the
format, and is a valid file); never a traceback, never NaN printed.
"""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from caloforge.cli.main import main
from caloforge.evaluation import toy_showers
from caloforge.geometry import get_geometry
from caloforge.io import write_showers

G = get_geometry("ds2")


def _copy_edit(src, dst, edit):
    shutil.copy(src, dst)
    with h5py.File(dst, "a") as f:
        edit(f)


def _replace(name, data):
    def edit(f):
        del f[name]
        f.create_dataset(name, data=data)
    return edit


def _variants(d, plain, packed):
    """~35 corrupted files derived from two layouts of the same valid showers."""
    with h5py.File(plain, "r") as f:
        e, s = f["incident_energies"][...], f["showers"][...]
        data_offset = f["showers"].id.get_offset()
    out = {}
    raw_plain, raw_packed = plain.read_bytes(), packed.read_bytes()
    for frac in (0.05, 0.3, 0.5, 0.8, 0.97):
        for name, raw in (("plain", raw_plain), ("packed", raw_packed)):
            p = d / f"cut-{name}-{frac}.h5"
            p.write_bytes(raw[: int(len(raw) * frac)])
            out[p.name] = p
    rng = np.random.default_rng(0)
    for i, (name, raw) in enumerate([("plain", raw_plain)] * 3 + [("packed", raw_packed)] * 4):
        b = bytearray(raw)
        lo = data_offset if name == "plain" else len(raw) // 3
        for pos in rng.integers(lo, len(raw), size=8):
            b[pos] ^= 0xFF
        p = d / f"flip-{name}-{i}.h5"
        p.write_bytes(bytes(b))
        out[p.name] = p
    b = bytearray(raw_packed)
    b[:8] = b"\x00" * 8  # the signature
    (d / "nosig.h5").write_bytes(bytes(b))
    out["nosig.h5"] = d / "nosig.h5"
    edits = {
        "no-energies": lambda f: f.__delitem__("incident_energies"),
        "no-showers": lambda f: f.__delitem__("showers"),
        "energies-2col": _replace("incident_energies", np.hstack([e, e])),
        "energies-int": _replace("incident_energies", e.astype(np.int64)),
        "energies-str": _replace("incident_energies", np.array([b"x"] * len(e))),
        "showers-bool": _replace("showers", s > 0),
        "showers-f16": _replace("showers", s.astype(np.float16)),
        "showers-3d": _replace("showers", s.reshape(len(s), 2, -1)),
        "showers-short": _replace("showers", s[:-3]),
        "showers-extra-voxel": _replace("showers", np.hstack([s, s[:, :1]])),
        "energy-nan": _replace("incident_energies", np.where(np.arange(len(e))[:, None] == 7, np.nan, e)),
        "energy-neg": _replace("incident_energies", -e),
        "voxel-inf": _replace("showers", np.where(np.eye(len(s), s.shape[1], 5) > 0, np.inf, s)),
        "voxel-neg": _replace("showers", -s),
        "zero-rows": lambda f: (_replace("incident_energies", e[:0])(f), _replace("showers", s[:0])(f)),
        "group": lambda f: (f.__delitem__("showers"), f.create_group("showers")),
        "bad-geometry-attr": lambda f: f.attrs.__setitem__("caloforge_geometry", "{not json"),
        "compound": _replace("incident_energies", np.zeros(len(e), dtype=[("a", "f4"), ("b", "f4")])),
    }
    for name, edit in edits.items():
        p = d / f"{name}.h5"
        _copy_edit(plain, p, edit)
        out[p.name] = p
    (d / "zero-bytes.h5").write_bytes(b"")
    out["zero-bytes.h5"] = d / "zero-bytes.h5"
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    showers = toy_showers(G, 40, rng=3)
    # two layouts: contiguous datasets as other tools write them, and caloforge's own
    # chunked, compressed ones
    with h5py.File(d / "plain.h5", "w") as f:
        f["incident_energies"] = showers.incident_energies.reshape(-1, 1)
        f["showers"] = showers.showers
    write_showers(d / "packed.h5", showers)
    write_showers(d / "reference.h5", toy_showers(G, 60, rng=4), compression=None)
    return d, _variants(d, d / "plain.h5", d / "packed.h5")


def _run(capsys, argv):
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse
        rc = exc.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_corpus_is_large_enough(corpus):
    assert len(corpus[1]) >= 30


def test_fuzzed_files_give_a_clean_error_or_a_correct_result(corpus, capsys, tmp_path):
    d, variants = corpus
    outcomes = {}
    for name, path in sorted(variants.items()):
        for cmd in ("info", "evaluate"):
            if cmd == "info":
                argv = ["info", str(path)]
            else:
                argv = ["evaluate", "--reference", str(d / "reference.h5"), "--generated",
                        str(path), "--out", str(tmp_path / name), "--classifier", "none",
                        "--no-plots", "--no-cache", "--quiet"]
            rc, out, err = _run(capsys, argv)
            outcomes[(name, cmd)] = rc
            assert "Traceback" not in err, (name, cmd, err)
            assert rc in (0, 2), (name, cmd, rc, err)
            if rc == 2:
                lines = err.strip().splitlines()
                assert len(lines) == 1 and str(path) in lines[0], (name, cmd, err)
            elif cmd == "info":
                assert "showers:" in out and "nan" not in out.lower(), (name, out)
            else:
                metrics = json.load(open(tmp_path / name / "metrics.json"))
                assert metrics["meta"]["n_generated"]
    # the structural damage is always an error; a shape or type change never passes
    for name in ("no-energies", "no-showers", "energies-2col", "energies-str", "showers-bool",
                 "showers-3d", "showers-short", "showers-extra-voxel", "energy-nan", "energy-neg",
                 "voxel-inf", "voxel-neg", "group", "bad-geometry-attr", "compound",
                 "zero-bytes", "nosig", "cut-plain-0.5", "cut-packed-0.5"):
        assert outcomes[(f"{name}.h5", "info")] == 2, name
        assert outcomes[(f"{name}.h5", "evaluate")] == 2, name
    # integer energies and half-precision voxels are numbers: read, not refused
    assert outcomes[("energies-int.h5", "info")] == 0
    assert outcomes[("showers-f16.h5", "info")] == 0
