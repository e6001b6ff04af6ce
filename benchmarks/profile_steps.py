"""Where the time of a run's training steps goes: a cProfile of mini-batches from its checkpoint.

    python -m benchmarks.profile_steps runs/gan/probe/calib_n48_ver [--steps 20] [--warmup 10]
    python -m benchmarks.profile_steps --fresh cnn_cifar10_pcm --backend cupy     # a fresh config, on the GPU

Restores the run folder at its last checkpoint (as ``python -m benchmarks.run --from-run``; nothing is
written to the folder), runs ``--warmup`` mini-batches, then profiles ``--steps`` more (NumPy, one
BLAS thread) and prints the seconds per step, the share of the step in the parts of the update path
(``AnalogWeights.apply_update`` and, inside it, the pulses, the refreshes and the verify reads) and
the functions with the most own time. ``--fresh NAME`` profiles the fresh ``configs/NAME.toml`` instead
(CNN configs: CIFAR-10 when found, else random inputs of its shape, as ``bench_cnn``); ``--backend
cupy`` profiles on the GPU (host time: the device's work shows at the points that wait for it). A diagnostic for docs and BENCHMARKS.md; not part of
``make bench``.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from pathlib import Path

from sim.config import load_config
from sim.data import load_dataset

from .common import blas_threads, config_trainer, run_trainer

REPO = Path(__file__).resolve().parents[1]

DATASETS = {"mlp": "mnist", "cnn": "cifar10", "gan": "mnist", "lstm": "ptb"}   # default per model.arch
PARTS = {   # (file suffix, function) -> label; cumulative time of each
    ("stores.py", "apply_update"): "update path (chi, DPU, pulses, refreshes, verify)",
    ("devices.py", "apply_set_pulses"): "  SET pulses on the devices",
    ("synapse.py", "_refresh_passed"): "  refreshes (read, RESET, program-and-verify)",
    ("synapse.py", "_read"): "  verify reads of pulsed devices (noise draws)",
}


def profile(run: Path | None, dataset: str | None, steps: int, warmup: int, top: int = 15,
            fresh: str | None = None, backend: str = "numpy") -> str:
    if fresh:
        arch = load_config(REPO / "configs" / f"{fresh}.toml").model.arch
        if arch != "cnn":
            raise SystemExit(f"--fresh: only CNN configs are supported, {fresh} is {arch!r}")
        from .bench_cnn import _data
        ds = _data()
    else:
        arch = load_config(run / "config.toml").model.arch
        ds = load_dataset(dataset or DATASETS.get(arch, "mnist"), None, allow_fallback=False)
    with blas_threads(1):
        tr = config_trainer(fresh, ds, backend) if fresh else run_trainer(run, ds, backend, arch)
        keys = tr.task.epoch_batches(tr.epoch)
        if len(keys) < warmup + steps:
            raise SystemExit(f"an epoch has {len(keys)} mini-batches; --warmup + --steps must fit in it")
        rng = tr.be.child_rng(7)
        lr = tr.lr_at(tr.epoch)
        for k in keys[:warmup]:
            tr.step(k, lr, rng)
        tr.be.synchronize()
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        for k in keys[warmup:warmup + steps]:
            tr.step(k, lr, rng)
        tr.be.synchronize()
        prof.disable()
        total = time.perf_counter() - t0
    st = pstats.Stats(prof)
    cum = {}
    for (fname, _, func), (_, _, _, ct, _) in st.stats.items():
        for (suffix, name), label in PARTS.items():
            if func == name and fname.endswith(suffix):
                cum[label] = cum.get(label, 0.0) + ct
    what = f"configs/{fresh}.toml (fresh)" if fresh else f"{run} (checkpoint of epoch {tr.epoch})"
    lines = [f"{what}, model {arch}, backend {tr.be.name}: {steps} mini-batches in {total:.2f} s, "
             f"{1e3 * total / steps:.1f} ms each (profiled)"]
    for label in PARTS.values():
        lines.append(f"  {label:52s} {100 * cum.get(label, 0.0) / total:5.1f} % of the step")
    lines.append(f"  functions with the most own time:")
    rows = sorted(st.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    for (fname, line, func), (_, _, tt, ct, _) in rows:
        lines.append(f"    {100 * tt / total:5.1f} %  {func} ({Path(fname).name}:{line})")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile_steps", description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, nargs="?", help="a run folder (or --fresh)")
    ap.add_argument("--fresh", metavar="CONFIG", help="profile the fresh configs/CONFIG.toml instead of a run")
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    ap.add_argument("--dataset", default=None, help="default: by the run's model (cnn: cifar10, lstm: ptb, else mnist)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=10)
    a = ap.parse_args(argv)
    if a.steps < 1 or a.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")
    if (a.run is None) == (a.fresh is None):
        ap.error("give a run folder or --fresh CONFIG (one of them)")
    if a.fresh and not (REPO / "configs" / f"{a.fresh}.toml").is_file():
        ap.error(f"--fresh: no configs/{a.fresh}.toml")
    print(profile(a.run, a.dataset, a.steps, a.warmup, fresh=a.fresh, backend=a.backend))


if __name__ == "__main__":
    main()
