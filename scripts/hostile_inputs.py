#!/usr/bin/env python
"""Re-run the hostile-input table of issue 13 against the installed caloforge.

Every row of the issue's table ("what was tried / what happened") is tried again, with
more variants per row where they are cheap, as real ``python -m caloforge ...``
subprocesses in a temporary directory. Each case is classified from what the command
did, never from a stored answer:

* **traceback**: stderr holds ``Traceback``, or the process died of a signal it was not
  sent on purpose (negative exit status, or 134/135/136/139 from a crash);
* **clear error**: exit status 2 (130/143 for SIGINT/SIGTERM sent on purpose) and the last
  non-empty line of stderr is one message that names the problem (each case names the
  words it expects: the file, the option, the key ...);
* **correct result**: exit status 0 and an explicit check of the output passes (sorted
  and shuffled files score alike, two seeded trainings give identical safetensors, a
  resumed training equals an uninterrupted one, temporary files are gone, ...);
* **silently wrong**: anything else (a wrong result, an accepted bad input, or an error
  that does not say what is wrong).

Usage::

    python scripts/hostile_inputs.py            # everything, ~230 cases (11 min, 2 busy cores)
    python scripts/hostile_inputs.py --quick    # no training rows, fewer variants (~100
                                                # cases: 2-4 min)
    python scripts/hostile_inputs.py --out DIR  # keep the work files, table.md, cases.json
    python scripts/hostile_inputs.py --rows 5,9 -k truncated -v   # a selection, every case

Two cases run at once (``--jobs``); the timing cases (progress, threads) run alone at the
end. The exit status is 1 if any case is a traceback or silently wrong, else 0.

How the environment is made hostile: a full disk is a small tmpfs mounted in a private
mount namespace (``unshare -rm``) for the one command; an unreadable file is ``chmod 000``,
and as root, where permission bits never stop a read, the command runs with
CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH dropped (``setpriv``). Where these tools are
missing the case is skipped, with the reason in the table.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

CLEAR, OK, TRACEBACK, WRONG, SKIP = "clear error", "correct result", "traceback", \
    "silently wrong", "skipped"

#: The rows of the issue's table, in its order (short form of "what was tried").
ROWS = {
    1: "a model whose weights hold a NaN (corrupted resume state, diverged training)",
    2: "`evaluate` on a generated file sorted by energy / response",
    3: "`kill -9` during `train` (stage 1, before a checkpoint, between stages), then "
       "`--resume`; also `run --resume`",
    4: "two identical `train` runs with the same seed",
    5: "a full disk during `simulate` / `generate` / `train` (/ `evaluate`)",
    6: "Ctrl-C (and SIGTERM) during an HDF5 write",
    7: "invalid config values (negative gan.start, gan.weight, beta, output_threshold_mev, "
       "top_k; log_c=0; device=tpu; ...)",
    8: "`caloforge info FILE | head` (and other commands into a closed pipe)",
    9: "a truncated (or byte-flipped) HDF5, chunked and contiguous layouts",
    10: "a file without read permission (`info`, `evaluate`, `train --data`, ...)",
    11: "a directory given as a file (`generate --energies-from`, every input option)",
    12: "a checkpoint whose `checkpoint.json` lacks `stages`, or a stage lacking `weights`",
    13: "a checkpoint whose weights entry points outside its directory",
    14: "a checkpoint with no sha256, or a flipped byte in its weights",
    15: "checkpoint configs missing keys or holding unknown keys",
    16: "a TOML `--config` giving a table where a number is expected (and other bad TOML)",
    17: "`caloforge info` (and others) on a file with 0 showers",
    18: "`caloforge simulate --energy fixed:1e9TeV` (and other impossible spectra)",
    19: "`-o DIR` where DIR is an existing directory (and other bad outputs)",
    20: "`train --list` and code comments naming documents a user does not have",
    21: "`generate --energies-from` a file whose incident_energies has 2 columns (and more)",
    22: "`kill -9` during `simulate` or `generate`: stale temporaries, rerun cleans them",
    23: "peak memory of `info` / `evaluate --classifier none` on ds3 files",
    24: "KPD error bar when N equals the batch size; PRDC known answers",
    25: "`run --preset calovq-ds2-tinny` (fail fast on bad arguments)",
    26: "`generate` progress updates; `bench` prints before it is done",
    27: "`python -m pytest` on a busy machine: subprocess tests with wall-clock limits",
    28: "FPD comparable with published tables (`--convention official`), FPD n/a",
    29: "E_layer separation power: 39 bins (official) vs 40",
    30: "the evaluation threshold constant (0.5e-3/0.033 MeV)",
    31: "two threads on a busy 2-core machine (`generate` slower than with one)",
    32: "(not a table row) one CLI language: `--version`, an example in every `--help`, "
        "`--set` max_steps below warm-up",
}

DS2_THRESHOLD_MEV = 0.5e-3 / 0.033

#: evaluations whose FPD/KPD do not matter to the case: the caloforge convention skips them
#: below 10 000 showers (the official one draws fixed-size batches: ~12 s per comparison)
FAST_EVAL = ("--convention", "caloforge")


# --------------------------------------------------------------------------- processes


@dataclass
class Proc:
    argv: list[str]
    rc: int
    out: str
    err: str
    wall: float
    cpu: float
    maxrss_mb: float
    events: list[tuple[float, str, int]] = field(default_factory=list)  # (t, stream, bytes)
    timed_out: bool = False

    def last_err_line(self) -> str:
        lines = [x.strip() for x in re.split(r"[\r\n]", self.err) if x.strip()]
        return lines[-1] if lines else ""

    def tail(self, n: int = 400) -> str:
        text = (self.err.strip() or self.out.strip()).replace("\r", "\n")
        return text[-n:]


class Harness:
    """Runs ``python -m caloforge`` and keeps the shared input files of the cases."""

    def __init__(self, work: Path, quick: bool, timeout: float):
        self.work = work
        self.quick = quick
        self.timeout = timeout
        self._fixtures: dict[str, object] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
                        PYTHONUNBUFFERED="1", PYTHONWARNINGS="default")
        self.env.pop("PYTHONSTARTUP", None)

    # ---- running
    def popen(self, args: list[str], *, prefix: list[str] = (), cwd: Path | None = None,
              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env: dict | None = None,
              stdin=subprocess.DEVNULL) -> subprocess.Popen:
        argv = [*prefix, sys.executable, "-m", "caloforge", *map(str, args)]
        return subprocess.Popen(argv, stdout=stdout, stderr=stderr, stdin=stdin,
                                cwd=str(cwd or self.work), env=env or self.env,
                                start_new_session=True)

    def collect(self, p: subprocess.Popen, t0: float, timeout: float | None = None) -> Proc:
        """Read both pipes (with arrival times), reap with wait4 for the CPU time."""
        timeout = self.timeout if timeout is None else timeout
        chunks = {"out": [], "err": []}
        events: list[tuple[float, str, int]] = []

        def reader(stream, name):
            if stream is None:
                return
            fd = stream.fileno()
            while True:
                try:
                    b = os.read(fd, 65536)
                except OSError:
                    break
                if not b:
                    break
                chunks[name].append(b)
                events.append((time.monotonic() - t0, name, len(b)))

        threads = [threading.Thread(target=reader, args=(p.stdout, "out"), daemon=True),
                   threading.Thread(target=reader, args=(p.stderr, "err"), daemon=True)]
        for t in threads:
            t.start()
        timed_out = threading.Event()

        def kill():
            timed_out.set()
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        rc = os.waitstatus_to_exitcode(status)
        p.returncode = rc
        wall = time.monotonic() - t0
        for t in threads:
            t.join(10)
        for s in (p.stdout, p.stderr):
            if s is not None:
                s.close()
        return Proc(list(p.args), rc, b"".join(chunks["out"]).decode("utf-8", "replace"),
                    b"".join(chunks["err"]).decode("utf-8", "replace"), wall,
                    ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024.0, sorted(events),
                    timed_out.is_set())

    def cf(self, *args, prefix: list[str] = (), cwd: Path | None = None,
           timeout: float | None = None, env: dict | None = None) -> Proc:
        t0 = time.monotonic()
        p = self.popen(list(args), prefix=prefix, cwd=cwd, env=env)
        return self.collect(p, t0, timeout)

    # ---- shared inputs
    def fixture(self, name: str, build: Callable[[], object]):
        with self._lock:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            if name not in self._fixtures:
                try:
                    self._fixtures[name] = build()
                except BaseException as exc:  # noqa: BLE001 - remembered for every user
                    self._fixtures[name] = exc
            value = self._fixtures[name]
        if isinstance(value, BaseException):
            raise value
        return value

    def path(self, *parts) -> Path:
        p = self.work.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def fresh_dir(self, name: str) -> Path:
        d = self.work / name
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        return d

    def simulated(self, name: str, n: int, seed: int, geometry: str = "ds2",
                  energy: str | None = None) -> Path:
        def build():
            out = self.path("data", f"{name}.h5")
            args = ["simulate", "--geometry", geometry, "-n", n, "--seed", seed, "-o", out,
                    "--no-progress", "--threads", 1]
            if energy:
                args += ["--energy", energy]
            p = self.cf(*args)
            if p.rc != 0:
                raise FixtureError(f"simulate {name} failed (exit {p.rc}): {p.tail()}", p)
            return out
        return self.fixture(f"sim:{name}", build)

    # frequently used inputs
    def small(self) -> Path:
        """200 valid ds2 showers (caloforge's own chunked, compressed layout)."""
        return self.simulated("small", 200, 3)

    def plain(self) -> Path:
        """The same showers in contiguous datasets, as other tools write them."""
        def build():
            out = self.path("data", "plain.h5")
            e, s = read_h5(self.small())
            with h5py.File(out, "w") as f:
                f["incident_energies"] = e.reshape(-1, 1)
                f["showers"] = s
            return out
        return self.fixture("plain", build)

    def raw_h5(self, name: str, **datasets) -> Path:
        def build():
            out = self.path("data", f"{name}.h5")
            with h5py.File(out, "w") as f:
                for k, v in datasets.items():
                    f.create_dataset(k, data=v)
            return out
        return self.fixture(f"raw:{name}", build)

    def shipped(self, name: str) -> Path:
        spec = importlib.util.find_spec("caloforge")
        return Path(list(spec.submodule_search_locations)[0]) / "pretrained" / name

    def ckpt_copy(self, name: str, model: str = "calovq-ds2-tiny") -> Path:
        dst = self.work / "ckpt" / name
        if dst.exists():
            shutil.rmtree(dst)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.shipped(model), dst)
        for p in dst.rglob("*"):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        os.chmod(dst, 0o755)
        return dst


class FixtureError(RuntimeError):
    def __init__(self, msg: str, proc: Proc | None = None):
        super().__init__(msg)
        self.proc = proc


def read_h5(path) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(path, "r") as f:
        return f["incident_energies"][...].reshape(-1), f["showers"][...]


def write_h5(path, energies, showers) -> Path:
    with h5py.File(path, "w") as f:
        f["incident_energies"] = np.asarray(energies, dtype=np.float64).reshape(-1, 1)
        f["showers"] = np.asarray(showers, dtype=np.float32)
    return Path(path)


# --------------------------------------------------------------------------- verdicts

CRASH_STATUS = {134, 135, 136, 139}  # abort, bus error, FPE, segfault (as a shell reports)


def crashed(p: Proc, sent: tuple[int, ...] = ()) -> str | None:
    if "Traceback" in p.err:
        i = p.err.rfind("Traceback")
        return "Traceback: " + p.err[i:].strip().splitlines()[-1][:300]
    if p.timed_out:
        return None
    if p.rc < 0 and -p.rc not in sent:
        return f"killed by signal {-p.rc}"
    if p.rc in CRASH_STATUS:
        return f"exit {p.rc} (crash)"
    return None


def _has(text: str, needle) -> bool:
    """``needle``: a string, or a tuple of alternatives."""
    low = text.lower()
    if isinstance(needle, tuple):
        return any(str(n).lower() in low for n in needle)
    return str(needle).lower() in low


def expect_error(p: Proc, *needles, codes=(2,), check: Callable[[], tuple[bool, str]] | None
                 = None, sent: tuple[int, ...] = ()) -> tuple[str, str]:
    """A clear error: exit in ``codes``, last stderr line naming every needle."""
    why = crashed(p, sent)
    if why:
        return TRACEBACK, why
    if p.timed_out:
        return WRONG, f"did not finish within {p.wall:.0f} s (expected an error)"
    last = p.last_err_line()
    if p.rc not in codes:
        return WRONG, f"exit {p.rc}, expected an error ({'/'.join(map(str, codes))}): " + \
            (last or p.out.strip()[-200:])[:300]
    missing = [n for n in needles if not _has(last, n)]
    if missing:
        return WRONG, f"unclear error (does not name {missing}): {last[:300]}"
    if check is not None:
        good, detail = check()
        if not good:
            return WRONG, f"error message fine, but {detail}: {last[:200]}"
    return CLEAR, last[:300]


def expect_ok(p: Proc, check: Callable[[Proc], tuple[bool, str]]) -> tuple[str, str]:
    why = crashed(p)
    if why:
        return TRACEBACK, why
    if p.timed_out:
        return WRONG, f"did not finish within {p.wall:.0f} s"
    if p.rc != 0:
        return WRONG, f"exit {p.rc}: {p.last_err_line()[:300]}"
    good, detail = check(p)
    return (OK if good else WRONG), detail


def expect_either(p: Proc, *needles, check: Callable[[Proc], tuple[bool, str]]):
    """A clean error naming ``needles`` or a correct result (e.g. a byte flip in data)."""
    if p.rc == 0 and not crashed(p):
        return expect_ok(p, check)
    return expect_error(p, *needles)


def no_leftovers(d: Path) -> tuple[bool, str]:
    """No hidden temporary (``.NAME...tmp`` files, ``.STAGE.trainer.*`` state directories)
    left in a finished output directory."""
    left = sorted(x.name for x in Path(d).iterdir() if x.name.startswith("."))
    return (not left), (f"temporaries left: {left}" if left else "no temporary left")


def h5_count(path) -> int | None:
    try:
        with h5py.File(path, "r") as f:
            return int(f["incident_energies"].shape[0])
    except Exception:  # noqa: BLE001
        return None


# --------------------------------------------------------------------------- cases


@dataclass
class Case:
    row: int
    name: str
    fn: Callable[[Harness], tuple[str, str]]
    full_only: bool = False
    serial: bool = False  # timing-sensitive: run alone, after the parallel part
    cost: float = 3.0     # seconds, for scheduling the long ones first
    quick_too: bool = True  # in --quick (when not full_only); False: a variant for full runs


CASES: list[Case] = []


def case(row: int, name: str, **kw):
    def deco(fn):
        CASES.append(Case(row, name, fn, **kw))
        return fn
    return deco


def add(row: int, name: str, fn, **kw):
    CASES.append(Case(row, name, fn, **kw))


# ---- checkpoints (numpy + safetensors; no torch in this script)

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest(d: Path) -> dict:
    return json.loads((d / "checkpoint.json").read_text())


def save_manifest(d: Path, m: dict) -> None:
    (d / "checkpoint.json").write_text(json.dumps(m, indent=1))


def poison(d: Path, stage: str, value: float, *, rehash: bool = True,
           file: str | None = None) -> str:
    """Write ``value`` into the first float tensor of a stage's weights (or of ``file``),
    with a fresh, valid sha256 in the manifest: damage behind the format's back."""
    from safetensors.numpy import load_file, save_file

    m = manifest(d)
    path = d / (file or m["stages"][stage]["weights"])
    tensors = load_file(str(path))
    key = next(k for k, v in sorted(tensors.items()) if v.dtype.kind == "f" and v.size)
    arr = tensors[key].copy()
    arr.reshape(-1)[0] = value
    tensors[key] = arr
    save_file(tensors, str(path), metadata={"format": "pt"})
    if rehash and file is None:
        m["stages"][stage]["sha256"] = _sha256(path)
        m["stages"][stage]["size"] = path.stat().st_size
        save_manifest(d, m)
    return key


def weights_of(d: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    m = manifest(d)
    out = {}
    for stage, info in sorted(m["stages"].items()):
        for k, v in load_file(str(d / info["weights"])).items():
            out[f"{stage}:{k}"] = v
    return out


def same_weights(a: Path, b: Path) -> tuple[bool, str]:
    try:
        wa, wb = weights_of(a), weights_of(b)
    except Exception as exc:  # noqa: BLE001
        return False, f"cannot read weights: {exc}"
    if wa.keys() != wb.keys():
        return False, f"different tensors: {sorted(set(wa) ^ set(wb))[:5]}"
    differ = [k for k in wa if not np.array_equal(wa[k], wb[k], equal_nan=False)]
    if differ:
        return False, f"{len(differ)} of {len(wa)} tensors differ, e.g. {differ[0]}"
    return True, f"all {len(wa)} tensors equal"


def all_finite(d: Path) -> tuple[bool, str]:
    w = weights_of(d)
    bad = [k for k, v in w.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]
    return (not bad), (f"non-finite tensors saved: {bad[:3]}" if bad else
                       f"all {len(w)} tensors finite")


# ---- training helpers

def calovq_micro(steps: int) -> list[str]:
    sets = ["vqvae.channels=[8, 8]", "discriminator.channels=[8]", "gan.start=2", "gan.ramp=1",
            "gpt.n_layers=1", "gpt.d_model=16"]
    for stage in ("vqvae", "gpt"):
        sets += [f"training.{stage}.max_steps={steps}", f"training.{stage}.warmup_steps=1",
                 f"training.{stage}.batch_size=16", f"training.{stage}.checkpoint_every=2",
                 f"training.{stage}.val_every=0", f"training.{stage}.ema_decay=0.9"]
    return sets


def as_set_args(sets: list[str]) -> list[str]:
    return [x for s in sets for x in ("--set", s)]


TRAIN_STEPS = 40


def train_args(h: Harness, out: Path, steps: int = TRAIN_STEPS, extra: list[str] = ()) -> list:
    return ["train", "calovq-ds2-tiny", "--data", h.small(), "-o", out, "--no-progress",
            "--threads", 1, *as_set_args(calovq_micro(steps)), *extra]


def trained(h: Harness, name: str, steps: int = TRAIN_STEPS, extra: list[str] = ()) -> Path:
    def build():
        out = h.work / "models" / name
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        p = h.cf(*train_args(h, out, steps, extra))
        if p.rc != 0:
            raise FixtureError(f"training {name} failed (exit {p.rc}): {p.tail()}", p)
        return out
    return h.fixture(f"train:{name}", build)


def stage_step(out: Path, stage: str) -> int:
    try:
        info = json.loads((out / "checkpoint.json").read_text())["stages"][stage]
    except (OSError, ValueError, KeyError, TypeError):
        return -1
    return info.get("step") or 0


def has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` holds ``path`` open (Linux /proc)."""
    target = str(Path(path).resolve())
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
        except OSError:
            continue
    return False


def kill9_when(h: Harness, args: list, ready: Callable[[subprocess.Popen], bool],
               timeout: float = 600.0) -> tuple[bool, str]:
    t0 = time.monotonic()
    p = h.popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not ready(p):
            if p.poll() is not None:
                return False, f"the process ended (exit {p.returncode}) before the kill point"
            if time.monotonic() - t0 > timeout:
                return False, "kill point not reached in time"
            time.sleep(0.01)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        return True, f"killed after {time.monotonic() - t0:.1f} s"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def log_steps_unique(out: Path) -> tuple[bool, str]:
    for log in sorted(out.glob("*.log.jsonl")):
        rows = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
        by_keys: dict[tuple, list] = {}
        for r in rows:
            if "step" in r:
                by_keys.setdefault(tuple(sorted(r)), []).append(r["step"])
        for steps in by_keys.values():
            if len(steps) != len(set(steps)):
                return False, f"{log.name} repeats steps"
    return True, "logs do not repeat steps"


# =========================================================================== row 1: NaN

def _nan_generate(model: str, stage: str, value: float, words):
    def fn(h: Harness):
        d = h.ckpt_copy(f"nan-{model}-{stage}-{value}", model)
        poison(d, stage, value)
        out = h.path("out", f"nan-{model}-{value}.h5")
        p = h.cf("generate", d, "-n", 8, "-o", out, "--no-progress", "--threads", 1)
        return expect_error(p, words, check=lambda: (not out.exists(), "an output was written"))
    return fn


add(1, "generate: NaN in calovq weights (valid sha256)",
    _nan_generate("calovq-ds2-tiny", "vqvae", float("nan"), "nan"))
add(1, "generate: +inf in calovq weights (valid sha256)",
    _nan_generate("calovq-ds2-tiny", "vqvae", float("inf"), ("inf", "non-finite", "nan")))
add(1, "generate: NaN in calodream shape weights",
    _nan_generate("calodream-ds2-tiny", "shape", float("nan"), "nan"))
add(1, "generate: NaN in calovq gpt weights",
    _nan_generate("calovq-ds2-tiny", "gpt", float("nan"), "nan"), quick_too=False)


@case(1, "info on a checkpoint with NaN weights")
def _(h):
    d = h.ckpt_copy("nan-info")
    poison(d, "vqvae", float("nan"))
    p = h.cf("info", d)
    return expect_either(p, ("nan", "non-finite"),
                         check=lambda p: ("calovq" in p.out.lower(), "info printed the model"))


def _killed_in_stage1(h: Harness, name: str) -> Path:
    def build():
        out = h.work / "models" / name
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        good, why = kill9_when(h, train_args(h, out),
                               lambda p: 2 <= stage_step(out, "vqvae") < TRAIN_STEPS)
        if not good:
            raise FixtureError(why)
        return out
    return h.fixture(f"killed:{name}", build)


@case(1, "train --resume on a resume state holding a NaN (valid hash)", full_only=True, cost=10)
def _(h):
    out = _killed_in_stage1(h, "nan-resume-state")
    state = out / "vqvae.trainer" / "state.safetensors"
    meta_p = out / "vqvae.trainer" / "state.json"
    from safetensors.numpy import load_file, save_file
    t = load_file(str(state))
    key = next(k for k in sorted(t) if k.startswith("model/") and t[k].dtype.kind == "f") \
        if any(k.startswith("model/") for k in t) else \
        next(k for k in sorted(t) if t[k].dtype.kind == "f")
    arr = t[key].copy()
    arr.reshape(-1)[0] = np.nan
    t[key] = arr
    save_file(t, str(state), metadata={"format": "pt"})
    meta = json.loads(meta_p.read_text())
    meta["tensors_sha256"] = _sha256(state)
    meta_p.write_text(json.dumps(meta))
    p = h.cf(*train_args(h, out), "--resume")
    return expect_error(p, ("nan", "non-finite"))


@case(1, "train --resume on stage weights holding a NaN (valid sha256)", full_only=True, cost=10)
def _(h):
    out = _killed_in_stage1(h, "nan-resume-weights")
    poison(out, "vqvae", float("nan"))
    p = h.cf(*train_args(h, out), "--resume")
    if p.rc == 0:  # resumed from the (finite) trainer state: then nothing NaN may be saved
        return expect_ok(p, lambda p: all_finite(out))
    return expect_error(p, ("nan", "non-finite"))


@case(1, "diverged training (lr=1e30): NaN is never saved", full_only=True, cost=8)
def _(h):
    out = h.fresh_dir("models/diverged")
    p = h.cf(*train_args(h, out, 6, as_set_args(["training.vqvae.lr=1e30",
                                                 "training.vqvae.grad_clip=0"])))
    if p.rc == 0:
        return expect_ok(p, lambda p: all_finite(out))
    return expect_error(p, ("nan", "non-finite", "diverge", "inf"),
                        check=lambda: (not (out / "vqvae.safetensors").exists()
                                       or all_finite(out)[0], "non-finite weights saved"))


# =========================================================================== row 2: sorted

def _sorted_files(h: Harness) -> dict[str, Path]:
    def build():
        ref = h.simulated("eval-ref", 600, 1)
        gen = h.simulated("eval-gen", 600, 2)
        e, s = read_h5(gen)
        response = s.sum(axis=1, dtype=np.float64) / e
        out = {}
        for name, order in (("sorted_response", np.argsort(response)),
                            ("sorted_energy", np.argsort(e)),
                            ("shuffled", np.random.default_rng(3).permutation(len(e)))):
            out[name] = write_h5(h.path("data", f"{name}.h5"), e[order], s[order])
        out["ref"] = ref
        return out
    return h.fixture("sorted-files", build)


def _eval_sorted(h: Harness, max_showers: int | None) -> tuple[Proc, Path]:
    def build():
        f = _sorted_files(h)
        out = h.fresh_dir(f"eval/sorted-{max_showers}")
        extra = ["--max-showers", max_showers] if max_showers else []
        names = ["sorted_response", "sorted_energy", "shuffled"] if max_showers is None \
            else ["sorted_response", "shuffled"]  # a second code path: one pair suffices
        p = h.cf("evaluate", "--reference", f["ref"], "--generated", *[f[x] for x in names],
                 "--labels", *names, "-o", out, "--classifier", "none", "--no-plots",
                 "--no-cache", "--quiet", "--threads", 1, *FAST_EVAL, *extra)
        return p, out
    return h.fixture(f"eval-sorted-{max_showers}", build)


def _compare_sorted(which: str, max_showers: int | None):
    def fn(h: Harness):
        p, out = _eval_sorted(h, max_showers)

        def check(p):
            m = json.loads((out / "metrics.json").read_text())
            msg = []
            for key in ("sep/response", "sep/e_tot", "sep/e_layer", "w1/response"):
                a, b = m["models"][which][key]["value"], m["models"]["shuffled"][key]["value"]
                fl = m["floor"][key]
                tol = 3 * max(fl["value"], 1e-3) + 3 * (fl.get("error") or 0)
                if abs(a - b) >= tol:
                    return False, f"{key}: {which} {a:.4f} vs shuffled {b:.4f} (tol {tol:.4f})"
                msg.append(f"{key} {a:.3f}/{b:.3f}")
            n = m["models"][which]["sep/response"]["n"]
            if not n or "random" not in m["meta"].get("subsampling", ""):
                return False, "the report does not say how many showers (random subset) it used"
            return True, "; ".join(msg[:2]) + f"; n={n}"
        return expect_ok(p, check)
    return fn


add(2, "sorted by response vs shuffled (600 showers vs 300-shower halves)",
    _compare_sorted("sorted_response", None), cost=10)
add(2, "sorted by incident energy vs shuffled", _compare_sorted("sorted_energy", None))
add(2, "sorted by response vs shuffled, --max-showers 250",
    _compare_sorted("sorted_response", 250), cost=10, quick_too=False)


# =========================================================================== row 3/4: resume

def _full_run(h: Harness) -> Path:
    return trained(h, "uninterrupted")


def _kill_resume(where: str):
    def fn(h: Harness):
        full = _full_run(h)
        out = h.fresh_dir(f"models/killed-{where}")
        args = train_args(h, out)
        data = h.small()
        if where == "stage1":
            ready = lambda p: 2 <= stage_step(out, "vqvae") < TRAIN_STEPS  # noqa: E731
        elif where == "before-checkpoint":  # reading the training data: nothing written yet
            ready = lambda p: has_open(p.pid, data) or any(out.iterdir())  # noqa: E731
        elif where == "first-checkpoint":  # the first resume state is being written
            ready = lambda p: any(out.iterdir())  # noqa: E731
        elif where == "between":
            ready = lambda p: stage_step(out, "vqvae") >= TRAIN_STEPS  # noqa: E731
        else:  # stage2
            ready = lambda p: 2 <= stage_step(out, "gpt") < TRAIN_STEPS  # noqa: E731
        good, why = kill9_when(h, args, ready)
        if not good:
            return WRONG, f"could not reach the kill point: {why}"
        written = sorted(x.name for x in out.iterdir())
        why += f", leaving {written[:4] if written else 'nothing'} in the output"
        p = h.cf(*args, "--resume")

        def check(p):
            for good, detail in (same_weights(full, out), no_leftovers(out),
                                 log_steps_unique(out)):
                if not good:
                    return False, detail
            return True, f"{why}; resumed: " + same_weights(full, out)[1]
        return expect_ok(p, check)
    return fn


for _where, _label in (("stage1", "in stage 1 after a checkpoint"),
                       ("before-checkpoint", "before the first checkpoint (reading the data)"),
                       ("first-checkpoint", "while the first checkpoint is written"),
                       ("between", "between the stages"),
                       ("stage2", "in stage 2")):
    add(3, f"train: kill -9 {_label}, --resume equals an uninterrupted run",
        _kill_resume(_where), full_only=True, cost=25)


@case(3, "run: kill -9 during training, run --resume finishes and equals `train`",
      full_only=True, cost=200)
def _(h):
    out = h.fresh_dir("run-resume")
    args = ["run", "--pipeline", "calovq", "-o", out, "--n-train", 150, "--n-reference", 100,
            "--classifier", "none", "--no-progress", "--threads", 1,
            *as_set_args(calovq_micro(TRAIN_STEPS))]
    ckpt = out / "calovq-ds2-tiny"
    good, why = kill9_when(h, args, lambda p: 2 <= stage_step(ckpt, "vqvae") < TRAIN_STEPS)
    if not good:
        return WRONG, f"could not reach the kill point: {why}"
    p = h.cf(*args, "--resume", timeout=900)
    if p.rc != 0:
        return expect_ok(p, lambda p: (False, ""))
    ref = h.fresh_dir("models/run-equivalent")
    q = h.cf("train", "calovq-ds2-tiny", "--data", out / "train.h5", "-o", ref, "--seed", 1,
             "--no-progress", "--threads", 1, *as_set_args(calovq_micro(TRAIN_STEPS)))
    if q.rc != 0:
        return WRONG, f"the comparison training failed: {q.tail()}"

    def check(p):
        if not (out / "report" / "metrics.json").exists():
            return False, "no report after run --resume"
        good, detail = same_weights(ref, ckpt)
        if good:
            good, detail = no_leftovers(ckpt)[0], f"{detail}; {no_leftovers(ckpt)[1]}"
        return good, f"{why}; {detail}"
    return expect_ok(p, check)


@case(4, "calovq: two identical `train` runs give identical safetensors", full_only=True, cost=15)
def _(h):
    a = _full_run(h)
    b = trained(h, "uninterrupted-again")
    return OK if same_weights(a, b)[0] else WRONG, same_weights(a, b)[1]


@case(4, "calovq: a different --seed gives different weights (the check can fail)",
      full_only=True, cost=15)
def _(h):
    a = _full_run(h)
    b = trained(h, "other-seed", extra=["--seed", 7])
    good, detail = same_weights(a, b)
    return (WRONG, "identical weights for different seeds") if good else (OK, detail)


def _micro_sets(h: Harness, pipeline: str) -> list[str]:
    def build():
        code = (f"import json; from caloforge.pipelines.{pipeline} import micro_overrides; "
                "print(json.dumps(micro_overrides(4)))")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=h.env, timeout=300)
        if r.returncode != 0:
            raise FixtureError(f"micro_overrides of {pipeline}: {r.stderr[-300:]}")
        return json.loads(r.stdout)
    return h.fixture(f"micro:{pipeline}", build)


def _seeded_pair(pipeline: str, preset: str):
    def fn(h: Harness):
        sets = as_set_args(_micro_sets(h, pipeline))
        outs = []
        for i in range(2):
            out = h.fresh_dir(f"models/{pipeline}-seeded-{i}")
            p = h.cf("train", preset, "--data", h.small(), "-o", out, "--seed", 5,
                     "--no-progress", "--threads", 1, *sets)
            if p.rc != 0:
                return expect_ok(p, lambda p: (False, ""))
            outs.append(out)
        good, detail = same_weights(*outs)
        return (OK if good else WRONG), detail
    return fn


add(4, "calodream: two identical `train` runs give identical safetensors",
    _seeded_pair("calodream", "calodream-ds2-tiny"), full_only=True, cost=40)
add(4, "calolatent: two identical `train` runs give identical safetensors",
    _seeded_pair("calolatent", "calolatent-ds2-tiny"), full_only=True, cost=40)


# =========================================================================== row 5: full disk

def _can_tmpfs() -> str | None:
    if not shutil.which("unshare"):
        return "no `unshare` on this machine to mount a small tmpfs"
    d = tempfile.mkdtemp()
    try:
        r = subprocess.run(["unshare", "-rm", "sh", "-c",
                            f"mount -t tmpfs -o size=64k tmpfs {d} && touch {d}/x"],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            return "cannot mount a small tmpfs in a user namespace (unshare -rm): " + \
                r.stderr.strip()[-120:]
    finally:
        os.rmdir(d)
    return None


_TMPFS = {}


def full_disk(size: str, args_fn: Callable[[Path], list], needles=("no space left",),
              output: str | None = None):
    """Run the command with its output on a tmpfs of ``size`` (its own mount namespace),
    then list what it left there."""
    def fn(h: Harness):
        if "why" not in _TMPFS:
            _TMPFS["why"] = _can_tmpfs()
        if _TMPFS["why"]:
            return SKIP, _TMPFS["why"]
        mnt = h.fresh_dir(f"fulldisk/{size}-{id(args_fn)}")
        # a mapped root keeps the files of the real user readable; mount and run there
        inner = [sys.executable, "-m", "caloforge", *map(str, args_fn(mnt))]
        script = (f'mount -t tmpfs -o size={size} tmpfs "{mnt}" || exit 99; '
                  f'"$@"; rc=$?; echo "@@LEFT"; ls -A "{mnt}"; exit $rc')
        t0 = time.monotonic()
        p = subprocess.Popen(["unshare", "-rm", "sh", "-c", script, "sh", *inner],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, cwd=str(h.work), env=h.env,
                             start_new_session=True)
        r = h.collect(p, t0)
        left = r.out.split("@@LEFT", 1)[1].split() if "@@LEFT" in r.out else ["?"]
        if r.rc == 99:
            return SKIP, "tmpfs mount failed"

        def check():
            tmp = [x for x in left if x.endswith(".tmp")]
            if tmp:
                return False, f"temporaries left on the full disk: {tmp}"
            if output and output in left:
                return False, f"a partial {output} was left"
            return True, ""
        return expect_error(r, *needles, check=check)
    return fn


add(5, "simulate -n 3000 onto a 1 MB file system",
    full_disk("1m", lambda d: ["simulate", "-n", 3000, "-o", d / "s.h5", "--no-progress",
                               "--threads", 1], output="s.h5"), cost=8)
add(5, "simulate -n 30000 onto a 16 MB file system (fills up after some chunks)",
    full_disk("16m", lambda d: ["simulate", "-n", 30000, "-o", d / "s.h5", "--no-progress",
                                "--threads", 1], output="s.h5"), cost=6, quick_too=False)
add(5, "simulate -n 200 onto a 64 kB file system (refused before writing)",
    full_disk("64k", lambda d: ["simulate", "-n", 200, "-o", d / "s.h5", "--no-progress",
                                "--threads", 1], output="s.h5"))
add(5, "generate -n 2000 onto a 1 MB file system",
    full_disk("1m", lambda d: ["generate", "calovq-ds2-tiny", "-n", 2000, "-o", d / "g.h5",
                               "--no-progress", "--threads", 1], output="g.h5"), cost=15)
for _size, _q5 in (("96k", True), ("500k", False), ("1m", False)):
    add(5, f"train -o onto a {_size}B file system",
        lambda h, size=_size: full_disk(size, lambda d: train_args(h, d / "m", 6))(h), cost=8,
        quick_too=_q5)
add(5, "evaluate -o onto a 16 kB file system",
    lambda h: full_disk("16k", lambda d: [
        "evaluate", "--reference", h.small(), "--generated", h.small(), "-o", d / "ev",
        "--classifier", "none", "--quiet", "--threads", 1, "--no-cache", *FAST_EVAL])(h),
    cost=10,
    quick_too=False)


# =========================================================================== row 6: signals

def _temporaries(d: Path) -> list[Path]:
    return [x for x in d.iterdir() if x.name.endswith(".tmp")]


def _wait_for(pred, timeout=120.0) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.02)
    return False


def _writing(kind: str, d: Path) -> bool:
    tmp = _temporaries(d)
    if kind == "simulate":
        return any(t.stat().st_size > 20_000 for t in tmp if t.exists())
    return bool(tmp)


def _long_writer(kind: str, out: Path) -> list:
    if kind == "simulate":
        return ["simulate", "-n", 1_000_000, "--chunk-size", 128, "--no-progress", "-o", out,
                "--threads", 1]
    return ["generate", "calovq-ds2-tiny", "-n", 1_000_000, "--batch-size", 64,
            "--no-progress", "-o", out, "--threads", 1]


def _signal_case(kind: str, sig: int, code: int, word: str, i: int):
    def fn(h: Harness):
        d = h.fresh_dir(f"signal/{kind}-{word}-{i}")
        out = d / "big.h5"
        t0 = time.monotonic()
        p = h.popen(_long_writer(kind, out))
        try:
            # simulate: once the first chunk is in the temporary file, the write is under
            # way; generate: once its temporary is open (its first chunk is ~10 000 showers)
            if not _wait_for(lambda: _writing(kind, d) or p.poll() is not None):
                p.kill()
            time.sleep((0.05 if kind == "simulate" else 0.7) * (i + 1))  # different moments
            if p.poll() is None:
                os.kill(p.pid, sig)
            r = h.collect(p, t0, timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
        left = sorted(x.name for x in d.iterdir())
        return expect_error(r, word, codes=(code,), sent=(sig,),
                            check=lambda: (not left, f"left behind: {left}"))
    return fn


# SIGINT is tried more than once (the original finding: ignored in 2 of 3 tries), SIGTERM
# once; (command, SIGINT case name, SIGTERM case name, SIGINT tries, cost)
for _cmd, _int_name, _term_name, _tries, _cost in (
        ("simulate", "SIGINT during simulate's HDF5 write (try {})",
         "SIGTERM during simulate's HDF5 write", 3, 5),
        ("generate", "SIGINT during generate (its temporary HDF5 file open; try {})",
         "SIGTERM during generate (its temporary HDF5 file open)", 2, 8)):
    for _i in range(_tries):
        add(6, _int_name.format(_i + 1), _signal_case(_cmd, signal.SIGINT, 130, "SIGINT", _i),
            cost=_cost, quick_too=_i == 0)
    add(6, _term_name, _signal_case(_cmd, signal.SIGTERM, 143, "SIGTERM", 0), cost=_cost)


# =========================================================================== row 7: config

def _bad_set(setting: str, needle, quick=True):
    def fn(h: Harness):
        out = h.work / "models" / f"bad-{re.sub(r'[^A-Za-z0-9]+', '_', setting)}"
        p = h.cf("train", "calovq-ds2-tiny", "--data", h.small(), "-o", out, "--no-progress",
                 "--threads", 1, "--set", "training.vqvae.max_steps=2",
                 "--set", "training.gpt.max_steps=2", "--set", setting)
        return expect_error(p, needle, check=lambda: (not (out / "vqvae.safetensors").exists(),
                                                      "trained anyway"))
    add(7, f"train --set {setting}", fn, quick_too=quick)


for _s, _n, _q in (("gan.start=-1", "gan.start", True), ("gan.weight=-0.1", "gan.weight", True),
                   ("beta=-1", "beta", True), ("output_threshold_mev=-1", "output_threshold", True),
                   ("top_k=-3", "top_k", True), ("top_k=0", "top_k", False),
                   ("log_c=0", "log_c", True), ("training.vqvae.device=tpu", "tpu", True),
                   ("gan.ramp=-5", "gan.ramp", False), ("gpt.n_layers=0", "n_layers", False),
                   ("training.vqvae.lr=-1", "lr", False),
                   ("training.gpt.batch_size=0", "batch_size", False),
                   ("training.vqvae.max_steps=0", "max_steps", False),
                   ("temperature=0", "temperature", False),
                   ("gan.start=[1]", "gan.start", False), ("gan.start=abc", "gan.start", False),
                   ("nosuchkey=1", "nosuchkey", False), ("gpt.nosuch=1", "nosuch", False)):
    _bad_set(_s, _n, _q)


def _bad_cli(label: str, args_fn: Callable[[Harness], list], *needles, quick=True, out=None):
    def fn(h: Harness):
        p = h.cf(*args_fn(h))
        return expect_error(p, *needles)
    add(7, label, fn, quick_too=quick)


_bad_cli("train --device tpu", lambda h: ["train", "calovq-ds2-tiny", "--data", h.small(), "-o",
                                          h.work / "models" / "tpu", "--device", "tpu"],
         "--device", "tpu")
_bad_cli("generate --device tpu", lambda h: ["generate", "calovq-ds2-tiny", "-n", 2, "-o",
                                             h.path("out", "tpu.h5"), "--device", "tpu"],
         "device", "tpu")
_bad_cli("evaluate --device tpu", lambda h: ["evaluate", "--reference", h.small(), "--generated",
                                             h.small(), "-o", h.work / "ev-tpu",
                                             "--device", "tpu", "--classifier", "none"],
         "--device", "tpu", quick=False)
_bad_cli("bench --device tpu", lambda h: ["bench", "calovq-ds2-tiny", "--device", "tpu"],
         "--device", "tpu", quick=False)
_bad_cli("generate -n 0", lambda h: ["generate", "calovq-ds2-tiny", "-n", 0, "-o",
                                     h.path("out", "n0.h5")], ("-n", "n must", "at least"))
_bad_cli("generate -n -5", lambda h: ["generate", "calovq-ds2-tiny", "-n", -5, "-o",
                                      h.path("out", "n-5.h5")], ("-n", "n must", "at least"),
         quick=False)
_bad_cli("generate --batch-size 0", lambda h: ["generate", "calovq-ds2-tiny", "-n", 2,
                                               "--batch-size", 0, "-o", h.path("out", "b0.h5")],
         "batch", quick=False)
_bad_cli("generate --solver bogus-3 (calodream)",
         lambda h: ["generate", "calodream-ds2-tiny", "-n", 2, "--solver", "bogus-3", "-o",
                    h.path("out", "solver.h5")], ("bogus", "solver"), quick=False)
_bad_cli("generate --threshold -1", lambda h: ["generate", "calovq-ds2-tiny", "-n", 2,
                                               "--threshold", -1, "-o", h.path("out", "t.h5")],
         "threshold", quick=False)
_bad_cli("simulate --threads 0", lambda h: ["simulate", "-n", 2, "--threads", 0, "-o",
                                            h.path("out", "th0.h5")], "--threads", quick=False)


@case(7, "run --set beta=-1 fails before simulating", cost=4)
def _(h):
    out = h.work / "run-beta"
    p = h.cf("run", "--pipeline", "calovq", "-o", out, "--set", "beta=-1", "--no-progress",
             "--threads", 1, timeout=120)
    return expect_error(p, "beta", check=lambda: (not (out / "reference.h5").exists(),
                                                  "simulated first"))


# =========================================================================== row 8: pipes

def _closed_pipe(label: str, args_fn, shell_head: bool = False, quick=True):
    def fn(h: Harness):
        args = [str(a) for a in args_fn(h)]
        t0 = time.monotonic()
        if shell_head:
            cmd = " ".join(map(_q, [sys.executable, "-m", "caloforge", *args])) + " | head -1"
            p = subprocess.Popen(["bash", "-c", f"set -o pipefail; {cmd} >/dev/null"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 stdin=subprocess.DEVNULL, cwd=str(h.work), env=h.env,
                                 start_new_session=True)
        else:
            p = h.popen(args)
            p.stdout.close()  # the reader is gone before caloforge prints (as `| head -0`)
            p.stdout = None
        r = h.collect(p, t0)
        if "BrokenPipe" in r.err or "Exception ignored" in r.err:
            return TRACEBACK, r.err.strip().splitlines()[-1][:300]
        why = crashed(r)
        if why:
            return TRACEBACK, why
        if r.rc in (0, 141):
            return OK, f"exit {r.rc}, stderr {'empty' if not r.err.strip() else r.last_err_line()[:80]}"
        return WRONG, f"exit {r.rc}: {r.last_err_line()[:200]}"
    add(8, label, fn, quick_too=quick)


def _q(s: str) -> str:
    return "'" + str(s).replace("'", "'\\''") + "'"


_closed_pipe("info FILE | head -1 (bash pipeline)", lambda h: ["info", h.small()], True)
_closed_pipe("info FILE into a pipe closed before output", lambda h: ["info", h.small()])
_closed_pipe("info MODEL into a closed pipe", lambda h: ["info", "calovq-ds2-tiny"])
_closed_pipe("train --list into a closed pipe", lambda h: ["train", "--list"], quick=False)
_closed_pipe("--help into a closed pipe", lambda h: ["--help"], quick=False)
_closed_pipe("evaluate --help | head -1", lambda h: ["evaluate", "--help"], True, quick=False)
_closed_pipe("bench (table) into a closed pipe",
             lambda h: ["bench", "calovq-ds2-tiny", "--batch-sizes", "1", "--threads", "1",
                        "--repeats", 1, "--no-reference", "--device", "cpu"], quick=False)


@case(8, "simulate into a closed pipe still writes a complete file")
def _(h):
    out = h.path("out", "pipe-sim.h5")
    t0 = time.monotonic()
    p = h.popen(["simulate", "-n", 30, "-o", out, "--no-progress", "--threads", 1])
    p.stdout.close()
    p.stdout = None
    r = h.collect(p, t0)
    if "BrokenPipe" in r.err or "Traceback" in r.err:
        return TRACEBACK, r.last_err_line()[:200]
    if r.rc not in (0, 141):
        return WRONG, f"exit {r.rc}: {r.last_err_line()}"
    n = h5_count(out)
    return (OK, f"exit {r.rc}, file of {n} showers") if n == 30 else \
        (WRONG, f"file holds {n} showers, expected 30")


# =========================================================================== row 9: truncated

def _cut(h: Harness, layout: str, frac: float) -> Path:
    def build():
        src = h.small() if layout == "chunked" else h.plain()
        raw = src.read_bytes()
        out = h.path("data", f"cut-{layout}-{frac}.h5")
        out.write_bytes(raw[: int(len(raw) * frac)])
        return out
    return h.fixture(f"cut:{layout}:{frac}", build)


TRUNC_WORDS = ("truncated", "corrupt", "damaged", "not an hdf5", "cannot read")


def _input_option_cmds(h: Harness, path: Path, tag: str) -> list[tuple[str, list, tuple]]:
    """(label, argv, needles) of every option that reads a shower/energy file."""
    good = h.small()
    ev = h.work / "ev" / tag
    return [
        ("info", ["info", path], (str(path),)),
        ("evaluate --reference", ["evaluate", "--reference", path, "--generated", good, "-o", ev,
                                  "--classifier", "none", "--no-plots", "--quiet", "--no-cache",
                                  "--threads", 1], ("--reference", str(path))),
        ("evaluate --generated", ["evaluate", "--reference", good, "--generated", path, "-o", ev,
                                  "--classifier", "none", "--no-plots", "--quiet", "--no-cache",
                                  "--threads", 1], ("--generated", str(path))),
        ("train --data", ["train", "calovq-ds2-tiny", "--data", path, "-o",
                          h.work / "models" / f"x-{tag}", "--no-progress", "--threads", 1,
                          "--set", "training.vqvae.max_steps=2", "--set",
                          "training.gpt.max_steps=2"], ("--data", str(path))),
        ("generate --energies-from", ["generate", "calovq-ds2-tiny", "--energies-from", path,
                                      "-o", h.path("out", f"ef-{tag}.h5"), "--no-progress",
                                      "--threads", 1], ("--energies-from", str(path))),
        ("simulate --energy file:", ["simulate", "-n", 5, "--energy", f"file:{path}", "-o",
                                     h.path("out", f"sf-{tag}.h5"), "--no-progress",
                                     "--threads", 1], ("--energy", str(path))),
    ]


for _layout in ("chunked", "contiguous"):
    for _frac in (0.05, 0.3, 0.5, 0.8, 0.97):
        def _fn(h, layout=_layout, frac=_frac):
            path = _cut(h, layout, frac)
            return expect_error(h.cf("info", path), str(path), TRUNC_WORDS)
        add(9, f"info on a {_layout} file cut at {int(_frac * 100)} %", _fn,
            quick_too=_frac in (0.5, 0.97))
    for _i, _cmd in enumerate(["evaluate --reference", "evaluate --generated", "train --data",
                               "generate --energies-from", "simulate --energy file:"]):
        def _fn(h, layout=_layout, cmd=_cmd):
            path = _cut(h, layout, 0.5)
            label, argv, needles = next(c for c in _input_option_cmds(
                h, path, f"cut-{layout}-{cmd.split()[-1].strip('-:')}") if c[0] == cmd)
            return expect_error(h.cf(*argv), *needles, TRUNC_WORDS)
        add(9, f"{_cmd} on a {_layout} file cut in half", _fn,
            quick_too=_layout == "chunked")


def _flipped(h: Harness, layout: str, i: int) -> Path:
    def build():
        src = h.small() if layout == "chunked" else h.plain()
        raw = bytearray(src.read_bytes())
        with h5py.File(src, "r") as f:
            lo = f["showers"].id.get_offset() if layout == "contiguous" else len(raw) // 3
        rng = np.random.default_rng(100 + i)
        for pos in rng.integers(lo or len(raw) // 3, len(raw), size=8):
            raw[pos] ^= 0xFF
        out = h.path("data", f"flip-{layout}-{i}.h5")
        out.write_bytes(bytes(raw))
        return out
    return h.fixture(f"flip:{layout}:{i}", build)


def _info_sane(p: Proc) -> tuple[bool, str]:
    bad = "nan" in p.out.lower() or "inf " in p.out.lower()
    return ("showers:" in p.out and not bad), ("summary printed" if not bad else
                                               "NaN/inf printed")


for _layout in ("chunked", "contiguous"):
    for _i in range(3):
        def _fn(h, layout=_layout, i=_i):
            path = _flipped(h, layout, i)
            return expect_either(h.cf("info", path), str(path), check=_info_sane)
        add(9, f"info on a {_layout} file with 8 flipped bytes ({_i + 1})", _fn,
            quick_too=_i == 0)


@case(9, "info on a file whose HDF5 signature is zeroed")
def _(h):
    raw = bytearray(h.small().read_bytes())
    raw[:8] = b"\0" * 8
    p = h.path("data", "nosig.h5")
    p.write_bytes(bytes(raw))
    return expect_error(h.cf("info", p), str(p), ("not an hdf5", "corrupt", "signature"))


# =========================================================================== row 10: permission

def _perm_prefix() -> tuple[list[str] | None, str]:
    if os.geteuid() != 0:
        return [], ""
    if not shutil.which("setpriv"):
        return None, "running as root and no `setpriv` to drop CAP_DAC_OVERRIDE"
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"], ""


def _perm_case(label: str, make_args: Callable[[Harness, Path], list], needles: tuple,
               target: str = "file", quick=True):
    def fn(h: Harness):
        prefix, why = _perm_prefix()
        if prefix is None:
            return SKIP, why
        tag = re.sub(r"[^a-z0-9]+", "-", label.lower())
        if target == "file":
            path = h.path("perm", f"{tag}.h5")
            shutil.copy(h.small(), path)
            locked = path
        elif target == "toml":
            path = h.path("perm", f"{tag}.toml")
            path.write_text("beta = 1.0\n")
            locked = path
        else:  # a checkpoint whose manifest or weights cannot be read
            path = h.ckpt_copy(tag)
            locked = path / ("checkpoint.json" if target == "manifest" else "vqvae.safetensors")
        os.chmod(locked, 0)
        try:
            p = h.cf(*make_args(h, path), prefix=prefix)
        finally:
            os.chmod(locked, 0o644)
        return expect_error(p, "permission denied", *[str(path) if n == "PATH" else n
                                                      for n in needles])
    add(10, label, fn, quick_too=quick)


_perm_case("info FILE", lambda h, p: ["info", p], ("PATH",))
_perm_case("evaluate --reference FILE",
           lambda h, p: ["evaluate", "--reference", p, "--generated", h.small(), "-o",
                         h.work / "ev" / "perm-r", "--classifier", "none", "--no-plots",
                         "--quiet", "--threads", 1], ("--reference", "PATH"))
_perm_case("evaluate --generated FILE",
           lambda h, p: ["evaluate", "--reference", h.small(), "--generated", p, "-o",
                         h.work / "ev" / "perm-g", "--classifier", "none", "--no-plots",
                         "--quiet", "--threads", 1], ("--generated", "PATH"))
_perm_case("train --data FILE",
           lambda h, p: ["train", "calovq-ds2-tiny", "--data", p, "-o",
                         h.work / "models" / "perm", "--no-progress", "--threads", 1],
           ("--data", "PATH"))
_perm_case("generate --energies-from FILE",
           lambda h, p: ["generate", "calovq-ds2-tiny", "--energies-from", p, "-o",
                         h.path("out", "perm.h5"), "--threads", 1], ("--energies-from", "PATH"))
_perm_case("simulate --energy file:FILE",
           lambda h, p: ["simulate", "-n", 3, "--energy", f"file:{p}", "-o",
                         h.path("out", "perm-s.h5"), "--threads", 1], ("--energy", "PATH"),
           quick=False)
_perm_case("train --config TOML",
           lambda h, p: ["train", "calovq-ds2-tiny", "--data", h.small(), "--config", p, "-o",
                         h.work / "models" / "perm-toml", "--threads", 1], ("PATH",),
           target="toml", quick=False)
_perm_case("generate CKPT with an unreadable checkpoint.json",
           lambda h, p: ["generate", p, "-n", 2, "-o", h.path("out", "perm-c.h5"),
                         "--threads", 1], ("checkpoint.json",), target="manifest", quick=False)
_perm_case("generate CKPT with unreadable weights",
           lambda h, p: ["generate", p, "-n", 2, "-o", h.path("out", "perm-w.h5"),
                         "--threads", 1], ("vqvae.safetensors",), target="weights", quick=False)


# =========================================================================== row 11: directory

def _dir_case(cmd: str, quick=True):
    def fn(h: Harness):
        d = h.work / "adir.h5"
        d.mkdir(exist_ok=True)
        label, argv, needles = next(c for c in _input_option_cmds(h, d, f"dir-{cmd.split()[-1]}")
                                    if c[0] == cmd)
        return expect_error(h.cf(*argv), *needles, "directory")
    add(11, f"{cmd} DIR", fn, quick_too=quick)


for _cmd, _q11 in (("generate --energies-from", True), ("evaluate --reference", True),
                   ("evaluate --generated", False), ("train --data", True),
                   ("simulate --energy file:", False), ("info", False)):
    _dir_case(_cmd, _q11)


@case(11, "train --config DIR")
def _(h):
    d = h.work / "adir.toml"
    d.mkdir(exist_ok=True)
    p = h.cf("train", "calovq-ds2-tiny", "--data", h.small(), "--config", d, "-o",
             h.work / "models" / "cfgdir", "--threads", 1)
    return expect_error(p, str(d), "directory")


@case(11, "generate with an empty directory as the model", quick_too=False)
def _(h):
    d = h.fresh_dir("emptymodel")
    p = h.cf("generate", d, "-n", 2, "-o", h.path("out", "em.h5"), "--threads", 1)
    return expect_error(p, str(d), ("checkpoint", "not a"))


# =========================================================================== rows 12-15: ckpt

def _ckpt_case(row: int, label: str, edit: Callable[[Path], None], needles: tuple,
               cmd: str = "generate", model: str = "calovq-ds2-tiny", extra=(), quick=True,
               ok_check: Callable[[Harness, Path, Path, Proc], tuple[bool, str]] | None = None):
    def fn(h: Harness):
        tag = re.sub(r"[^a-z0-9]+", "-", f"{row}-{label}-{cmd}".lower())[:80]
        d = h.ckpt_copy(tag, model)
        edit(d)
        out = h.path("out", f"{tag}.h5")
        if cmd == "generate":
            p = h.cf("generate", d, "-n", 4, "-o", out, "--no-progress", "--threads", 1, *extra)
        else:
            p = h.cf("info", d, *extra)
        if ok_check is not None:
            return expect_ok(p, lambda p: ok_check(h, d, out, p))
        return expect_error(p, *needles, check=lambda: (not out.exists(), "wrote showers"))
    add(row, f"{cmd}: {label}", fn, quick_too=quick)


def _edit(fn):
    def edit(d: Path):
        m = manifest(d)
        fn(m, d)
        save_manifest(d, m)
    return edit


def _generated_ok(n: int):
    def check(h, d, out, p):
        c = h5_count(out)
        if c != n:
            return False, f"{c} showers written, expected {n}"
        _, s = read_h5(out)
        if not np.isfinite(s).all() or (s.sum(1) <= 0).any():
            return False, "non-finite or empty showers"
        return True, f"{n} finite, non-empty showers"
    return check


for _cmd in ("generate", "info"):
    _ckpt_case(12, "checkpoint.json without 'stages'",
               _edit(lambda m, d: m.pop("stages")), ("stages",), _cmd)
    _ckpt_case(12, "a stage without 'weights'",
               _edit(lambda m, d: m["stages"]["gpt"].pop("weights")), ("weights",), _cmd)
_ckpt_case(12, "checkpoint.json that is not JSON",
           lambda d: (d / "checkpoint.json").write_text("{not json"), ("checkpoint.json",),
           quick=False)
_ckpt_case(12, "checkpoint.json holding a list",
           lambda d: (d / "checkpoint.json").write_text("[1, 2]"), ("checkpoint.json",),
           quick=False)
_ckpt_case(12, "'stages' holding a string",
           _edit(lambda m, d: m.__setitem__("stages", "vqvae")), ("stages",), quick=False)
_ckpt_case(12, "a stage's weights file deleted",
           lambda d: (d / "gpt.safetensors").unlink(), ("gpt.safetensors",), quick=False)
_ckpt_case(12, "a stage missing from the manifest (gpt)",
           _edit(lambda m, d: m["stages"].pop("gpt")), ("gpt",), quick=False)


def _outside(kind: str):
    def edit(d: Path):
        outside = d.parent.parent / "outside.safetensors"
        shutil.copy(d / "gpt.safetensors", outside)
        m = manifest(d)
        if kind == "relative":
            m["stages"]["gpt"]["weights"] = "../../outside.safetensors"
        elif kind == "absolute":
            m["stages"]["gpt"]["weights"] = str(outside.resolve())
        save_manifest(d, m)
    return edit


for _kind in ("relative", "absolute"):
    for _extra in ((), ("--no-verify",)):
        _ckpt_case(13, f"weights entry {'../../x' if _kind == 'relative' else '/abs/x'}"
                   f".safetensors{' with --no-verify' if _extra else ''}",
                   _outside(_kind), ("outside",), extra=_extra,
                   quick=_kind == "relative")
_ckpt_case(13, "weights entry ../../x.safetensors", _outside("relative"), ("outside",),
           cmd="info")


@case(13, "weights file is a symlink to a file outside (hash matches)", quick_too=False)
def _(h):
    d = h.ckpt_copy("13-symlink")
    outside = d.parent.parent / "outside-link.safetensors"
    shutil.copy(d / "gpt.safetensors", outside)
    (d / "gpt.safetensors").unlink()
    (d / "gpt.safetensors").symlink_to(outside)
    out = h.path("out", "13-symlink.h5")
    p = h.cf("generate", d, "-n", 4, "-o", out, "--no-progress", "--threads", 1)
    # following a link whose content carries the manifest's sha256 reads the right
    # weights; refusing it is fine too
    return expect_either(p, ("outside", "link"), check=lambda p: _generated_ok(4)(h, d, out, p))


def _flip_byte(d: Path, stage: str = "gpt"):
    w = d / f"{stage}.safetensors"
    raw = bytearray(w.read_bytes())
    raw[len(raw) * 2 // 3] ^= 0x10
    w.write_bytes(bytes(raw))


_ckpt_case(14, "no sha256 in the manifest", _edit(lambda m, d: m["stages"]["gpt"].pop("sha256")),
           ("sha256",))
_ckpt_case(14, "no sha256, with --no-verify (hand-made checkpoint)",
           _edit(lambda m, d: m["stages"]["gpt"].pop("sha256")), (), extra=("--no-verify",),
           ok_check=lambda h, d, out, p: _generated_ok(4)(h, d, out, p))
_ckpt_case(14, "a flipped byte in the weights (sha256 present)", lambda d: _flip_byte(d),
           ("sha256",))
_ckpt_case(14, "a flipped byte in the weights, no sha256",
           lambda d: (_flip_byte(d), _edit(lambda m, d: m["stages"]["gpt"].pop("sha256"))(d)),
           ("sha256",))
_ckpt_case(14, "weights file cut in half (sha256 present)",
           lambda d: (d / "vqvae.safetensors").write_bytes(
               (d / "vqvae.safetensors").read_bytes()[:50_000]), ("vqvae",), quick=False)
_ckpt_case(14, "calodream: a flipped byte in the shape weights",
           lambda d: _flip_byte(d, "shape"), ("sha256",), model="calodream-ds2-tiny",
           quick=False)
_ckpt_case(14, "a flipped byte in the weights", lambda d: _flip_byte(d), ("sha256",),
           cmd="info", quick=False)


def _cfg_edit(path: str, value=None, delete=False):
    def edit(d: Path):
        m = manifest(d)
        node = m["config"]
        keys = path.split(".")
        for k in keys[:-1]:
            node = node[k]
        if delete:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
        save_manifest(d, m)
    return edit


for _model, _q15 in (("calovq-ds2-tiny", True), ("calodream-ds2-tiny", False)):
    _short = _model.split("-")[0]
    _nested = "gpt.n_layers" if _short == "calovq" else "shape.n_blocks"
    _ckpt_case(15, f"{_short}: config missing {_nested}", _cfg_edit(_nested, delete=True),
               (_nested,), model=_model, quick=_q15)
    _ckpt_case(15, f"{_short}: config with an unknown key 'temprature'",
               _cfg_edit("temprature", 1.0), ("temprature",), model=_model, quick=_q15)
    _ckpt_case(15, f"{_short}: config with an unknown nested key",
               _cfg_edit(f"{_nested.split('.')[0]}.bogus", 3), ("bogus",), model=_model,
               quick=False)
    _ckpt_case(15, f"{_short}: config with a string where an integer belongs",
               _cfg_edit(_nested, "two"), (_nested,), model=_model, quick=False)
_ckpt_case(15, "calovq: config missing temperature", _cfg_edit("temperature", delete=True),
           ("temperature",))
_ckpt_case(15, "calovq: config missing occupancy_calibration",
           _cfg_edit("occupancy_calibration", delete=True), ("occupancy_calibration",),
           quick=False)


def _trained_cfg_case(label, key, value=None, delete=False):
    def fn(h: Harness):
        src = trained(h, "for-config", steps=3)
        d = h.work / "ckpt" / f"15-trained-{key}"
        if d.exists():
            shutil.rmtree(d)
        shutil.copytree(src, d)
        _cfg_edit(key, value, delete)(d)
        out = h.path("out", f"15-trained-{key}.h5")
        p = h.cf("generate", d, "-n", 4, "-o", out, "--no-progress", "--threads", 1)
        return expect_error(p, key)
    add(15, f"freshly trained calovq: {label}", fn, full_only=True, cost=8)


_trained_cfg_case("config missing gpt.n_layers", "gpt.n_layers", delete=True)
_trained_cfg_case("config missing temperature", "temperature", delete=True)
_trained_cfg_case("config with an unknown key", "temprature", 1.0)


# =========================================================================== row 16: TOML

def _toml_case(label: str, text: str | None, needles: tuple, quick=True):
    def fn(h: Harness):
        tag = re.sub(r"[^a-z0-9]+", "-", label.lower())[:60]
        path = h.work / "toml" / f"{tag}.toml"
        path.parent.mkdir(exist_ok=True)
        if text is not None:
            path.write_text(text)
        p = h.cf("train", "calovq-ds2-tiny", "--data", h.small(), "--config", path, "-o",
                 h.work / "models" / f"toml-{tag}", "--no-progress", "--threads", 1,
                 "--set", "training.vqvae.max_steps=2", "--set", "training.gpt.max_steps=2")
        return expect_error(p, *[str(path) if n == "PATH" else n for n in needles])
    add(16, label, fn, quick_too=quick)


_toml_case("a table where a number belongs ([beta])", "[beta]\nx = 1\n", ("beta",))
_toml_case("an inline table where a number belongs (gan.start = {a = 1})",
           "[gan]\nstart = {a = 1}\n", ("gan.start",))
_toml_case("a number where a table belongs (gan = 3)", "gan = 3\n", ("gan",))
_toml_case("a string where a number belongs", 'beta = "one"\n', ("beta",), quick=False)
_toml_case("an unknown key", "betta = 1.0\n", ("betta",), quick=False)
_toml_case("an unknown nested key", "[gan]\nstrat = 1\n", ("strat",), quick=False)
_toml_case("not TOML", "beta = = 1\n[[[\n", ("PATH",))
_toml_case("a missing TOML file", None, ("PATH",), quick=False)


# =========================================================================== row 17: 0 showers

def _zero(h: Harness) -> Path:
    return h.raw_h5("zero", incident_energies=np.zeros((0, 1)),
                    showers=np.zeros((0, 6480), np.float32))


@case(17, "info on a file with 0 showers")
def _(h):
    p = h.cf("info", _zero(h))

    def check(p):
        said = [x.strip() for x in p.out.splitlines() if "no showers" in x.lower()]
        if not said or "nan" in p.out.lower():
            return False, "no 'no showers' line, or NaN printed: " + p.out.strip()[-120:]
        return True, said[0][:120]
    return expect_ok(p, check)


for _cmd, _q17 in (("evaluate --generated", True), ("evaluate --reference", False),
                   ("train --data", False), ("generate --energies-from", True)):
    def _fn(h, cmd=_cmd):
        path = _zero(h)
        label, argv, needles = next(c for c in _input_option_cmds(h, path, f"zero-{cmd[-6:]}")
                                    if c[0] == cmd)
        return expect_error(h.cf(*argv), *needles, ("no showers", "no incident", "empty",
                                                    "0 showers"))
    add(17, f"{_cmd} a file with 0 showers", _fn, quick_too=_q17)


# =========================================================================== row 18: energies

def _sim_energy(spec: str, needles: tuple, quick=True, n=3):
    def fn(h: Harness):
        out = h.path("out", f"energy-{re.sub(r'[^A-Za-z0-9]+', '_', spec)}.h5")
        p = h.cf("simulate", "-n", n, "--energy", spec, "-o", out, "--no-progress",
                 "--threads", 1, timeout=120)
        return expect_error(p, *needles, check=lambda: (not out.exists(), "a file was written"))
    add(18, f"simulate --energy {spec}", fn, quick_too=quick)


_sim_energy("fixed:1e9TeV", ("10 TeV",))
_sim_energy("uniform:1TeV:20TeV", ("10 TeV",))
_sim_energy("fixed:0GeV", ("energy",), quick=False)
_sim_energy("fixed:-5GeV", ("energy",))
_sim_energy("fixed:abc", ("abc",), quick=False)
_sim_energy("log-uniform:1TeV:1GeV", ("log-uniform",), quick=False)
_sim_energy("gaussian:1GeV", ("gaussian",), quick=False)
_sim_energy("fixed:1e-6GeV", ("0.001 MeV",), quick=False)


@case(18, "simulate -n 0 / -n -3")
def _(h):
    for n in (0, -3):
        out = h.path("out", f"n{n}.h5")
        p = h.cf("simulate", "-n", n, "-o", out, "--no-progress", "--threads", 1)
        v = expect_error(p, ("-n", "n_showers", "number of showers", "at least"),
                         check=lambda out=out: (not out.exists(), "a file was written"))
        if v[0] != CLEAR:
            return v[0], f"-n {n}: {v[1]}"
    return v


@case(18, "generate --energy fixed:1e9TeV warns (outside the training range)", quick_too=False)
def _(h):
    out = h.path("out", "gen-1e9.h5")
    p = h.cf("generate", "calovq-ds2-tiny", "-n", 2, "--energy", "fixed:1e9TeV", "-o", out,
             "--no-progress", "--threads", 1)
    if p.rc == 2:
        return expect_error(p, ("energy", "range"))
    return expect_ok(p, lambda p: ("outside" in p.err and "training range" in p.err
                                   and h5_count(out) == 2,
                                   "warned: outside the model's training range"))


# =========================================================================== row 19: outputs

def _out_case(label: str, args_fn: Callable[[Harness, Path], list], needles: tuple,
              setup: str = "dir", quick=True):
    def fn(h: Harness):
        base = h.fresh_dir(f"outputs/{re.sub(r'[^a-z0-9]+', '-', label.lower())[:50]}")
        if setup == "dir":
            target = base / "target"
            target.mkdir()
        elif setup == "file":
            target = base / "target"
            target.write_text("x")
        else:  # a path below a regular file
            (base / "afile").write_text("x")
            target = base / "afile" / "x.h5"
        p = h.cf(*args_fn(h, target))

        def check():
            names = sorted(x.name for x in base.iterdir())
            tmp = [n for n in names if n.endswith(".tmp")]
            inner = sorted(x.name for x in target.iterdir()) if target.is_dir() else []
            if tmp or inner:
                return False, f"left behind: {tmp + inner}"
            return True, ""
        return expect_error(p, *[str(target) if n == "PATH" else n for n in needles],
                            check=check)
    add(19, label, fn, quick_too=quick)


_out_case("simulate -o an existing directory",
          lambda h, t: ["simulate", "-n", 5, "-o", t, "--no-progress", "--threads", 1],
          ("directory",))
_out_case("generate -o an existing directory",
          lambda h, t: ["generate", "calovq-ds2-tiny", "-n", 3, "-o", t, "--no-progress",
                        "--threads", 1], ("directory",))
_out_case("simulate -o a path below a regular file",
          lambda h, t: ["simulate", "-n", 5, "-o", t, "--no-progress", "--threads", 1],
          ("not a directory",), setup="below-file", quick=False)
_out_case("train -o an existing regular file",
          lambda h, t: ["train", "calovq-ds2-tiny", "--data", h.small(), "-o", t,
                        "--no-progress", "--threads", 1, *as_set_args(calovq_micro(4))],
          ("PATH",), setup="file")
_out_case("evaluate -o an existing regular file",
          lambda h, t: ["evaluate", "--reference", h.small(), "--generated", h.small(), "-o", t,
                        "--classifier", "none", "--no-plots", "--quiet", "--threads", 1],
          ("PATH",), setup="file", quick=False)
_out_case("run -o an existing regular file",
          lambda h, t: ["run", "-o", t, "--pretrained-only", "--no-progress", "--threads", 1],
          ("PATH",), setup="file", quick=False)


# =========================================================================== row 20: references

def _repo_root() -> Path | None:
    spec = importlib.util.find_spec("caloforge")
    pkg = Path(list(spec.submodule_search_locations)[0])
    for root in (pkg.parent.parent, pkg.parent):
        if (root / "docs").is_dir():
            return root
    return None


def _bad_references(text: str, root: Path) -> list[str]:
    bad = re.findall(r"spec A\d+|\.\./specs/\S*|\bspecs/\w+\.md", text)
    for ref in re.findall(r"\bdocs/[\w./-]+\.md", text):
        if not (root / ref).exists():
            bad.append(ref)
    return sorted(set(bad))


def _refs_case(label: str, argv_list: list[list[str]]):
    def fn(h: Harness):
        root = _repo_root()
        if root is None:
            return SKIP, "no docs/ folder beside the installed package (not a source checkout)"
        text = ""
        for argv in argv_list:
            p = h.cf(*argv)
            why = crashed(p)
            if why:
                return TRACEBACK, why
            if p.rc != 0:
                return WRONG, f"{' '.join(argv)}: exit {p.rc}"
            text += p.out + p.err
        bad = _bad_references(text, root)
        return (WRONG, f"references that do not resolve: {bad}") if bad else \
            (OK, f"every docs/ reference resolves ({len(re.findall(r'docs/', text))} seen)")
    add(20, label, fn)


_refs_case("train --list names only documents inside the project", [["train", "--list"]])
_refs_case("--help of every command names only documents inside the project",
           [["--help"]] + [[c, "--help"] for c in ("run", "simulate", "info", "train",
                                                   "generate", "evaluate", "bench", "plot",
                                                   "export")])


@case(20, "src/, docs/ and README name only documents inside the project (static)")
def _(h):
    root = _repo_root()
    if root is None:
        return SKIP, "no docs/ folder beside the installed package"
    spec = importlib.util.find_spec("caloforge")
    pkg = Path(list(spec.submodule_search_locations)[0])
    bad = {}
    files = [*sorted(pkg.rglob("*.py")), *sorted((root / "docs").glob("*.md")),
             root / "README.md"]
    for f in files:
        if not f.is_file():
            continue
        b = _bad_references(f.read_text(errors="replace"), root)
        if b:
            bad[os.path.relpath(f, root)] = b
    if bad:
        n = sum(len(v) for v in bad.values())
        return WRONG, (f"{n} references to documents outside the project in {len(bad)} files, "
                       f"e.g. " + "; ".join(f"{k}: {', '.join(v[:3])}"
                                            for k, v in list(bad.items())[:4]))
    return OK, "no `spec A..`, no specs/..., every docs/*.md named in src/ and docs/ exists"


# =========================================================================== row 21: energies

def _ef_case(label: str, make: Callable[[Harness], Path], needles: tuple | None, n_expect=None,
             quick=True):
    def fn(h: Harness):
        path = make(h)
        out = h.path("out", f"ef-{re.sub(r'[^a-z0-9]+', '-', label.lower())[:40]}.h5")
        p = h.cf("generate", "calovq-ds2-tiny", "--energies-from", path, "-o", out,
                 "--no-progress", "--threads", 1)
        if needles is None:
            def check(p):
                want = np.asarray(h5py.File(path, "r")["incident_energies"][...]).reshape(-1)
                got, s = read_h5(out)
                if len(got) != len(want) or not np.allclose(got, want, rtol=1e-6):
                    return False, f"energies written {got[:3]} != read {want[:3]}"
                return np.isfinite(s).all(), f"{len(got)} showers at the file's energies"
            return expect_ok(p, check)
        return expect_error(p, "--energies-from", *needles,
                            check=lambda: (not out.exists(), "showers were written"))
    add(21, label, fn, quick_too=quick)


_E = np.array([1e3, 5e3, 2e4, 1e5, 4e5])
_ef_case("incident_energies with 2 columns",
         lambda h: h.raw_h5("e-2col", incident_energies=np.stack([_E, _E], 1)), ("shape",))
_ef_case("incident_energies of shape (N, 1, 1)",
         lambda h: h.raw_h5("e-3d", incident_energies=_E.reshape(-1, 1, 1)), ("shape",),
         quick=False)
_ef_case("negative incident energies",
         lambda h: h.raw_h5("e-neg", incident_energies=-_E.reshape(-1, 1)), ("positive",))
_ef_case("a zero incident energy",
         lambda h: h.raw_h5("e-zero", incident_energies=np.r_[_E, 0.0].reshape(-1, 1)),
         ("positive",), quick=False)
_ef_case("a NaN incident energy",
         lambda h: h.raw_h5("e-nan", incident_energies=np.r_[_E, np.nan].reshape(-1, 1)),
         ("nan",))
_ef_case("an infinite incident energy",
         lambda h: h.raw_h5("e-inf", incident_energies=np.r_[_E, np.inf].reshape(-1, 1)),
         ("inf",), quick=False)
_ef_case("strings as incident energies",
         lambda h: h.raw_h5("e-str", incident_energies=np.array([b"x", b"y"])),
         ("number",), quick=False)
_ef_case("no incident_energies dataset",
         lambda h: h.raw_h5("e-none", showers=np.zeros((2, 6480), np.float32)),
         ("incident_energies",))
_ef_case("0 incident energies",
         lambda h: h.raw_h5("e-empty", incident_energies=np.zeros((0, 1))),
         ("no incident",), quick=False)
_ef_case("a text file",
         lambda h: (h.path("data", "e.txt").write_text("1000\n2000\n"), h.path("data", "e.txt"))[1],
         ("hdf5",), quick=False)
_ef_case("(N,) energies are read as N showers (correct)",
         lambda h: h.raw_h5("e-flat", incident_energies=_E), None)
_ef_case("(N, 1) energies of a shower file (correct)", lambda h: h.simulated("ef-src", 20, 9),
         None, quick=False)


# =========================================================================== row 22: kill -9

def _kill9_writer(kind: str):
    def fn(h: Harness):
        d = h.fresh_dir(f"kill9/{kind}")
        out = d / "big.h5"
        p = h.popen(_long_writer(kind, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            reached = _wait_for(lambda: _writing(kind, d) or p.poll() is not None)
            time.sleep(0.5 if kind == "generate" else 0.0)
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
        finally:
            if p.poll() is None:
                p.kill()
        left = _temporaries(d)
        left_size = sum(t.stat().st_size for t in left)
        if not reached or not left:
            return WRONG, "no temporary seen before the kill (could not reproduce)"
        if out.exists():
            return WRONG, "the final file exists after kill -9 during its write"
        # a temporary of a live writer of the same target (this process) and another
        # target's temporary must stay
        live = d / f".big.h5.p{os.getpid()}-live.h5.tmp"
        live.write_bytes(b"x")
        other = d / ".other.h5.p999999999-x.h5.tmp"
        other.write_bytes(b"x")
        if kind == "simulate":
            r = h.cf("simulate", "-n", 20, "-o", out, "--no-progress", "--threads", 1)
        else:
            r = h.cf("generate", "calovq-ds2-tiny", "-n", 20, "-o", out, "--no-progress",
                     "--threads", 1)

        def check(r):
            names = sorted(x.name for x in d.iterdir())
            if names != sorted(["big.h5", live.name, other.name]):
                return False, f"after the rerun the folder holds {names}"
            if h5_count(out) != 20:
                return False, "the rerun's file is not complete"
            return True, (f"stale {left[0].name[:20]}... ({left_size} B) removed by the rerun; "
                          "a live writer's and another target's temporaries kept")
        return expect_ok(r, check)
    return fn


add(22, "kill -9 during simulate, then simulate again to the same file", _kill9_writer("simulate"),
    cost=6)
add(22, "kill -9 during generate, then generate again to the same file", _kill9_writer("generate"),
    cost=8)


# =========================================================================== row 23: memory

def _ds3(h: Harness, n: int, seed: int) -> Path:
    return h.simulated(f"ds3-{n}-{seed}", n, seed, geometry="ds3", energy="log-uniform:1GeV:100GeV")


@case(23, "info on ds3 files of 1000 and 3000 showers: peak RSS < 500 MB, flat within 20 %",
      full_only=True, cost=25)
def _(h):
    peaks = {}
    for n in (1000, 3000):
        p = h.cf("info", _ds3(h, n, 1))
        if p.rc != 0:
            return expect_ok(p, lambda p: (False, ""))
        peaks[n] = p.maxrss_mb
    good = max(peaks.values()) < 500 and peaks[3000] <= 1.2 * peaks[1000]
    return (OK if good else WRONG), "peak RSS " + ", ".join(f"{n}: {v:.0f} MB"
                                                           for n, v in peaks.items())


@case(23, "evaluate --classifier none, ds3 1000 vs 1000: peak RSS < 2 GB", full_only=True,
      cost=60)
def _(h):
    out = h.fresh_dir("eval/ds3")
    p = h.cf("evaluate", "--reference", _ds3(h, 1000, 2), "--generated", _ds3(h, 1000, 1), "-o",
             out, "--classifier", "none", "--no-plots", "--quiet", "--no-cache", "--threads", 1,
             timeout=600)
    return expect_ok(p, lambda p: (p.maxrss_mb < 2048, f"peak RSS {p.maxrss_mb:.0f} MB"))


# =========================================================================== row 24: KPD/PRDC

def _ds1_eval(h: Harness, convention: str) -> tuple[Proc, dict]:
    def build():
        ref = h.simulated("ds1-20k", 20000, 5, geometry="ds1-photons",
                          energy="log-uniform:1GeV:64GeV")
        gen = h.simulated("ds1-10k", 10000, 6, geometry="ds1-photons",
                          energy="log-uniform:1GeV:64GeV")
        out = h.fresh_dir(f"eval/ds1-{convention}")
        p = h.cf("evaluate", "--reference", ref, "--generated", gen, "--labels", "model", "-o",
                 out, "--classifier", "none", "--no-plots", "--no-cache", "--convention",
                 convention, "--threads", 1, "--quiet", timeout=900)
        m = json.loads((out / "metrics.json").read_text()) if p.rc == 0 else {}
        return p, m
    return h.fixture(f"ds1-eval-{convention}", build)


@case(24, "KPD with 20k reference (halves of 10k = batch size): no meaningless error bar",
      full_only=True, cost=60)
def _(h):
    p, m = _ds1_eval(h, "caloforge")

    def check(p):
        msgs = []
        for row in ("floor", "model"):
            k = m["floor"]["kpd"] if row == "floor" else m["models"]["model"]["kpd"]
            v, e, note = k.get("value"), k.get("error"), k.get("note")
            if v is None:
                return False, f"{row}: KPD not computed ({note})"
            n = k.get("n") or [0]
            degenerate = n and min(n) <= m["meta"]["options"]["kpd_batch_size"]
            if degenerate and e is not None:
                return False, f"{row}: KPD {v:.3g} ± {e:.2g} printed with N = batch size"
            if e is None and not note:
                return False, f"{row}: no error and no note"
            msgs.append(f"{row} {v:.3g} ({note or f'± {e:.2g}'})")
        return True, "; ".join(msgs)[:300]
    return expect_ok(p, check)


@case(24, "PRDC known answers: identical, collapsed and disjoint samples", cost=10)
def _(h):
    ref = h.simulated("prdc-ref", 600, 21)
    e, s = read_h5(ref)
    ident = write_h5(h.path("data", "prdc-identical.h5"), e, s)
    i = int(np.argsort(e)[len(e) // 2])
    collapsed = write_h5(h.path("data", "prdc-collapsed.h5"), np.full(len(e), e[i]),
                         np.repeat(s[i:i + 1], len(e), axis=0))
    # far from every reference shower in PRDC's space (log10 of the voxels), spread out
    far = 1e3 * (1.0 + np.random.default_rng(1).uniform(0, 1, s.shape)).astype(np.float32)
    disjoint = write_h5(h.path("data", "prdc-disjoint.h5"), e, far)
    out = h.fresh_dir("eval/prdc")
    p = h.cf("evaluate", "--reference", ref, "--generated", ident, collapsed, disjoint,
             "--labels", "identical", "collapsed", "disjoint", "-o", out, "--classifier", "none",
             "--no-plots", "--no-cache", "--quiet", "--threads", 1, *FAST_EVAL)

    def check(p):
        m = json.loads((out / "metrics.json").read_text())
        g = lambda lab, k: m["models"][lab][f"prdc/{k}"]["value"]  # noqa: E731
        fl = {k: m["floor"][f"prdc/{k}"]["value"] for k in ("precision", "recall", "coverage",
                                                           "density")}
        problems = []
        for k in ("precision", "recall", "coverage"):
            if g("identical", k) < fl[k] - 0.1:
                problems.append(f"identical {k} {g('identical', k):.3f} < floor {fl[k]:.3f}")
        if not (g("collapsed", "recall") < 0.05 and g("collapsed", "coverage") < 0.2):
            problems.append(f"collapsed: recall {g('collapsed', 'recall'):.3f}, coverage "
                            f"{g('collapsed', 'coverage'):.3f}")
        if not all(g("disjoint", k) < 0.05 for k in ("precision", "recall", "coverage",
                                                     "density")):
            problems.append("disjoint: " + ", ".join(f"{k} {g('disjoint', k):.3f}" for k in (
                "precision", "recall", "coverage", "density")))
        if problems:
            return False, "; ".join(problems)
        return True, (f"identical P/R/C {g('identical', 'precision'):.2f}/"
                      f"{g('identical', 'recall'):.2f}/{g('identical', 'coverage'):.2f}; "
                      f"collapsed R/C {g('collapsed', 'recall'):.2f}/"
                      f"{g('collapsed', 'coverage'):.2f}; disjoint all < 0.05")
    return expect_ok(p, check)


# =========================================================================== row 25: fail fast

def _fast_fail(label: str, args_fn, needles: tuple, limit: float = 30.0, quick=True,
               nothing_in: str | None = None):
    def fn(h: Harness):
        out = h.work / "failfast" / re.sub(r"[^a-z0-9]+", "-", label.lower())[:40]
        p = h.cf(*args_fn(h, out), timeout=limit * 4)

        def check():
            if p.wall > limit:
                return False, f"took {p.wall:.0f} s before failing"
            if nothing_in and (out / nothing_in).exists():
                return False, f"{nothing_in} was written before the error"
            return True, ""
        return expect_error(p, *needles, check=check)
    add(25, label, fn, quick_too=quick)


_fast_fail("run --preset calovq-ds2-tinny",
           lambda h, o: ["run", "-o", o, "--preset", "calovq-ds2-tinny", "--no-progress",
                         "--threads", 1], ("did you mean",), nothing_in="reference.h5")
_fast_fail("run --pipeline calovqq",
           lambda h, o: ["run", "-o", o, "--pipeline", "calovqq", "--no-progress", "--threads", 1],
           ("calovqq",), nothing_in="reference.h5")
_fast_fail("run --device tpu",
           lambda h, o: ["run", "-o", o, "--device", "tpu", "--no-progress", "--threads", 1],
           ("--device", "tpu"), nothing_in="reference.h5", quick=False)
_fast_fail("train calovq-ds2-tinny",
           lambda h, o: ["train", "calovq-ds2-tinny", "--data", h.small(), "-o", o],
           ("did you mean",), quick=False)
_fast_fail("generate with an unknown model name",
           lambda h, o: ["generate", "calovq-ds2-tinny", "-n", 2, "-o", o / "x.h5"],
           ("calovq-ds2-tinny",))
_fast_fail("train without --data",
           lambda h, o: ["train", "calovq-ds2-tiny", "-o", o], ("--data",), quick=False)
_fast_fail("evaluate with a missing --generated file (before reading the reference)",
           lambda h, o: ["evaluate", "--reference", h.small(), "--generated",
                         h.work / "missing.h5", "-o", o, "--classifier", "none"],
           ("--generated", "missing.h5"), quick=False)


# =========================================================================== row 26: progress

def _progress_case(model: str, n: int):
    def fn(h: Harness):
        out = h.path("out", f"progress-{model}.h5")
        p = h.cf("generate", model, "-n", n, "-o", out, "--threads", 1)

        def check(p):
            t_err = [t for t, s, _ in p.events if s == "err"]
            if not t_err:
                return False, "no progress output at all"
            times = [0.0, *t_err, p.wall]
            gap = max(b - a for a, b in zip(times, times[1:]))
            first = t_err[0]
            if first > 15 or gap > 15:
                return False, f"first progress after {first:.1f} s, longest silence {gap:.1f} s"
            return True, (f"first progress after {first:.1f} s, longest silence {gap:.1f} s "
                          f"in {p.wall:.0f} s")
        return expect_ok(p, check)
    return fn


add(26, "generate calovq-ds2-tiny -n 2000: progress every few seconds",
    _progress_case("calovq-ds2-tiny", 2000), serial=True, cost=20)
add(26, "generate calodream-ds2-tiny -n 300: progress every few seconds",
    _progress_case("calodream-ds2-tiny", 300), serial=True, cost=20, quick_too=False)


@case(26, "bench prints before it is done", serial=True, cost=20)
def _(h):
    p = h.cf("bench", "calovq-ds2-tiny", "--batch-sizes", "1,100,500", "--threads", "1",
             "--repeats", 2, "--device", "cpu")

    def check(p):
        t_out = [t for t, s, _ in p.events if s == "out"]
        if not t_out:
            return False, "printed nothing"
        if t_out[0] > p.wall - 1.0:
            return False, f"first output {t_out[0]:.1f} s, at the end ({p.wall:.1f} s)"
        return True, f"first output after {t_out[0]:.1f} s of {p.wall:.1f} s"
    return expect_ok(p, check)


# =========================================================================== row 27: pytest

@case(27, "test_cli_run's subprocesses carry no wall-clock limit that a busy machine hits "
          "(static)")
def _(h):
    root = _repo_root()
    f = root / "tests" / "test_cli_run.py" if root else None
    if f is None or not f.exists():
        return SKIP, "tests/ not beside the package"
    import ast

    tree = ast.parse(f.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and \
                node.name == "test_run_simulates_trains_generates_and_reports":
            marks = [ast.unparse(d) for d in node.decorator_list]
            if any("slow" in m for m in marks):
                return OK, "marked slow"
            limits = [ast.unparse(k.value) for c in ast.walk(node) if isinstance(c, ast.Call)
                      for k in c.keywords if k.arg == "timeout"]
            if limits:
                return WRONG, f"subprocess timeout={limits} in the end-to-end test"
            return OK, "the end-to-end `run` test has no subprocess timeout"
    return OK, "the test no longer exists"


# =========================================================================== rows 28-30: eval

@case(28, "--convention official on 20k vs 10k: FPD computed (not n/a), labelled",
      full_only=True, cost=60)
def _(h):
    p, m = _ds1_eval(h, "official")

    def check(p):
        vals = {}
        for row, d in (("floor", m["floor"]), ("model", m["models"]["model"])):
            f = d["fpd"]
            if f.get("value") is None or not f.get("error"):
                return False, f"{row}: FPD {f}"
            vals[row] = f"{f['value']:.3g} ± {f['error']:.2g}"
        if m["meta"]["options"]["convention"] != "official" or "official" not in p.out:
            return False, "the report does not say which convention it used"
        return True, f"FPD x1e3 floor {vals['floor']}, model {vals['model']}"
    return expect_ok(p, check)


@case(28, "--convention caloforge on 20k vs 10k: FPD n/a says why", full_only=True, cost=5)
def _(h):
    p, m = _ds1_eval(h, "caloforge")

    def check(p):
        f = m["models"]["model"]["fpd"]
        if f.get("value") is None and not f.get("note"):
            return False, "FPD n/a without a reason"
        return True, (f"FPD {f['value']:.3g}" if f.get("value") is not None else
                      f"n/a: {f['note'][:100]}")
    return expect_ok(p, check)


@case(28, "--convention official on a small sample: recorded, FPD n/a says why", cost=20)
def _(h):
    p, out = _known_eval(h, "official")

    def check(p):
        m = json.loads((out / "metrics.json").read_text())
        if m["meta"]["options"]["convention"] != "official" or "official" not in p.out:
            return False, "the report does not say which convention it used"
        f = m["models"]["bins"]["fpd"]
        if f.get("value") is None and not f.get("note"):
            return False, "FPD n/a without a reason"
        return True, "official convention recorded; FPD " + (
            f"{f['value']:.3g}" if f.get("value") is not None else f"n/a: {f['note'][:80]}")
    return expect_ok(p, check)


def _known_answer_files(h: Harness) -> dict[str, Path]:
    """Synthetic ds2 showers with answers known by construction.

    Every reference shower holds the same energy ``C0`` in layer ``L`` (one voxel) and
    nothing in layer ``K``; layer ``M`` varies from shower to shower (so no two showers
    are identical). ``bins``: the reference's showers with layer ``L`` holding ``C1``,
    placed between the lower edges of the last E_layer bin of the official binning (40
    log edges from the threshold to the reference maximum ``C0``: 39 bins) and of
    caloforge's (41 edges: 40 bins): the same bin officially (separation 0), neighbouring
    bins for caloforge (separation 1). ``threshold``: the reference's showers plus voxels
    of 0.0151508 MeV in layer ``K``, below 0.5e-3/0.033 = 0.0151515 MeV but above the old
    15.15e-3: cut, they leave the sample identical to the reference in layer ``K``.
    """
    def build():
        n_alpha, n_r, n_layers = 16, 9, 45
        per_layer = n_alpha * n_r
        rng = np.random.default_rng(7)

        def showers(n):
            s = np.zeros((n, n_layers * per_layer), np.float32)
            for layer in range(n_layers):
                if layer not in (K, L, M):
                    s[:, layer * per_layer:layer * per_layer + 10] = layer + 1.0
            s[:, L * per_layer] = C0
            s[:, M * per_layer:M * per_layer + 10] = rng.uniform(1.0, 2.0, (n, 10))
            return s

        r39 = (C0 / DS2_THRESHOLD_MEV) ** (1 / 39)
        r40 = (C0 / DS2_THRESHOLD_MEV) ** (1 / 40)
        c1 = C0 / np.sqrt(r39 * r40)
        ref = write_h5(h.path("data", "known-ref.h5"), np.full(300, 1e4), showers(300))
        b = showers(150)
        b[:, L * per_layer] = c1
        bins = write_h5(h.path("data", "known-bins.h5"), np.full(150, 1e4), b)
        t = showers(150)
        t[:, K * per_layer:K * per_layer + 20] = SUB_THRESHOLD
        thr = write_h5(h.path("data", "known-threshold.h5"), np.full(150, 1e4), t)
        return {"ref": ref, "bins": bins, "threshold": thr}
    return h.fixture("known-answers", build)


# C0 = 100: 10**log10(C0) == C0 exactly, so the reference maximum is the last bin edge
K, L, M, C0, SUB_THRESHOLD = 30, 10, 5, 100.0, 0.0151508


def _known_eval(h: Harness, convention: str) -> tuple[Proc, Path]:
    def build():
        f = _known_answer_files(h)
        out = h.fresh_dir(f"eval/known-{convention}")
        p = h.cf("evaluate", "--reference", f["ref"], "--generated", f["bins"], f["threshold"],
                 "--labels", "bins", "threshold", "-o", out, "--classifier", "none",
                 "--no-plots", "--no-cache", "--convention", convention, "--threads", 1,
                 "--quiet")
        return p, out
    return h.fixture(f"known-eval-{convention}", build)


def _per_layer(out: Path, label: str, feature: str, layer: int):
    m = json.loads((out / "metrics.json").read_text())
    return m["details"][label]["separation_power"][feature]["per_layer"].get(str(layer))


def _elayer_case(convention: str, expected: float):
    def fn(h: Harness):
        p, out = _known_eval(h, convention)

        def check(p):
            v = _per_layer(out, "bins", "e_layer", L)
            if v is None or abs(v - expected) > 1e-6:
                return False, (f"E_layer separation of layer {L}: {v}, expected {expected} "
                               f"({'39' if convention == 'official' else '40'} bins)")
            return True, (f"layer {L}: {v:.3g} as expected with "
                          f"{'39' if convention == 'official' else '40'} log bins")
        return expect_ok(p, check)
    return fn


add(29, "--convention official: a value in the last of 39 log bins scores 0 (known answer)",
    _elayer_case("official", 0.0), cost=40)
add(29, "--convention caloforge: the same value one of 40 bins lower scores 1 (known answer)",
    _elayer_case("caloforge", 1.0), cost=40, quick_too=False)


def _threshold_case(convention: str):
    def fn(h: Harness):
        p, out = _known_eval(h, convention)

        def check(p):
            m = json.loads((out / "metrics.json").read_text())
            thr = m["meta"]["threshold_mev"]
            if abs(thr - DS2_THRESHOLD_MEV) > 1e-12:
                return False, f"threshold {thr!r} MeV != 0.5e-3/0.033 = {DS2_THRESHOLD_MEV!r}"
            sp = _per_layer(out, "threshold", "sparsity", K)
            el = _per_layer(out, "threshold", "e_layer", K)
            if (sp or 0) > 1e-9 or (el or 0) > 1e-9:
                return False, (f"voxels of {SUB_THRESHOLD} MeV (below 0.0151515) were kept: "
                               f"sparsity separation {sp}, E_layer separation {el} in layer {K}")
            return True, f"threshold {thr!r} MeV; voxels of {SUB_THRESHOLD} MeV cut"
        return expect_ok(p, check)
    return fn


add(30, "ds2 threshold 0.5e-3/0.033 MeV: 0.0151508 MeV voxels are cut (caloforge convention)",
    _threshold_case("caloforge"), quick_too=False)
add(30, "ds2 threshold 0.5e-3/0.033 MeV: 0.0151508 MeV voxels are cut (official convention)",
    _threshold_case("official"))


@case(30, "evaluate --help states the threshold 0.0151515 MeV", quick_too=False)
def _(h):
    p = h.cf("evaluate", "--help")
    return expect_ok(p, lambda p: ("0.0151515" in p.out, "stated" if "0.0151515" in p.out
                                   else "--help does not state 0.0151515 MeV"))


# =========================================================================== row 31: threads

def _gen_timed(h: Harness, tag: str, extra: list, prefix: list = (), n: int = 1500) -> Proc:
    return h.cf("generate", "calovq-ds2-tiny", "-n", n, "-o", h.path("out", f"thr-{tag}.h5"),
                "--no-progress", "--seed", 1, *extra, prefix=list(prefix))


def _thread_case(label: str, extra: list, prefix_fn=lambda: [], n=1500, quick=True):
    def fn(h: Harness):
        prefix = prefix_fn()
        if prefix is None:
            return SKIP, "no `taskset` on this machine"
        batch = extra[extra.index("--batch-size"):][:2] if "--batch-size" in extra else []
        one = h.fixture(f"one-thread-{n}-{batch}", lambda: _gen_timed(
            h, f"one-{n}-{'-'.join(map(str, batch))}", [*batch, "--threads", 1], n=n))
        if one.rc != 0:
            return expect_ok(one, lambda p: (False, ""))
        other = _gen_timed(h, re.sub(r"[^a-z0-9]+", "-", label.lower())[:30], extra, prefix, n)

        def check(p):
            slow = other.wall / max(one.wall, 1e-9)
            cpu = other.cpu / max(one.cpu, 1e-9)
            detail = (f"{other.wall:.1f} s, {other.cpu:.1f} s CPU; one thread {one.wall:.1f} s, "
                      f"{one.cpu:.1f} s CPU (x{slow:.2f} wall, x{cpu:.2f} CPU)")
            return (slow <= 1.5 and other.cpu <= 1.5 * one.cpu + 1.0), detail
        return expect_ok(other, check)
    add(31, label, fn, serial=True, cost=30, quick_too=quick)


_thread_case("generate, default threads (the CPUs this process may use)", [])
_thread_case("generate --batch-size 32, default threads (small batches on one thread)",
             ["--batch-size", 32], n=600, quick=False)
_thread_case("generate under `taskset -c 0`, default threads (follows the affinity)", [],
             prefix_fn=lambda: ["taskset", "-c", "0"] if shutil.which("taskset") else None,
             quick=False)
_thread_case("generate --threads 2", ["--threads", 2], quick=False)


# =========================================================================== row 32: CLI

@case(32, "caloforge --version")
def _(h):
    p = h.cf("--version")
    return expect_ok(p, lambda p: (bool(re.match(r"caloforge \d+\.\d+", p.out.strip())),
                                   p.out.strip()))


@case(32, "every command's --help shows an example", quick_too=False)
def _(h):
    missing = []
    for c in ("run", "simulate", "info", "train", "generate", "evaluate", "bench", "plot",
              "export"):
        p = h.cf(c, "--help")
        if crashed(p):
            return TRACEBACK, f"{c} --help: {crashed(p)}"
        if p.rc != 0 or f"caloforge {c}" not in p.out.split("xample", 1)[-1]:
            missing.append(c)
    return (WRONG, f"no example in: {missing}") if missing else (OK, "9 commands")


@case(32, "train --set training.vqvae.max_steps=3 below the preset's warm-up (150)",
      full_only=True, cost=8)
def _(h):
    out = h.fresh_dir("models/below-warmup")
    p = h.cf("train", "calovq-ds2-tiny", "--data", h.small(), "-o", out, "--no-progress",
             "--threads", 1, *as_set_args(["vqvae.channels=[8, 8]", "discriminator.channels=[8]",
                                           "gpt.n_layers=1", "gpt.d_model=16",
                                           "training.vqvae.max_steps=3",
                                           "training.gpt.max_steps=3"]))
    if p.rc == 2:
        return expect_error(p, ("warmup", "warm-up"))
    return expect_ok(p, lambda p: (stage_step(out, "gpt") == 3 and stage_step(out, "vqvae") == 3,
                                   "trained 3 steps per stage (warm-up adjusted)"))


# --------------------------------------------------------------------------- driver


@dataclass
class Result:
    row: int
    name: str
    verdict: str
    detail: str
    seconds: float


def run_case(h: Harness, c: Case) -> Result:
    t0 = time.monotonic()
    try:
        verdict, detail = c.fn(h)
    except FixtureError as exc:
        why = crashed(exc.proc) if exc.proc else None
        verdict, detail = (TRACEBACK if why else WRONG), f"setup: {exc}"[:400]
    except Exception as exc:  # noqa: BLE001 - a harness problem is reported, not hidden
        verdict = WRONG
        detail = f"harness error: {type(exc).__name__}: {exc} | " + \
            traceback.format_exc().strip().splitlines()[-3][:200]
    return Result(c.row, c.name, verdict, str(detail).replace("\n", " ").replace("|", "/"),
                  time.monotonic() - t0)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count()
    load = ""
    try:
        load = f", load {os.getloadavg()[0]:.1f}"
    except OSError:
        pass
    return f"{platform.node()}: {cpu}, {n} CPUs{load}; {platform.platform()}; Python " \
           f"{platform.python_version()}"


def version() -> str:
    r = subprocess.run([sys.executable, "-m", "caloforge", "--version"], capture_output=True,
                       text=True)
    return (r.stdout or r.stderr).strip()


def table(results: list[Result], args, wall: float, started: str) -> str:
    cols = [CLEAR, OK, TRACEBACK, WRONG]
    lines = [f"## Hostile inputs of issue 13, re-run ({'quick' if args.quick else 'full'})", "",
             f"- {version()}, {started}, wall time {wall / 60:.1f} min",
             f"- machine: {machine()}", "",
             "| # | row of the issue | cases | clear error | correct result | traceback | "
             "silently wrong | notes |",
             "|---:|---|---:|---:|---:|---:|---:|---|"]
    tot = {k: 0 for k in cols}
    n_all = 0
    for row, label in ROWS.items():
        rs = [r for r in results if r.row == row]
        run = [r for r in rs if r.verdict != SKIP]
        counts = {k: sum(r.verdict == k for r in run) for k in cols}
        notes = []
        skipped = [r for r in rs if r.verdict == SKIP]
        if skipped:
            notes.append(f"{len(skipped)} skipped: " + "; ".join(sorted({r.detail for r in
                                                                          skipped})))
        if not rs:
            notes.append("training row, not run with --quick" if args.quick and any(
                c.row == row and c.full_only for c in CASES) else "not selected")
        bad = [r for r in run if r.verdict in (TRACEBACK, WRONG)]
        if bad:
            notes.append(f"see below: {len(bad)} failing")
        for k in cols:
            tot[k] += counts[k]
        n_all += len(run)
        lines.append(f"| {row} | {label} | {len(run)} | " + " | ".join(
            str(counts[k]) for k in cols) + f" | {' '.join(notes)} |")
    lines.append(f"| | **total** | **{n_all}** | " + " | ".join(f"**{tot[k]}**" for k in cols)
                 + " | |")
    bad = [r for r in results if r.verdict in (TRACEBACK, WRONG)]
    if bad:
        lines += ["", "### Failing cases", ""]
        lines += [f"- row {r.row}, {r.name}: **{r.verdict}**: {r.detail}" for r in bad]
    if args.verbose:
        lines += ["", "### Every case", ""]
        lines += [f"- row {r.row}, {r.name}: {r.verdict} ({r.seconds:.1f} s): {r.detail}"
                  for r in sorted(results, key=lambda r: r.row)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example: OMP_NUM_THREADS=1 nice -n 10 python "
                                        "scripts/hostile_inputs.py --quick")
    ap.add_argument("--out", help="keep the work files here and write table.md and cases.json")
    ap.add_argument("--quick", action="store_true",
                    help="skip the training rows and the expensive variants (about 2 minutes)")
    ap.add_argument("--rows", help="only these rows, e.g. 1,5,9")
    ap.add_argument("-k", dest="pattern", help="only cases whose name contains this text")
    ap.add_argument("--jobs", type=int, default=2,
                    help="cases run at once (default 2; timing cases always run alone)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per command")
    ap.add_argument("-v", "--verbose", action="store_true", help="list every case")
    args = ap.parse_args(argv)

    rows = {int(x) for x in args.rows.split(",")} if args.rows else set(ROWS)
    cases = [c for c in CASES if c.row in rows
             and (not args.quick or (not c.full_only and c.quick_too))
             and (not args.pattern or args.pattern.lower() in c.name.lower())]
    if args.out:
        work = Path(args.out).resolve() / "work"
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        cleanup = None
    else:
        cleanup = tempfile.mkdtemp(prefix="caloforge-hostile-")
        work = Path(cleanup)
    os.chmod(work, 0o755)
    h = Harness(work, args.quick, args.timeout)
    started = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    t0 = time.monotonic()
    results: list[Result] = []
    lock = threading.Lock()

    def go(c: Case):
        r = run_case(h, c)
        with lock:
            results.append(r)
            mark = {CLEAR: "ok ", OK: "ok ", SKIP: "-- "}.get(r.verdict, "!! ")
            print(f"{mark}[{time.monotonic() - t0:6.1f} s] row {r.row:2d} {r.name}: "
                  f"{r.verdict} ({r.seconds:.1f} s) {r.detail[:160]}", file=sys.stderr,
                  flush=True)

    parallel = sorted([c for c in cases if not c.serial], key=lambda c: -c.cost)
    try:
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            list(pool.map(go, parallel))
        for c in [c for c in cases if c.serial]:
            go(c)
        wall = time.monotonic() - t0
        results.sort(key=lambda r: (r.row, r.name))
        text = table(results, args, wall, started)
        print(text)
        if args.out:
            out = Path(args.out)
            (out / "table.md").write_text(text + "\n")
            (out / "cases.json").write_text(json.dumps([r.__dict__ for r in results], indent=1))
    finally:
        if cleanup:
            shutil.rmtree(cleanup, ignore_errors=True)
    return 1 if any(r.verdict in (TRACEBACK, WRONG) for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
