"""Layers the GAN needs beyond :mod:`sim.nn.layers`: LeakyReLU, and the sigmoid cross-entropy
on logits (the GAN losses), both in digital floating point."""
from __future__ import annotations

from .layers import _Activation

LEAKY_SLOPE = 0.2   # negative-side slope (DCGAN practice; engineering choice)


class LeakyReLU(_Activation):
    """a = z for z > 0, slope * z otherwise (slope > 0, so sign(a) = sign(z))."""

    def __init__(self, name: str, xp, slope: float = LEAKY_SLOPE):
        super().__init__(name, xp)
        if not slope > 0:
            raise ValueError(f"{name}: LeakyReLU slope must be > 0, got {slope}")
        self.slope = float(slope)

    def fn(self, z):
        return self.xp.where(z > 0, z, z * self.slope)

    def grad(self, a):
        return self.xp.where(a > 0, 1.0, self.slope).astype(a.dtype)   # da/dz = 1 or slope


def softplus(xp, z):
    """log(1 + e^z), stable for large |z|."""
    return xp.maximum(z, 0) + xp.log1p(xp.exp(-xp.abs(z)))


def sigmoid(xp, z):
    return 0.5 * (1.0 + xp.tanh(0.5 * z))        # = 1 / (1 + e^-z), no overflow


def bce_with_logits(xp, logits, target: float):
    """Sum over the batch of the binary cross-entropy of sigmoid(logits) against a constant target
    t in [0, 1], and dLoss_sum/dlogits: BCE(l, t) = t softplus(-l) + (1 - t) softplus(l)
    (t = 1: softplus(-l); t = 0: softplus(l)); d/dl = sigmoid(l) - t."""
    l = logits.reshape(-1)
    if target == 1:
        loss = softplus(xp, -l)
    elif target == 0:
        loss = softplus(xp, l)
    else:
        loss = target * softplus(xp, -l) + (1.0 - target) * softplus(xp, l)
    return float(loss.sum()), (sigmoid(xp, logits) - target).astype(logits.dtype)
