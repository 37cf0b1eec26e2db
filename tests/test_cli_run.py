"""`caloforge run`, the README's main command, end to end on a small scale."""

import json
import subprocess
import sys


def test_run_simulates_trains_generates_and_reports(tmp_path):
    out = tmp_path / "demo"
    steps = ["--set", "training.vqvae.max_steps=12", "--set", "training.vqvae.warmup_steps=2",
             "--set", "training.gpt.max_steps=12", "--set", "training.gpt.warmup_steps=2",
             "--set", "training.vqvae.checkpoint_every=0", "--set", "training.gpt.checkpoint_every=0"]
    r = subprocess.run([sys.executable, "-m", "caloforge", "run", "--out", str(out),
                        "--n-train", "300", "--n-reference", "400", "--classifier", "none", "--pipeline", "calovq",
                        *steps], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "calovq-ds2-tiny (trained here)" in r.stdout
    assert "calovq-ds2-tiny (shipped)" in r.stdout
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert (out / "report" / "report.html").stat().st_size > 10_000
    assert len(json.dumps(metrics)) > 1000
    # the trained checkpoint is complete and loadable
    assert (out / "calovq-ds2-tiny" / "checkpoint.json").exists()


def test_run_refuses_tiny_samples(tmp_path):
    r = subprocess.run([sys.executable, "-m", "caloforge", "run", "--out", str(tmp_path),
                        "--n-reference", "10", "--pretrained-only"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "at least 100" in r.stderr and "Traceback" not in r.stderr


def test_run_default_pipeline_is_calodream_and_validates_first(tmp_path):
    """The README's main command trains CaloDREAM; a misspelt preset fails at once,
    before minutes of simulation."""
    from caloforge.pipelines.calodream import micro_overrides

    r = subprocess.run([sys.executable, "-m", "caloforge", "run", "--out", str(tmp_path / "x"),
                        "--preset", "calodream-ds2-tinny"], capture_output=True, text=True)
    assert r.returncode == 2 and "did you mean 'calodream-ds2-tiny'" in r.stderr
    assert not (tmp_path / "x" / "reference.h5").exists()
    out = tmp_path / "demo"
    sets = [x for s in micro_overrides(4) for x in ("--set", s)]
    r = subprocess.run([sys.executable, "-m", "caloforge", "run", "--out", str(out),
                        "--n-train", "200", "--n-reference", "200", "--classifier", "none",
                        "--no-progress", *sets], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "calodream-ds2-tiny (trained here)" in r.stdout
    assert (out / "calodream-ds2-tiny" / "checkpoint.json").exists()
