"""``mcasim device-curve``: characterise a PCM preset like the device figures of the PCM papers.

N fresh (RESET) devices receive K SET pulses, one per step (``--pulse-interval`` seconds apart),
then drift undisturbed. Writes ``DIR/device_curve.json`` and ``DIR/device_curve.png``:

* per pulse: mean and std (µS) of the programmed conductance right after the pulse
  (``mean_uS``/``std_uS``) and of one noisy read at that moment (``read_mean_uS``/``read_std_uS``);
* drift: the same statistics at log-spaced times from ``t0`` to ``--drift-tmax`` seconds after the
  last pulse, and the drift exponent fitted to the mean curve (``nu_fit``).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gpu_model import BackendError, PCMArray, PresetError, get_pcm_preset, make_backend
from gpu_model.backend import BACKEND_NAMES
from gpu_model.presets import PCM_PRESETS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="jap2018", help=f"PCM preset ({', '.join(PCM_PRESETS)}; default jap2018)")
    p.add_argument("--devices", type=int, default=10_000, help="number of devices N (default 10000)")
    p.add_argument("--pulses", type=int, default=20, help="SET pulses per device K (default 20)")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--backend", default="auto", help="array backend: numpy, cupy or auto (default auto)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--pulse-interval", type=float, default=0.0,
                   help="seconds between pulses (drift between pulses; default 0)")
    p.add_argument("--drift-points", type=int, default=25, help="points on the drift time axis (default 25)")
    p.add_argument("--drift-tmax", type=float, default=1e6,
                   help="last drift time, seconds after the last pulse (default 1e6)")
    p.add_argument("--no-plot", action="store_true", help="write the JSON only")
    p.set_defaults(_parser=p)


def _fail(args, msg: str):
    parser = getattr(args, "_parser", None)
    if parser is not None:
        parser.error(msg)          # exits with status 2
    raise SystemExit(f"device-curve: error: {msg}")


def _stats(x) -> tuple[float, float]:
    x = np.asarray(x, dtype=np.float64)
    return float(x.mean()), float(x.std())


def run(args) -> int:
    if args.devices < 1:
        _fail(args, f"--devices must be >= 1, got {args.devices}")
    if args.pulses < 1:
        _fail(args, f"--pulses must be >= 1, got {args.pulses}")
    if not (args.pulse_interval >= 0 and math.isfinite(args.pulse_interval)):
        _fail(args, f"--pulse-interval must be a finite number >= 0, got {args.pulse_interval}")
    if args.drift_points < 2:
        _fail(args, f"--drift-points must be >= 2, got {args.drift_points}")
    if args.seed < 0:
        _fail(args, f"--seed must be >= 0, got {args.seed}")
    if args.backend not in BACKEND_NAMES:
        _fail(args, f"--backend must be one of {', '.join(BACKEND_NAMES)}, got {args.backend!r}")
    try:
        preset = get_pcm_preset(args.preset)
    except PresetError as exc:
        _fail(args, str(exc))
    if not (args.drift_tmax > preset.drift_t0 and math.isfinite(args.drift_tmax)):
        _fail(args, f"--drift-tmax must be finite and > the preset's t0 = {preset.drift_t0} s, got {args.drift_tmax}")
    try:
        be = make_backend(args.backend, args.seed)
    except BackendError as exc:
        _fail(args, str(exc))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n, k = args.devices, args.pulses
    xp = be.xp
    t_start = time.perf_counter()
    dev = PCMArray((n,), preset, be, rng=be.child_rng(0), t=0.0)
    idx = xp.arange(n)
    ones = xp.ones(n, dtype="int64")

    g0 = be.asnumpy(dev.g_prog)
    initial = dict(zip(("mean_uS", "std_uS"), _stats(g0)))
    per_pulse = []
    t = 0.0
    for j in tqdm(range(k), desc=f"{preset.name}: SET pulses", unit="pulse", disable=None):
        if j:
            t += args.pulse_interval
        dev.apply_set_pulses(idx, ones, t)
        m, s = _stats(be.asnumpy(dev.g_prog))
        rm, rs = _stats(be.asnumpy(dev.read(t)))
        per_pulse.append({"pulse": j + 1, "t_s": t, "mean_uS": m, "std_uS": s,
                          "read_mean_uS": rm, "read_std_uS": rs})

    # drift after the last pulse: log-spaced from t0 to drift_tmax seconds later
    dts = np.logspace(math.log10(preset.drift_t0), math.log10(args.drift_tmax), args.drift_points)
    drift = {"t_since_last_pulse_s": dts.tolist(), "mean_uS": [], "std_uS": [],
             "read_mean_uS": [], "read_std_uS": []}
    for dt in tqdm(dts, desc=f"{preset.name}: drift", unit="point", disable=None):
        m, s = _stats(be.asnumpy(dev.conductance_at(t + float(dt))))
        rm, rs = _stats(be.asnumpy(dev.read(t + float(dt))))
        drift["mean_uS"].append(m)
        drift["std_uS"].append(s)
        drift["read_mean_uS"].append(rm)
        drift["read_std_uS"].append(rs)
    mean = np.asarray(drift["mean_uS"])
    nu_fit = None
    if np.all(mean > 0):
        nu_fit = float(-np.polyfit(np.log(dts / preset.drift_t0), np.log(mean), 1)[0])
    drift["nu_fit"] = nu_fit
    drift["nu_mean_devices"] = float(np.asarray(be.asnumpy(dev.nu), dtype=np.float64).mean())

    result = {
        "preset": preset.name,
        "preset_fields": asdict(preset),
        "devices": n,
        "pulses": k,
        "seed": args.seed,
        "backend": be.name,
        "pulse_interval_s": args.pulse_interval,
        "units": {"conductance": "uS", "time": "s"},
        "initial": initial,
        "per_pulse": per_pulse,
        "drift": drift,
        "elapsed_s": time.perf_counter() - t_start,
    }
    (out / "device_curve.json").write_text(json.dumps(result, indent=1))
    if not args.no_plot:
        _plot(result, out / "device_curve.png")
    last = per_pulse[-1]
    print(f"device-curve: {preset.name}, {n} devices x {k} pulses on {be.name}: "
          f"G after pulse {k} = {last['mean_uS']:.3f} +- {last['std_uS']:.3f} uS; "
          f"drift nu_fit = {nu_fit if nu_fit is None else round(nu_fit, 4)}; wrote {out}/device_curve.json")
    return 0


def _plot(res: dict, path: Path) -> None:
    # Figure + Agg canvas directly: no pyplot, no global backend switch
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    pp = res["per_pulse"]
    x = np.array([0] + [p["pulse"] for p in pp])
    m = np.array([res["initial"]["mean_uS"]] + [p["mean_uS"] for p in pp])
    s = np.array([res["initial"]["std_uS"]] + [p["std_uS"] for p in pp])
    ax1.plot(x, m, "o-", color="C0", label="mean")
    ax1.fill_between(x, m - s, m + s, color="C0", alpha=0.25, label="± std")
    ax1.set_xlabel("SET pulse number")
    ax1.set_ylabel("conductance G (µS)")
    ax1.set_title(f"{res['preset']}: {res['devices']} devices")
    ax1.legend()
    d = res["drift"]
    t = np.array(d["t_since_last_pulse_s"])
    m, s = np.array(d["mean_uS"]), np.array(d["std_uS"])
    ax2.semilogx(t, m, "o-", color="C1", label="mean")
    ax2.fill_between(t, m - s, m + s, color="C1", alpha=0.25, label="± std")
    ax2.set_xlabel("time since last pulse (s)")
    ax2.set_ylabel("conductance G (µS)")
    nu = d["nu_fit"]
    ax2.set_title("drift" + (f" (fitted ν = {nu:.3f})" if nu is not None else ""))
    ax2.legend()
    fig.savefig(path, dpi=110)
