"""The int32 training path of the golden model is bit-exact with the int64 reference."""
import numpy as np
import pytest

from rtl.golden import fits_int32, golden_step, golden_step_signed, signed_pulses
from rtl.spec import DPUSpec


@pytest.mark.parametrize("spec", [DPUSpec(), DPUSpec(rounding="nearest"), DPUSpec(rounding="truncate"),
                                  DPUSpec(chi_bits=12, frac_bits=6, inc_bits=10, round_bits=2, pmax=3),
                                  DPUSpec(chi_bits=31, inc_bits=31, frac_bits=20)])
def test_fast_path_matches_reference(spec):
    rng = np.random.default_rng(0)
    n = 200_000
    chi = rng.integers(-spec.chi_max, spec.chi_max + 1, n).astype(np.int32)
    inc = rng.integers(spec.inc_min, spec.inc_max + 1, n).astype(np.int32)
    # edge cases: zero, extremes, exact multiples of epsilon, just below/above
    e = 1 << spec.frac_bits
    edges_chi = np.array([0, spec.chi_max, -spec.chi_max, e, -e, e - 1, -(e - 1), spec.pmax * e,
                          (spec.pmax + 1) * e, -(spec.pmax + 1) * e], dtype=np.int32)
    edges_inc = np.array([0, spec.inc_max, spec.inc_min, 1, -1, 0, 0, 0, -1, 1], dtype=np.int32)
    chi[:10], inc[:10] = edges_chi, edges_inc
    rand = rng.integers(0, 1 << max(spec.round_bits, 1), n).astype(np.int32)
    ref_chi, p, neg = golden_step(spec, chi, inc, rand)
    fast_chi, fast_p = golden_step_signed(spec, chi, inc, rand)
    assert np.array_equal(ref_chi, fast_chi)
    assert np.array_equal(signed_pulses(p, neg, np), fast_p)
    assert fits_int32(spec) == (spec.chi_bits <= 30)


@pytest.mark.parametrize("spec", [DPUSpec(), DPUSpec(rounding="nearest"), DPUSpec(rounding="truncate"),
                                  DPUSpec(chi_bits=12, frac_bits=6, inc_bits=10, round_bits=2, pmax=3),
                                  DPUSpec(chi_bits=30, inc_bits=31, round_bits=1, frac_bits=28, pmax=1),
                                  DPUSpec(chi_bits=8, frac_bits=0, inc_bits=8, round_bits=1, pmax=3),
                                  DPUSpec(chi_bits=31, inc_bits=31, frac_bits=20)])
@pytest.mark.parametrize("rand_dtype", ["int32", "uint8", "int64"])
def test_sparse_path_matches_dense(spec, rand_dtype):
    """golden_step_sparse = golden_step_signed + flatnonzero of its pulses (also saturating lanes,
    2-D and non-contiguous chi, a uint8 or int64 rand, an int64 inc)."""
    from rtl.golden import golden_step_sparse
    rng = np.random.default_rng(1)
    n = 100_000
    chi = rng.integers(-spec.chi_max, spec.chi_max + 1, n).astype(np.int32)
    inc = rng.integers(spec.inc_min, spec.inc_max + 1, n).astype(np.int32)
    small = rng.random(n) < 0.7                     # mostly small values, as in training
    chi[small] >>= 8
    inc[small] >>= 8
    rand = rng.integers(0, 1 << max(spec.round_bits, 1), n).astype(rand_dtype)
    for c, i, r in ((chi, inc, rand), (chi, inc.astype(np.int64), rand),
                    (chi.reshape(250, 400)[:, ::2], inc[:50_000].reshape(250, 200), rand[:50_000].reshape(250, 200))):
        ref_chi, ref_p = golden_step_signed(spec, c, i, r)
        got_chi, k, p = golden_step_sparse(spec, c, i, r)
        kk = np.flatnonzero(ref_p.reshape(-1))
        assert got_chi.dtype == np.int32 and p.dtype == np.int32 and got_chi.shape == ref_chi.shape
        assert np.array_equal(got_chi, ref_chi) and np.array_equal(k, kk)
        assert np.array_equal(p, ref_p.reshape(-1)[kk])
        assert k.shape[0] > 0
