"""Throughput of the whole unit in the loop (``python -m rtl.bench_tile``): one JSON line with the
golden model's and the Verilator model's synapse-updates per second (wall clock, this machine),
the RTL's clock cycles per mini-batch (hardware pace), and whether the two agree bit for bit.

Stimulus: random codes (``--kind random``: many events) or a realistic sparse batch (``sparse``:
ReLU-like x, 30 % non-zero delta, a scale that gives a few % of synapses an event per batch).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from .dpu import TileDPU
from .spec import TileSpec


def stimulus(ts: TileSpec, n: int, rng, kind: str):
    xl, dl = ts.x_max, ts.delta_max
    out = []
    for _ in range(n):
        if kind == "random":
            x = rng.integers(-xl, xl + 1, (ts.batch, ts.cols))
            d = rng.integers(-dl, dl + 1, (ts.batch, ts.rows))
            m = int(rng.integers(0, ts.scale_max + 1))
        else:
            x = np.maximum(rng.integers(-xl, xl + 1, (ts.batch, ts.cols)), 0)
            d = rng.integers(-dl, dl + 1, (ts.batch, ts.rows)) * (rng.random((ts.batch, ts.rows)) < 0.3)
            m = ts.scale_max // 8
        out.append((x, d, m))
    return out


def run(ts: TileSpec, batches: int, kind: str, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    stim = stimulus(ts, batches, rng, kind)
    chi0 = rng.integers(-(1 << ts.dpu.frac_bits), 1 << ts.dpu.frac_bits, (ts.rows, ts.cols)).astype(np.int32)
    res = {"spec": f"R{ts.rows} C{ts.cols} B{ts.batch} L{ts.lanes} P{ts.taps}", "kind": kind,
           "batches": batches, "synapse_updates": batches * ts.rows * ts.cols}
    outs = {}
    for kind_ in ("golden", "rtl"):
        u = TileDPU(ts, kind_, seed=seed)
        t0 = time.perf_counter()
        chi, evs, cyc = chi0, [], 0
        for k, (x, d, m) in enumerate(stim):
            chi, ev = u.update_from_batch(chi0 if k == 0 else None, x, d, m,
                                          return_chi=k == batches - 1)   # chi stays in the unit
            evs.append(ev)
            cyc += u.cycles_last_batch or 0
        dt = time.perf_counter() - t0
        outs[kind_] = (chi, np.concatenate(evs), u.counters())
        res[f"{kind_}_updates_per_s"] = round(res["synapse_updates"] / dt)
        if kind_ == "rtl":
            res["rtl_cycles_per_batch"] = round(cyc / batches, 1)
            res["rtl_updates_per_clock"] = round(ts.rows * ts.cols * batches / cyc, 3)
            res["rtl_sim_cycles_per_s"] = round(cyc / dt)
    g, r = outs["golden"], outs["rtl"]
    res["events"] = int(g[1].size)
    res["match"] = bool(np.array_equal(g[0], r[0]) and np.array_equal(g[1], r[1]) and g[2] == r[2])
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rtl.bench_tile", description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=50)
    ap.add_argument("--kind", choices=("random", "sparse"), default="sparse")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    res = run(TileSpec(), args.batches, args.kind, args.seed)
    print(json.dumps(res))
    return 0 if res["match"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
