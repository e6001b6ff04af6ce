"""``mcasim bench``: micro-benchmarks.

``mcasim bench dpu`` runs the golden model and the RTL (Verilator shared-library harness) DPU
backends on the same arrays in one run and prints one JSON line: lane-updates per second of each,
and whether their outputs matched bit for bit. These are the chi/threshold lanes alone
(rtl.unit, increments given), one call per 4e6 lane-updates.

``mcasim bench dpu-tile`` does the same for the whole unit (rtl.tile.TileUnit: update engine,
chi memory, events) one mini-batch per call as in training: synapse-updates per second
(:func:`rtl.bench_tile.run`, as ``python -m rtl.bench_tile``).
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time

import numpy as np

MODES = ("dpu", "dpu-tile")


def add_arguments(p) -> None:
    p.add_argument("what", choices=MODES, help="what to benchmark")
    p.add_argument("--n", type=int, default=4_000_000, help="lane-updates per call (default 4e6)")
    p.add_argument("--repeat", type=int, default=3, help="timed calls per backend; best is reported")
    p.add_argument("--lanes", type=int, default=None,
                   help="lanes of the RTL harness build (default rtl.verilated.HARNESS_LANES)")
    p.add_argument("--rounding", choices=("nearest", "truncate", "stochastic"), default=None,
                   help="override DPUSpec.rounding")
    p.add_argument("--seed", type=int, default=0)
    t = p.add_argument_group("dpu-tile")
    t.add_argument("--batches", type=int, default=100, help="mini-batches per unit (default 100)")
    t.add_argument("--kind", choices=("sparse", "random"), default="sparse",
                   help="stimulus (rtl.bench_tile.stimulus; default sparse)")
    t.add_argument("--units", type=int, default=1, help="independent units, all fed every step")
    t.add_argument("--threads", type=int, default=1, help="threads running the RTL units of a step")


def _workload(spec, n: int, seed: int):
    """Training-like arrays: chi spread over +-(pmax+2) epsilon, updates ~N(0, 1.5 epsilon)
    with 1% large outliers (to exercise PMAX clipping and saturation)."""
    from rtl.golden import shared_rand
    rng = np.random.default_rng(seed)
    one_c = 1 << spec.frac_bits
    lim = min(spec.chi_max, (spec.pmax + 2) * one_c)
    chi = rng.integers(-lim, lim + 1, n).astype(np.int32)
    delta = rng.normal(0.0, 1.5, n)
    big = rng.random(n) < 0.01
    delta[big] *= 100.0
    inc, _ = spec.encode_update(delta, np)
    rand = shared_rand(spec, n, seed, 0, np)
    return chi, inc, rand


def _best(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_dpu(args) -> dict:
    """Both backends through the interface training uses: ``make_dpu(kind).step`` ->
    (chi_new, signed pulses)."""
    from rtl.dpu import make_dpu
    from rtl.spec import DPUSpec
    from rtl.verilated import VerilatedDPU
    spec = DPUSpec()
    if args.rounding:
        spec = dataclasses.replace(spec, rounding=args.rounding)
    chi, inc, rand = _workload(spec, args.n, args.seed)
    t0 = time.perf_counter()
    rtl = VerilatedDPU(spec, np, lanes=args.lanes) if args.lanes else make_dpu("rtl", spec, np)
    build_s = time.perf_counter() - t0
    golden = make_dpu("golden", spec, np)
    tg, g = _best(lambda: golden.step(chi, inc, rand), args.repeat)
    c0 = rtl.cycles
    tr, r = _best(lambda: rtl.step(chi, inc, rand), args.repeat)
    cycles = (rtl.cycles - c0) / max(1, args.repeat)
    mism = [int(np.count_nonzero(np.asarray(a) != np.asarray(b))) for a, b in zip(g, r)]
    res = {
        "bench": "dpu", "n_lane_updates": args.n, "spec": spec.to_dict(), "rtl_lanes": rtl.lanes,
        "golden_lane_updates_per_s": round(args.n / tg),
        "rtl_lane_updates_per_s": round(args.n / tr),
        "rtl_cycles_per_s": round(cycles / tr),
        "match": sum(mism) == 0,
        "mismatches": dict(zip(("chi", "signed_pulses"), mism)),
        "pulses_total": int(np.abs(g[1]).sum()),
        "rtl_build_or_load_s": round(build_s, 2), "repeat": args.repeat,
    }
    rtl.close()
    return res


def bench_dpu_tile(args) -> dict:
    from rtl.bench_tile import run as run_tile
    from rtl.spec import TileSpec
    return {"bench": "dpu-tile", **run_tile(TileSpec(), args.batches, args.kind, args.seed,
                                            args.units, args.threads, args.repeat)}


def run(args) -> int:
    if args.what in MODES:
        try:
            res = bench_dpu(args) if args.what == "dpu" else bench_dpu_tile(args)
        except RuntimeError as e:           # missing toolchain, failed build
            print(f"mcasim bench {args.what}: {e}", file=sys.stderr)
            return 2
        print(json.dumps(res))
        return 0 if res["match"] else 1
    return 2
