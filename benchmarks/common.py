"""What the training benchmarks share: a trainer from a committed config, timing of training steps,
interleaved best-of-N timing of several modes, and pinning BLAS threads.

Not a benchmark itself (``benchmarks/run.py`` only runs ``bench_*.py`` modules).
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

from gpu_model.backend import make_backend
from sim.config import ConfigError, load_config
from sim.train import RunError, Trainer, load_checkpoint, restore_trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
WARMUP_STREAM, TIMED_STREAM = 7, 8      # random streams of the warm-up and the timed steps


def config_trainer(config: str, ds, backend: str, overrides: dict | None = None) -> Trainer:
    """A trainer for ``configs/<config>.toml`` on ``ds`` (no run folder is written); ``overrides``:
    ``{section: {key: value}}`` as ``--set`` gives them."""
    cfg = load_config(CONFIGS / f"{config}.toml", overrides)
    return Trainer(cfg, ds, make_backend(backend, 0), out_dir=".", progress=False)


ZIGGURAT = {"tile": {"noise_sampler": "ziggurat"}}   # the PCM config with the ziggurat read noise
FUSED = {"tile": {"engine": "fused"}}                # the PCM config on the fused engine (gpu_model/engines.py)
PCM_MODES = ("pcm", "pcm_fused")                     # the PCM config on each engine, timed side by side


def run_config(run_dir, overrides: dict | None = None):
    """The config of the run folder ``run_dir`` (its ``config.toml``, with ``overrides``);
    ``RunError`` when it is not a run folder or its config does not load."""
    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        raise RunError(f"{run_dir} is not a run folder (no config.toml)")
    try:
        return load_config(path, overrides)
    except ConfigError as exc:
        raise RunError(f"{path}: {exc}") from exc


def run_trainer(run_dir, ds, backend: str, arch: str, engine: str | None = None) -> Trainer:
    """The trainer of the run folder ``run_dir`` at its last checkpoint (``sim.train.restore_trainer``):
    its own ``config.toml`` and its weights, devices, χ and optimizer state, for timing steps in a
    trained state (drifted devices, late-training pulse and refresh rates) instead of a fresh one.
    Training steps write nothing to the folder (a training may be running in it: checkpoints are
    replaced atomically). ``arch``: the model the benchmark times; a run of another model is a
    ``RunError``. ``engine``: run the tiles on this engine instead of the run's own; a state of
    the reference engine is carried over to the fused one (gpu_model/convert.py: the same devices
    and chi, the fused engine's own random keys from there on)."""
    cfg = run_config(run_dir, {"tile": {"engine": engine}} if engine else None)
    if cfg.model.arch != arch:
        raise RunError(f"{run_dir} is a {cfg.model.arch!r} run; this benchmark times {arch!r} runs")
    if not engine:
        return restore_trainer(Path(run_dir), cfg, make_backend(backend, 0), ds)
    tr = Trainer(cfg, ds, make_backend(backend, 0), Path(run_dir), progress=False)
    for store in tr.task.analog_stores():
        store.tile.convert_from = ("reference",)
    tr.load_state(load_checkpoint(Path(run_dir)))
    return tr


def merge_overrides(a: dict | None, b: dict | None) -> dict:
    """``{section: {key: value}}`` overrides ``a`` with ``b``'s keys on top (new dicts)."""
    out = {k: dict(v) for k, v in (a or {}).items()}
    for k, v in (b or {}).items():
        out.setdefault(k, {}).update(v)
    return out


def mode_trainer(prefix: str, mode: str, ds, backend: str, pcm_overrides: dict | None = None) -> Trainer:
    """A trainer for ``configs/<prefix>_<mode>.toml``. ``pcm_overrides`` apply to the PCM config;
    mode ``"pcm_ziggurat"`` is the PCM config with them and the ziggurat read noise, ``"pcm_fused"``
    the PCM config with them on the fused engine (``tile.engine = "fused"``; "pcm" is the engine
    the config names, the reference one in every committed config)."""
    if mode == "pcm_ziggurat":
        return config_trainer(f"{prefix}_pcm", ds, backend, merge_overrides(pcm_overrides, ZIGGURAT))
    if mode == "pcm_fused":
        return config_trainer(f"{prefix}_pcm", ds, backend, merge_overrides(pcm_overrides, FUSED))
    return config_trainer(f"{prefix}_{mode}", ds, backend, pcm_overrides if mode == "pcm" else None)


def time_steps(tr: Trainer, keys, lr: float, rng) -> float:
    """Seconds for ``tr.step`` over the batch ``keys`` (device synchronised at the end)."""
    t0 = time.perf_counter()
    for k in keys:
        tr.step(k, lr, rng)
    tr.be.synchronize()
    return time.perf_counter() - t0


def interleaved_best(trainers: dict, keys: dict, warmup: int, batches: int, repeats: int) -> dict:
    """Best seconds per mode for ``batches`` steps: after ``warmup`` steps each, ``repeats`` rounds
    time the next ``batches`` keys of every mode in turn (mode A, mode B, A, B, ...), so that machine
    noise hits all modes alike. ``keys``: {mode: batch keys of the epoch}."""
    for m, tr in trainers.items():
        time_steps(tr, keys[m][:warmup], tr.lr_at(0), tr.be.child_rng(WARMUP_STREAM))
    best = {m: float("inf") for m in trainers}
    for r in range(repeats):
        for m, tr in trainers.items():
            sel = keys[m][warmup + r * batches: warmup + (r + 1) * batches]
            best[m] = min(best[m], time_steps(tr, sel, tr.lr_at(0), tr.be.child_rng(TIMED_STREAM)))
    return best


def best_time(fn, repeats: int, be) -> float:
    """Fastest of ``repeats`` calls of ``fn`` (seconds; device synchronised after each)."""
    t = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        be.synchronize()
        t = min(t, time.perf_counter() - t0)
    return t


def blas_threads(threads: int | None):
    """Context pinning BLAS to ``threads`` (None: unchanged); a no-op without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads, user_api="blas") if threads else contextlib.nullcontext()
