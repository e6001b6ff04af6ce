"""Initial weight distributions (NumPy, float32; programmed onto devices by program-and-verify)."""
from __future__ import annotations

import math


def init_weights(out_f: int, in_f: int, kind: str, gain: float, rng):
    """Xavier/Glorot initial weights (NumPy, float32)."""
    if kind == "xavier_uniform":
        a = gain * math.sqrt(6.0 / (in_f + out_f))
        return rng.uniform(-a, a, size=(out_f, in_f)).astype("float32")
    sd = gain * math.sqrt(2.0 / (in_f + out_f))
    return (sd * rng.standard_normal((out_f, in_f))).astype("float32")
