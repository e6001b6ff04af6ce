"""``mcasim evaluate RUN``: inference accuracy of a trained run after drift.

The trained devices are re-read at ``t_end + T`` for each T in ``--times`` (seconds since the end
of training), with fresh read noise, (a) as they are and (b) with global drift compensation (GDC):
per layer, one digital factor alpha = mean|y(t_end)| / mean|y(t)| measured on a fixed calibration
batch of training images (Joshi et al. 2020 style; the factor scales the ADC outputs). Writes
``RUN/drift_eval.json`` and ``RUN/drift_eval.png``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from gpu_model.backend import BackendError, make_backend
from ..config import ConfigError, load_config
from ..data import DatasetError, load_dataset
from ..train import RunError, restore_trainer

DEFAULT_TIMES = "1,3600,86400,2592000,31536000"
CALIBRATION_IMAGES = 1000   # engineering choice: GDC calibration batch (training images)


def add_arguments(p):
    p.add_argument("run", help="run folder written by `mcasim train`")
    p.add_argument("--times", default=DEFAULT_TIMES, help="seconds after training, comma-separated")
    p.add_argument("--data-dir", help="folder holding the dataset files")
    p.add_argument("--backend", default="auto", choices=["numpy", "cupy", "auto"])
    p.add_argument("--repeats", type=int, default=1, help="independent noisy reads per time point (mean reported)")


def parse_times(text: str) -> list[float]:
    try:
        times = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--times must be comma-separated numbers of seconds, got {text!r}") from None
    if not times or any(t < 0 for t in times):
        raise ConfigError(f"--times needs non-negative seconds, got {text!r}")
    return times


def _layer_mean_abs(model, x, scales):
    """Per-layer mean |MVM output| along a forward pass (with the given compensation scales)."""
    model.forward(x, scales)
    return [float(model.xp.abs(y).mean()) for y in model.mvm]


def evaluate_drift(tr, times, repeats=1) -> dict:
    with tr.model.uncounted():
        return _evaluate_drift(tr, times, repeats)


def _evaluate_drift(tr, times, repeats) -> dict:
    m = tr.model
    t_end = tr.clock
    xcal = tr.x_train[:CALIBRATION_IMAGES]
    m.set_time(t_end)
    ref = _layer_mean_abs(m, xcal, None)
    rows = []
    for T in times:
        m.set_time(t_end + T)
        # GDC factors, layer by layer (each computed with the earlier layers already compensated)
        scales = [1.0] * len(m.layers)
        for i in range(len(m.layers)):
            now = _layer_mean_abs(m, xcal, scales)
            scales[i] = ref[i] / now[i] if now[i] > 0 else 1.0
        acc_raw = [float((m.predict(tr.x_test, tr.cfg.train.eval_batch) == tr.y_test).mean()) for _ in range(repeats)]
        acc_gdc = [float((m.predict(tr.x_test, tr.cfg.train.eval_batch, scales) == tr.y_test).mean())
                   for _ in range(repeats)]
        rows.append({"t_after_training_s": T, "accuracy": float(np.mean(acc_raw)),
                     "accuracy_gdc": float(np.mean(acc_gdc)), "gdc_scales": scales})
        print(f"t = {T:>12g} s   accuracy {rows[-1]['accuracy']:.4f}   with GDC {rows[-1]['accuracy_gdc']:.4f}",
              file=sys.stderr)
    m.set_time(t_end)
    return {"t_end_of_training_s": t_end, "repeats": repeats, "points": rows}


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
            raise RunError(f"{run_dir} trained fp32 weights: there are no devices to drift")
        summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
        dataset = summary.get("dataset", "mnist")
        be = make_backend(args.backend, cfg.train.seed)
        ds = load_dataset("digits" if dataset == "digits8x8" else dataset, args.data_dir, allow_fallback=False)
        tr = restore_trainer(run_dir, cfg, be, ds)
    except (ConfigError, RunError, BackendError, DatasetError) as exc:
        print(f"mcasim evaluate: error: {exc}", file=sys.stderr)
        return 2
    res = evaluate_drift(tr, times, args.repeats)
    res["run"] = str(run_dir)
    (run_dir / "drift_eval.json").write_text(json.dumps(res, indent=2))
    plot(res, run_dir / "drift_eval.png")
    print(json.dumps({"run": str(run_dir), "points": [{k: p[k] for k in ("t_after_training_s", "accuracy", "accuracy_gdc")}
                                                       for p in res["points"]]}))
    return 0
