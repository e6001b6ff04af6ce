"""Throughput of the whole unit in the loop (``python -m rtl.bench_tile``): one JSON line with the
golden model's and the Verilator model's synapse-updates per second (wall clock, this machine;
``rtl_updates_per_cpu_s``: per second of the process's CPU time, all threads),
the RTL's clock cycles per mini-batch (hardware pace), and whether the two agree bit for bit.

``--pace MHZ``: the analytic cycles per mini-batch of the MLP and CNN layers on one unit at that
clock, against the architecture's pace (``train.seconds_per_batch`` of their configs).

Stimulus: random codes (``--kind random``: many events) or a realistic sparse batch (``sparse``:
ReLU-like x, 30 % non-zero delta, a scale that gives a few % of synapses an event per batch).
"""
from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor

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


def run(ts: TileSpec, batches: int, kind: str, seed: int = 0, units: int = 1, threads: int = 1,
        repeat: int = 1) -> dict:
    """``units`` independent units (the blocks of one layer), each fed ``batches`` mini-batches;
    per mini-batch step the RTL units run in ``threads`` threads (the harness releases the GIL).
    ``repeat`` timed runs per backend from the same start; the best is reported."""
    rng = np.random.default_rng(seed)
    stims = [stimulus(ts, batches, rng, kind) for _ in range(units)]
    chi0s = [rng.integers(-(1 << ts.dpu.frac_bits), 1 << ts.dpu.frac_bits, (ts.rows, ts.cols)).astype(np.int32)
             for _ in range(units)]
    res = {"spec": f"R{ts.rows} C{ts.cols} B{ts.batch} L{ts.lanes} P{ts.taps}", "kind": kind,
           "batches": batches, "synapse_updates": batches * units * ts.rows * ts.cols}
    if units > 1 or threads > 1:
        res["units"], res["threads"] = units, threads
    if repeat > 1:
        res["repeat"] = repeat
    outs = {}
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    for kind_ in ("golden", "rtl"):
        best = best_cpu = float("inf")
        for _ in range(max(1, repeat)):
            us = [TileDPU(ts, kind_, seed=seed + i) for i in range(units)]
            evs, cyc = [[] for _ in us], 0
            chis = [None] * units

            def one(i, k):
                u = us[i]
                x, d, m = stims[i][k]
                chi, ev = u.update_from_batch(chi0s[i] if k == 0 else None, x, d, m,
                                              return_chi=k == batches - 1)   # chi stays in the unit
                evs[i].append(ev)
                if chi is not None:
                    chis[i] = chi
                return u.cycles_last_batch or 0

            t0, c0 = time.perf_counter(), time.process_time()
            for k in range(batches):
                if pool is not None and kind_ == "rtl":
                    cyc += sum(pool.map(one, range(units), [k] * units))
                else:
                    cyc += sum(one(i, k) for i in range(units))
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            best, best_cpu = min(best, dt), min(best_cpu, dc)
            out = (chis, [np.concatenate(e) for e in evs], [u.counters() for u in us])
            if kind_ in outs and not _same(outs[kind_], out):
                raise RuntimeError(f"{kind_}: repeated runs differ")
            outs[kind_] = out
        res[f"{kind_}_updates_per_s"] = round(res["synapse_updates"] / best)
        if kind_ == "rtl":
            # per second of this process's CPU time (all threads): less sensitive to other load
            res["rtl_updates_per_cpu_s"] = round(res["synapse_updates"] / best_cpu)
            res["rtl_cycles_per_batch"] = round(cyc / (batches * units), 1)
            res["rtl_updates_per_clock"] = round(ts.rows * ts.cols * batches * units / cyc, 3)
            res["rtl_sim_cycles_per_s"] = round(cyc / best)
            res["rtl_evals_per_cycle"] = us[0]._v.evals_per_cycle
    if pool is not None:
        pool.shutdown()
    res["events"] = int(sum(e.size for e in outs["golden"][1]))
    res["match"] = _same(outs["golden"], outs["rtl"])
    return res


def _same(a, b) -> bool:
    return (all(np.array_equal(p, q) for p, q in zip(a[0], b[0]))
            and all(np.array_equal(p, q) for p, q in zip(a[1], b[1])) and a[2] == b[2])


# --- hardware pace of whole networks (analytic, from the unit's schedule) ------------------------
#: (name, rows = outputs, cols = inputs, positions per sample): MLP 784-250-10 (configs/mlp_mnist_pcm.toml)
MLP_LAYERS = (("fc1", 250, 784, 1), ("fc2", 10, 250, 1))
#: the CIFAR-10 CNN (configs/cnn_cifar10_pcm.toml): 3x3 convs 32, 64, 128 with 2x2 pooling after
#: each (im2col: cols = 9 * in_channels, one update sample per output position), dense 2048-256-10
CNN_LAYERS = (("conv1", 32, 27, 32 * 32), ("conv2", 64, 288, 16 * 16), ("conv3", 128, 576, 8 * 8),
              ("fc1", 256, 2048, 1), ("fc2", 10, 256, 1))
NETWORKS = {"mlp": (MLP_LAYERS, 10, 1e-3), "cnn": (CNN_LAYERS, 64, 1e-2)}   # layers, batch, seconds_per_batch


def pace(ts: TileSpec, layers, batch: int, fmax_mhz: float) -> dict:
    """Clock cycles one unit (ts.rows x ts.cols blocks, ts.lanes x ts.taps multipliers) needs per
    mini-batch for every layer, blocks one after another: per block ``groups * ceil(samples / P)``
    cycles (one group of L synapses per ceil(samples / P) reads) + :data:`rtl.tile.DRAIN`; loading
    overlaps (double buffer). ``samples`` = batch x positions (a convolution's update sums over
    every output position). Padding of edge blocks is counted (it costs cycles)."""
    from .tile import DRAIN
    out, total = [], 0
    for name, rows, cols, pos in layers:
        blocks = -(-rows // ts.rows) * -(-cols // ts.cols)
        samples = batch * pos
        cyc = blocks * (ts.groups * -(-samples // ts.taps) + DRAIN)
        total += cyc
        out.append({"layer": name, "synapses": rows * cols, "samples": samples, "blocks": blocks,
                    "cycles": cyc, "ms_at_fmax": round(cyc / (fmax_mhz * 1e3), 4),
                    "synapse_updates_per_s": round(rows * cols / (cyc / (fmax_mhz * 1e6)))})
    return {"fmax_mhz": fmax_mhz, "layers": out, "cycles": total,
            "ms_per_batch": round(total / (fmax_mhz * 1e3), 4)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rtl.bench_tile", description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=50)
    ap.add_argument("--kind", choices=("random", "sparse"), default="sparse")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=1, help="timed runs per backend, best reported")
    ap.add_argument("--units", type=int, default=1,
                    help="independent units (the blocks of a layer), all fed every mini-batch step")
    ap.add_argument("--threads", type=int, default=1, help="threads running the RTL units of a step")
    ap.add_argument("--pace", type=float, default=None, metavar="MHZ",
                    help="print the analytic pace of the MLP and CNN at this clock instead (no simulation)")
    args = ap.parse_args(argv)
    if args.pace:
        for net, (layers, batch, spb) in NETWORKS.items():
            r = pace(TileSpec(), layers, batch, args.pace)
            print(json.dumps({"network": net, "batch": batch, "seconds_per_batch": spb,
                              "unit_time_over_pace": round(r["ms_per_batch"] / (spb * 1e3), 3), **r}))
        return 0
    res = run(TileSpec(), args.batches, args.kind, args.seed, args.units, args.threads, args.repeat)
    print(json.dumps(res))
    return 0 if res["match"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
