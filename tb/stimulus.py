"""Random and edge-case lane-update vectors for any DPU spec (used by the cocotb bench and the fuzz)."""
from __future__ import annotations

import numpy as np

from rtl.spec import DPUSpec


def edge_chi(spec: DPUSpec) -> np.ndarray:
    one, m = 1 << spec.frac_bits, spec.chi_max
    vals = {0, 1, -1, m, -m, m - 1, -m + 1, one, -one, one - 1, -(one - 1), one + 1, -(one + 1),
            one // 2, -(one // 2)}
    for k in (spec.pmax, spec.pmax + 1, spec.pmax - 1):
        for d in (-1, 0, 1):
            vals |= {k * one + d, -(k * one + d)}
    return np.array(sorted(v for v in vals if -m <= v <= m), dtype=np.int64)


def edge_inc(spec: DPUSpec) -> np.ndarray:
    r = spec.round_bits
    one = 1 << (spec.frac_bits + r)
    vals = {0, 1, -1, spec.inc_max, spec.inc_min, spec.inc_max - 1, spec.inc_min + 1, one, -one,
            one * spec.pmax, -one * spec.pmax}
    if r:
        h = 1 << (r - 1)
        vals |= {h, -h, h - 1, -(h - 1), h + 1, -(h + 1), (1 << r) - 1, -((1 << r) - 1),
                 (1 << r), -(1 << r)}
    return np.array(sorted(v for v in vals if spec.inc_min <= v <= spec.inc_max), dtype=np.int64)


def lane_updates(spec: DPUSpec, n: int, rng: np.random.Generator, edge_frac: float = 0.3):
    """n (chi, inc, rand) triples: a mix of full-range uniform values, values near the pulse
    thresholds / PMAX, small increments, and (fraction ``edge_frac``) exact edge values."""
    chi = rng.integers(-spec.chi_max, spec.chi_max + 1, n)
    inc = rng.integers(spec.inc_min, spec.inc_max + 1, n)
    one_c, one_i = 1 << spec.frac_bits, 1 << (spec.frac_bits + spec.round_bits)
    kind = rng.integers(0, 4, n)
    # near thresholds: chi within +-(pmax+2) epsilon, increment within +-2 epsilon
    lim_c = min(spec.chi_max, (spec.pmax + 2) * one_c)
    lim_i = min(spec.inc_max, 2 * one_i)
    near = kind == 1
    chi[near] = rng.integers(-lim_c, lim_c + 1, near.sum())
    inc[near] = rng.integers(-lim_i, lim_i + 1, near.sum())
    small = kind == 2
    inc[small] = rng.integers(-(1 << spec.round_bits) * 4, (1 << spec.round_bits) * 4 + 1, small.sum())
    inc = np.clip(inc, spec.inc_min, spec.inc_max)
    edge = rng.random(n) < edge_frac
    ec, ei = edge_chi(spec), edge_inc(spec)
    chi[edge] = ec[rng.integers(0, len(ec), edge.sum())]
    inc[edge] = ei[rng.integers(0, len(ei), edge.sum())]
    rmax = (1 << spec.round_bits) - 1
    rand = rng.integers(0, rmax + 1, n)
    re = rng.random(n) < edge_frac
    rand[re] = np.where(rng.random(re.sum()) < 0.5, 0, rmax)
    return chi.astype(np.int32), inc.astype(np.int32), rand.astype(np.int32)


def edge_grid(spec: DPUSpec):
    """Every (edge chi, edge inc) pair, with rand cycling through 0, max and a middle value."""
    ec, ei = edge_chi(spec), edge_inc(spec)
    chi, inc = (a.ravel() for a in np.meshgrid(ec, ei, indexing="ij"))
    rmax = (1 << spec.round_bits) - 1
    rand = np.resize(np.array([0, rmax, rmax // 2 + 1 if rmax else 0]), chi.size)
    return chi.astype(np.int32), inc.astype(np.int32), rand.astype(np.int32)
