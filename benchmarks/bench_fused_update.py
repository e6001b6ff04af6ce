"""Device-update throughput: the reference engine (DifferentialSynapses.apply_pulse_list) beside
the fused Numba engine (gpu_model.kernels.FusedSynapses.apply), one run, side by side.

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python -m benchmarks.bench_fused_update [--reps 20]

JAP-2018 preset, a 250 x 784 tile (MNIST's first layer), weights programmed to U(-0.3, 0.3) w_max,
then the clock set past the drift onset (1000 s: every device has drifted, so the pulses act on
drifted conductances as in training); per update ~5 % of the synapses pulsed with training-like
counts (80 % one pulse, 20 % two to four; signs even). For N = 1, 3, 8, 16, 48 devices per side,
blind and verified updates; ``fused/soa`` is the fused engine with one array per device field
instead of the packed per-device record (the layout comparison). Printed per engine: ms per
update, pulse throughput (SET device-steps/s) and tile update throughput (pulsed
synapse-updates/s). Both engines see the same pulse lists; the clock stays fixed during the timed
updates (no cache recompute in the timing).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from gpu_model import JAP2018, DifferentialSynapses, make_backend
from gpu_model.kernels import FusedSynapses
from gpu_model.pulses import PulseList

ROWS, COLS = 250, 784          # tile (out x in), MNIST first layer
PULSED = 0.05                  # share of synapses pulsed per update
P_ONE = 0.8                    # share of pulsed synapses with a single pulse; the rest 2..MAX_COUNT
MAX_COUNT = 4
W_INIT = 0.3                   # programmed weights ~ U(-W_INIT, W_INIT) (w_max = 1)
T_DRIFTED = 1000.0             # s: past drift_t0 = 38.6 s (JAP 2018), every device drifted
REFRESH_THRESHOLD = 0.9        # DifferentialSynapses default
DEVICES = (1, 3, 8, 16, 48)
WARMUP = 2                     # updates before timing (compilation, first cache sync)


def pulse_lists(n_syn, reps, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(reps):
        idx = np.flatnonzero(rng.random(n_syn) < PULSED).astype(np.int64)
        mag = np.where(rng.random(idx.size) < P_ONE, 1, rng.integers(2, MAX_COUNT + 1, idx.size))
        out.append((idx, (mag * np.where(rng.random(idx.size) < 0.5, 1, -1)).astype(np.int64)))
    return out


def time_engine(apply, lists):
    for k in range(WARMUP):
        apply(k, *lists[k])
    t0 = time.perf_counter()
    for k in range(WARMUP, len(lists)):
        apply(k, *lists[k])
    dt = time.perf_counter() - t0
    timed = lists[WARMUP:]
    steps = sum(int(np.abs(c).sum()) for _, c in timed)
    syn = sum(i.size for i, _ in timed)
    return dt / len(timed), steps / dt, syn / dt


def build(engine, n, w0):
    if engine == "reference":
        s = DifferentialSynapses((ROWS, COLS), JAP2018, make_backend("numpy", 0), w_max=1.0,
                                 refresh_threshold=REFRESH_THRESHOLD, devices_per_side=n, stream=1)
    else:
        s = FusedSynapses((ROWS, COLS), JAP2018, make_backend("numpy", 0), w_max=1.0,
                          refresh_threshold=REFRESH_THRESHOLD, devices_per_side=n, stream=1,
                          layout="soa" if engine == "fused/soa" else "packed")
    s.program(w0)
    s.set_time(T_DRIFTED)
    return s


def run(reps: int, devices=DEVICES, engines=("reference", "fused", "fused/soa")):
    w0 = np.random.default_rng(1).uniform(-W_INIT, W_INIT, (ROWS, COLS)).astype(np.float32)
    lists = pulse_lists(ROWS * COLS, reps + WARMUP)
    mean_pulsed = np.mean([i.size for i, _ in lists])
    mean_steps = np.mean([np.abs(c).sum() for _, c in lists])
    print(f"JAP2018, tile {ROWS}x{COLS}, {mean_pulsed:.0f} synapses pulsed per update "
          f"({mean_steps:.0f} SET pulses), {reps} timed updates; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')} "
          f"NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', '-')}")
    print(f"{'N':>3} {'update':>8} {'engine':>10} {'ms/update':>10} {'device-steps/s':>15} "
          f"{'synapse-updates/s':>18} {'speed-up':>9}")
    rows = []
    for n in devices:
        for verify in (False, True):
            base = None
            for engine in engines:
                s = build(engine, n, w0)
                if engine == "reference":
                    vr = (np.random.default_rng(2),) if verify else None
                    apply = lambda k, i, c: s.apply_pulse_list(i, c, verify=vr)    # noqa: E731
                else:
                    apply = lambda k, i, c: s.apply(PulseList(i, c), k, verify=verify)   # noqa: E731
                ms, steps, syn = time_engine(apply, lists)
                base = base or ms
                rows.append((n, verify, engine, ms, steps, syn))
                print(f"{n:>3} {'verified' if verify else 'blind':>8} {engine:>10} {1e3 * ms:>10.3f} "
                      f"{steps:>15.3e} {syn:>18.3e} {base / ms:>8.1f}x", flush=True)
                del s, apply
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=20, help="timed updates per engine and setting")
    ap.add_argument("--devices", type=int, nargs="*", default=list(DEVICES), help="devices per side N")
    a = ap.parse_args(argv)
    run(a.reps, tuple(a.devices))


if __name__ == "__main__":
    main()
