"""One trial: an ordinary `mcasim train` run folder, driven as a child process.

The child is ``python -c 'from sim.cli import main ...' train ...`` (the stable entry point), so a
trial that crashes — an exception, a segfault, the OOM killer — never takes the sweep down, and
each trial gets its own BLAS thread settings. While the child trains, ``metrics.jsonl`` is polled
and every new epoch is reported (to Ray Tune, for progress and early stopping). A failed child is
re-run with ``--resume`` from its last per-epoch checkpoint (bit-exact, so a retried trial ends
exactly where an uninterrupted one does), up to ``retries`` times.

State lives in the run folder, in ``sweep_trial.json`` (status, attempts, errors), so a sweep that
is started again skips finished trials and resumes the others from their checkpoints. Every file
the runner writes is replaced atomically; a trial whose child finished (its ``summary.json``, which
``mcasim train`` writes last, is complete) but whose driver died before recording it is recorded
as done without running again, so no trial runs twice to completion.

Fault injection (tests): ``MCASIM_SWEEP_FAULT="TRIAL_ID:EPOCH"`` makes the runner SIGKILL that
trial's child on its first attempt as soon as epoch EPOCH is in ``metrics.jsonl`` (the child is
then inside epoch EPOCH+1). ``MCASIM_CRASH_AT=sweep-child-done[:N]`` (``sim.checkpoint.crash_point``)
SIGKILLs the driver once the N-th child has exited 0, before it records the trial.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..checkpoint import CRASH_ENV, crash_point, write_text_atomic
from ..cli.train import EPOCH_GATE_ENV
from ..train import has_checkpoint

STATE = "sweep_trial.json"
LOG = "sweep_train.log"
FAULT_ENV = "MCASIM_SWEEP_FAULT"
CHILD = "import sys; from sim.cli import main; sys.exit(main(sys.argv[1:]))"
BLAS_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
BAD_INPUT = 2   # `mcasim train` exit status for bad input: retrying cannot help
GATE = "sweep_gate"   # lockstep file: the last epoch the scheduler let the trial go past
LOCKSTEP_POLL_S = 0.05   # engineering choice: metrics polling while the child waits on the gate


class TrialFailed(RuntimeError):
    """A trial failed on every attempt."""


def read_state(run: Path) -> dict:
    try:
        return json.loads((run / STATE).read_text())
    except (OSError, ValueError):
        return {}


def write_state(run: Path, st: dict) -> None:
    run.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run / STATE, json.dumps(st, indent=1))


def read_metrics(run: Path) -> list[dict]:
    out = []
    try:
        text = (run / "metrics.jsonl").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:   # a line being written
            break
    return out


def read_summary(run: Path) -> dict | None:
    try:
        return json.loads((run / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def is_finished(run: Path, epochs: int) -> bool:
    """Finished (all epochs) or stopped early by the scheduler, with its summary written."""
    st = read_state(run)
    s = read_summary(run)
    if s is None or st.get("status") not in ("done", "stopped"):
        return False
    return st["status"] == "stopped" or s.get("epochs") == epochs


def parse_fault(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    tid, _, ep = spec.rpartition(":")
    return (tid, int(ep)) if tid and ep.isdigit() else None


def _pdeathsig():  # pragma: no cover - runs in the child between fork and exec
    """The child dies with the thread that started it (a killed Ray worker leaves no orphan)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def child_env(cpus: int) -> dict:
    env = dict(os.environ)
    for v in BLAS_VARS:
        env[v] = str(max(1, int(cpus)))
    env.pop(FAULT_ENV, None)
    env.pop(CRASH_ENV, None)   # the crash hook is the driver's (tests); children run unhooked
    return env


def _last_error(log: Path, rc: int) -> str:
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = str(-rc)
        return f"killed by {name}"
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        lines = []
    err = [ln for ln in lines if "error" in ln.lower() or "Error" in ln]
    return (err[-1] if err else (lines[-1] if lines else f"exit status {rc}"))[:500] + f" (exit status {rc})"


def run_trial(trial, run: Path, *, retries: int = 1, cpus: int = 1, data_dir: str | None = None,
              report=None, fault: str | None = None, cwd: str | None = None, poll: float = 0.2,
              on_event=None, lockstep: bool = False) -> dict:
    """Run (or resume, or skip) one trial to its last epoch; returns its final state dict.

    ``report(rec)`` is called once per epoch record, in order, including the epochs a resumed trial
    had already done (so an early-stopping scheduler sees the whole history). Raises TrialFailed
    after ``retries`` failed re-runs.

    ``lockstep`` (early stopping): the child waits after each epoch until ``report`` has returned
    for it (Ray Tune's report returns once the scheduler lets the trial go on), so a trial stopped
    after epoch k has trained exactly k epochs however short its epochs are.
    """
    run = Path(run).resolve()
    argv = trial.argv(run, data_dir)
    display = trial.argv(run, data_dir, display=True)
    st = read_state(run)
    if is_finished(run, trial.epochs):
        for rec in read_metrics(run):
            if report:
                report(rec)
        return st
    fault_t = parse_fault(fault)
    reported = 0
    gate = run / GATE

    def emit_new(hold_last=False):
        # hold_last: the last epoch is reported only once the child has exited (its summary written),
        # because a scheduler stops a trial that reaches its last epoch
        nonlocal reported
        for rec in read_metrics(run):
            if hold_last and rec.get("epoch", 0) >= trial.epochs:
                break
            if rec.get("epoch", 0) > reported:
                reported = rec["epoch"]
                if report:
                    report(rec)
                if on_event:
                    on_event("epoch", trial, rec)
                if lockstep:
                    gate.write_text(str(reported))

    st = {"id": trial.id, "status": "running", "attempts": st.get("attempts", 0), "errors": st.get("errors", []),
          "epochs": trial.epochs, "command": "mcasim " + _join(display), "argv": argv,
          "knobs": trial.knobs, "seed": trial.seed}
    run.mkdir(parents=True, exist_ok=True)
    if has_checkpoint(run):
        emit_new(hold_last=True)   # epochs done in an earlier session
    env = child_env(cpus)
    if lockstep:
        gate.write_text(str(reported))
        env[EPOCH_GATE_ENV] = str(gate)
        poll = min(poll, LOCKSTEP_POLL_S)
    tries = 0
    while True:
        tries += 1
        resume = has_checkpoint(run) and (run / "config.toml").is_file()
        cmd = [sys.executable, "-c", CHILD] + argv + (["--resume"] if resume else ["--overwrite"])
        killed_after = None
        summary = read_summary(run)
        if tries == 1 and summary is not None and summary.get("epochs") == trial.epochs:
            rc = 0   # the child of an earlier session finished; its driver died before recording it
        else:
            st["attempts"] += 1
            st["status"] = "running"
            write_state(run, st)
            if on_event:
                on_event("start", trial, {"attempt": st["attempts"], "resume": resume})
            kill_at = fault_t[1] if fault_t and fault_t[0] == trial.id and tries == 1 else None
            with open(run / LOG, "a") as log:
                log.write(f"\n# attempt {st['attempts']}: {' '.join(cmd[3:])}\n")
                log.flush()
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                        preexec_fn=_pdeathsig if sys.platform.startswith("linux") else None)
                try:
                    while proc.poll() is None:
                        time.sleep(0.02 if kill_at else poll)
                        emit_new(hold_last=True)
                        if kill_at is not None and reported >= kill_at and killed_after is None:
                            proc.kill()
                            killed_after = reported
                    rc = proc.wait()
                    if rc == 0:
                        crash_point("sweep-child-done")   # tests: the driver dies before recording it
                finally:
                    if proc.poll() is None:   # interrupted (Ctrl-C, Tune stopping the trial): no orphans
                        proc.kill()
                        proc.wait()
        summary = read_summary(run)
        if rc == 0 and summary is not None and summary.get("epochs") == trial.epochs:
            # the summary's command: the plain, uninterrupted command that reproduces this run
            summary["command"] = "mcasim " + _join(display)
            write_text_atomic(run / "summary.json", json.dumps(summary, indent=2))
            st["status"] = "done"
            st["epochs_done"] = summary["epochs"]
            write_state(run, st)
            emit_new()   # the last epoch, now that the run folder is complete (Tune may end us here)
            if on_event:
                on_event("done", trial, st)
            return st
        emit_new(hold_last=True)
        err = _last_error(run / LOG, rc) if rc != 0 else "the run ended without a complete summary.json"
        if killed_after is not None:
            err = f"killed by SIGKILL after epoch {killed_after} (fault injection, {FAULT_ENV})"
        st["errors"].append({"attempt": st["attempts"], "error": err, "epochs_done": reported})
        if rc == BAD_INPUT or tries > retries:
            st["status"] = "failed"
            st["error"] = err
            write_state(run, st)
            if on_event:
                on_event("failed", trial, st)
            raise TrialFailed(f"trial {trial.id}: {err}")
        if on_event:
            on_event("retry", trial, {"error": err, "attempt": st["attempts"]})


def finalize_stopped(trial, run: Path, *, data_dir: str | None = None, cwd: str | None = None) -> dict:
    """A trial stopped early by the scheduler: write its summary at the last checkpointed epoch."""
    run = Path(run).resolve()
    st = read_state(run)
    done = len(read_metrics(run))
    if not has_checkpoint(run) or done == 0:
        return st
    argv = trial.argv(run, data_dir, epochs=done) + ["--resume"]
    with open(run / LOG, "a") as log:
        log.write(f"\n# stopped early by the scheduler after epoch {done}: writing the summary\n")
        log.flush()
        rc = subprocess.call([sys.executable, "-c", CHILD] + argv, stdout=log, stderr=subprocess.STDOUT,
                             env=child_env(1), cwd=cwd)
    s = read_summary(run)
    st.update(status="stopped" if rc == 0 and s else "failed", epochs_done=(s or {}).get("epochs", done))
    if rc != 0 or not s:
        st["error"] = _last_error(run / LOG, rc)
    elif s:
        s["command"] = "mcasim " + _join(trial.argv(run, data_dir, display=True, epochs=s.get("epochs", done)))
        s["stopped_early"] = True
        write_text_atomic(run / "summary.json", json.dumps(s, indent=2))
    write_state(run, st)
    return st


def _join(argv) -> str:
    import shlex
    return shlex.join(argv)
