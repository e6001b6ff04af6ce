"""What the whole unit's quantised update path costs in accuracy (issue 27), small study.

An MLP 64-32-10 (ReLU, softmax cross-entropy, plain SGD, batch 8) on the 8x8 digits bundled with
scikit-learn, both weight matrices on PCM tiles (JAP2018 devices, read noise, 8-bit DAC, 9-bit
ADC), trained with

* ``float``: today's path, the float update delta_w = -lr d^T x into the chi/pulse lanes
  (:class:`gpu_model.digital_unit.DigitalUnit`, golden DPU, stochastic rounding);
* ``unit-d<b>``: the whole unit (:class:`~gpu_model.digital_unit.WholeUnitDigital`, tile-golden:
  bit-identical to the RTL) with x = the 8-bit DAC codes and b-bit error codes, the product sum
  scaled by a 16-bit mantissa (scale shift 12 + b - 8, so the mantissa's range follows the codes).

Command (the table in docs/dpu.md, "Accuracy of the quantised update path"; ~3 min on one core)::

    OMP_NUM_THREADS=1 python -m tests.test_dpu_quant_study --seeds 0,1,2 --epochs 8

The slow test runs the 8-bit unit and the float path for 3 seeds and checks the unit's mean test
accuracy is within the float path's seed spread (min - max range, widened by one standard
deviation).
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import pytest

from gpu_model import JAP2018, AnalogTile, make_backend
from gpu_model.digital_unit import attach_whole_unit, whole_unit_spec
from gpu_model.tile_config import SynapseConfig, TileConfig

HIDDEN = 32         # study choice: a small MLP on the 64-pixel digits
BATCH = 8           # = the shipped TileSpec's batch
LR = 0.1            # study choice: plain SGD rate that trains the float path in a few epochs
W_MAX = 1.0         # study choice: weight range (weights are initialised within 0.9 w_max)
VARIANTS = ("float", "unit-d8", "unit-d6", "unit-d4", "unit-d3", "unit-d2")


def _digits():
    from sim.data import load_digits_fallback
    return load_digits_fallback()


def train_mlp(variant: str, seed: int, epochs: int, data=None, n_train: int | None = None) -> dict:
    ds = data or _digits()
    xtr, ytr = ds.x_train[:n_train], ds.y_train[:n_train]
    be = make_backend("numpy", seed)
    cfg = TileConfig(device=JAP2018, synapse=SynapseConfig(w_max=W_MAX))
    init = np.random.default_rng(seed + 1000)
    n_in, n_out = xtr.shape[1], ds.n_classes

    def w0(o, i):
        return np.clip(init.standard_normal((o, i)) * math.sqrt(2.0 / i), -0.9 * W_MAX, 0.9 * W_MAX).astype(np.float32)
    tiles = [AnalogTile(cfg, HIDDEN, n_in, be, stream=1, w0=w0(HIDDEN, n_in)),
             AnalogTile(cfg, n_out, HIDDEN, be, stream=2, w0=w0(n_out, HIDDEN))]
    units = None
    if variant.startswith("unit-d"):
        b = int(variant[len("unit-d"):])
        ts = whole_unit_spec(cfg, BATCH, delta_bits=b, scale_shift=12 + b - 8)
        units = [attach_whole_unit(t, "tile-golden", ts) for t in tiles]
    elif variant != "float":
        raise ValueError(f"unknown variant {variant!r}")
    rand_rng = be.child_rng(77)
    order_rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = order_rng.permutation(len(xtr))
        for s in range(len(perm) // BATCH):
            idx = perm[s * BATCH:(s + 1) * BATCH]
            x, y = xtr[idx], ytr[idx]
            h = np.maximum(tiles[0].forward(x), 0)
            z = tiles[1].forward(h)
            p = np.exp(z - z.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            d2 = p
            d2[np.arange(BATCH), y] -= 1
            d2 /= BATCH
            d1 = tiles[1].backward(d2) * (h > 0)
            for k, xin, d in ((1, h, d2), (0, x, d1)):
                if units is not None:
                    units[k].offer(xin, d, LR)
                tiles[k].update((-LR * (d.T @ xin)).astype(np.float32), rand_rng)
    h = np.maximum(tiles[0].forward(ds.x_test), 0)
    acc = float((tiles[1].forward(h).argmax(axis=1) == ds.y_test).mean())
    out = {"variant": variant, "seed": seed, "epochs": epochs, "test_acc": round(acc, 4),
           "seconds": round(time.perf_counter() - t0, 1)}
    if units is not None:
        out["scale_clamped"] = sum(u.scale_clamped for u in units)
        out["inc_sat"] = sum(u.inc_saturated for u in units)
    return out


def summarise(rows: list[dict]) -> dict:
    by: dict = {}
    for r in rows:
        by.setdefault(r["variant"], []).append(r["test_acc"])
    return {v: {"mean": round(float(np.mean(a)), 4), "std": round(float(np.std(a)), 4),
                "min": min(a), "max": max(a), "n": len(a)} for v, a in by.items()}


@pytest.mark.slow
def test_unit_8bit_within_float_spread():
    data = _digits()
    rows = [train_mlp(v, s, 4, data) for v in ("float", "unit-d8") for s in (0, 1, 2)]
    st = summarise(rows)
    f, u = st["float"], st["unit-d8"]
    assert f["mean"] > 0.8, f"the float path did not train: {st}"
    assert f["min"] - f["std"] <= u["mean"] <= f["max"] + f["std"], st
    assert all(r.get("scale_clamped", 0) == 0 for r in rows)


def test_study_smoke():
    """The study's code path on a few batches (quick): both kinds of variant run and report."""
    data = _digits()
    a = train_mlp("unit-d6", 0, 1, data, n_train=8 * BATCH)
    b = train_mlp("float", 0, 1, data, n_train=8 * BATCH)
    assert 0 <= a["test_acc"] <= 1 and "scale_clamped" in a and "scale_clamped" not in b
    with pytest.raises(ValueError, match="variant"):
        train_mlp("unit", 0, 1, data, n_train=BATCH)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.test_dpu_quant_study", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args(argv)
    data = _digits()
    rows = []
    for v in args.variants.split(","):
        for s in (int(x) for x in args.seeds.split(",")):
            rows.append(train_mlp(v, s, args.epochs, data))
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"summary": summarise(rows)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
