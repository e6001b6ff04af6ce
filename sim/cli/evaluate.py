"""``mcasim evaluate RUN``: inference accuracy of a trained run after drift.

The trained devices are re-read at ``t_end + T`` for each T in ``--times`` (seconds since the end
of training), with fresh read noise, (a) as they are and (b) with global drift compensation (GDC):
per layer, one digital factor alpha = mean|y(t_end)| / mean|y(t)| measured on a fixed calibration
batch of training images (Joshi et al. 2020 style; the factor scales the ADC outputs). Writes
``RUN/drift_eval.json`` and ``RUN/drift_eval.png``.

``mcasim evaluate RUN --readout``: a readout ablation instead, for any task (classifier, LSTM,
GAN). The trained devices are read at the end of training four ways: as trained (read noise and
DAC/ADC), without read noise, without the converters, and without either (the noise-free
conductances through exact MVMs), each scored by the task's own evaluation (test accuracy, BPC,
FD ...). It tells a gap in what the devices learned from a gap in how they are read. Writes
``RUN/readout_eval.json``.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from gpu_model.backend import BackendError, make_backend
from ..config import ConfigError, load_config
from ..data import DatasetError, load_dataset
from ..tasks import task_class
from ..train import RunError, restore_trainer

DEFAULT_TIMES = "1,3600,86400,2592000,31536000"
_DEFAULT_DATASET = {"cnn": "cifar10", "lstm": "ptb-char", "gan": "mnist"}   # a run without summary.json
CALIBRATION_IMAGES = 1000   # engineering choice: GDC calibration batch (training images)


def add_arguments(p):
    p.add_argument("run", help="run folder written by `mcasim train`")
    p.add_argument("--times", default=DEFAULT_TIMES, help="seconds after training, comma-separated")
    p.add_argument("--data-dir", help="folder holding the dataset files")
    p.add_argument("--backend", default="auto", choices=["numpy", "cupy", "auto"])
    p.add_argument("--repeats", type=int, default=1, help="independent noisy reads per time point (mean reported)")
    p.add_argument("--readout", action="store_true",
                   help="readout ablation at the end of training (read noise and DAC/ADC on/off) instead of drift")


def parse_times(text: str) -> list[float]:
    try:
        times = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--times must be comma-separated numbers of seconds, got {text!r}") from None
    if not times or any(t < 0 for t in times):
        raise ConfigError(f"--times needs non-negative seconds, got {text!r}")
    return times


def _set_scales(task, scales):
    for L, sc in zip(task.store_layers(), scales if scales is not None else [None] * len(task.store_layers())):
        L.out_scale = sc


def _layer_mean_abs(task, x, scales, batch: int):
    """Per-weight-layer mean |MVM output| along forward passes (with the given compensation scales)."""
    layers = task.store_layers()
    _set_scales(task, scales)
    sums = [0.0] * len(layers)
    counts = [0] * len(layers)
    for L in layers:
        L.record_mvm = True
    try:
        for i in range(0, x.shape[0], batch):
            task.predict(x[i:i + batch], batch)
            for j, L in enumerate(layers):
                sums[j] += float(task.xp.abs(L.mvm).sum())
                counts[j] += int(L.mvm.size)
    finally:
        for L in layers:
            L.record_mvm, L.mvm = False, None
        _set_scales(task, None)
    return [s / c for s, c in zip(sums, counts)]


def evaluate_drift(tr, times, repeats=1) -> dict:
    with tr.task.uncounted():
        return _evaluate_drift(tr, times, repeats)


def _accuracy(task, scales) -> float:
    _set_scales(task, scales)
    try:
        return float((task.predict(task.x_test, task.cfg.train.eval_batch) == task.y_test).mean())
    finally:
        _set_scales(task, None)


def _evaluate_drift(tr, times, repeats) -> dict:
    task = tr.task
    n_layers = len(task.store_layers())
    batch = tr.cfg.train.eval_batch
    t_end = tr.clock
    xcal = task.x_train[:CALIBRATION_IMAGES]
    task.set_time(t_end)
    ref = _layer_mean_abs(task, xcal, None, batch)
    rows = []
    for T in times:
        task.set_time(t_end + T)
        # GDC factors, layer by layer (each computed with the earlier layers already compensated)
        scales = [1.0] * n_layers
        for i in range(n_layers):
            now = _layer_mean_abs(task, xcal, scales, batch)
            scales[i] = ref[i] / now[i] if now[i] > 0 else 1.0
        acc_raw = [_accuracy(task, None) for _ in range(repeats)]
        acc_gdc = [_accuracy(task, scales) for _ in range(repeats)]
        rows.append({"t_after_training_s": T, "accuracy": float(np.mean(acc_raw)),
                     "accuracy_gdc": float(np.mean(acc_gdc)), "gdc_scales": scales})
        print(f"t = {T:>12g} s   accuracy {rows[-1]['accuracy']:.4f}   with GDC {rows[-1]['accuracy_gdc']:.4f}",
              file=sys.stderr)
    task.set_time(t_end)
    return {"t_end_of_training_s": t_end, "repeats": repeats, "points": rows}


READOUTS = (("as trained", True, True), ("no read noise", False, True), ("no DAC/ADC", True, False),
            ("neither", False, False))   # (name, read noise, DAC/ADC)


def evaluate_readout(tr, repeats: int = 1) -> dict:
    """The task's evaluation metrics with the crossbar reads ablated (``READOUTS``), at the end of
    training; the mean over ``repeats`` evaluations (fresh read noise each). The tiles are put back
    as they were afterwards."""
    task = tr.task
    mats = [st.tile for st in task.analog_stores()]
    saved = [(m.read_noise, m.tile) for m in mats]
    rows = []
    try:
        for name, noise, converters in READOUTS:
            for m, (rn, tile) in zip(mats, saved):
                m.read_noise = rn and noise
                m.tile = tile if converters else dataclasses.replace(tile, quantize=False)
            runs = [task.evaluate() for _ in range(repeats)]
            metrics = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]
                       if isinstance(runs[0][k], (int, float)) and not isinstance(runs[0][k], bool)
                       and k not in task.training_averages}
            rows.append({"readout": name, "read_noise": noise, "converters": converters, **metrics})
            shown = "   ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            print(f"{name:<14} {shown}", file=sys.stderr)
    finally:
        for m, (rn, tile) in zip(mats, saved):
            m.read_noise, m.tile = rn, tile
    return {"t_end_of_training_s": tr.clock, "repeats": repeats, "rows": rows}


def plot(res: dict, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pts = res["points"]
    t = [max(p["t_after_training_s"], 1e-1) for p in pts]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogx(t, [100 * p["accuracy"] for p in pts], "o-", label="no compensation")
    ax.semilogx(t, [100 * p["accuracy_gdc"] for p in pts], "s-", label="global drift compensation")
    ax.set_xlabel("time after training (s)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args) -> int:
    run_dir = Path(args.run)
    try:
        times = parse_times(args.times)
        if args.repeats < 1:
            raise ConfigError(f"--repeats must be >= 1, got {args.repeats}")
        if not (run_dir / "config.toml").is_file():
            raise RunError(f"{run_dir} is not a run folder (no config.toml)")
        cfg = load_config(run_dir / "config.toml")
        if cfg.synapse.mode == "fp32":
            raise RunError(f"{run_dir} trained fp32 weights: there are no devices to "
                           f"{'read on crossbars' if args.readout else 'drift'}")
        if not args.readout and "test_accuracy" not in task_class(cfg.model.arch).eval_metrics:
            raise RunError(f"the drift evaluation scores classifiers; a {cfg.model.arch} run takes --readout")
        summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
        dataset = summary.get("dataset", _DEFAULT_DATASET.get(cfg.model.arch, "mnist"))
        be = make_backend(args.backend, cfg.train.seed)
        ds = load_dataset("digits" if dataset == "digits8x8" else dataset, args.data_dir, allow_fallback=False)
        tr = restore_trainer(run_dir, cfg, be, ds)
    except (ConfigError, RunError, BackendError, DatasetError) as exc:
        print(f"mcasim evaluate: error: {exc}", file=sys.stderr)
        return 2
    if args.readout:
        res = evaluate_readout(tr, args.repeats)
        res["run"] = str(run_dir)
        (run_dir / "readout_eval.json").write_text(json.dumps(res, indent=2))
        print(json.dumps(res))
        return 0
    res = evaluate_drift(tr, times, args.repeats)
    res["run"] = str(run_dir)
    (run_dir / "drift_eval.json").write_text(json.dumps(res, indent=2))
    plot(res, run_dir / "drift_eval.png")
    print(json.dumps({"run": str(run_dir), "points": [{k: p[k] for k in ("t_after_training_s", "accuracy", "accuracy_gdc")}
                                                       for p in res["points"]]}))
    return 0
