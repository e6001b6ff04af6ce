"""DPU interface used by training: ``golden`` (vectorised model) and ``rtl`` (Verilator) backends.

Both take whole arrays per call: ``step(chi, inc, rand) -> (chi_new, signed_pulses)``; the golden
one also ``step_sparse(chi, inc, rand) -> (chi_new, k, pulses)`` (flat indices of the non-zero pulse
counts and those counts), which training uses when the backend has it.
"""
from __future__ import annotations

from .golden import golden_step_signed, golden_step_sparse
from .spec import DPUSpec

DPU_KINDS = ("golden", "rtl")


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
    raise ValueError(f"unknown DPU backend {kind!r}; choose one of {', '.join(DPU_KINDS)}")
