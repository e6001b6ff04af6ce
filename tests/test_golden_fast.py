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
