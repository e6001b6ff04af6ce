"""PyTorch twins of the native fp32 nets, for side-by-side step timing (``bench_layers.py``).

Not a benchmark itself (``benchmarks/run.py`` only runs ``bench_*.py`` modules). Every function
needs torch; callers check :func:`have_torch` first (the benchmark skips cleanly without it).

* :func:`cnn_twin`: the VGG-style CNN of ``configs/cnn_cifar10_fp32.toml`` as ``sim.tasks.models``
  ``build_cnn`` builds it: per ``model.conv`` entry a k x k conv (same padding, no bias under
  BatchNorm) -> BatchNorm2d -> ReLU, "M" a 2x2 max pooling; Flatten; per hidden layer Dropout ->
  Linear (no bias under BatchNorm) -> BatchNorm1d -> ReLU; Dropout -> Linear (logits). Images
  NCHW (torch's own layout; the native net is NHWC), momentum SGD as the config.
* :func:`lstm_twin`: the char LSTM of ``configs/lstm_ptb_fp32.toml`` (``sim.tasks.charlm``):
  one-hot inputs (amplitude ``lstm.input_scale``) -> LSTM(hidden) -> Linear(V) -> softmax
  cross-entropy; global gradient-norm clipping at ``lstm.clip_norm``; Adam; the state carried
  (detached) from one window to the next.

A training step (:class:`TorchStep`) is forward + backward + optimizer step on one batch, as the
native ``Trainer.step`` (less the native step's event counting).
"""
from __future__ import annotations

import time


def have_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _torch():
    import torch
    return torch


def cnn_twin(cfg, input_shape: tuple, n_classes: int):
    """``torch.nn.Sequential`` twin of ``build_cnn(cfg, input_shape, n_classes)`` (NCHW input)."""
    torch = _torch()
    nn = torch.nn
    m = cfg.model
    H, W, C = input_shape
    layers = []
    for c in m.conv:
        if isinstance(c, str):
            layers.append(nn.MaxPool2d(2) if m.pool == "max" else nn.AvgPool2d(2))
            H, W = H // 2, W // 2
            continue
        layers.append(nn.Conv2d(C, int(c), m.kernel, padding=m.kernel // 2, bias=not m.batch_norm))
        if m.batch_norm:
            layers.append(nn.BatchNorm2d(int(c)))
        layers.append(_activation(m.activation))
        C = int(c)
    layers.append(nn.Flatten())
    sizes = [H * W * C] + list(m.hidden) + [n_classes]
    for j in range(len(sizes) - 1):
        last = j == len(sizes) - 2
        if m.dropout > 0:
            layers.append(nn.Dropout(m.dropout))
        bn = m.batch_norm and not last
        layers.append(nn.Linear(sizes[j], sizes[j + 1], bias=not bn))
        if bn:
            layers.append(nn.BatchNorm1d(sizes[j + 1]))
        if not last:
            layers.append(_activation(m.activation))
    return nn.Sequential(*layers)


def _activation(name: str):
    nn = _torch().nn
    return {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}[name]()


class CharLSTM:
    """One-hot -> LSTM -> Linear, the state carried (detached) across windows."""

    def __init__(self, V: int, hidden: int, input_scale: float):
        torch = _torch()
        self.V, self.scale = V, float(input_scale)
        self.lstm = torch.nn.LSTM(V, hidden, batch_first=True)
        self.proj = torch.nn.Linear(hidden, V)
        self.eye = torch.eye(V) * self.scale
        self.state = None

    def parameters(self):
        return list(self.lstm.parameters()) + list(self.proj.parameters())

    def __call__(self, idx):
        x = self.eye[idx]                                   # (B, T, V)
        hs, (h, c) = self.lstm(x, self.state)
        self.state = (h.detach(), c.detach())
        return self.proj(hs.reshape(-1, hs.shape[-1]))      # (B*T, V)


def lstm_twin(cfg, V: int) -> CharLSTM:
    return CharLSTM(V, cfg.lstm.hidden, cfg.lstm.input_scale)


class TorchStep:
    """One training step of a twin: ``step(x, y)`` = forward, mean cross-entropy, backward,
    [gradient clipping], optimizer step. ``x``/``y`` torch tensors of one batch."""

    def __init__(self, model, cfg, clip_norm: float | None = None):
        torch = _torch()
        self.torch, self.model, self.clip = torch, model, clip_norm
        params = model.parameters() if callable(getattr(model, "parameters", None)) else model
        self.params = list(params)
        t = cfg.train
        if t.optimizer == "adam":
            self.opt = torch.optim.Adam(self.params, lr=t.lr, betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_eps)
        else:
            self.opt = torch.optim.SGD(self.params, lr=t.lr, momentum=t.momentum if t.optimizer == "momentum" else 0.0)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        if hasattr(model, "train"):
            model.train()

    def step(self, x, y) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(x), y.reshape(-1))
        loss.backward()
        if self.clip:
            self.torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.opt.step()
        return float(loss.detach())


def time_steps(step, batches) -> float:
    """Seconds for ``step(x, y)`` over ``batches`` [(x, y), ...]."""
    t0 = time.perf_counter()
    for x, y in batches:
        step(x, y)
    return time.perf_counter() - t0


def op_profile(step, batches, top: int = 12) -> list[dict]:
    """Self CPU time per torch op over ``batches`` (torch.profiler): [{op, ms_per_step}], largest first."""
    torch = _torch()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for x, y in batches:
            step(x, y)
    rows = [(e.key, e.self_cpu_time_total / 1e3 / len(batches)) for e in prof.key_averages()]
    rows.sort(key=lambda r: -r[1])
    return [{"op": k, "ms_per_step": v} for k, v in rows[:top]]
