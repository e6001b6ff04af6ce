"""DPU spec and golden model: validation, an independent scalar reference, properties."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtl.dpu import make_dpu
from rtl.golden import golden_step, shared_rand
from rtl.spec import DPUSpec, SpecError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tb.stimulus import edge_grid, lane_updates  # noqa: E402

SPECS = [
    DPUSpec(),
    DPUSpec(rounding="nearest"),
    DPUSpec(rounding="truncate"),
    DPUSpec(lanes=3, chi_bits=12, frac_bits=6, inc_bits=14, round_bits=3, pmax=7, rounding="nearest"),
    DPUSpec(lanes=1, chi_bits=24, frac_bits=8, inc_bits=12, round_bits=2, pmax=1, rounding="truncate"),
    DPUSpec(chi_bits=31, frac_bits=16, inc_bits=31, round_bits=5, pmax=255),   # int64 path
    DPUSpec(round_bits=0, rounding="nearest"),
]


def reference(spec: DPUSpec, chi: int, inc: int, rand: int):
    """Spec text, one lane-update, Python integers (no shifts of negatives, no NumPy)."""
    r = spec.round_bits
    q = 1 << r
    if spec.rounding == "nearest":
        inc_r = (inc + q // 2) // q if r else inc
    elif spec.rounding == "truncate":
        inc_r = inc // q
    else:
        inc_r = (inc + (rand % q)) // q
    s = max(-spec.chi_max, min(spec.chi_max, chi + inc_r))
    one = 1 << spec.frac_bits
    p = min(abs(s) // one, spec.pmax)
    sign = -1 if s < 0 else 1
    return s - sign * p * one, p, s < 0


def _check_against_reference(spec, chi, inc, rand):
    c, p, neg = golden_step(spec, chi, inc, rand, np)
    for k in range(len(chi)):
        want = reference(spec, int(chi[k]), int(inc[k]), int(rand[k]))
        got = (int(c[k]), int(p[k]), bool(neg[k]))
        assert got == want, f"{spec}: chi={chi[k]} inc={inc[k]} rand={rand[k]}: {got} != {want}"


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_golden_matches_scalar_reference(spec):
    rng = np.random.default_rng(5)
    for chi, inc, rand in (edge_grid(spec), lane_updates(spec, 3000, rng)):
        _check_against_reference(spec, chi, inc, rand)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), which=st.integers(0, len(SPECS) - 1))
def test_golden_property_random_lane(data, which):
    spec = SPECS[which]
    chi = data.draw(st.integers(-spec.chi_max, spec.chi_max))
    inc = data.draw(st.integers(spec.inc_min, spec.inc_max))
    rand = data.draw(st.integers(0, (1 << spec.round_bits) - 1))
    _check_against_reference(spec, np.array([chi], np.int32), np.array([inc], np.int32),
                             np.array([rand], np.int32))


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_nothing_lost_and_pmax_respected(spec):
    rng = np.random.default_rng(9)
    chi, inc, rand = lane_updates(spec, 20000, rng)
    c, p, neg = golden_step(spec, chi, inc, rand, np)
    one = 1 << spec.frac_bits
    s = c.astype(np.int64) + np.where(neg, -p, p).astype(np.int64) * one
    # s is the saturated accumulator: reconstructable exactly, within range
    assert np.all(np.abs(s) <= spec.chi_max)
    assert np.all((p >= 0) & (p <= spec.pmax))
    # below PMAX the residue is a pure fraction with the sign of s
    frac_only = p < spec.pmax
    assert np.all(np.abs(c[frac_only]) < one)
    assert np.all((c[neg] <= 0)) and np.all(c[~neg] >= 0)
    # zero in, zero out
    z = np.zeros(4, np.int32)
    c0, p0, n0 = golden_step(spec, z, z, z, np)
    assert not c0.any() and not p0.any() and not n0.any()


def test_stochastic_rounding_unbiased_exactly():
    """Averaged over every value of the R random bits, the rounded increment is exactly inc/2^R."""
    spec = DPUSpec(round_bits=4, rounding="stochastic")
    q = 1 << spec.round_bits
    inc = np.repeat(np.arange(-200, 201, dtype=np.int32), q)
    rand = np.tile(np.arange(q, dtype=np.int32), 401)
    chi = np.zeros_like(inc)
    c, p, neg = golden_step(spec, chi, inc, rand, np)
    val = c.astype(np.int64) + np.where(neg, -p, p) * (1 << spec.frac_bits)
    assert np.array_equal(val.reshape(-1, q).sum(axis=1), np.arange(-200, 201))


def test_stochastic_needs_rand():
    with pytest.raises(ValueError, match="random source"):
        golden_step(DPUSpec(), np.zeros(3, np.int32), np.ones(3, np.int32), None, np)


def test_shared_rand_reproducible_and_uniform():
    spec = DPUSpec()
    a = shared_rand(spec, (100, 70), seed=3, step=11)
    assert a.shape == (100, 70) and a.dtype == np.int32
    assert np.array_equal(a, shared_rand(spec, (100, 70), seed=3, step=11))
    assert not np.array_equal(a, shared_rand(spec, (100, 70), seed=3, step=12))
    assert not np.array_equal(a, shared_rand(spec, (100, 70), seed=4, step=11))
    big = shared_rand(spec, 160_000, seed=1, step=0)
    counts = np.bincount(big, minlength=16)
    assert big.min() == 0 and big.max() == 15
    assert np.all(np.abs(counts - 10_000) < 600)          # ~6 sigma


@pytest.mark.parametrize("kw, msg", [
    (dict(lanes=0), "lanes"), (dict(chi_bits=12, frac_bits=12), "chi_bits"),
    (dict(pmax=0), "pmax"), (dict(pmax=128), "pmax"), (dict(rounding="up"), "rounding"),
    (dict(round_bits=0, rounding="stochastic"), "stochastic"), (dict(inc_bits=40), "inc_bits"),
])
def test_spec_validation(kw, msg):
    with pytest.raises(SpecError, match=msg):
        DPUSpec(**kw)


def test_golden_backend_signed_pulses():
    spec = DPUSpec(rounding="truncate")
    one = 1 << (spec.frac_bits + spec.round_bits)
    dpu = make_dpu("golden", spec, np)
    chi = np.zeros(4, np.int32)
    inc = np.array([3 * one, -3 * one, 40 * one, 0], np.int32)
    c, sp = dpu.step(chi, inc)
    assert sp.tolist() == [3, -3, 15, 0]
    assert c.tolist() == [0, 0, 25 << spec.frac_bits, 0]      # what exceeds PMAX stays in chi
    with pytest.raises(ValueError, match="backend"):
        make_dpu("verilog", spec, np)
