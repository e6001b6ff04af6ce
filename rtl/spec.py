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
