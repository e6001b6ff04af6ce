"""Device-update throughput: the reference engine (DifferentialSynapses.apply_pulse_list) beside
the fused Numba engine (gpu_model.kernels.FusedSynapses.apply), one run, side by side.

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python -m benchmarks.bench_fused_update [--reps 20]

JAP-2018 preset, a 250 x 784 tile (MNIST's first layer), weights programmed to U(-0.3, 0.3) w_max,
then the clock set past the drift onset (1000 s: every device has drifted, so the pulses act on
drifted conductances as in training); per update ~5 % of the synapses pulsed with training-like
counts (80 % one pulse, 20 % two to four; signs even). For N = 1, 2, 4, 8, 16, 48 devices per side,
blind and verified updates. Engines: ``reference`` (DifferentialSynapses), ``fused`` (certified
fast normals, the default), ``fused/exact`` (the fused engine with every normal by libm:
device_kernels.M_EXACT, the same outcomes bit for bit) and, with ``--engines``, ``fused/soa`` (one
array per device field instead of the packed per-device record). Printed per engine: ms per
update, pulse throughput (SET device-steps/s) and tile update throughput (pulsed
synapse-updates/s), and the speed-up over the first engine. Every engine sees the same pulse
lists; the clock stays fixed during the timed updates (no cache recompute in the timing). Times
are process CPU time (``time.process_time``: the single-threaded engines' own time, less exposed
to other processes on a shared machine than wall time).

    python -m benchmarks.bench_fused_update --fingerprint   # hashes of the fused engine's outcomes
"""
from __future__ import annotations

import argparse
import hashlib
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
DEVICES = (1, 2, 4, 8, 16, 48)
ENGINES = ("reference", "fused", "fused/exact")
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
    t0 = time.process_time()
    for k in range(WARMUP, len(lists)):
        apply(k, *lists[k])
    dt = time.process_time() - t0
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
        if engine == "fused/exact":
            from gpu_model.kernels import device_kernels
            s._M[device_kernels.M_EXACT] = 1         # every normal by libm (no certification)
    s.program(w0)
    s.set_time(T_DRIFTED)
    return s


def run(reps: int, devices=DEVICES, engines=ENGINES):
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


# --- fingerprint: the fused engine's outcomes, hashed (an optimisation must leave them bit for bit) ---
FP_SHAPE = (40, 50)            # small tile: every config in seconds
FP_BIG_SHAPE = (120, 120)      # 14,400 synapses, ~70 % pulsed: lists above PARALLEL_MIN_ITEMS
FP_STEPS = 24                  # updates per config
FP_DT = 7.0                    # s between updates (drift, cache syncs)
FP_REFRESH = 0.5               # refresh threshold (fraction of g_max): refreshes every few updates


def _fp_presets():
    from gpu_model import IDEAL, JOSHI2020
    return {"jap2018": JAP2018, "joshi2020": JOSHI2020, "ideal": IDEAL}


def fingerprint_one(preset, n, verify, noise, shape=FP_SHAPE, frac=0.3, cm=0.0, seed=0, tweak=None):
    """sha256 (first 16 hex digits) of everything a FusedSynapses run produces: program(), FP_STEPS
    updates (state, cache, counters, reports, verify readouts), read_weights and conductances.
    ``tweak(s)``: called on the new FusedSynapses before anything runs (tests: kernel switches)."""
    h = hashlib.sha256()
    s = FusedSynapses(shape, preset, make_backend("numpy", 0), w_max=1.0, refresh_threshold=FP_REFRESH,
                      devices_per_side=n, seed=seed, stream=5, common_mode_uS=cm)
    if tweak is not None:
        tweak(s)
    rng = np.random.default_rng(100 + n)
    s.program(rng.uniform(-0.4, 0.4, shape).astype(np.float32))
    for step in range(FP_STEPS):
        idx = np.flatnonzero(rng.random(s.n_syn) < frac).astype(np.int64)
        mag = np.where(rng.random(idx.size) < 0.6, 1, rng.integers(2, 7, idx.size))
        c = (mag * np.where(rng.random(idx.size) < 0.7, 1, -1)).astype(np.int64)
        r = s.apply(PulseList(idx, c), step, verify=verify, verify_read_noise=noise)
        h.update(np.int64([r.set_pulses, r.refreshes]).tobytes())
        if r.verify is not None:
            h.update(np.ascontiguousarray(r.verify.measured).tobytes())
            h.update(np.ascontiguousarray(r.verify.capped).tobytes())
        s.advance(FP_DT)
        h.update(np.ascontiguousarray(s.weights()).tobytes())
        h.update(np.ascontiguousarray(s.read_variance()).tobytes())
    for k, v in sorted(s.state_dict().items()):
        h.update(k.encode())
        h.update(np.ascontiguousarray(np.asarray(v)).tobytes())
    h.update(s.read_weights(3).tobytes())
    for g in s.conductances():
        h.update(g.tobytes())
    return h.hexdigest()[:16], s.counters.refreshes


def fingerprint():
    """Print one line per config: preset, N, verify, hash, refreshes (diff two outputs to compare)."""
    import numba
    print(f"# fused-engine fingerprint; numba threads {numba.get_num_threads()}")
    for pname, preset in _fp_presets().items():
        for n in (1, 2, 8, 48):
            for verify, noise in ((False, True), (True, True), (True, False)):
                fp, nref = fingerprint_one(preset, n, verify, noise)
                print(f"{pname:>10} N={n:<3} verify={int(verify)} noise={int(noise)}  {fp}  refreshes={nref}",
                      flush=True)
    for pname in ("jap2018", "joshi2020"):
        for n in (1, 3):
            fp, nref = fingerprint_one(_fp_presets()[pname], n, True, True, cm=2.0)
            print(f"{pname:>10} N={n:<3} common-mode 2 uS   {fp}  refreshes={nref}", flush=True)
            fp, nref = fingerprint_one(_fp_presets()[pname], n, True, True, shape=FP_BIG_SHAPE, frac=0.7)
            print(f"{pname:>10} N={n:<3} big list (parallel kernel)   {fp}  refreshes={nref}", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=20, help="timed updates per engine and setting")
    ap.add_argument("--devices", type=int, nargs="*", default=list(DEVICES), help="devices per side N")
    ap.add_argument("--engines", nargs="*", default=list(ENGINES),
                    help="engines: reference, fused, fused/exact, fused/soa (the first is the speed-up's base)")
    ap.add_argument("--fingerprint", action="store_true",
                    help="print hashes of the fused engine's outcomes instead (bit-exactness check)")
    a = ap.parse_args(argv)
    if a.fingerprint:
        fingerprint()
        return
    run(a.reps, tuple(a.devices), tuple(a.engines))


if __name__ == "__main__":
    main()
