"""Initial weight distributions (NumPy, float32; programmed onto devices by program-and-verify).

``in_f``: fan-in (dense: input features; conv: k*k*C_in), ``out_f``: output features/channels.
"""
from __future__ import annotations

import math


def init_weights(out_f: int, in_f: int, kind: str, gain: float, rng):
    """(out_f, in_f) float32 weights: Xavier/Glorot (fan-in + fan-out) or He (fan-in) scaling."""
    if kind == "xavier_uniform":
        a = gain * math.sqrt(6.0 / (in_f + out_f))          # U(-a, a), a = sqrt(6 / (fan_in + fan_out))
        return rng.uniform(-a, a, size=(out_f, in_f)).astype("float32")
    if kind == "he_uniform":
        a = gain * math.sqrt(6.0 / in_f)                    # U(-a, a), a = sqrt(6 / fan_in)
        return rng.uniform(-a, a, size=(out_f, in_f)).astype("float32")
    if kind == "he_normal":
        sd = gain * math.sqrt(2.0 / in_f)                   # N(0, 2 / fan_in)
        return (sd * rng.standard_normal((out_f, in_f))).astype("float32")
    if kind == "xavier_normal":
        sd = gain * math.sqrt(2.0 / (in_f + out_f))         # N(0, 2 / (fan_in + fan_out))
        return (sd * rng.standard_normal((out_f, in_f))).astype("float32")
    raise ValueError(f"unknown init {kind!r}")
