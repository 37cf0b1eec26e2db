"""`caloforge run`, the README's main command, end to end on a small scale."""

import json
import subprocess
import sys


def test_run_simulates_trains_generates_and_reports(tmp_path):
    out = tmp_path / "demo"
    steps = ["--set", "stage1.max_steps=12", "--set", "stage1.warmup_steps=2",
             "--set", "stage2.max_steps=12", "--set", "stage2.warmup_steps=2",
             "--set", "stage1.checkpoint_every=0", "--set", "stage2.checkpoint_every=0"]
    r = subprocess.run([sys.executable, "-m", "caloforge", "run", "--out", str(out),
                        "--n-train", "300", "--n-reference", "400", "--classifier", "none",
                        *steps], capture_output=True, text=True, timeout=600)
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
