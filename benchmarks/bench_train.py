"""Training cost: pcm vs fp32 on the same backend, and golden vs RTL digital unit, side by side.

Times ``BATCHES`` mini-batches of the headline MLP (784-250-10, batch 10) per mode in one process,
interleaved (fp32, pcm, fp32, pcm, ...) so that machine noise hits both alike, and reports
seconds per epoch (60,000 images) and the ratios. Uses MNIST when it is found, else random
inputs of MNIST's shape and sparsity.
"""
from __future__ import annotations

import time

import numpy as np

from gpu_model.backend import make_backend
from sim.config import config_from_dict
from sim.data import Dataset, DatasetError, load_mnist
from sim.train import Trainer

BATCHES = 600          # mini-batches timed per repetition (6,000 images)
REPEATS = 3            # interleaved repetitions; the minimum is reported
EPOCH_IMAGES = 60_000


def _data() -> Dataset:
    try:
        return load_mnist(download=False)
    except DatasetError:
        rng = np.random.default_rng(0)
        x = (rng.random((12_000, 784)) * (rng.random((12_000, 784)) < 0.19)).astype(np.float32)
        y = rng.integers(0, 10, 12_000)
        return Dataset("random-mnist-shape", x, y, x[:1000], y[:1000], source="random")


def _trainer(mode: str, dpu: str, ds: Dataset, batch: int, backend: str, engine: str = "reference"):
    cfg = config_from_dict({"train": {"batch_size": batch, "lr": 0.1}, "synapse": {"mode": mode, "dpu": dpu},
                            "tile": {"engine": engine}})
    be = make_backend(backend, 0)
    return Trainer(cfg, ds, be, out_dir=".", progress=False)


def _time(tr: Trainer, batches: int, batch: int) -> float:
    rng = tr.be.child_rng(7)
    n = tr.task.n_train
    t0 = time.perf_counter()
    for b in range(batches):
        i = (b * batch) % (n - batch)
        tr.step(tr.xp.arange(i, i + batch), 0.1, rng)
    tr.be.synchronize()
    return time.perf_counter() - t0


def run(backend: str = "numpy", blas_threads: int | None = 1) -> dict:
    """Headline batch (10) with golden and RTL units, plus batch 100 (fp32 vs pcm) for scale.

    BLAS is pinned to ``blas_threads`` (as in bench_analog: multi-threaded BLAS spins on a small
    shared machine and makes small matmuls erratic).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        threadpool_limits = None
    import contextlib
    ctx = (threadpool_limits(limits=blas_threads, user_api="blas")
           if threadpool_limits is not None and blas_threads is not None else contextlib.nullcontext())
    with ctx:
        out = {"batch_10": run_batch(backend, 10, BATCHES, with_rtl=True)}
        out["batch_100"] = run_batch(backend, 100, BATCHES // 10, with_rtl=False)
    return out


def table(res: dict) -> str:
    lines = ["  batch  mode          s/epoch (60k images)",]
    for key in ("batch_10", "batch_100"):
        r = res[key]
        for mode, sec in r["seconds_per_epoch"].items():
            lines.append(f"  {r['batch_size']:5d}  {mode:18s}  {sec:8.1f}")
        lines.append(f"  {r['batch_size']:5d}  pcm / fp32 = {r['pcm_over_fp32']:.2f}x (reference), "
                     f"{r['pcm_fused_over_fp32']:.2f}x (fused)"
                     + (f";  pcm rtl / golden = {r['pcm_rtl_over_golden']:.2f}x" if "pcm_rtl_over_golden" in r else ""))
    lines.append(f"  (backend {res['batch_10']['backend']}, data {res['batch_10']['dataset']})")
    return "\n".join(lines)


def run_batch(backend: str = "numpy", batch: int = 10, batches: int = BATCHES, with_rtl: bool = True) -> dict:
    ds = _data()
    modes = [("fp32", "golden"), ("pcm", "golden"), ("pcm", "golden", "fused")]
    if with_rtl:
        try:
            _trainer("pcm", "rtl", ds, batch, backend)
            modes.append(("pcm", "rtl"))
        except Exception as exc:  # verilator missing: report, do not fail the whole bench
            print(f"bench_train: RTL DPU unavailable ({exc})")
    trainers = {m: _trainer(m[0], m[1], ds, batch, backend, *m[2:]) for m in modes}
    for m, tr in trainers.items():       # warm-up (allocations, first Verilator call)
        _time(tr, 20, batch)
    best = {m: float("inf") for m in modes}
    for _ in range(REPEATS):
        for m, tr in trainers.items():
            best[m] = min(best[m], _time(tr, batches, batch))
    per_epoch = {"/".join(m): best[m] / (batches * batch) * EPOCH_IMAGES for m in modes}
    out = {"backend": backend, "batch_size": batch, "dataset": ds.name, "batches_timed": batches,
           "seconds_per_epoch": per_epoch,
           "pcm_over_fp32": per_epoch["pcm/golden"] / per_epoch["fp32/golden"],
           "pcm_fused_over_fp32": per_epoch["pcm/golden/fused"] / per_epoch["fp32/golden"]}
    if ("pcm", "rtl") in best:
        out["pcm_rtl_over_golden"] = per_epoch["pcm/rtl"] / per_epoch["pcm/golden"]
    return out


if __name__ == "__main__":
    import json
    print(json.dumps(run(), indent=2))
