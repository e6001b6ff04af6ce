"""Golden model of the whole unit (issue 27): batch sum, scale, on-chip random bits and events
against an independent scalar reference of the spec text (Python integers, no NumPy), on random
and edge vectors."""
from __future__ import annotations

import numpy as np
import pytest

from rtl.golden import GoldenTile, batch_sum, rand_seed_states, scale_increment, tile_rand
from rtl.spec import DPUSpec, SpecError, TileSpec

SPECS = [
    TileSpec(rows=8, cols=16, batch=4, lanes=8, taps=4),
    TileSpec(rows=6, cols=9, batch=6, lanes=3, taps=2, x_bits=5, delta_bits=7, scale_bits=9,
             scale_shift=3, dpu=DPUSpec(chi_bits=12, frac_bits=6, inc_bits=14, round_bits=3, pmax=7)),
    TileSpec(rows=4, cols=4, batch=3, lanes=4, taps=1, scale_shift=0,
             dpu=DPUSpec(rounding="nearest")),
    TileSpec(rows=12, cols=12, batch=2, lanes=12, taps=2, dpu=DPUSpec(round_bits=5)),  # 60 bits: 2 generators, straddling field
]


def ref_xorshift(s):
    s = (s ^ (s << 13)) % 2 ** 32
    s = s ^ (s >> 17)
    return (s ^ (s << 5)) % 2 ** 32


def ref_batch(ts: TileSpec, chi, x, d, m, states):
    """The spec text, one synapse at a time."""
    ch = ts.chi_spec
    R, C, L = ts.rows, ts.cols, ts.lanes
    out_chi = [[0] * C for _ in range(R)]
    events, sat = [], 0
    st = list(states)
    for r in range(R):
        for g in range(C // L):
            word = sum(s << (32 * k) for k, s in enumerate(st))       # generator 0 lowest
            st = [ref_xorshift(s) for s in st]
            for l in range(L):
                c = g * L + l
                S = sum(int(d[b][r]) * int(x[b][c]) for b in range(ts.batch))
                v = S * m
                k = ts.scale_shift
                if k:
                    v = (v + 2 ** (k - 1)) // 2 ** k
                if v > ch.inc_max or v < ch.inc_min:
                    sat += 1
                inc = max(ch.inc_min, min(ch.inc_max, v))
                q = 2 ** ch.round_bits
                rnd = (word >> (l * ch.round_bits)) % q if ts.rand_gens else 0
                if ch.rounding == "nearest":
                    ir = (inc + q // 2) // q
                elif ch.rounding == "truncate":
                    ir = inc // q
                else:
                    ir = (inc + rnd) // q
                s = max(-ch.chi_max, min(ch.chi_max, int(chi[r][c]) + ir))
                one = 2 ** ch.frac_bits
                p = min(abs(s) // one, ch.pmax)
                sign = -1 if s < 0 else 1
                out_chi[r][c] = s - sign * p * one
                if p:
                    events.append((r, c, p, s < 0))
    return out_chi, events, sat, st


def _vectors(ts, rng, kind):
    B, R, C = ts.batch, ts.rows, ts.cols
    xl, dl = 1 << (ts.x_bits - 1), 1 << (ts.delta_bits - 1)
    if kind == "random":
        return rng.integers(-xl, xl, (B, C)), rng.integers(-dl, dl, (B, R)), int(rng.integers(0, ts.scale_max + 1))
    if kind == "zero":
        return np.zeros((B, C), int), np.zeros((B, R), int), ts.scale_max
    if kind == "extreme":          # every product at its maximum, largest scale: saturates
        return np.full((B, C), -xl), np.full((B, R), -dl), ts.scale_max
    if kind == "mixed_extreme":
        return (rng.choice([-xl, xl - 1, 0, 1, -1], (B, C)), rng.choice([-dl, dl - 1, 0, 1, -1], (B, R)),
                int(rng.choice([0, 1, ts.scale_max])))
    raise ValueError(kind)


@pytest.mark.parametrize("ts", SPECS, ids=lambda t: f"R{t.rows}C{t.cols}B{t.batch}L{t.lanes}P{t.taps}")
@pytest.mark.parametrize("kind", ["random", "zero", "extreme", "mixed_extreme"])
def test_golden_tile_matches_reference(ts, kind):
    rng = np.random.default_rng(hash(kind) % 1000)
    g = GoldenTile(ts)
    g.load_seed(12345)
    cm = ts.chi_spec.chi_max
    chi = rng.integers(-cm, cm + 1, (ts.rows, ts.cols))
    g.load_chi(chi)
    states = list(g.rand_states)
    for _ in range(2):                                       # two batches: state carries over
        x, d, m = _vectors(ts, rng, kind)
        want_chi, want_ev, want_sat, states = ref_batch(ts, chi, x, d, m, states)
        sat0 = g.counters.inc_sat
        ev = g.batch(x, d, m)
        assert g.chi.tolist() == want_chi
        assert [(int(e["row"]), int(e["col"]), int(e["count"]), bool(e["neg"])) for e in ev] == want_ev
        assert g.counters.inc_sat - sat0 == want_sat
        assert g.rand_states == states
        chi = want_chi
    if kind == "zero":
        assert g.counters.inc_sat == 0
    if kind == "extreme":
        assert g.counters.pmax_hits > 0
        can_sat = (ts.batch * 2 ** (ts.prod_bits - 2) * ts.scale_max) >> ts.scale_shift > ts.chi_spec.inc_max
        assert (g.counters.inc_sat > 0) == can_sat


def test_counters_and_widths():
    ts = SPECS[0]
    g = GoldenTile(ts)
    x = np.full((ts.batch, ts.cols), -(1 << (ts.x_bits - 1)))
    S = batch_sum(ts, x, np.full((ts.batch, ts.rows), -(1 << (ts.delta_bits - 1))))
    assert S.max() == ts.batch * 2 ** (ts.x_bits + ts.delta_bits - 2) < 2 ** (ts.acc_bits - 1)
    inc, sat = scale_increment(ts, S, ts.scale_max)
    assert not sat.any()                                        # shipped widths: no clamp at B = 4
    inc, sat = scale_increment(SPECS[2], S[:4, :4] // 2, SPECS[2].scale_max)   # shift 0: clamps
    assert sat.all() and (inc == SPECS[2].chi_spec.inc_max).all()
    inc, sat = scale_increment(ts, S, ts.scale_max)
    assert (inc == (S * ts.scale_max + 2 ** (ts.scale_shift - 1)) >> ts.scale_shift).all()
    with pytest.raises(ValueError, match="outside"):
        batch_sum(ts, x + 2 ** ts.x_bits, np.zeros((ts.batch, ts.rows), int))
    with pytest.raises(ValueError, match="shape"):
        batch_sum(ts, x[:, :3], np.zeros((ts.batch, ts.rows), int))
    with pytest.raises(ValueError, match="mantissa"):
        scale_increment(ts, S, ts.scale_max + 1)
    ev = g.batch(np.zeros_like(x), np.zeros((ts.batch, ts.rows), int), 7)
    assert ev.size == 0 and g.counters.batches == 1 and g.counters.events == 0


def test_rand_generators():
    ts = SPECS[3]
    assert ts.rand_gens == 2
    st = rand_seed_states(ts, 0)
    assert st[0] != 0 and all(s != 0 for s in st)              # zero state fixed
    rand, st2 = tile_rand(ts, st, 5)
    a, _ = tile_rand(ts, st, 3)
    b, _ = tile_rand(ts, tile_rand(ts, st, 3)[1], 2)
    assert np.array_equal(np.vstack([a, b]), rand)              # streams split anywhere
    assert rand.max() < 2 ** ts.chi_spec.round_bits and rand.min() >= 0
    big = tile_rand(ts, st, 4000)[0]
    counts = np.bincount(big.ravel(), minlength=32)
    assert counts.min() > 0.6 * counts.mean()                   # roughly uniform


def test_spec_validation():
    with pytest.raises(SpecError, match="multiple of lanes"):
        TileSpec(cols=10, lanes=4, rows=8)
    with pytest.raises(SpecError, match="multiple of taps"):
        TileSpec(batch=6, taps=4)
    ts = TileSpec()
    assert ts.updates_per_clock == ts.lanes * ts.taps / ts.batch
    assert ts.encode_scale(1.0) == 2 ** ts.scale_shift
    with pytest.raises(SpecError, match="outside"):
        ts.encode_scale(1e9)
    codes, s = ts.quantize_delta(np.array([[0.5, -1.0]]))
    assert codes.tolist() == [[ts.delta_max // 2 + 1 if ts.delta_max % 2 else ts.delta_max // 2, -ts.delta_max]]
