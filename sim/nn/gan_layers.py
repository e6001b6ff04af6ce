"""Layers the GAN needs beyond :mod:`sim.nn.layers`: LeakyReLU, the sigmoid cross-entropy on
logits (the GAN losses) and ClassBias (a conditional GAN's label input as a digital per-class
bias), all in digital floating point."""
from __future__ import annotations

from .layers import Module, Param, _Activation

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


def one_hot(xp, labels, n_classes: int, dtype="float32"):
    """(N,) integer labels -> (N, n_classes) one-hot rows."""
    return (xp.asarray(labels)[:, None] == xp.arange(n_classes)[None, :]).astype(dtype)


class ClassBias(Module):
    """y = x + E[c]: a digital per-class bias table E (n_classes, F) for the labels ``c`` of the
    current batch (set in ``labels`` before forward). x (B, F) -> (B, F).

    The digital form of one-hot label rows on a crossbar: onehot(c) @ E^T = E[c], so a dense layer
    fed [x, onehot(c)] equals one fed x followed by this layer. Backward: dL/dE = onehot(c)^T d (the
    batch's d summed per class), dL/dx = d. E starts at zero, as the other biases.
    """

    def __init__(self, name: str, xp, n_classes: int, features: int, dtype="float32"):
        if n_classes < 1 or features < 1:
            raise ValueError(f"{name}: n_classes and features must be >= 1, got {n_classes}, {features}")
        self.name, self.xp = name, xp
        self.n_classes, self.features = int(n_classes), int(features)
        self.e = Param(f"{name}.e", value=xp.zeros((self.n_classes, self.features), dtype=dtype))
        self.labels = None

    def params(self):
        return [self.e]

    def forward(self, x):
        if x.ndim != 2 or x.shape[1] != self.features:
            raise ValueError(f"{self.name}: input must be (batch, {self.features}), got {tuple(x.shape)}")
        if self.labels is None or self.labels.shape[0] != x.shape[0]:
            raise ValueError(f"{self.name}: set labels (one per input row) before forward")
        self.c = self.xp.asarray(self.labels)
        return x + self.e.value[self.c]                  # E[c]: one table row per sample

    def backward(self, d, need_dx: bool = True):
        self.e.grad = one_hot(self.xp, self.c, self.n_classes, self.e.value.dtype).T @ d   # dL/dE = onehot(c)^T d
        return d if need_dx else None                    # dL/dx = d
