"""Standard normal draws for the crossbar's read noise, by one of two exact-in-distribution methods.

The tile adds read noise as sqrt((x^2) @ V^T) * z with one standard normal z per output of every
MVM (``gpu_model/tile.py``), so a training step draws as many normals as it reads outputs: on the
NumPy backend NumPy's ziggurat (``Generator.standard_normal``, ~7-14 ns per float32 draw on this
project's CPUs) costs about as much as a matmul of the same output shape, a quarter of a PCM GAN step.

``"ziggurat"``   the generator's own ``standard_normal`` (the default: every run so far used it).
``"box_muller"`` Box & Muller (1958): from two uniforms u1, u2 in [0, 1),
                 r = sqrt(-2 ln(1 - u1)), z1 = r cos(2 pi u2), z2 = r sin(2 pi u2) are two independent
                 standard normals. In float32 (vectorised log/sqrt/sin/cos) it is ~2.5x faster than the
                 ziggurat on the NumPy backend (``benchmarks/bench_analog.py``). Its float32 uniforms
                 are multiples of 2^-24, so |z| <= sqrt(2 * 24 ln 2) = 5.77: the tail beyond 5.77
                 sigma (probability 8e-9 per draw) is cut, which no read-noise statistic can see.

Both give the same statistics (``tests/test_sampling.py``) but different random streams: a run
keeps the sampler it was started with (its ``config.toml`` records it).
"""
from __future__ import annotations

import math

NOISE_SAMPLERS = ("ziggurat", "box_muller")


def box_muller(xp, rng, shape, dtype="float32"):
    """``shape`` standard normals from ``2 * ceil(n / 2)`` uniforms of ``rng`` (n = prod(shape)).

    Works in the uniforms' own array (one temporary of n/2): u = [u1 | u2] becomes [z1 | z2]."""
    n = math.prod(shape)
    m = (n + 1) // 2
    u = rng.random(2 * m, dtype=dtype)
    r, theta = u[:m], u[m:]
    xp.subtract(1.0, r, out=r)                   # 1 - u1 in (0, 1]: the log is finite
    if getattr(xp, "__name__", "numpy") != "numpy":
        # CuPy's float32 uniforms come from cuRAND's (0, 1] (curand_uniform); should a 1.0 reach
        # here, 1 - u1 = 0 would give log(0) = -inf and an infinite normal. Keep 1 - u1 >= 2^-24,
        # NumPy's smallest value (a no-op for every other draw; NumPy's path is unchanged).
        xp.maximum(r, 2.0 ** -24, out=r)
    xp.log(r, out=r)
    r *= -2.0
    xp.sqrt(r, out=r)                            # r = sqrt(-2 ln(1 - u1))
    theta *= 2.0 * math.pi                       # angle 2 pi u2
    c = xp.cos(theta)
    xp.sin(theta, out=theta)
    theta *= r                                   # z2 = r sin(angle), in u2's place
    xp.multiply(c, r, out=r)                     # z1 = r cos(angle), in u1's place
    return u[:n].reshape(shape)


def standard_normal(xp, rng, shape, dtype="float32", method: str = "ziggurat"):
    """``shape`` standard normals of ``dtype`` drawn from ``rng`` by ``method`` (``NOISE_SAMPLERS``)."""
    if method == "ziggurat":
        return rng.standard_normal(shape, dtype=dtype)
    if method == "box_muller":
        return box_muller(xp, rng, tuple(shape), dtype)
    raise ValueError(f"unknown normal sampler {method!r}; choose one of {', '.join(NOISE_SAMPLERS)}")
