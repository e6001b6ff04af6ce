"""Digital-domain optimizers: gradient -> weight update delta_w (weight units).

One state per parameter key; SGD, momentum and Adam. Their output feeds chi (analog stores) or the
weights directly (fp32 stores and digital parameters).
"""
from __future__ import annotations


class Optimizer:
    """Digital-domain optimizer producing delta_w from a gradient (one state per parameter)."""

    OPS_PER_WEIGHT = {"sgd": 1, "momentum": 3, "adam": 12}   # elementwise ops per weight update

    def __init__(self, kind: str, xp, momentum=0.9, beta1=0.9, beta2=0.999, eps=1e-8):
        self.kind, self.xp = kind, xp
        self.momentum, self.beta1, self.beta2, self.eps = momentum, beta1, beta2, eps
        self.state: dict = {}
        self.t = 0

    def step_begin(self):
        self.t += 1

    def delta(self, key: str, grad, lr: float):
        xp = self.xp
        if self.kind == "sgd":
            return (-lr) * grad
        if self.kind == "momentum":
            v = self.state.get(key)
            if v is None:
                v = self.state[key] = xp.zeros_like(grad)
            v *= self.momentum
            v += grad
            return (-lr) * v
        m, v = self.state.get(key + ".m"), self.state.get(key + ".v")
        if m is None:
            m = self.state[key + ".m"] = xp.zeros_like(grad)
            v = self.state[key + ".v"] = xp.zeros_like(grad)
        m *= self.beta1
        m += (1 - self.beta1) * grad
        v *= self.beta2
        v += (1 - self.beta2) * grad * grad
        mhat_scale = 1.0 / (1 - self.beta1 ** self.t)
        vhat_scale = 1.0 / (1 - self.beta2 ** self.t)
        return (-lr * mhat_scale) * m / (xp.sqrt(v * vhat_scale) + self.eps)

    def state_dict(self, be):
        return {"t": self.t, "state": {k: be.asnumpy(v) for k, v in self.state.items()}}

    def load_state_dict(self, st):
        self.t = st["t"]
        self.state = {k: self.xp.asarray(v) for k, v in st["state"].items()}
