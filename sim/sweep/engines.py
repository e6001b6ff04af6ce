"""Execution engines: Ray Tune (local instance or a cluster) or one trial after another.

Both run the same trial function (``trial.run_trial``: a `mcasim train` child process per trial,
retries with resume); Ray adds concurrency, placement (`--cpus-per-trial`, `--gpus-per-trial`),
clusters (`--address`) and Tune's early-stopping schedulers (ASHA, median stopping).
"""
from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from .trial import FAULT_ENV, TrialFailed, finalize_stopped, is_finished, read_state, run_trial


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401
    except ImportError:
        return False
    return True


class Progress:
    """Counts of trials done/running/failed/pending, printed as they change (thread-safe)."""

    def __init__(self, trials, quiet=False, stream=None):
        self.total = len(trials)
        self.state = {t.id: "pending" for t in trials}
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.lock = threading.Lock()
        self.t0 = time.perf_counter()

    def __getstate__(self):   # Tune pickles its callbacks into the experiment state
        d = dict(self.__dict__)
        d.pop("lock", None)
        d.pop("stream", None)
        return d

    def __setstate__(self, d):
        self.__dict__.update(d, lock=threading.Lock(), stream=sys.stderr)

    def set(self, tid, status, note=""):
        with self.lock:
            self.state[tid] = status
            self.line(f"{tid}: {note or status}")

    def note(self, tid, note):
        with self.lock:
            self.line(f"{tid}: {note}")

    def counts(self) -> dict:
        c = {k: 0 for k in ("done", "stopped", "running", "failed", "skipped", "pending")}
        for s in self.state.values():
            c[s] = c.get(s, 0) + 1
        return c

    def line(self, msg):
        if self.quiet:
            return
        c = self.counts()
        fin = c["done"] + c["skipped"] + c["stopped"]
        extra = f", {c['stopped']} stopped early" if c["stopped"] else ""
        print(f"[sweep {time.perf_counter() - self.t0:6.0f}s] {fin}/{self.total} done{extra}, {c['running']} running, "
              f"{c['failed']} failed | {msg}", file=self.stream, flush=True)


def _event_printer(progress: Progress, metric: str):
    def on_event(kind, trial, info):
        if kind == "start":
            progress.set(trial.id, "running", f"attempt {info['attempt']}" + (" (resuming from its checkpoint)"
                                                                               if info["resume"] else ""))
        elif kind == "epoch":
            progress.note(trial.id, f"epoch {info['epoch']}/{trial.epochs} {metric} {info.get(metric, float('nan')):.4f}")
        elif kind == "retry":
            progress.note(trial.id, f"attempt {info['attempt']} failed ({info['error']}); retrying from its checkpoint")
        elif kind == "done":
            progress.set(trial.id, "done")
        elif kind == "failed":
            progress.set(trial.id, "failed", f"failed: {info.get('error')}")
    return on_event


def run_local(spec, trials, out: Path, *, cpus_per_trial=1, data_dir=None, retries=None, quiet=False) -> dict:
    """One trial after another from this process. Returns {trial id: status}."""
    retries = spec.retries if retries is None else retries
    progress = Progress(trials, quiet)
    on_event = _event_printer(progress, spec.metric)
    fault = os.environ.get(FAULT_ENV)
    status = {}
    for t in trials:
        run = out / "trials" / t.id
        if is_finished(run, t.epochs):
            progress.set(t.id, "skipped", "finished in an earlier session: skipped")
            status[t.id] = "skipped"
            continue
        try:
            run_trial(t, run, retries=retries, cpus=cpus_per_trial, data_dir=data_dir, fault=fault,
                      cwd=os.getcwd(), on_event=on_event)
            status[t.id] = "done"
        except TrialFailed:
            status[t.id] = "failed"
    return status


class RayStartError(RuntimeError):
    """ray.init failed (no cluster at --address, no room for a local instance, ...)."""


def ray_temp_dir() -> str:
    """Ray's session files (sockets, logs): $RAY_TMPDIR, else a per-user folder in the temp dir."""
    d = os.environ.get("RAY_TMPDIR") or os.path.join(tempfile.gettempdir(), f"ray-{os.getuid()}")
    os.makedirs(d, exist_ok=True)
    return d


def init_ray(address=None, num_cpus=None, num_gpus=None):
    """Attach to a cluster (``address``) or start a local Ray instance; returns the seconds it took."""
    import ray
    t0 = time.perf_counter()
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")   # no tensorboard/csv/json loggers
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    kw = dict(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True, logging_level="ERROR")
    if address:
        ray.init(address=address, **kw)
    else:
        # Ray starts its workers at nice 15; trials then get less CPU than the sequential engine's
        # (which run at the caller's priority) whenever the machine is busy with other work. A local
        # instance runs them at the caller's priority instead (`nice mcasim sweep ...` for a polite
        # sweep; RAY_worker_niceness overrides).
        os.environ.setdefault("RAY_worker_niceness", str(os.nice(0)))
        ray.init(num_cpus=num_cpus or os.cpu_count(), num_gpus=num_gpus, _temp_dir=ray_temp_dir(), **kw)
    return time.perf_counter() - t0


def _trainable(config, trials=None, out=None, retries=1, cpus=1, data_dir=None, fault=None, cwd=None,
               lockstep=False):
    """Ray Tune function trainable: one trial, every epoch reported to Tune."""
    from ray import tune
    t = trials[config["trial"]]

    def report(rec):
        m = {k: v for k, v in rec.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        m["trial"] = t.id
        tune.report(m)

    try:
        run_trial(t, Path(out) / "trials" / t.id, retries=retries, cpus=cpus, data_dir=data_dir,
                  report=report, fault=fault, cwd=cwd, lockstep=lockstep)
    except TrialFailed:
        return   # recorded in the trial's sweep_trial.json; the sweep lists it (no Tune traceback)


def _scheduler(spec, max_t, stopped: set):
    """Ray Tune's ASHA or median-stopping scheduler on the per-epoch metric; records whom it stops."""
    from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule, TrialScheduler
    e = spec.early_stop
    if e["scheduler"] == "asha":
        base, kw = ASHAScheduler, dict(time_attr="epoch", max_t=max_t, grace_period=e["grace_epochs"],
                                       reduction_factor=e["reduction_factor"])
    else:
        base, kw = MedianStoppingRule, dict(time_attr="epoch", grace_period=e["grace_epochs"],
                                            min_samples_required=2)

    class Recording(base):
        def on_trial_result(self, tune_controller, trial, result):
            decision = super().on_trial_result(tune_controller, trial, result)
            if decision == TrialScheduler.STOP and result.get("epoch", 0) < max_t:
                stopped.add(trial.config["trial"])
            return decision

    return Recording(**kw)


def run_ray(spec, trials, out: Path, *, address=None, cpus_per_trial=1, gpus_per_trial=0, data_dir=None,
            retries=None, max_concurrent=None, quiet=False, num_cpus=None, info=None) -> dict:
    """All trials on Ray Tune. Returns {trial id: status}; ``info`` gets "ray_init_s" (Ray's start cost)."""
    import ray
    from ray import tune

    info = {} if info is None else info
    retries = spec.retries if retries is None else retries
    progress = Progress(trials, quiet)
    status = {}
    todo = []
    for t in trials:
        if is_finished(out / "trials" / t.id, t.epochs):
            progress.set(t.id, "skipped", "finished in an earlier session: skipped")
            status[t.id] = "skipped"
        else:
            todo.append(t)
    if not todo:
        return status
    own = not ray.is_initialized()
    try:
        init_s = init_ray(address, num_cpus) if own else 0.0
    except Exception as exc:
        raise RayStartError(f"{exc.__class__.__name__}: {exc}") from exc
    info["ray_init_s"] = init_s
    if not quiet:
        res = ray.cluster_resources()
        print(f"[sweep] Ray {'cluster ' + address if address else 'local instance'}: {res.get('CPU', 0):g} CPUs, "
              f"{res.get('GPU', 0):g} GPUs ({'attached' if address else 'started'} in {init_s:.1f} s); {cpus_per_trial} CPU"
              f"{'s' if cpus_per_trial != 1 else ''}" + (f" + {gpus_per_trial} GPU" if gpus_per_trial else "")
              + f" per trial, {len(todo)} trial{'s' if len(todo) != 1 else ''} to run", file=sys.stderr, flush=True)
    stopped: set = set()
    metric = spec.metric

    class Cb(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            progress.set(trial.config["trial"], "running", "started")

        def on_trial_result(self, iteration, trials, trial, result, **info):
            progress.note(trial.config["trial"], f"epoch {result.get('epoch')}/{by_id[trial.config['trial']].epochs} "
                                                 f"{metric} {result.get(metric, float('nan')):.4f}")

        def on_trial_complete(self, iteration, trials, trial, **info):
            tid = trial.config["trial"]
            st = read_state(out / "trials" / tid)
            if st.get("status") == "failed":
                progress.set(tid, "failed", f"failed: {st.get('error')}")
            else:
                progress.set(tid, "stopped" if tid in stopped else "done",
                             "stopped early by the scheduler" if tid in stopped else "done")

        def on_trial_error(self, iteration, trials, trial, **info):
            tid = trial.config["trial"]
            st = read_state(out / "trials" / tid)
            progress.set(tid, "failed", f"failed: {st.get('error', 'see its sweep_train.log')}")

    by_id = {t.id: t for t in todo}
    fn = tune.with_parameters(_trainable, trials=by_id, out=str(out.resolve()), retries=retries, cpus=cpus_per_trial,
                              data_dir=data_dir, fault=os.environ.get(FAULT_ENV), cwd=os.getcwd(),
                              lockstep=bool(spec.early_stop))
    fn = tune.with_resources(fn, {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
    tc = dict(num_samples=1, reuse_actors=True)
    if max_concurrent:
        tc["max_concurrent_trials"] = max_concurrent
    if spec.early_stop:
        tc.update(metric=metric, mode=spec.mode,
                  scheduler=_scheduler(spec, max(t.epochs for t in todo), stopped))
    from ray.tune import RunConfig, FailureConfig
    rc = RunConfig(name=f"tune-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=str((out / "_ray").resolve()),
                   verbose=0, callbacks=[Cb()], failure_config=FailureConfig(max_failures=0),
                   log_to_file=False)
    tuner = tune.Tuner(fn, param_space={"trial": tune.grid_search([t.id for t in todo])},
                       tune_config=tune.TuneConfig(**tc), run_config=rc)
    try:
        results = tuner.fit()
    finally:
        if own:
            ray.shutdown()
    for r in results:
        tid = (r.config or {}).get("trial")
        if tid is None:
            continue
        state = read_state(out / "trials" / tid).get("status")
        if r.error is not None or state == "failed":
            status[tid] = "failed"
        elif tid in stopped and state != "done":
            finalize_stopped(by_id[tid], out / "trials" / tid, data_dir=data_dir, cwd=os.getcwd())
            status[tid] = "stopped"
        else:
            status[tid] = "done"
    return status
