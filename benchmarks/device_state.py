"""Where a PCM run's devices sit, and what their next SET pulse would do.

    python -m benchmarks.device_state runs/cnn/pcm_s0 [--dataset cifar10]

Loads the run's last checkpoint and prints, over every device of every weight layer (G+ and G-,
all devices per side): the percentiles of the drifted conductance G (µS) and of the pulse-history
term P, and, per conductance band, the share of devices and the mean (mu) and spread (sigma) of
the SET step the preset's step model gives a device in that state (JAP 2018: mu = -0.084 G + 0.880
+ 1.40 P, sigma = 0.091 G + 0.260 + 2.15 P, µS). The run's ``[device]`` overrides apply.

Then, per weight layer, where its refreshes went: the share of synapses at the edge of the
range a pair can hold (|W| >= 90 % of beta N (refresh threshold x g_max - mean RESET
conductance)), the refreshes per synapse so far (each refresh RESETs every device of the synapse
once: the count of device 0 of G+, less the initial programming), and the share of all the layer's
refreshes made by the 1 % most refreshed synapses and by the edge synapses. A diagnostic for
docs/cnn.md and docs/analog.md (verified updates' wind-up at the range edge); not part of
``make bench``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from gpu_model.backend import make_backend
from sim.config import load_config
from sim.data import load_dataset
from sim.nn.stores import AnalogWeights
from sim.train import restore_trainer

BANDS_uS = (0.0, 1.0, 3.0, 5.0, 7.0, 9.0, float("inf"))
EDGE = 0.9        # |W| >= EDGE x the largest weight a refresh can write: "at the range edge"
TOP = 0.01        # the most refreshed share of synapses


def device_state(run: Path, dataset: str) -> dict:
    cfg = load_config(run / "config.toml")
    if cfg.synapse.mode != "pcm":
        raise SystemExit(f"{run}: synapse.mode is {cfg.synapse.mode!r}; this looks at PCM devices")
    be = make_backend("numpy", cfg.train.seed)
    tr = restore_trainer(run, cfg, be, load_dataset(dataset, None, allow_fallback=False))
    g_all, p_all, layers = [], [], []
    for L in tr.task.store_layers():
        if not isinstance(L.store, AnalogWeights):
            continue
        layers.append({"layer": L.name, **_refresh_spread(L.store)})
        dev = L.store.tile.devices          # the reference engine's PCMArrays (their history terms)
        if not hasattr(dev, "gp"):
            raise SystemExit(f"{run}: device_state reads the reference engine's arrays (tile.engine = 'reference')")
        for arr in (dev.gp, dev.gm):
            g_all.append(np.asarray(arr.conductance_at(dev.t)))
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
            "bands": bands, "layers": layers}


def _refresh_spread(store) -> dict:
    """Range edge and refresh concentration of one weight layer (module docstring)."""
    tile = store.tile
    pre, syn = tile.config.device, tile.config.synapse
    w = np.asarray(tile.weights()).reshape(-1)
    beta = tile.w_max / (pre.g_max * syn.devices_per_side)
    w_edge = beta * syn.devices_per_side * (syn.refresh_threshold * pre.g_max - pre.reset_mean)
    edge = np.abs(w) >= EDGE * w_edge
    n_reset = np.asarray(tile.devices.device_counts()[1])[0, 0].reshape(-1)   # G+ device 0: one RESET per refresh
    refreshes = n_reset.astype(np.int64) - 1
    total = int(refreshes.sum())
    top = np.sort(refreshes)[::-1][:max(1, int(TOP * w.size))]
    share = (lambda x: float(x) / total) if total else (lambda x: 0.0)
    return {"synapses": int(w.size), "edge_share": float(edge.mean()), "refreshes": total,
            "refreshes_median_max": [float(np.median(refreshes)), int(refreshes.max())],
            "top1pct_refresh_share": share(top.sum()), "edge_refresh_share": share(refreshes[edge].sum())}


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
    print(f"  per layer: synapses at the range edge (|W| >= {EDGE:g} x what a refresh can write), refreshes "
          f"(median / max per synapse), share of them made by the {100 * TOP:g} % most refreshed synapses and by the edge ones")
    for L in res["layers"]:
        med, mx = L["refreshes_median_max"]
        print(f"    {L['layer']:8s} {L['synapses']:8,d} synapses, {100 * L['edge_share']:5.2f} % at the edge, "
              f"{L['refreshes']:11,d} refreshes ({med:g} / {mx:,d}), top {100 * TOP:g} %: "
              f"{100 * L['top1pct_refresh_share']:5.1f} %, edge: {100 * L['edge_refresh_share']:5.1f} %")


if __name__ == "__main__":
    main()
