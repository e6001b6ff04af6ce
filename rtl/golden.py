"""Bit-exact golden model of the DPU, vectorised over whole arrays (NumPy or CuPy).

Implements exactly the arithmetic of :mod:`rtl.spec`; the RTL must agree bit for bit.
"""
from __future__ import annotations

from .spec import DPUSpec


def round_increment(spec: DPUSpec, inc, rand, xp):
    """Drop ``round_bits`` fractional bits of ``inc`` (int64 arithmetic) per the rounding mode."""
    r = spec.round_bits
    inc = inc.astype("int64")
    if r == 0:
        return inc
    if spec.rounding == "nearest":
        return (inc + (1 << (r - 1))) >> r
    if spec.rounding == "truncate":
        return inc >> r
    if rand is None:
        raise ValueError("stochastic rounding needs the shared random source `rand`")
    return (inc + (rand.astype("int64") & ((1 << r) - 1))) >> r


def golden_step(spec: DPUSpec, chi, inc, rand=None, xp=None):
    """One DPU update for every lane-update in the arrays.

    chi: int array (chi format); inc: int array (inc format); rand: int array of ``round_bits``-bit
    uniform values (stochastic rounding only). Returns (chi_new int32, pulses int32 magnitude,
    neg bool) — the signed pulse count is ``where(neg, -pulses, pulses)``.
    """
    if xp is None:
        import numpy as xp  # noqa: N813
    s = chi.astype("int64") + round_increment(spec, inc, rand, xp)
    s = xp.clip(s, -spec.chi_max, spec.chi_max)
    neg = s < 0
    mag = xp.abs(s)
    p = xp.minimum(mag >> spec.frac_bits, spec.pmax)
    chi_new = xp.where(neg, s + (p << spec.frac_bits), s - (p << spec.frac_bits))
    return chi_new.astype("int32"), p.astype("int32"), neg


def signed_pulses(pulses, neg, xp):
    return xp.where(neg, -pulses, pulses)


def fits_int32(spec: DPUSpec) -> bool:
    """True when every intermediate of the update fits int32: |chi| < 2^(chi_bits-1) and the rounded
    increment |inc >> R| + 1 < 2^(inc_bits-1-R) + 1, so |chi + inc| < 2^31 when both widths <= 30."""
    return spec.chi_bits <= 30 and spec.inc_bits - spec.round_bits <= 30 and spec.inc_bits <= 31


def golden_step_signed(spec: DPUSpec, chi, inc, rand=None, xp=None):
    """Fast training path of :func:`golden_step`: returns (chi_new int32, signed pulses int32).

    Same arithmetic, in place on int32 where the spec's widths allow it (:func:`fits_int32`);
    otherwise it falls back to the int64 reference. Tested bit-exact against it.
    """
    if xp is None:
        import numpy as xp  # noqa: N813
    if not fits_int32(spec):
        chi_new, p, neg = golden_step(spec, chi, inc, rand, xp)
        return chi_new, signed_pulses(p, neg, xp)
    r, f = spec.round_bits, spec.frac_bits
    s = inc.astype("int32", copy=True)
    if r:
        if spec.rounding == "nearest":
            s += 1 << (r - 1)
        elif spec.rounding == "stochastic":
            if rand is None:
                raise ValueError("stochastic rounding needs the shared random source `rand`")
            s += rand.astype("int32", copy=False) & ((1 << r) - 1)
        s >>= r                                   # arithmetic shift = floor
    s += chi                                      # s = chi + round(inc)
    xp.clip(s, -spec.chi_max, spec.chi_max, out=s)
    p = xp.abs(s)
    p >>= f                                       # integer part of |s| in units of epsilon
    xp.minimum(p, spec.pmax, out=p)
    p *= xp.sign(s)                               # signed pulse count
    s -= p << f                                   # chi' = s - sign(s) * p * 2^F
    return s, p
