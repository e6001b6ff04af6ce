"""DPU interface used by training: ``golden`` (vectorised model) and ``rtl`` (Verilator) backends.

Both take whole arrays per call: ``step(chi, inc, rand) -> (chi_new, signed_pulses)``.
"""
from __future__ import annotations

from .golden import golden_step
from .spec import DPUSpec

DPU_KINDS = ("golden", "rtl")


class GoldenDPU:
    kind = "golden"

    def __init__(self, spec: DPUSpec, xp):
        self.spec, self.xp = spec, xp

    def step(self, chi, inc, rand=None):
        chi_new, p, neg = golden_step(self.spec, chi, inc, rand, self.xp)
        return chi_new, self.xp.where(neg, -p, p)


def make_dpu(kind: str, spec: DPUSpec, xp):
    if kind == "golden":
        return GoldenDPU(spec, xp)
    if kind == "rtl":
        from .verilated import VerilatedDPU  # built on first use
        return VerilatedDPU(spec, xp)
    raise ValueError(f"unknown DPU backend {kind!r}; choose one of {', '.join(DPU_KINDS)}")
