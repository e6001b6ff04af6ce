"""DPU interface used by training: ``golden`` (vectorised model) and ``rtl`` (Verilator) backends.

Both take whole arrays per call: ``step(chi, inc, rand) -> (chi_new, signed_pulses)``.
"""
from __future__ import annotations

from .golden import golden_step_signed
from .spec import DPUSpec

DPU_KINDS = ("golden", "rtl")


class GoldenDPU:
    kind = "golden"

    def __init__(self, spec: DPUSpec, xp):
        self.spec, self.xp = spec, xp

    def step(self, chi, inc, rand=None):
        return golden_step_signed(self.spec, chi, inc, rand, self.xp)


def make_dpu(kind: str, spec: DPUSpec, xp):
    if kind == "golden":
        return GoldenDPU(spec, xp)
    if kind == "rtl":
        from .verilated import VerilatedDPU  # built on first use
        return VerilatedDPU(spec, xp)
    raise ValueError(f"unknown DPU backend {kind!r}; choose one of {', '.join(DPU_KINDS)}")
