"""Where a PCM run's devices sit, and what their next SET pulse would do.

    python -m benchmarks.device_state runs/cnn/pcm_s0 [--dataset cifar10]

Loads the run's last checkpoint and prints, over every device of every weight layer (G+ and G-,
all devices per side): the percentiles of the drifted conductance G (µS) and of the pulse-history
term P, and, per conductance band, the share of devices and the mean (mu) and spread (sigma) of
the SET step the preset's step model gives a device in that state (JAP 2018: mu = -0.084 G + 0.880
+ 1.40 P, sigma = 0.091 G + 0.260 + 2.15 P, µS). The run's ``[device]`` overrides apply. A
diagnostic for docs/cnn.md; not part of ``make bench``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from gpu_model.backend import make_backend
from sim.config import load_config
from sim.data import load_dataset
from sim.train import restore_trainer

BANDS_uS = (0.0, 1.0, 3.0, 5.0, 7.0, 9.0, float("inf"))


def device_state(run: Path, dataset: str) -> dict:
    cfg = load_config(run / "config.toml")
    if cfg.synapse.mode != "pcm":
        raise SystemExit(f"{run}: synapse.mode is {cfg.synapse.mode!r}; this looks at PCM devices")
    be = make_backend("numpy", cfg.train.seed)
    tr = restore_trainer(run, cfg, be, load_dataset(dataset, None, allow_fallback=False))
    g_all, p_all = [], []
    for store in tr.task.analog_stores():
        syn = store.syn
        for arr in (syn.gp, syn.gm):
            g_all.append(np.asarray(arr.conductance_at(syn.t)))
            p_all.append(np.asarray(arr.hist))
    g, hist = np.concatenate(g_all), np.concatenate(p_all)
    pre = cfg.pcm_preset()
    p = hist * np.exp(-1.0 / pre.history_tau_pulses)  # a pulse first decays P (devices.apply_set_pulses)
    mu = pre.set_mu_slope * g + pre.set_mu_offset + pre.set_mu_hist * p
    sigma = np.maximum(pre.set_sigma_slope * g + pre.set_sigma_offset + pre.set_sigma_hist * p, 0.0)
    bands = []
    for lo, hi in zip(BANDS_uS[:-1], BANDS_uS[1:]):
        m = (g >= lo) & (g < hi)
        bands.append({"band_uS": [lo, hi], "share": float(m.mean()),
                      "mu_uS": float(mu[m].mean()) if m.any() else None,
                      "sigma_uS": float(sigma[m].mean()) if m.any() else None})
    return {"run": str(run), "devices": int(g.size),
            "g_percentiles_10_50_90_99": np.percentile(g, [10, 50, 90, 99]).round(2).tolist(),
            "history_percentiles_10_50_90": np.percentile(hist, [10, 50, 90]).round(3).tolist(),
            "bands": bands}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--dataset", default="cifar10")
    a = ap.parse_args(argv)
    res = device_state(a.run, a.dataset)
    print(json.dumps({k: v for k, v in res.items() if k != "bands"}))
    for b in res["bands"]:
        lo, hi = b["band_uS"]
        ms = "" if b["mu_uS"] is None else f"  next SET step mu {b['mu_uS']:.2f} µS, sigma {b['sigma_uS']:.2f} µS"
        print(f"  G in [{lo:g}, {hi:g}) µS: {100 * b['share']:5.1f} % of devices{ms}")


if __name__ == "__main__":
    main()
