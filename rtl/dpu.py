"""DPU interface used by training: ``golden`` (vectorised model) and ``rtl`` (Verilator) backends.

Both take whole arrays per call: ``step(chi, inc, rand) -> (chi_new, signed_pulses)``; the golden
one also ``step_sparse(chi, inc, rand) -> (chi_new, k, pulses)`` (flat indices of the non-zero pulse
counts and those counts), which training uses when the backend has it.
"""
from __future__ import annotations

from .golden import golden_step_signed, golden_step_sparse
from .spec import DPUSpec

DPU_KINDS = ("golden", "rtl")
#: the whole unit (update engine + chi memory + events, :class:`TileDPU`) as a training tile's
#: digital unit: ``gpu_model.digital_unit.WholeUnitDigital`` (it needs the mini-batch factors, not
#: a float update, so it is not a ``make_dpu`` kind)
WHOLE_UNIT_KINDS = ("tile-golden", "tile-rtl")


class GoldenDPU:
    kind = "golden"

    def __init__(self, spec: DPUSpec, xp):
        self.spec, self.xp = spec, xp

    def step(self, chi, inc, rand=None):
        return golden_step_signed(self.spec, chi, inc, rand, self.xp)

    def step_sparse(self, chi, inc, rand=None):
        return golden_step_sparse(self.spec, chi, inc, rand, self.xp)


def make_dpu(kind: str, spec: DPUSpec, xp):
    if kind == "golden":
        return GoldenDPU(spec, xp)
    if kind == "rtl":
        from .verilated import VerilatedDPU  # built on first use
        return VerilatedDPU(spec, xp)
    if kind in WHOLE_UNIT_KINDS:
        raise ValueError(f"DPU kind {kind!r} is the whole unit: build the tile's digital unit with "
                         "gpu_model.digital_unit.make_digital_unit (WholeUnitDigital), not make_dpu")
    raise ValueError(f"unknown DPU backend {kind!r}; choose one of {', '.join(DPU_KINDS)}")


# --- the whole unit (issue 27): update engine + chi memory + event stream ------------------------
TILE_KINDS = ("golden", "rtl")


class TileDPU:
    """The whole digital unit for one R x C tile, per mini-batch: ``golden``
    (:class:`rtl.golden.GoldenTile`, vectorised NumPy) or ``rtl`` (the Verilator model of
    :class:`rtl.tile.TileUnit` through :class:`rtl.tile_verilated.VerilatedTile`). Both give
    bit-identical results.

    ``update_from_batch(chi, x_codes, delta_codes, m) -> (chi_new, events)``:

    * ``chi``: (rows, cols) int32 in the chi format of ``spec.dpu`` (units of epsilon,
      ``frac_bits`` fractional bits); ``None`` keeps the unit's own chi (no host load/dump
      traffic on the ``rtl`` backend: chi stays in the unit's memory between calls)
    * ``x_codes``: (batch, cols) DAC codes; ``delta_codes``: (batch, rows) error codes
      (:meth:`rtl.spec.TileSpec.quantize_delta`); ``m``: scale mantissa
      (:meth:`rtl.spec.TileSpec.encode_scale`)
    * returns chi_new (rows, cols) int32 and the events (``rtl.golden.EVENT_DTYPE``: row, col,
      count, neg; raster order): the devices to pulse.

    The on-chip random generators continue across calls (``seed`` at construction,
    :meth:`load_seed`); :meth:`counters` reads the status counters.
    """

    def __init__(self, spec, kind: str = "golden", seed: int = 0):
        from .golden import GoldenTile
        if kind not in TILE_KINDS:
            raise ValueError(f"unknown tile DPU backend {kind!r}; choose one of {', '.join(TILE_KINDS)}")
        self.spec, self.kind = spec, kind
        if kind == "golden":
            self._g = GoldenTile(spec)
        else:
            from .tile_verilated import VerilatedTile
            self._v = VerilatedTile(spec)
        self.load_seed(seed)

    def load_seed(self, seed: int):
        (self._g if self.kind == "golden" else self._v).load_seed(seed)

    def counters(self) -> dict:
        return self._g.counters.as_dict() if self.kind == "golden" else self._v.counters()

    @property
    def cycles_last_batch(self) -> int | None:
        """Clock cycles of the last batch (``rtl`` only: from its first beat to idle)."""
        return self._v.last_batch_cycles if self.kind == "rtl" else None

    def update_from_batch(self, chi, x_codes, delta_codes, m: int, return_chi: bool = True):
        """One mini-batch; ``return_chi=False`` skips the chi dump (returns ``None`` for it)."""
        import numpy as np
        if self.kind == "golden":
            if chi is not None:
                self._g.load_chi(chi)
            ev = self._g.batch(x_codes, delta_codes, m)
            return (self._g.chi.copy() if return_chi else None), ev
        if chi is not None:
            self._v.load_chi(np.asarray(chi))
        ev = self._v.batch(x_codes, delta_codes, m)
        return (self._v.dump_chi() if return_chi else None), ev
