"""Hard kills: ``mcasim train`` SIGKILLed at any moment and resumed ends exactly as an uninterrupted run.

A small PCM MLP (8x8 digits, 300 training images, 3 epochs) runs in a subprocess. It is killed
(a) at named moments through the ``MCASIM_CRASH_AT=POINT[:N]`` hook of ``sim/checkpoint.py`` (the
process SIGKILLs itself there: half-way through the arrays of a checkpoint, with the new file
complete but not renamed, after the old one was linked to ``checkpoint.prev.npz``, with a text
file's temporary copy complete, after the plots but before ``summary.json``), and (b) by the test
with SIGKILL after a random delay (seeded, so a failure is reproducible). After every kill the run
folder must be consistent (every ``metrics.jsonl`` line whole JSON, epochs 1..k once each, a
loadable checkpoint once one was written, ``summary.json`` absent or whole); the run is then
relaunched (``--resume`` where there is a checkpoint, else from scratch with ``--overwrite``). The
finished folder's metrics, summary (all but wall-clock seconds and the command line) and final
checkpoint state must equal the uninterrupted run's bit for bit.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim import checkpoint as ckpt
from sim.train import CHECKPOINT, has_checkpoint

REPO = Path(__file__).resolve().parents[1]
TIMING_KEYS = ("seconds", "eval_seconds")
SUMMARY_VOLATILE = ("seconds_per_epoch", "total_train_seconds", "command")
EPOCHS = 3
TRAIN = [sys.executable, "-m", "sim.cli", "train", "mlp", "--dataset", "digits", "--synapse", "pcm", "--quiet",
         "--backend", "numpy", "--seed", "7", "--set", "model.hidden=[16]", "--set", "train.train_subset=300",
         "--set", "train.test_subset=200", "--set", "synapse.devices_per_side=2", "--epochs", str(EPOCHS)]


def _env(crash_at=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop(ckpt.CRASH_ENV, None)
    if crash_at:
        env[ckpt.CRASH_ENV] = crash_at
    return env


def _command(out: Path):
    if has_checkpoint(out):
        return TRAIN + ["--out", str(out), "--resume"]
    return TRAIN + ["--out", str(out)] + (["--overwrite"] if out.exists() else [])


def launch(out: Path, crash_at=None, kill_after_s=None) -> int:
    """One attempt at the run in ``out``; returns its exit status (-9: killed)."""
    proc = subprocess.Popen(_command(out), cwd=REPO, env=_env(crash_at), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    if kill_after_s is not None:
        try:
            proc.wait(timeout=kill_after_s)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"{' '.join(_command(out))} exited {proc.returncode}: {err}")
    return proc.returncode


def assert_consistent(out: Path):
    """What a kill may leave: whole files only."""
    if (out / "metrics.jsonl").exists():
        recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in recs] == list(range(1, len(recs) + 1))
    if (out / CHECKPOINT).exists():
        assert ckpt.load(out / CHECKPOINT)["epoch"] >= 1
    if (out / "summary.json").exists():
        assert json.loads((out / "summary.json").read_text())["epochs"] == EPOCHS


def finish(out: Path):
    assert launch(out) == 0
    assert_consistent(out)


def figures(out: Path):
    """The deterministic content of a finished run folder."""
    metrics = [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS}
               for line in (out / "metrics.jsonl").read_text().splitlines()]
    summary = {k: v for k, v in json.loads((out / "summary.json").read_text()).items() if k not in SUMMARY_VOLATILE}
    state = ckpt.load(out / CHECKPOINT)
    state["metrics"] = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in state["metrics"]]
    return metrics, summary, state


def assert_same_run(out: Path, reference):
    from test_checkpoint import assert_identical
    m, s, st = figures(out)
    assert m == reference["metrics"]
    assert s == reference["summary"]
    assert_identical(st, reference["state"])
    for f in ("accuracy.png", "pulses.png", "conductance_hist.png"):
        assert (out / f).is_file(), f


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("kill") / "uninterrupted"
    t0 = time.perf_counter()
    finish(out)
    m, s, st = figures(out)
    assert s["total_pulses"] > 0 and len(m) == EPOCHS
    return {"metrics": m, "summary": s, "state": st, "seconds": time.perf_counter() - t0}


def kill_at_points(out: Path, points):
    for point in points:
        assert launch(out, crash_at=point) == -signal.SIGKILL, f"{point} was never reached"
        assert_consistent(out)


def test_kills_during_checkpoint_writes(tmp_path, reference):
    out = tmp_path / "run"
    # epoch 2's checkpoint half written; then (resumed at epoch 1) the new file complete but not
    # renamed; then the old one linked to .prev, the new one not renamed
    kill_at_points(out, ["checkpoint-arrays:2", "checkpoint-written:1", "checkpoint-rotated:1"])
    assert ckpt.load(out / CHECKPOINT)["epoch"] == 1
    finish(out)
    assert_same_run(out, reference)


def test_kills_during_metrics_plots_and_summary(tmp_path, reference):
    out = tmp_path / "run"
    # text files of a fresh run: config.toml (1), metrics after epoch 1 (2), after epoch 2 (3)
    kill_at_points(out, ["text-written:3"])
    # resumed runs: after the plots, before summary.json; then (config 1, metrics 2) summary.json's copy
    kill_at_points(out, ["summary:1", "text-written:3"])
    assert not (out / "summary.json").exists()
    finish(out)
    assert_same_run(out, reference)


def _random_kills(out: Path, reference, n_kills: int, seed: int):
    rng = random.Random(seed)
    for i in range(n_kills):
        delay = rng.uniform(0.2, 1.2 * reference["seconds"])
        launch(out, kill_after_s=delay)
        assert_consistent(out)
    finish(out)
    assert_same_run(out, reference)


def test_kills_at_random_moments(tmp_path, reference):
    _random_kills(tmp_path / "run", reference, n_kills=3, seed=2026)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_many_kills_at_random_moments(tmp_path, reference, seed):
    _random_kills(tmp_path / "run", reference, n_kills=10, seed=seed)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["checkpoint-arrays", "checkpoint-written", "checkpoint-rotated", "text-written"])
def test_kills_at_every_named_point_of_every_epoch(tmp_path, reference, point):
    out = tmp_path / "run"
    for n in range(1, EPOCHS + 2):
        launch(out, crash_at=f"{point}:{n}")   # a point a resumed run no longer reaches ends it normally
        assert_consistent(out)
    finish(out)
    assert_same_run(out, reference)
