"""Transaction-level models of the DPU for the scoreboard: the golden model, and deliberately
broken variants used to prove that the checker catches real bugs (``DPU_TB_MODEL=<name>``)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rtl.golden import golden_step, round_increment
from rtl.spec import DPUSpec


@dataclass
class InBeat:
    """One input beat: per-lane chi, inc and rand (rand ignored unless stochastic)."""
    chi: np.ndarray
    inc: np.ndarray
    rand: np.ndarray


@dataclass
class OutBeat:
    chi: np.ndarray
    pulses: np.ndarray
    neg: np.ndarray

    def differs(self, other: "OutBeat") -> list[int]:
        return [n for n in range(len(self.chi))
                if (int(self.chi[n]), int(self.pulses[n]), bool(self.neg[n]))
                != (int(other.chi[n]), int(other.pulses[n]), bool(other.neg[n]))]


class DPUModel:
    """Golden transaction-level model: :func:`rtl.golden.golden_step` over a beat's lanes."""

    name = "golden"

    def __init__(self, spec: DPUSpec):
        self.spec = spec

    def step(self, chi, inc, rand):
        return golden_step(self.spec, chi, inc, rand, np)

    def predict(self, beat: InBeat) -> OutBeat:
        chi, p, neg = self.step(beat.chi, beat.inc, beat.rand)
        return OutBeat(np.asarray(chi), np.asarray(p), np.asarray(neg, dtype=bool))


class NoPmaxClip(DPUModel):
    """Bug: pulses not clipped at PMAX (the pulse field then wraps) and chi keeps only the
    fraction, so what exceeds PMAX is lost."""
    name = "no_pmax_clip"

    def step(self, chi, inc, rand):
        s = self.spec
        v = np.clip(chi.astype(np.int64) + round_increment(s, inc, rand, np), -s.chi_max, s.chi_max)
        neg, mag = v < 0, np.abs(v)
        p = mag >> s.frac_bits
        res = mag - (p << s.frac_bits)
        return (np.where(neg, -res, res).astype(np.int32),
                (p & ((1 << s.pulse_bits) - 1)).astype(np.int32), neg)


class NoSaturation(DPUModel):
    """Bug: chi + inc wraps around instead of saturating."""
    name = "no_saturation"

    def step(self, chi, inc, rand):
        s = self.spec
        v = chi.astype(np.int64) + round_increment(s, inc, rand, np)
        half = 1 << (s.chi_bits - 1)
        v = ((v + half) % (2 * half)) - half
        v = np.maximum(v, -s.chi_max)
        neg, mag = v < 0, np.abs(v)
        p = np.minimum(mag >> s.frac_bits, s.pmax)
        res = mag - (p << s.frac_bits)
        return np.where(neg, -res, res).astype(np.int32), p.astype(np.int32), neg


class TruncTowardZero(DPUModel):
    """Bug: pulse count by truncating chi toward zero *before* taking the magnitude, i.e.
    ``p = floor(s)`` for negatives (one pulse too many for every non-integral negative chi)."""
    name = "floor_negative"

    def step(self, chi, inc, rand):
        s = self.spec
        v = np.clip(chi.astype(np.int64) + round_increment(s, inc, rand, np), -s.chi_max, s.chi_max)
        neg = v < 0
        ip = np.abs(v >> s.frac_bits)              # floor(s) for negatives, not floor(|s|)
        p = np.minimum(ip, s.pmax)
        v2 = np.where(neg, v + (p << s.frac_bits), v - (p << s.frac_bits))
        return v2.astype(np.int32), p.astype(np.int32), neg


class IgnoreRand(DPUModel):
    """Bug: the rounding ignores the shared random bits (always truncates)."""
    name = "ignore_rand"

    def step(self, chi, inc, rand):
        return golden_step(self.spec, chi, inc, np.zeros_like(rand), np)


BROKEN = {m.name: m for m in (NoPmaxClip, NoSaturation, TruncTowardZero, IgnoreRand)}
MODELS = {"golden": DPUModel, **BROKEN}


def make_model(name: str, spec: DPUSpec) -> DPUModel:
    try:
        return MODELS[name](spec)
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}") from None
