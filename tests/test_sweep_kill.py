"""Sweeps killed and started again: every trial's result once, none lost, none run twice to completion.

The driver (``mcasim sweep``, the sequential engine, in a subprocess) is SIGKILLed at random moments
(seeded) and, through the ``MCASIM_CRASH_AT=sweep-child-done`` hook, just after a trial's child
finished but before the driver recorded it; then started again with the same command until it
exits 0. Checked: each trial's figures equal an uninterrupted sweep's bit for bit, ``results.csv``
lists each trial once as done, each trial's log shows exactly one completed training (``mcasim
train`` prints "results in" once per completion), and no child outlives its killed driver (the run
folder lock is free right after the kill). Trial children killed under the driver:
``tests/test_sweep.py`` (``MCASIM_SWEEP_FAULT``, both engines).
"""
import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim.cli.train import lock_run_folder

REPO = Path(__file__).resolve().parents[1]
SPEC = """
[sweep]
arch = "mlp"
dataset = "digits"
seeds = [3]
epochs = 2
backend = "numpy"
set = ["synapse.mode=pcm", "model.hidden=[16]", "train.train_subset=300", "train.test_subset=200"]
retries = 1
[[axis]]
key = "train.lr"
values = [0.1, 0.2]
"""
TRIALS = ["lr=0.1_seed3", "lr=0.2_seed3"]
VOLATILE = ("seconds_per_epoch", "total_train_seconds", "seconds", "eval_seconds", "command")   # wall clock, --out


def sweep_cmd(spec: Path, out: Path):
    return [sys.executable, "-m", "sim.cli", "sweep", str(spec), "--out", str(out), "--engine", "local", "--quiet"]


def env(crash_at=None):
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    e.pop("MCASIM_CRASH_AT", None)
    e.pop("MCASIM_SWEEP_FAULT", None)
    if crash_at:
        e["MCASIM_CRASH_AT"] = crash_at
    return e


def drive(spec, out, crash_at=None, kill_after_s=None) -> int:
    proc = subprocess.Popen(sweep_cmd(spec, out), cwd=REPO, env=env(crash_at), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        proc.wait(timeout=kill_after_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode in (0, -signal.SIGKILL), err
    return proc.returncode


def assert_no_child_survives(out: Path):
    """Every trial folder's lock is free shortly after the driver died (children die with it)."""
    deadline = time.time() + 10
    for tid in TRIALS:
        run = out / "trials" / tid
        if not run.is_dir():
            continue
        while True:
            lock, holder = lock_run_folder(run)
            if lock is not None:
                lock.close()
                break
            assert time.time() < deadline, f"{tid}: a child (pid {holder}) outlived its driver"
            time.sleep(0.1)


def figures(out: Path, tid: str):
    run = out / "trials" / tid
    s = {k: v for k, v in json.loads((run / "summary.json").read_text()).items() if k not in VOLATILE}
    m = [{k: v for k, v in json.loads(x).items() if k not in VOLATILE}
         for x in (run / "metrics.jsonl").read_text().splitlines()]
    return s, m


def assert_complete_once(out: Path, reference: Path):
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["trial"] for r in rows) == TRIALS and all(r["status"] == "done" for r in rows), rows
    for tid in TRIALS:
        assert figures(out, tid) == figures(reference, tid), tid
        log = (out / "trials" / tid / "sweep_train.log").read_text()
        assert log.count("results in ") == 1, f"{tid} trained to completion {log.count('results in ')} times"


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    p = tmp_path_factory.mktemp("spec") / "kill_sweep.toml"
    p.write_text(SPEC)
    return p


@pytest.fixture(scope="module")
def reference(spec, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "uninterrupted"
    t0 = time.perf_counter()
    assert drive(spec, out) == 0
    assert_complete_once(out, out)
    return out, time.perf_counter() - t0


def test_driver_killed_after_a_child_finished_does_not_rerun_it(spec, reference, tmp_path):
    out = tmp_path / "sweep"
    assert drive(spec, out, crash_at="sweep-child-done:1") == -signal.SIGKILL
    st = json.loads((out / "trials" / TRIALS[0] / "sweep_trial.json").read_text())
    assert st["status"] == "running"            # the driver died before recording it ...
    assert drive(spec, out, crash_at="sweep-child-done:1") == -signal.SIGKILL   # ... and again on trial 2
    assert drive(spec, out) == 0
    st = json.loads((out / "trials" / TRIALS[0] / "sweep_trial.json").read_text())
    assert st["status"] == "done" and st["attempts"] == 1
    assert_complete_once(out, reference[0])


def _random_driver_kills(spec, reference, out, n_kills, seed):
    rng = random.Random(seed)
    ref_out, ref_s = reference
    for _ in range(n_kills):
        drive(spec, out, kill_after_s=rng.uniform(0.5, ref_s))
        assert_no_child_survives(out)
    assert drive(spec, out) == 0
    assert_complete_once(out, ref_out)


def test_driver_killed_at_random_moments(spec, reference, tmp_path):
    _random_driver_kills(spec, reference, tmp_path / "sweep", n_kills=2, seed=28)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
def test_driver_killed_many_times(spec, reference, tmp_path, seed):
    _random_driver_kills(spec, reference, tmp_path / "sweep", n_kills=8, seed=seed)
