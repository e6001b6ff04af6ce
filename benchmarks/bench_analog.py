"""Analog side (issue 2): sparse pulse application and crossbar-tile MVMs, measured side by side.

* pulse application: ``DifferentialSynapses.apply_pulses`` on a (rows x cols) pair array with a
  given fraction of non-zero signed counts (|count| uniform in 1..3), reported as device-steps/s
  (SET pulses applied per second, refresh checks and cache update included);
* tile MVMs: ``AnalogTile.forward`` / ``backward`` (read noise, DAC, ADC, 512x512 tiling) against a
  plain float32 matmul of the same shape (``x @ W.T`` / ``d @ W``), as a ratio;
* read-noise normals: ns per float32 standard normal for each sampler of ``gpu_model/sampling.py``
  (the tile draws one per output of every MVM), side by side.

Timings are the minimum over repetitions of the mean of several calls (robust to machine noise).
"""
from __future__ import annotations

import time

import numpy as np

from gpu_model import JAP2018, AnalogMatrix, DifferentialSynapses, TilePreset, make_backend
from gpu_model.backend import _cupy_status
from gpu_model.sampling import NOISE_SAMPLERS, standard_normal

PULSE_CASES = [((250, 784), 0.01), ((250, 784), 0.10), ((1024, 1024), 0.01), ((1024, 1024), 0.10)]
MVM_CASES = [((250, 784), 10), ((1024, 1024), 10), ((1024, 1024), 100)]   # (out x in), batch
NORMAL_DRAW = (64, 512)   # one MVM's outputs: batch 64 x a 512-column tile (the GAN's widest layer)


def _timeit(fn, be, min_time=0.05, repeats=5) -> float:
    """Seconds per call: min over ``repeats`` of the mean over >= min_time of calls."""
    fn()
    be.synchronize()
    t0 = time.perf_counter()
    fn()
    be.synchronize()
    one = max(time.perf_counter() - t0, 1e-7)
    n = max(1, int(min_time / one))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        be.synchronize()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def bench_pulses(backend: str) -> list[dict]:
    be = make_backend(backend, 0)
    xp = be.xp
    out = []
    for shape, frac in PULSE_CASES:
        syn = DifferentialSynapses(shape, JAP2018, be, w_max=1.0)
        rng = np.random.default_rng(1)
        pats = []
        for _ in range(8):   # pre-generated patterns, cycled (generation is not timed)
            p = np.zeros(shape, dtype=np.int32)
            mask = rng.random(shape) < frac
            p[mask] = rng.integers(1, 4, int(mask.sum())) * rng.choice([-1, 1], int(mask.sum()))
            pats.append(xp.asarray(p))
        steps = [int(abs(be.asnumpy(p)).sum()) for p in pats]
        state = {"k": 0, "steps": 0}

        def call():
            k = state["k"] % len(pats)
            syn.apply_pulses(pats[k])
            state["k"] += 1
            state["steps"] += steps[k]

        sec = _timeit(call, be)
        mean_steps = float(np.mean(steps))
        out.append({"shape": f"{shape[0]}x{shape[1]}", "nonzero_frac": frac, "steps_per_call": mean_steps,
                    "ms_per_call": sec * 1e3, "device_steps_per_s": mean_steps / sec,
                    "refreshes": syn.counters.refreshes})
    return out


def bench_mvm(backend: str) -> list[dict]:
    be = make_backend(backend, 0)
    xp = be.xp
    out = []
    for (o, i), batch in MVM_CASES:
        m = AnalogMatrix(o, i, JAP2018, TilePreset(), be, w_max=1.0)
        rng = np.random.default_rng(2)
        m.program(xp.asarray(rng.uniform(-0.5, 0.5, (o, i)).astype(np.float32)))
        W = xp.asarray(be.asnumpy(m.weights()).copy())
        x = xp.asarray(rng.standard_normal((batch, i)).astype(np.float32))
        d = xp.asarray(rng.standard_normal((batch, o)).astype(np.float32))
        t_f = _timeit(lambda: m.forward(x), be)
        t_b = _timeit(lambda: m.backward(d), be)
        t_pf = _timeit(lambda: x @ W.T, be)
        t_pb = _timeit(lambda: d @ W, be)
        out.append({"shape": f"{o}x{i}", "batch": batch, "tiles": m.n_tiles,
                    "fwd_us": t_f * 1e6, "plain_fwd_us": t_pf * 1e6, "fwd_ratio": t_f / t_pf,
                    "bwd_us": t_b * 1e6, "plain_bwd_us": t_pb * 1e6, "bwd_ratio": t_b / t_pb})
    return out


def bench_normals(backend: str) -> list[dict]:
    be = make_backend(backend, 0)
    rng = be.child_rng(1)
    n = NORMAL_DRAW[0] * NORMAL_DRAW[1]
    out = []
    for method in NOISE_SAMPLERS:
        sec = _timeit(lambda: standard_normal(be.xp, rng, NORMAL_DRAW, "float32", method), be)
        out.append({"method": method, "shape": f"{NORMAL_DRAW[0]}x{NORMAL_DRAW[1]}", "ns_per_normal": sec / n * 1e9})
    return out


def run(backends=None, blas_threads: int | None = 1) -> dict:
    """Measure on numpy, and on cupy when CuPy sees a GPU. Returns {backend: {...}}.

    ``blas_threads``: CPU BLAS threads during the measurement (default 1: on a small shared machine
    multi-threaded OpenBLAS spins and makes small matmuls erratic; None leaves the library default).
    """
    if backends is None:
        backends = ["numpy"] + (["cupy"] if _cupy_status()[0] is not None else [])
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: comes with scikit-learn (dev extra)
        threadpool_limits = None
    res = {}
    for b in backends:
        if threadpool_limits is not None and blas_threads is not None:
            with threadpool_limits(limits=blas_threads, user_api="blas"):
                res[b] = {"pulses": bench_pulses(b), "mvm": bench_mvm(b), "normals": bench_normals(b)}
        else:
            res[b] = {"pulses": bench_pulses(b), "mvm": bench_mvm(b), "normals": bench_normals(b)}
        res[b]["blas_threads"] = blas_threads if threadpool_limits is not None else "library default"
    return res


def table(res: dict) -> str:
    lines = []
    for b, r in res.items():
        lines.append(f"[{b}] (BLAS threads: {r.get('blas_threads')})")
        lines.append(f"[{b}] pulse application (DifferentialSynapses.apply_pulses, JAP2018)")
        lines.append(f"  {'array':>10} {'nonzero':>8} {'steps/call':>11} {'ms/call':>9} {'device-steps/s':>15}")
        for p in r["pulses"]:
            lines.append(f"  {p['shape']:>10} {p['nonzero_frac']:>8.0%} {p['steps_per_call']:>11.0f} "
                         f"{p['ms_per_call']:>9.3f} {p['device_steps_per_s']:>15.3e}")
        lines.append(f"[{b}] tile MVM (AnalogTile, read noise + 8b DAC + 9b ADC) vs plain float32 matmul")
        lines.append(f"  {'W (out x in)':>12} {'batch':>5} {'tiles':>5} {'fwd us':>9} {'x@W.T us':>9} {'ratio':>6} "
                     f"{'bwd us':>9} {'d@W us':>9} {'ratio':>6}")
        for m in r["mvm"]:
            lines.append(f"  {m['shape']:>12} {m['batch']:>5} {m['tiles']:>5} {m['fwd_us']:>9.1f} "
                         f"{m['plain_fwd_us']:>9.1f} {m['fwd_ratio']:>6.1f} {m['bwd_us']:>9.1f} "
                         f"{m['plain_bwd_us']:>9.1f} {m['bwd_ratio']:>6.1f}")
        if r.get("normals"):
            zig = next(q["ns_per_normal"] for q in r["normals"] if q["method"] == "ziggurat")
            lines.append(f"[{b}] read-noise normals (float32, {r['normals'][0]['shape']} per draw)")
            for q in r["normals"]:
                lines.append(f"  {q['method']:>10} {q['ns_per_normal']:>6.2f} ns/normal   "
                             f"ziggurat / this = {zig / q['ns_per_normal']:.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(run()))
