"""`mcasim sweep`: an 8-trial sweep on Ray vs one trial after another, and Ray's fixed start cost.

The sweep: the 8x8 digits, MLP 64-32-10 on the PCM model, batch 5, 6 epochs; 4 learning rates x
2 seeds = 8 trials, 1 CPU (and 1 BLAS thread) per trial. Each trial is a `mcasim train` child
process (~3-4 s of interpreter, import and plotting cost, plus training), as in real sweeps. The
same spec runs with ``--engine local`` and ``--engine ray`` (a fresh local Ray instance with all
cores); the speed-up is sequential / Ray wall time (ideal: the number of cores, less Ray's fixed
cost). Ray's fixed start cost is timed separately: ``ray.init`` of a local instance, and the first
task on a fresh worker. Both sweeps must give identical trial results (checked).

    python -m benchmarks.run sweep      # ~2-3 minutes on 2 cores; skipped without Ray
"""
from __future__ import annotations

import contextlib
import csv
import io
import os
import tempfile
import time
from pathlib import Path

SPEC = """
[sweep]
name = "bench_sweep"
dataset = "digits"
seeds = [0, 1]
epochs = {epochs}
backend = "numpy"
set = ["model.hidden=[32]", "train.batch_size=5", "synapse.mode=pcm"]
[[axis]]
key = "train.lr"
values = [0.05, 0.1, 0.2, 0.4]
"""


# epochs per trial (6: ~7 s trials, where Ray's fixed cost shows; longer trials show the
# asymptotic speed-up): MCASIM_BENCH_SWEEP_EPOCHS=30 python -m benchmarks.run sweep
EPOCHS = int(os.environ.get("MCASIM_BENCH_SWEEP_EPOCHS", "6"))


def _sweep(spec: Path, out: Path, engine: str) -> float:
    from sim.cli import main
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        rc = main(["sweep", str(spec), "--out", str(out), "--engine", engine, "--quiet"])
    wall = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"the {engine} sweep failed (exit status {rc}); see {out}/results.md")
    return wall


def _results(out: Path) -> dict:
    with open(out / "results.csv") as f:
        return {r["trial"]: (r["test_accuracy"], r["total_pulses"], r["loss"]) for r in csv.DictReader(f)}


def _ray_start_cost() -> dict:
    import ray
    from sim.sweep.engines import init_ray
    t0 = time.perf_counter()
    init_s = init_ray(num_cpus=os.cpu_count())

    @ray.remote(num_cpus=1)
    def ping():
        return os.getpid()

    t1 = time.perf_counter()
    ray.get(ping.remote())
    first_task_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    ray.shutdown()
    return {"ray_init_s": init_s, "first_task_s": first_task_s, "shutdown_s": time.perf_counter() - t2,
            "total_s": time.perf_counter() - t0}


def run() -> dict:
    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401
    except ImportError:
        print("bench_sweep: skipped — Ray is not installed (pip install 'mcasim[sweep]')")
        return {"skipped": "Ray is not installed (pip install 'mcasim[sweep]')"}
    os.environ["OMP_NUM_THREADS"] = "1"
    cores = os.cpu_count()
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
        tmp = Path(tmp)
        spec = tmp / "bench_sweep.toml"
        spec.write_text(SPEC.format(epochs=EPOCHS))
        start = _ray_start_cost()
        load0 = os.getloadavg()[0]
        seq = _sweep(spec, tmp / "local", "local")
        par = _sweep(spec, tmp / "ray", "ray")
        load1 = os.getloadavg()[0]
        same = _results(tmp / "local") == _results(tmp / "ray")
    return {"trials": 8, "epochs_per_trial": EPOCHS, "cores": cores, "cpus_per_trial": 1,
            "sequential_s": seq, "ray_s": par, "speedup": seq / par,
            "ideal_ray_s": seq / min(cores, 8) + start["ray_init_s"] + start["first_task_s"],
            "ray_start": start, "identical_results": same,
            "loadavg_1min": [round(load0, 2), round(load1, 2)]}


def table(res: dict) -> str:
    if "skipped" in res:
        return f"  skipped: {res['skipped']}"
    s = res["ray_start"]
    return "\n".join([
        f"  8-trial sweep on {res['cores']} cores, 1 CPU per trial (digits, MLP 64-32-10 PCM, "
        f"{res.get('epochs_per_trial', 6)} epochs each):",
        f"    one after another (--engine local): {res['sequential_s']:7.1f} s",
        f"    Ray, local instance (--engine ray): {res['ray_s']:7.1f} s   (includes starting Ray)",
        f"    speed-up:                           {res['speedup']:7.2f} x  (cores: {res['cores']}; ideal Ray time "
        f"{res['ideal_ray_s']:.1f} s = sequential / cores + Ray's start cost)",
        f"  Ray fixed cost: ray.init {s['ray_init_s']:.1f} s, first task on a fresh worker {s['first_task_s']:.1f} s, "
        f"shutdown {s['shutdown_s']:.1f} s",
        f"  identical trial results: {res['identical_results']}; load average before/after: {res['loadavg_1min']}",
    ])
