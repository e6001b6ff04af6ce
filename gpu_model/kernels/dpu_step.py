"""The digital unit's update of one tile as one compiled pass (the fused engine's golden DPU).

One pass over the update's synapses does, per synapse, what :class:`gpu_model.digital_unit.DigitalUnit`
does with a chain of array passes (``rtl.spec`` has the formats):

| step | arithmetic |
| --- | --- |
| feedback | d = delta_w + feedback (float32), feedback := 0 (verified updates) |
| encode | inc = sat(rint(fl32(d * factor))), factor = fl32(1/epsilon_w) * 2^(F+R) (``DPUSpec.encode_update``) |
| rounding bits | rand = SplitMix64(element index * golden + key) >> (64 - R) (``rtl.golden.shared_rand``) |
| DPU | s = chi + ((inc + rand) >> R); p = sign(s) min(\\|s\\| >> F, pmax) where \\|s\\| >= 2^F (s saturated there); chi' = s - p 2^F (``rtl.golden.golden_step_sparse``) |
| pulse list | (flat index, p) of the synapses with p != 0, ascending |

Bit-exact to the golden model fed with :func:`rtl.golden.shared_rand`'s bits for the same key
(``tests/test_fused_digital_unit.py``): the same chi, the same pulse list, the same saturation
count. Integers are int64 inside (every intermediate fits; the golden model's int32 path is proven
equal to its int64 reference). Work: one read of delta (and feedback), one read-modify-write of chi.
"""
from __future__ import annotations

import numpy as np
from numba import njit

ROUND_NEAREST, ROUND_TRUNCATE, ROUND_STOCHASTIC = 0, 1, 2
ROUNDING_CODES = {"nearest": ROUND_NEAREST, "truncate": ROUND_TRUNCATE, "stochastic": ROUND_STOCHASTIC}

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)   # SplitMix64 increment (rtl.golden._splitmix64)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True, nogil=True, inline="always")
def _lane(d, chi_in, factor, fmin, fmax, round_bits, rounding, z_index, key, frac_bits, chi_max, pmax):
    """One synapse: (chi', signed pulses, saturated 0/1) from its update ``d`` (weight units)."""
    x = np.float64(np.rint(d * factor))          # float32 product, round half to even, exact in float64
    sat = 1 if (x > fmax or x < fmin) else 0
    inc = np.int64(min(max(x, fmin), fmax))      # saturate to the increment range
    if round_bits > 0:
        if rounding == ROUND_STOCHASTIC:
            z = np.uint64(z_index) * _GOLDEN + key          # rtl.golden.shared_rand of element z_index
            z = (z ^ (z >> np.uint64(30))) * _MIX1
            z = (z ^ (z >> np.uint64(27))) * _MIX2
            z = z ^ (z >> np.uint64(31))
            inc += np.int64(z >> np.uint64(64 - round_bits))
        elif rounding == ROUND_NEAREST:
            inc += np.int64(1) << (round_bits - 1)
        inc >>= round_bits                        # arithmetic shift: floor
    s = np.int64(chi_in) + inc
    p = np.int64(0)
    if s >= (np.int64(1) << frac_bits) or s <= -(np.int64(1) << frac_bits):   # |s| >= 2^F: pulses
        if s > chi_max:                           # sat_chi (only such lanes can exceed it)
            s = np.int64(chi_max)
        elif s < -chi_max:
            s = -np.int64(chi_max)
        a = s if s >= 0 else -s
        p = min(a >> frac_bits, np.int64(pmax))
        if s < 0:
            p = -p
        s -= p << frac_bits
    return s, p, sat


@njit(cache=True, nogil=True)
def dpu_step_kernel(delta, feedback, use_feedback, cols, chi, factor, inc_min, inc_max,
                    round_bits, rounding, key, frac_bits, chi_max, pmax, out_idx, out_cnt):
    """One mini-batch update of a tile's digital unit (module docstring), in place on ``chi``
    (int32, rows x n_cols) and ``feedback`` (float32, rows x n_cols; read when ``use_feedback``).

    delta: float32 (rows, m) update in weight units of the columns ``cols`` (int64, m ascending;
    an empty ``cols``: every column, m == n_cols, no gather). ``factor``: float32 LSBs per weight
    unit. ``key``: uint64 rounding key (``rtl.golden.shared_rand``'s key of (seed, step)).
    ``out_idx``/``out_cnt``: buffers of rows*m for the pulse list. Returns (pulsed, saturated).
    """
    rows, m = delta.shape
    n_cols = chi.shape[1]
    fmin, fmax = np.float64(inc_min), np.float64(inc_max)
    every = cols.shape[0] == 0
    n = 0
    sat = 0
    for r in range(rows):
        dr, cr = delta[r], chi[r]
        fr = feedback[r] if use_feedback else feedback[0]
        for j in range(m):
            c = j if every else cols[j]
            d = dr[j]
            if use_feedback:
                d = d + fr[c]                   # float32 + float32 (as delta_w + feedback)
                fr[c] = np.float32(0.0)
            s, p, st = _lane(d, cr[c], factor, fmin, fmax, round_bits, rounding, r * m + j, key,
                             frac_bits, chi_max, pmax)
            cr[c] = s
            sat += st
            if p != 0:
                out_idx[n] = r * n_cols + c
                out_cnt[n] = p
                n += 1
    return n, sat
