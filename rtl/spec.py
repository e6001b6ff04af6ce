"""Fixed-point spec of the digital processing unit (DPU): one object shared by the RTL generator
and the golden model.

Number formats (all two's complement):

* ``chi``  — ``chi_bits`` wide, ``frac_bits`` fractional bits, **in units of the device
  granularity epsilon**. The pulse count is therefore the integer part of |chi|: no divider.
* ``inc``  — the incoming weight update, ``inc_bits`` wide, ``frac_bits + round_bits`` fractional
  bits, in units of epsilon. The digital front end folds 1/epsilon into its scale
  (:meth:`DPUSpec.encode_update`). The unit drops the ``round_bits`` extra bits by the rounding
  mode: ``nearest`` (add 2^(R-1), arithmetic shift: round half up), ``truncate`` (floor), or
  ``stochastic`` (add an R-bit uniform random number ``rand`` from the shared source, then
  floor: unbiased in expectation).
* per update: ``s = sat_chi(chi + round(inc))``; ``p = min(floor(|s|), pmax)`` (integer part of
  |s| in units of epsilon); ``chi' = s - sign(s) * p`` (what exceeds pmax stays in chi);
  outputs ``chi'``, ``p`` and ``neg = s < 0``. ``sat_chi`` clamps to
  [-(2^(chi_bits-1) - 1), 2^(chi_bits-1) - 1] (symmetric, so |s| always fits).
* ``rand`` for stochastic rounding comes from one shared source, :func:`rtl.golden.shared_rand`
  (counter-based hash of seed, step and element index: reproducible, backend-independent); the
  golden model and the RTL take the same bits as an input.
* ``neg`` is set for every negative ``s``, also when ``p == 0`` (signed pulses ``-0 == 0``).

The hardware (:mod:`rtl.unit`) carries ``lanes`` lane-updates per clock; the lane count never
changes the arithmetic.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROUNDING_MODES = ("nearest", "truncate", "stochastic")


class SpecError(ValueError):
    """Invalid DPU spec."""


@dataclass(frozen=True)
class DPUSpec:
    lanes: int = 8            # engineering choice: 8 synapses per cycle (issue 3 target)
    chi_bits: int = 20        # engineering choice: +-128 epsilon of headroom at frac_bits = 12
    frac_bits: int = 12       # engineering choice: chi resolution 2^-12 epsilon
    inc_bits: int = 24        # engineering choice: +-128 epsilon per update at 16 fractional bits
    round_bits: int = 4       # engineering choice: 4 extra bits rounded away inside the unit
    pmax: int = 15            # engineering choice: 4-bit pulse count per update
    rounding: str = "stochastic"

    def __post_init__(self):
        def need(c, m):
            if not c:
                raise SpecError(f"DPU spec: {m}")
        for name in ("lanes", "chi_bits", "frac_bits", "inc_bits", "round_bits", "pmax"):
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool), f"{name} must be an integer, got {v!r}")
        need(self.lanes >= 1, f"lanes must be >= 1, got {self.lanes}")
        need(0 <= self.frac_bits, f"frac_bits must be >= 0, got {self.frac_bits}")
        need(0 <= self.round_bits <= 16, f"round_bits must be in [0, 16], got {self.round_bits}")
        need(self.chi_bits >= self.frac_bits + 2, f"chi_bits ({self.chi_bits}) must exceed frac_bits + 1 ({self.frac_bits + 1})")
        need(self.chi_bits <= 31, f"chi_bits must be <= 31, got {self.chi_bits}")
        need(self.inc_bits >= 2 and self.inc_bits <= 31, f"inc_bits must be in [2, 31], got {self.inc_bits}")
        need(self.pmax >= 1, f"pmax must be >= 1, got {self.pmax}")
        need(self.pmax < 2 ** (self.chi_bits - 1 - self.frac_bits), f"pmax {self.pmax} exceeds chi's integer range")
        need(self.rounding in ROUNDING_MODES, f"rounding must be one of {ROUNDING_MODES}, got {self.rounding!r}")
        need(self.rounding == "truncate" or self.round_bits >= 1 or self.rounding == "nearest",
             "stochastic rounding needs round_bits >= 1")

    # --- derived ranges -------------------------------------------------------------------------
    @property
    def chi_max(self) -> int:
        return 2 ** (self.chi_bits - 1) - 1

    @property
    def inc_max(self) -> int:
        return 2 ** (self.inc_bits - 1) - 1

    @property
    def inc_min(self) -> int:
        return -(2 ** (self.inc_bits - 1))

    @property
    def pulse_bits(self) -> int:
        return max(1, int(self.pmax).bit_length())

    @property
    def inc_scale(self) -> int:
        """Increment LSBs per epsilon."""
        return 2 ** (self.frac_bits + self.round_bits)

    @property
    def chi_scale(self) -> int:
        """chi LSBs per epsilon."""
        return 2 ** self.frac_bits

    # --- digital front end ----------------------------------------------------------------------
    def encode_update(self, delta_eps, xp, scale: float = 1.0):
        """Float update in units of epsilon -> raw ``inc`` integers (round to nearest, saturate).

        ``scale``: optional factor folded into the encoding (``delta_eps * scale`` is encoded; e.g.
        1/epsilon for an update in weight units). The product with the power-of-two ``inc_scale``
        is exact, so this equals encoding ``delta_eps * scale`` computed beforehand.

        Returns (inc int32 array, number of saturated entries).
        """
        dt = getattr(delta_eps, "dtype", None)
        if scale != 1.0 and dt is not None and dt.kind == "f":
            # (delta * scale) rounded to the array's precision, times 2^k, is exact: the same as one
            # product with (scale rounded to that precision) * 2^k
            factor = float(np.dtype(dt).type(scale)) * float(self.inc_scale)
            raw = xp.asarray(delta_eps * factor)
        else:
            raw = xp.asarray((delta_eps * scale if scale != 1.0 else delta_eps) * float(self.inc_scale))
        # rint is monotone, so the extremes of rint(raw) are rint of the extremes of raw
        if raw.size and (np.rint(float(raw.max())) > self.inc_max or np.rint(float(raw.min())) < self.inc_min):
            xp.rint(raw, out=raw)
            sat = int(xp.count_nonzero((raw > self.inc_max) | (raw < self.inc_min)))
            xp.clip(raw, self.inc_min, self.inc_max, out=raw)
            return raw.astype("int32"), sat
        if xp is np and raw.ndim:
            out = np.empty(raw.shape, dtype="int32")
            np.rint(raw, out=out, casting="unsafe")   # rint, then the exact cast of an integer value
            return out, 0
        xp.rint(raw, out=raw)
        return raw.astype("int32"), 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


# ================================================================================================
# The whole digital unit (issue 27): update engine, chi memory, pulse-event stream
# ================================================================================================
#
# Per mini-batch the unit receives, for a tile of R x C synapses (W is R rows = outputs by C
# columns = inputs) and a batch of B samples:
#
# * ``x``     — activations, the crossbar's DAC codes (``gpu_model.tile.AnalogTile._dac``): signed
#   ``x_bits``-bit integers. The DAC produces the symmetric set -(2^(x_bits-1) - 1) ..
#   2^(x_bits-1) - 1 (2^x_bits - 1 levels); the unit accepts the full two's complement range
#   (-2^(x_bits-1) too), and every width below is exact for it. The real activation is
#   ``x = code * x_scale`` with ``x_scale = s / (2^(x_bits-1) - 1)`` (``s``: the DAC's per-vector
#   scale); the host folds x_scale into ``scale`` (below).
# * ``delta`` — errors, signed ``delta_bits``-bit codes, same conventions: ``delta = code *
#   delta_scale`` with a host-chosen ``delta_scale`` (e.g. max|delta| / (2^(delta_bits-1) - 1)),
#   folded into ``scale``. The sign convention is the host's: the unit adds ``+sum delta x``; for
#   gradient descent the host sends the codes of the *negative* gradient.
# * ``scale`` — an unsigned ``scale_bits``-bit mantissa ``m`` (run-time, per mini-batch) with a
#   build-time shift ``k = scale_shift``: scale = m / 2^k increment LSBs per unit product of codes.
#   It folds learning rate, x_scale, delta_scale, 1/epsilon and the increment's 2^(F+R)
#   (:meth:`TileSpec.encode_scale`).
#
# Arithmetic, exact integers (no overflow anywhere, every width is derived below):
#
# * product   ``p_b = delta_b[r] * x_b[c]``                 signed ``prod_bits = x_bits + delta_bits``
# * batch sum ``S = sum_b p_b``                              signed ``acc_bits = prod_bits + clog2(B)``
# * scaled    ``v = S * m``                                  signed ``scaled_bits = acc_bits + scale_bits + 1``
# * increment ``inc = sat_inc((v + 2^(k-1)) >> k)``          (``>> k`` arithmetic: floor; k = 0: ``v``)
#   i.e. round half up to an increment LSB, clamped to [inc_min, inc_max] (a clamp is counted as
#   a saturation). ``inc`` is in the DPUSpec ``inc`` format: the chi/pulse lanes then apply the
#   existing step (``round`` the ``round_bits`` away, ``chi' = ...``, pulses) unchanged.
#
# So  delta_chi (in inc LSBs) = round(sum_b delta_b x_b^T * m / 2^k), bit-exactly.
#
# Stochastic rounding inside the lanes takes its ``round_bits`` per synapse from an on-chip
# generator (no host stream): ``rand_gens = ceil(lanes * round_bits / 32)`` xorshift32 generators
# (x ^= x << 13; x ^= x >> 17; x ^= x << 5, mod 2^32), seeded by the host with one 32-bit ``seed``:
# generator k starts at ``(seed + k * RAND_SEED_STRIDE) mod 2^32`` (``RAND_ZERO_FIX`` where that is
# 0: xorshift's state must not be 0). Every beat of ``lanes`` synapses entering the lanes takes the
# generators' current states, concatenated (generator 0 in bits 0..31), lane l the bits
# [l*round_bits, (l+1)*round_bits); then every generator steps once. Beats enter in raster order
# (row-major, columns in groups of ``lanes``), so synapse (r, c) of the n-th beat since the seed
# load gets a defined, reproducible value (:func:`rtl.golden.tile_rand`).
#
# Pulse events: every synapse with a non-zero pulse count leaves as (row, col, count, neg), in
# raster order (row-major, ascending column); counters (32 bits, wrapping): events, pulses
# (sum of counts), pmax_hits (events whose count is PMAX: the pulse budget saturated), inc_sat
# (increments clamped by sat_inc) and batches.

RAND_WORD_BITS = 32                 # xorshift32 (spec choice: XOR-only next-state logic)
RAND_SEED_STRIDE = 0x9E3779B9       # spec choice: golden-ratio stride between the generators' seeds
RAND_ZERO_FIX = 0x6D2B79F5          # spec choice: replaces an all-zero seed state (any non-zero works)
COUNTER_BITS = 32                   # status counters wrap modulo 2^32


def clog2(n: int) -> int:
    return max(0, (int(n) - 1).bit_length())


@dataclass(frozen=True)
class TileSpec:
    """Parameters of the whole unit for one tile; ``dpu`` is the chi/pulse format (its ``lanes``
    is ignored: the unit's lanes are ``lanes`` here, see :attr:`chi_spec`)."""

    rows: int = 64            # engineering choice: R, a 64 x 64 tile (the MLP's smallest layer block)
    cols: int = 64            # engineering choice: C
    batch: int = 8            # engineering choice: B samples per mini-batch held on chip
    lanes: int = 8            # engineering choice: L synapses per group (issue 27: >= 8 per clock)
    taps: int = 8             # engineering choice: P products per synapse per clock (P = B: one
                              # group of L synapse-updates per clock, L * P multipliers)
    x_bits: int = 8           # = the tile's dac_bits default (gpu_model.presets, 8-bit DACs)
    delta_bits: int = 8       # engineering choice: 8-bit error codes (study: tests/ and docs/dpu.md)
    scale_bits: int = 16      # engineering choice: 16-bit scale mantissa (one 18x18 DSP operand)
    scale_shift: int = 12     # engineering choice: scale = m / 2^12, range [2^-12, 16) inc LSBs per code product
    fifo_depth: int = 16      # engineering choice: beats between the update engine and the lanes (>= front latency)
    dpu: DPUSpec = DPUSpec()

    def __post_init__(self):
        def need(c, m):
            if not c:
                raise SpecError(f"tile spec: {m}")
        for name in ("rows", "cols", "batch", "lanes", "taps", "x_bits", "delta_bits",
                     "scale_bits", "scale_shift", "fifo_depth"):
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool), f"{name} must be an integer, got {v!r}")
        need(isinstance(self.dpu, DPUSpec), f"dpu must be a DPUSpec, got {type(self.dpu).__name__}")
        for name in ("rows", "cols", "batch", "lanes", "taps"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1")
        need(self.rows < 2 ** 16 and self.cols < 2 ** 16 and self.batch < 2 ** 16, "rows, cols, batch must be < 65536")
        need(self.lanes < 256 and self.taps < 256, "lanes and taps must be < 256")
        need(self.cols % self.lanes == 0, f"cols ({self.cols}) must be a multiple of lanes ({self.lanes})")
        need(self.rows % self.lanes == 0, f"rows ({self.rows}) must be a multiple of lanes ({self.lanes}) (delta beats carry lanes codes)")
        need(self.batch % self.taps == 0, f"batch ({self.batch}) must be a multiple of taps ({self.taps})")
        need(2 <= self.x_bits <= 18 and 2 <= self.delta_bits <= 18, "x_bits and delta_bits must be in [2, 18]")
        need(1 <= self.scale_bits <= 24, "scale_bits must be in [1, 24]")
        need(0 <= self.scale_shift <= 40, "scale_shift must be in [0, 40]")
        need(self.scaled_bits <= 62, f"scaled width {self.scaled_bits} exceeds 62 bits (int64 golden model)")
        need(self.fifo_depth >= 2, "fifo_depth must be >= 2")

    # --- derived ------------------------------------------------------------------------------
    @property
    def chi_spec(self) -> DPUSpec:
        """The chi/pulse lanes' spec (DPUSpec with ``lanes`` = this unit's lanes)."""
        import dataclasses
        return dataclasses.replace(self.dpu, lanes=self.lanes)

    @property
    def prod_bits(self) -> int:
        return self.x_bits + self.delta_bits

    @property
    def tap_sum_bits(self) -> int:
        return self.prod_bits + clog2(self.taps)

    @property
    def acc_bits(self) -> int:
        return self.prod_bits + clog2(self.batch)

    @property
    def scaled_bits(self) -> int:
        return self.acc_bits + self.scale_bits + 1

    @property
    def x_max(self) -> int:
        """Largest DAC code (symmetric: the DAC's codes are -x_max..x_max)."""
        return 2 ** (self.x_bits - 1) - 1

    @property
    def delta_max(self) -> int:
        return 2 ** (self.delta_bits - 1) - 1

    @property
    def scale_max(self) -> int:
        return 2 ** self.scale_bits - 1

    @property
    def groups(self) -> int:
        """Beats of ``lanes`` synapses per tile (chi memory words)."""
        return self.rows * self.cols // self.lanes

    @property
    def rand_gens(self) -> int:
        ch = self.chi_spec
        if ch.rounding != "stochastic" or ch.round_bits == 0:
            return 0
        return -(-self.lanes * ch.round_bits // RAND_WORD_BITS)

    @property
    def updates_per_clock(self) -> float:
        """Synapse-updates per clock in steady state (events stream keeping up)."""
        return self.lanes * self.taps / self.batch

    # --- host side ----------------------------------------------------------------------------
    def encode_scale(self, scale: float) -> int:
        """Float scale (increment LSBs per unit product of codes) -> mantissa m (nearest),
        SpecError when outside [0, scale_max / 2^scale_shift]."""
        m = int(round(float(scale) * 2 ** self.scale_shift))
        if not 0 <= m <= self.scale_max:
            raise SpecError(f"scale {scale} outside the mantissa range [0, {self.scale_max / 2 ** self.scale_shift}]")
        return m

    def quantize_delta(self, delta, xp=np):
        """Float errors (B, R) -> (codes int32, delta_scale): symmetric, nearest, per batch scale
        max|delta| / delta_max (an all-zero batch gets scale 1)."""
        d = xp.asarray(delta, dtype="float64")
        s = float(xp.abs(d).max()) if d.size else 0.0
        s = s / self.delta_max if s > 0 else 1.0
        return xp.rint(d / s).astype("int32"), s

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["dpu"] = self.dpu.to_dict()
        return d
