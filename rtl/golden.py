"""Bit-exact golden model of the DPU, vectorised over whole arrays (NumPy or CuPy).

Implements exactly the arithmetic of :mod:`rtl.spec`; the RTL must agree bit for bit.
"""
from __future__ import annotations

from .spec import DPUSpec


def _work_dtype(spec: DPUSpec) -> str:
    """int32 when every intermediate provably fits (|chi + round(inc)| < 2^30), else int64."""
    return "int32" if spec.chi_bits <= 30 and spec.inc_bits <= 30 else "int64"


def round_increment(spec: DPUSpec, inc, rand, xp, dtype: str = "int64"):
    """Drop ``round_bits`` fractional bits of ``inc`` per the rounding mode (new array of dtype)."""
    r = spec.round_bits
    out = inc.astype(dtype)                      # always a fresh array: safe to modify in place
    if r == 0:
        return out
    if spec.rounding == "nearest":
        out += 1 << (r - 1)
    elif spec.rounding == "stochastic":
        if rand is None:
            raise ValueError("stochastic rounding needs the shared random source `rand`")
        out += rand.astype(dtype) & ((1 << r) - 1)
    out >>= r                                    # arithmetic shift: floor
    return out


def golden_step(spec: DPUSpec, chi, inc, rand=None, xp=None):
    """One DPU update for every lane-update in the arrays.

    chi: int array (chi format); inc: int array (inc format); rand: int array of ``round_bits``-bit
    uniform values (stochastic rounding only). Returns (chi_new int32, pulses int32 magnitude,
    neg bool) — the signed pulse count is ``where(neg, -pulses, pulses)``.

    Same steps as the hardware: ``s = sat(chi + round(inc))``; ``p = min(|s| >> F, pmax)``;
    ``chi' = sign(s) * (|s| - (p << F))``.
    """
    if xp is None:
        import numpy as xp  # noqa: N813
    dt = _work_dtype(spec)
    s = round_increment(spec, inc, rand, xp, dt)
    s += chi.astype(dt, copy=False)
    xp.clip(s, -spec.chi_max, spec.chi_max, out=s)
    neg = s < 0
    mag = xp.abs(s, out=s)
    p = mag >> spec.frac_bits
    xp.minimum(p, spec.pmax, out=p)
    mag -= p << spec.frac_bits                   # residue magnitude (what is not pulsed)
    chi_new = xp.where(neg, -mag, mag)
    return chi_new.astype("int32", copy=False), p.astype("int32", copy=False), neg


def signed_pulses(pulses, neg, xp):
    return xp.where(neg, -pulses, pulses)


_M64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def shared_rand(spec: DPUSpec, shape, seed: int, step: int, xp=None):
    """The shared random source for stochastic rounding: ``round_bits``-bit uniform integers
    (int32 array of ``shape``), a counter-based hash (SplitMix64) of (seed, step, element index).

    Stateless and reproducible: the same (seed, step, shape) gives the same bits on NumPy and
    CuPy, for the golden model and the RTL alike (both take these bits as the ``rand`` input;
    the hardware equivalent is a per-lane hash or LFSR feeding the ``rand`` field).
    """
    if xp is None:
        import numpy as xp  # noqa: N813
    n = 1
    for d in (shape if isinstance(shape, tuple) else (shape,)):
        n *= int(d)
    r = spec.round_bits
    if r == 0:
        return xp.zeros(shape, dtype="int32")
    key = _splitmix64(_splitmix64(int(seed) & _M64) ^ (int(step) & _M64))
    u64 = xp.uint64
    z = xp.arange(n, dtype="uint64") * u64(0x9E3779B97F4A7C15) + u64(key)
    z = (z ^ (z >> u64(30))) * u64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> u64(27))) * u64(0x94D049BB133111EB)
    z = z ^ (z >> u64(31))
    return (z >> u64(64 - r)).astype("int32").reshape(shape)


def fits_int32(spec: DPUSpec) -> bool:
    """True when every intermediate of the update fits int32: |chi| < 2^(chi_bits-1) and the rounded
    increment |inc >> R| + 1 < 2^(inc_bits-1-R) + 1, so |chi + inc| < 2^31 when both widths <= 30."""
    return spec.chi_bits <= 30 and spec.inc_bits - spec.round_bits <= 30 and spec.inc_bits <= 31


def _rounded_sum(spec: DPUSpec, chi, inc, rand, xp, saturate: bool = True):
    """``s = sat_chi(chi + round(inc))`` as a fresh int32 array (int32 path: :func:`fits_int32`);
    ``saturate=False`` leaves out sat_chi (the caller saturates what needs it).

    The rounding adds ``rand & (2^R - 1)`` (stochastic) or ``2^(R-1)`` (nearest) to ``inc`` and
    shifts right by R (arithmetic shift = floor). A ``uint8`` ``rand`` (R <= 8) is masked and added
    as bytes (no int32 copy of it); ``inc`` wraps to int32 as ``inc.astype("int32")`` would.
    """
    r = spec.round_bits
    if r and spec.rounding == "stochastic":
        if rand is None:
            raise ValueError("stochastic rounding needs the shared random source `rand`")
        mask = (1 << r) - 1
        if rand.dtype == "uint8" and r <= 8:
            m = rand & mask                       # R-bit random numbers, still bytes
        else:
            m = rand.astype("int32", copy=False) & mask
        s = inc + m if inc.dtype == "int32" else inc.astype("int32") + m   # int32 + uint8/int32: int32
    elif r and spec.rounding == "nearest":
        s = inc.astype("int32", copy=True)
        s += 1 << (r - 1)
    else:
        s = inc.astype("int32", copy=True)
    if r:
        s >>= r                                   # arithmetic shift = floor
    s += chi                                      # s = chi + round(inc)
    if saturate:
        xp.clip(s, -spec.chi_max, spec.chi_max, out=s)
    return s


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
    f = spec.frac_bits
    s = _rounded_sum(spec, chi, inc, rand, xp)
    p = xp.abs(s)
    p >>= f                                       # integer part of |s| in units of epsilon
    xp.minimum(p, spec.pmax, out=p)
    p *= xp.sign(s)                               # signed pulse count
    s -= p << f                                   # chi' = s - sign(s) * p * 2^F
    return s, p


def golden_step_sparse(spec: DPUSpec, chi, inc, rand=None, xp=None):
    """Sparse training path of :func:`golden_step`: returns (chi_new int32, k, pulses).

    ``k``: ascending flat indices of the lane-updates with a non-zero pulse count, ``pulses``: their
    signed counts (int32) — what ``flatnonzero`` of :func:`golden_step_signed`'s pulses gives, without
    the dense pulse arrays. Same arithmetic: p != 0 exactly when |s| >= 2^F, so only those lanes
    (few in training) get p = sign(s) min(|s| >> F, pmax) and chi' = s - p 2^F. Saturation too: a
    lane with |s| > chi_max (>= 2^F) is one of them, so sat_chi runs on those lanes only. Tested
    bit-exact.
    """
    if xp is None:
        import numpy as xp  # noqa: N813
    if not fits_int32(spec):
        chi_new, p = golden_step_signed(spec, chi, inc, rand, xp)
        p = p.reshape(-1)
        k = xp.flatnonzero(p != 0)
        return chi_new, k, p[k]
    f = spec.frac_bits
    s = _rounded_sum(spec, chi, inc, rand, xp, saturate=False)
    flat = s.reshape(-1)
    # |s| >= 2^F  <=>  s + 2^F - 1 outside [0, 2^(F+1) - 2]: one unsigned compare (no overflow:
    # |chi| < 2^29, |round(inc)| <= 2^29 (fits_int32) and 2^F < 2^29)
    t = flat + ((1 << f) - 1)
    k = xp.flatnonzero(t.view("uint32") > (2 << f) - 2)
    sk = flat[k]
    xp.clip(sk, -spec.chi_max, spec.chi_max, out=sk)   # sat_chi (the other lanes have |s| < 2^F)
    p = xp.abs(sk)
    p >>= f                                       # integer part of |s| in units of epsilon
    xp.minimum(p, spec.pmax, out=p)
    p *= xp.sign(sk)                              # signed pulse count
    sk -= p << f                                  # chi' = s - sign(s) * p * 2^F
    flat[k] = sk
    return s, k, p


# ================================================================================================
# The whole unit (issue 27): update engine, chi memory, event stream — arithmetic of
# rtl.spec.TileSpec, vectorised (NumPy), bit-exact with rtl.tile.TileUnit.
# ================================================================================================
from dataclasses import dataclass, field  # noqa: E402

import numpy as _np  # noqa: E402

from .spec import (COUNTER_BITS, RAND_SEED_STRIDE, RAND_WORD_BITS, RAND_ZERO_FIX,  # noqa: E402
                   TileSpec)

_M32 = (1 << 32) - 1


def _check_codes(a, bits: int, shape, what: str):
    a = _np.asarray(a)
    if a.shape != shape:
        raise ValueError(f"{what} must have shape {shape}, got {a.shape}")
    if a.dtype.kind not in "iu":
        raise ValueError(f"{what} must be integer codes, got dtype {a.dtype}")
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if a.size and (int(a.min()) < lo or int(a.max()) > hi):
        raise ValueError(f"{what} codes outside the signed {bits}-bit range [{lo}, {hi}]")
    return a.astype(_np.int64)


def batch_sum(ts: TileSpec, x, delta):
    """S[r, c] = sum_b delta[b, r] * x[b, c], exact (int64). x: (B, C) codes, delta: (B, R)."""
    x = _check_codes(x, ts.x_bits, (ts.batch, ts.cols), "x")
    d = _check_codes(delta, ts.delta_bits, (ts.batch, ts.rows), "delta")
    return d.T @ x                               # integer matmul: exact (|S| < 2^(acc_bits-1))


def scale_increment(ts: TileSpec, S, m: int):
    """inc = sat_inc((S * m + 2^(k-1)) >> k): returns (inc int32 array, saturation mask)."""
    if not 0 <= int(m) <= ts.scale_max:
        raise ValueError(f"scale mantissa {m} outside [0, {ts.scale_max}]")
    v = _np.asarray(S, dtype=_np.int64) * int(m)
    k = ts.scale_shift
    if k:
        v = (v + (1 << (k - 1))) >> k            # round half up (arithmetic shift = floor)
    ch = ts.chi_spec
    sat = (v > ch.inc_max) | (v < ch.inc_min)
    return _np.clip(v, ch.inc_min, ch.inc_max).astype(_np.int32), sat


def xorshift32(s: int) -> int:
    s ^= (s << 13) & _M32
    s ^= s >> 17
    s ^= (s << 5) & _M32
    return s


def rand_seed_states(ts: TileSpec, seed: int) -> list[int]:
    out = []
    for k in range(ts.rand_gens):
        s = (int(seed) + k * RAND_SEED_STRIDE) & _M32
        out.append(s if s else RAND_ZERO_FIX)
    return out


def tile_rand(ts: TileSpec, states: list[int], n_beats: int):
    """The on-chip generators' bits for ``n_beats`` beats: returns (rand (n_beats, lanes) int32,
    the states after them). Beat j takes the states before its step (see rtl.spec)."""
    G, L, R = ts.rand_gens, ts.lanes, ts.chi_spec.round_bits
    if G == 0:
        return _np.zeros((n_beats, L), _np.int32), list(states)
    words = _np.empty((n_beats, G), _np.uint64)
    st = list(states)
    for k in range(G):                           # sequential per generator (XOR-shift is cheap)
        s, col = st[k], []
        for _ in range(n_beats):
            col.append(s)
            s ^= (s << 13) & _M32
            s ^= s >> 17
            s ^= (s << 5) & _M32
        words[:, k] = col
        st[k] = s
    # lane l: bits [l R, (l+1) R) of the concatenated words (generator 0 lowest)
    bit = _np.arange(L) * R
    w, off = bit // RAND_WORD_BITS, (bit % RAND_WORD_BITS).astype(_np.uint64)
    lo = words[:, w] >> off
    hi_w = _np.minimum(w + 1, G - 1)
    spill = (off + _np.uint64(R)) > _np.uint64(RAND_WORD_BITS)   # field straddles two words
    hi = _np.where(spill, words[:, hi_w] << (_np.uint64(RAND_WORD_BITS) - off), _np.uint64(0))
    rand = ((lo | hi) & _np.uint64((1 << R) - 1)).astype(_np.int32)
    return rand, st


EVENT_DTYPE = _np.dtype([("row", _np.int32), ("col", _np.int32), ("count", _np.int32), ("neg", _np.bool_)])


@dataclass
class TileCounters:
    events: int = 0
    pulses: int = 0
    pmax_hits: int = 0
    inc_sat: int = 0
    batches: int = 0

    def add(self, **kw):
        for k, v in kw.items():
            setattr(self, k, (getattr(self, k) + int(v)) % (1 << COUNTER_BITS))

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class GoldenTile:
    """Transaction-level golden model of :class:`rtl.tile.TileUnit`: chi of the whole tile, the
    generators' states and the status counters; :meth:`batch` is one mini-batch."""

    spec: TileSpec
    chi: _np.ndarray = None
    rand_states: list = field(default_factory=list)
    counters: TileCounters = field(default_factory=TileCounters)

    def __post_init__(self):
        ts = self.spec
        if self.chi is None:
            self.chi = _np.zeros((ts.rows, ts.cols), _np.int32)
        if not self.rand_states:
            self.rand_states = rand_seed_states(ts, 0)

    def load_seed(self, seed: int):
        self.rand_states = rand_seed_states(self.spec, seed)

    def load_chi(self, chi):
        ts = self.spec
        c = _np.asarray(chi)
        m = ts.chi_spec.chi_max
        if c.shape != (ts.rows, ts.cols) or (c.size and (int(c.min()) < -m - 1 or int(c.max()) > m)):
            raise ValueError(f"chi must be ({ts.rows}, {ts.cols}) in the signed {ts.dpu.chi_bits}-bit range")
        self.chi = c.astype(_np.int32).copy()

    def clear(self):
        self.counters = TileCounters()

    def batch(self, x, delta, m: int):
        """One mini-batch: returns the events (EVENT_DTYPE array, raster order)."""
        ts = self.spec
        inc, sat = scale_increment(ts, batch_sum(ts, x, delta), m)
        rand, self.rand_states = tile_rand(ts, self.rand_states, ts.groups)
        rand = rand.reshape(ts.rows, ts.cols)
        chi_new, p, neg = golden_step(ts.chi_spec, self.chi, inc, rand, _np)
        self.chi = _np.asarray(chi_new, _np.int32).reshape(ts.rows, ts.cols)
        p = _np.asarray(p).reshape(ts.rows, ts.cols)
        rr, cc = _np.nonzero(p)                  # row-major: raster order
        ev = _np.empty(rr.size, EVENT_DTYPE)
        ev["row"], ev["col"], ev["count"] = rr, cc, p[rr, cc]
        ev["neg"] = _np.asarray(neg).reshape(ts.rows, ts.cols)[rr, cc]
        self.counters.add(events=rr.size, pulses=int(p.sum()),
                          pmax_hits=int((p == ts.dpu.pmax).sum()), inc_sat=int(sat.sum()), batches=1)
        return ev
