"""Losses in digital floating point, with the error vector they hand to backward."""
from __future__ import annotations


def softmax(xp, z):
    z = z - z.max(axis=1, keepdims=True)
    e = xp.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def softmax_cross_entropy(xp, logits, yb):
    """Mean cross-entropy, number correct, and dL/dlogits of the mean loss (B, classes)."""
    B = logits.shape[0]
    p = softmax(xp, logits)
    rows = xp.arange(B)
    loss = float(-xp.log(p[rows, yb] + 1e-12).mean())
    correct = int((xp.argmax(p, axis=1) == yb).sum())
    p[rows, yb] -= 1.0
    p *= 1.0 / B
    return loss, correct, p
