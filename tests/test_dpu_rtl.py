"""RTL in the loop: the Verilator shared-library backend against the golden model.

The default suite builds one harness (the shipped spec, cached under build/dpu_rtl); the fuzz
(>= 1e6 lane-updates per parameter set, several sets and harness lane counts) is ``slow``.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from rtl import verilated
from rtl.dpu import make_dpu
from rtl.golden import golden_step, shared_rand
from rtl.spec import DPUSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tb.stimulus import edge_grid, lane_updates  # noqa: E402


def _assert_same(spec, dut, chi, inc, rand):
    want = golden_step(spec, chi, inc, rand, np)
    got = dut.run(chi, inc, rand)
    for name, w, g in zip(("chi", "pulses", "neg"), want, got):
        bad = np.flatnonzero(np.asarray(w).ravel() != np.asarray(g).ravel())
        assert bad.size == 0, (
            f"{name}: {bad.size} mismatches of {np.size(w)}; first at {bad[0]}: "
            f"chi={chi.ravel()[bad[0]]} inc={inc.ravel()[bad[0]]} rand={rand.ravel()[bad[0]]} "
            f"golden={np.asarray(w).ravel()[bad[0]]} rtl={np.asarray(g).ravel()[bad[0]]}")


@pytest.fixture(scope="module")
def rtl_default():
    dut = make_dpu("rtl", DPUSpec(), np)
    yield dut
    dut.close()


def test_rtl_backend_matches_golden(rtl_default):
    spec = DPUSpec()
    rng = np.random.default_rng(11)
    chi, inc, rand = lane_updates(spec, 200_003, rng)          # not a multiple of the lanes
    _assert_same(spec, rtl_default, chi, inc, rand)
    _assert_same(spec, rtl_default, *edge_grid(spec))
    assert rtl_default.cycles > 200_003 // rtl_default.lanes


def test_rtl_backend_step_shapes_and_signs(rtl_default):
    spec = DPUSpec()
    rng = np.random.default_rng(2)
    chi = rng.integers(-5 << spec.frac_bits, 5 << spec.frac_bits, (37, 11)).astype(np.int32)
    inc, _ = spec.encode_update(rng.normal(0, 3, (37, 11)), np)
    rand = shared_rand(spec, (37, 11), seed=1, step=0)
    c_r, p_r = rtl_default.step(chi, inc, rand)
    c_g, p_g = make_dpu("golden", spec, np).step(chi, inc, rand)
    assert c_r.shape == (37, 11) and p_r.shape == (37, 11)
    assert np.array_equal(c_r, c_g) and np.array_equal(p_r, p_g)
    assert (p_r < 0).any() and (p_r > 0).any()
    c0, p0 = rtl_default.step(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int32))
    assert c0.size == 0 and p0.size == 0
    with pytest.raises(ValueError, match="random source"):
        rtl_default.step(chi, inc)


def test_missing_toolchain_gives_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("MCASIM_BUILD_DIR", str(tmp_path))        # no cached library
    monkeypatch.setattr(verilated, "find_verilator", lambda: None)
    with pytest.raises(verilated.ToolchainError, match="verilator"):
        make_dpu("rtl", DPUSpec(), np)


FUZZ = [
    (DPUSpec(), 64),
    (DPUSpec(), 1),                      # narrow ports (<= 64 bits): the harness's scalar path
    (DPUSpec(rounding="nearest"), 7),    # odd lane count: fields straddle 32-bit words
    (DPUSpec(rounding="truncate"), 64),
    (DPUSpec(lanes=3, chi_bits=12, frac_bits=6, inc_bits=14, round_bits=3, pmax=7,
             rounding="nearest"), 32),
    (DPUSpec(chi_bits=31, frac_bits=16, inc_bits=31, round_bits=5, pmax=255), 16),
]


@pytest.mark.slow
@pytest.mark.parametrize("spec, lanes", FUZZ, ids=lambda v: str(v) if isinstance(v, int) else
                         f"c{v.chi_bits}f{v.frac_bits}i{v.inc_bits}r{v.round_bits}p{v.pmax}{v.rounding}")
def test_fuzz_golden_vs_rtl(spec, lanes):
    """>= 1e6 random / near-threshold / edge lane-updates per parameter set, zero mismatches,
    plus a chained run (chi fed back, as in training) of 64 steps."""
    dut = verilated.VerilatedDPU(spec, np, lanes=lanes)
    golden_dpu = make_dpu("golden", spec, np)
    rng = np.random.default_rng(lanes * 1000 + spec.chi_bits)
    total = 0
    for _ in range(4):
        chi, inc, rand = lane_updates(spec, 250_000, rng)
        _assert_same(spec, dut, chi, inc, rand)
        total += chi.size
    chi = np.zeros(20_000, np.int32)
    for step in range(64):
        inc, _ = spec.encode_update(rng.normal(0, 0.7, chi.size), np)
        rand = shared_rand(spec, chi.size, seed=5, step=step)
        c_g, p_g, n_g = golden_step(spec, chi, inc, rand, np)
        c_r, p_r, n_r = dut.run(chi, inc, rand)
        assert np.array_equal(c_g, c_r) and np.array_equal(p_g, p_r) and np.array_equal(n_g, n_r)
        c_t, s_t = golden_dpu.step(chi, inc, rand)       # the training path of the golden backend
        assert np.array_equal(c_t, c_r) and np.array_equal(s_t, np.where(n_r, -p_r, p_r))
        c_s, k, p_s = golden_dpu.step_sparse(chi, inc, rand)   # its sparse form (what training uses)
        assert np.array_equal(c_s, c_r) and np.array_equal(k, np.flatnonzero(p_r))
        assert np.array_equal(p_s, np.where(n_r, -p_r, p_r)[k])
        chi = c_r
        total += chi.size
    assert total >= 1_000_000
    dut.close()


def test_harness_lanes_do_not_change_results():
    """The in-the-loop build uses a wide lane count; the spec's own lane count is irrelevant to
    the arithmetic (it only sets the harness key)."""
    s8, s2 = DPUSpec(), dataclasses.replace(DPUSpec(), lanes=2)
    assert verilated.harness_spec(s8) == verilated.harness_spec(s2)
    assert verilated.cache_key(verilated.harness_spec(s8)) == verilated.cache_key(verilated.harness_spec(s2))


def test_rtl_backend_training_call_pattern(rtl_default):
    """As the training layer calls it: 2-D chi, a column subset (non-contiguous view), uint8 rand
    from another generator; same outputs as the golden backend."""
    spec = DPUSpec()
    rng = np.random.default_rng(21)
    chi = rng.integers(-3 << spec.frac_bits, 3 << spec.frac_bits, (250, 784)).astype(np.int32)
    cols = np.flatnonzero(rng.random(784) < 0.3)
    inc, _ = spec.encode_update(rng.normal(0, 0.8, (250, cols.size)), np)
    rand = rng.integers(0, 1 << spec.round_bits, size=inc.shape, dtype=np.uint8)
    view = chi[:, ::2][:, : cols.size]                       # strided input
    c_r, p_r = rtl_default.step(view, inc, rand)
    c_g, p_g = make_dpu("golden", spec, np).step(np.ascontiguousarray(view), inc, rand)
    assert c_r.shape == inc.shape and np.array_equal(c_r, c_g) and np.array_equal(p_r, p_g)


def test_two_rtl_instances_are_independent(rtl_default):
    """One model per layer: two instances of the same library keep separate state."""
    spec = DPUSpec()
    other = make_dpu("rtl", spec, np)
    rng = np.random.default_rng(8)
    for _ in range(3):
        for dut in (rtl_default, other):
            chi, inc, rand = lane_updates(spec, 1001, rng)
            _assert_same(spec, dut, chi, inc, rand)
    other.close()
