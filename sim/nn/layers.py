"""Layers with an explicit forward and backward, and a Sequential container.

No autodiff framework: every analog layer is a crossbar and stays visible. A layer's
``forward(x)`` keeps what its ``backward`` needs; ``backward(d, need_dx)`` stores the parameter
gradients in its :class:`Param` objects and returns the error for the layer below (or ``None``
when ``need_dx`` is false: the first layer's transposed crossbar read is never done). The trainer
then asks every parameter for its update (:func:`apply_updates`): weight matrices are weight
stores (:mod:`sim.nn.stores`: fp32, or PCM crossbar tiles updated through chi and the DPU), the
other parameters (biases, gains, BatchNorm scale and shift) are digital floating point.

Image tensors are NHWC: (batch, height, width, channels). A convolution kernel is the
(C_out, k*k*C_in) matrix of one weight store, its columns ordered (kh, kw, c_in); every im2col
patch is one crossbar read (its own DAC scaling, fresh read noise, ADC), and the weight gradient,
summed over batch and positions, goes through chi once per mini-batch, as for a dense layer.

Shapes (B: batch, F: features, P = H_out*W_out: positions per image):

============  ====================  ====================  =========================================
layer         input                 output                parameters
============  ====================  ====================  =========================================
Dense         (B, F_in)             (B, F_out)            W (F_out, F_in) store, b (F_out), [gain]
Conv2d        (B, H, W, C_in)       (B, Ho, Wo, C_out)    W (C_out, k*k*C_in) store, b (C_out)
MaxPool2d     (B, H, W, C)          (B, H/k, W/k, C)      -
AvgPool2d     (B, H, W, C)          (B, H/k, W/k, C)      -
Flatten       (B, H, W, C)          (B, H*W*C)            -
ReLU/...      any                   same                  -
BatchNorm     (B, F) or NHWC        same                  gamma, beta (C or F); running stats
Dropout       any                   same                  - (its own seeded random stream)
============  ====================  ====================  =========================================

Layer engines (``LAYER_ENGINES``): ``"reference"`` is the array-module code in this file (the
definition); ``"fast"`` (the default) runs im2col/col2im, pooling, BatchNorm, the ReLU backward
and the LSTM cell as compiled one-pass kernels (:mod:`sim.nn.fast`, Numba, NumPy arrays only;
CuPy keeps the array-module code except im2col, which is one copy of a strided view on both).
The engine is ONE process-wide switch, read at every forward/backward call:
:func:`set_layer_engine` / :func:`layer_engine` (a context manager); a layer's backward may run
under another engine than its forward (both keep the same state). Bit-identical to the
reference: im2col, col2im, max pooling, the average-pooling backward, the ReLU backward,
BatchNorm forward and backward, the LSTM forward and backward steps. Float-equal only (float32
rounding of the window sums, tests/test_fast_layers.py): the average-pooling forward. Mixed
dtypes (e.g. float64 inputs with float32 parameters) always take the reference code.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from gpu_model.backend import rng_state, set_rng_state

from ..events import EventCounts
from . import fast as _fast
from .optim import Optimizer

# sparse update of a dense layer: skip all-zero input columns when fewer than this fraction is
# live (engineering choice: below ~80 % the gather/scatter is cheaper than the dense update)
SPARSE_COLUMN_FRACTION = 0.8
BN_MOMENTUM = 0.1    # running-statistics update factor of BatchNorm (engineering choice, as PyTorch)
BN_EPS = 1e-5        # variance floor of BatchNorm (engineering choice, as PyTorch)


LAYER_ENGINES = ("reference", "fast")
_ENGINE = ["fast"]     # the process-wide layer engine (a list: set in place by set_layer_engine)
FAST_DTYPES = (np.float32, np.float64)   # dtypes the compiled kernels are built for


class LayerError(ValueError):
    """A layer built or called with inconsistent shapes or parameters."""


def set_layer_engine(name: str) -> str:
    """Select the layer engine (``LAYER_ENGINES``) for every layer; returns the previous one."""
    if name not in LAYER_ENGINES:
        raise LayerError(f"unknown layer engine {name!r}; choose one of {', '.join(LAYER_ENGINES)}")
    old, _ENGINE[0] = _ENGINE[0], name
    return old


def get_layer_engine() -> str:
    """The layer engine now in use (``"reference"`` or ``"fast"``)."""
    return _ENGINE[0]


@contextlib.contextmanager
def layer_engine(name: str):
    """``with layer_engine("reference"): ...`` runs the block on that engine, then restores."""
    old = set_layer_engine(name)
    try:
        yield
    finally:
        set_layer_engine(old)


def use_numba(xp, *arrays, engine: str | None = None) -> bool:
    """True when the compiled kernels take this call: the fast engine, NumPy arrays, and one
    common float dtype (float32 or float64) for all ``arrays``."""
    if (engine or _ENGINE[0]) != "fast" or xp is not np:
        return False
    dt = arrays[0].dtype
    return dt.type in FAST_DTYPES and all(isinstance(a, np.ndarray) and a.dtype == dt for a in arrays)


@dataclass
class Param:
    """One trainable parameter: a weight store (``store``) or a digital array (``value``).

    ``grad``: its gradient from the last backward (shape of the parameter, or of the live columns
    ``cols`` of a store); ``macs``: multiply-accumulates spent on that gradient (energy counts).
    ``factors``: (x, d) with ``grad = d^T x`` (all columns of x), kept by the backward of a layer
    whose store's digital unit computes the update itself (:func:`takes_factors`: the whole unit,
    ``synapse.dpu`` tile-golden | tile-rtl); None otherwise.
    """

    key: str
    store: object = None
    value: object = None
    grad: object = None
    cols: object = None
    macs: int = 0
    lr_scale: float = 1.0
    factors: object = None

    @property
    def size(self) -> int:
        if self.store is not None:
            n_in = self.store.shape[1] if self.cols is None else int(self.cols.shape[0])
            return int(self.store.shape[0]) * int(n_in)
        return int(self.value.size)


def takes_factors(store) -> bool:
    """True when ``store``'s digital unit computes the update from the mini-batch factors (the
    whole unit, :class:`gpu_model.digital_unit.WholeUnitDigital`: it has ``offer(x, d, lr)``)."""
    tile = getattr(store, "tile", None)
    return hasattr(getattr(tile, "digital", None), "offer")


class Module:
    """Base class: training flag, event counter, parameters and state."""

    name = ""
    training = True
    events: EventCounts | None = None

    def params(self) -> list[Param]:
        return []

    def store_layers(self) -> list["Module"]:
        return [self] if getattr(self, "store", None) is not None else []

    def modules(self) -> list["Module"]:
        return [self]

    def _count(self, **kw):
        if self.training and self.events is not None:
            self.events.add(**kw)

    def state_dict(self, be) -> dict:
        return {}

    def load_state_dict(self, st: dict) -> None:
        pass


# --- weight layers ---------------------------------------------------------------------------------
class Dense(Module):
    """y = gain * (W x) + b with W on a weight store. x (B, F_in) -> (B, F_out).

    ``gain``: optional learned digital factor per output (absorbs drift and device-range scaling).
    ``sparse_update``: with plain SGD an input column that is zero over the whole batch has a zero
    gradient; only the live columns are handed to the store (work proportional to what changes).
    """

    def __init__(self, name: str, store, xp, bias: bool = True, gain: bool = False, dtype="float32"):
        self.name, self.store, self.xp = name, store, xp
        n_out, self.n_in = int(store.shape[0]), int(store.shape[1])
        self.n_out = n_out
        self.w = Param(f"{name}.w", store=store)
        self.b = Param(f"{name}.b", value=xp.zeros(n_out, dtype=dtype)) if bias else None
        self.g = Param(f"{name}.g", value=xp.ones(n_out, dtype=dtype)) if gain else None
        self.sparse_update = False
        self.out_scale = None      # digital factor on the MVM output (global drift compensation)
        self.record_mvm = False    # keep the last MVM output (drift calibration)
        self.mvm = None

    def params(self):
        return [p for p in (self.w, self.b, self.g) if p is not None]

    def forward(self, x):
        if x.ndim != 2 or x.shape[1] != self.n_in:
            raise LayerError(f"{self.name}: input must be (batch, {self.n_in}), got {tuple(x.shape)}")
        self.x = x
        y = self.store.forward(x)                  # crossbar read (or fp32 matmul): (B, F_out)
        if self.g is not None:
            self.raw = y
            y = y * self.g.value
        if self.out_scale is not None:
            y = y * self.out_scale
        if self.record_mvm:
            self.mvm = y
        return y + self.b.value if self.b is not None else y

    def backward(self, d, need_dx: bool = True):
        xp, x = self.xp, self.x
        if self.b is not None:
            self.b.grad = d.sum(axis=0)            # dL/db = sum over the batch
        if self.g is not None:
            self.g.grad = (d * self.raw).sum(axis=0)
            d = d * self.g.value
        cols = None
        if self.sparse_update:
            live = xp.flatnonzero(xp.any(x, axis=0))   # columns with a non-zero input
            if live.shape[0] < SPARSE_COLUMN_FRACTION * x.shape[1]:
                cols = live
        self.w.cols = cols
        self.w.grad = d.T @ (x if cols is None else x[:, cols])   # dL/dW = d^T x: outer products summed
        self.w.factors = (x, d) if takes_factors(self.store) else None   # the whole unit's inputs
        self.w.macs = int(x.shape[0]) * self.w.size
        return self.store.backward(d) if need_dx else None     # transposed crossbar read: d W


def _pad_hw(xp, x, pad: int):
    if pad == 0:
        return x
    return xp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))


def im2col(xp, x, k: int, stride: int, pad: int, engine: str | None = None, bufs=None):
    """(B, H, W, C) -> patches (B*Ho*Wo, k*k*C), columns ordered (kh, kw, c); returns (patches, Ho, Wo).

    ``engine`` (default: the process-wide one): ``"fast"`` is one copy of a strided view over the
    padded input (:func:`sim.nn.fast.im2col_view`, NumPy and CuPy); bit-identical. ``bufs``: a
    dict the fast engine keeps its patch and padding buffers in across calls (a layer's own; the
    patches returned then live until the next call with the same dict)."""
    if (engine or _ENGINE[0]) == "fast":
        b = {} if bufs is None else bufs
        cols, Ho, Wo, b["pad"] = _fast.im2col_view(xp, x, k, stride, pad, b.get("cols"), b.get("pad"))
        b["cols"] = cols
        return cols, Ho, Wo
    return im2col_reference(xp, x, k, stride, pad)


def im2col_reference(xp, x, k: int, stride: int, pad: int):
    """Reference im2col: k*k strided copies (kernel offsets) into the patch array."""
    B, H, W, C = x.shape
    Ho, Wo = (H + 2 * pad - k) // stride + 1, (W + 2 * pad - k) // stride + 1
    xpad = _pad_hw(xp, x, pad)
    cols = xp.empty((B, Ho, Wo, k, k, C), dtype=x.dtype)
    for i in range(k):                 # k*k strided copies (kernel offsets, not devices)
        for j in range(k):
            cols[:, :, :, i, j, :] = xpad[:, i:i + stride * Ho:stride, j:j + stride * Wo:stride, :]
    return cols.reshape(B * Ho * Wo, k * k * C), Ho, Wo


def col2im(xp, g, shape, k: int, stride: int, pad: int, Ho: int, Wo: int, engine: str | None = None):
    """Adjoint of :func:`im2col`: patch gradients (B*Ho*Wo, k*k*C) summed back onto (B, H, W, C).

    ``"fast"`` on NumPy: one compiled gather pass (:func:`sim.nn.fast.col2im_nb`), the patches
    summed onto each pixel in the reference's (kh, kw) order: bit-identical."""
    if use_numba(xp, g, engine=engine):
        return _fast.col2im_nb(g, shape, k, stride, pad, Ho, Wo)
    return col2im_reference(xp, g, shape, k, stride, pad, Ho, Wo)


def col2im_reference(xp, g, shape, k: int, stride: int, pad: int, Ho: int, Wo: int):
    """Reference col2im: k*k strided additions onto the padded image."""
    B, H, W, C = shape
    g = g.reshape(B, Ho, Wo, k, k, C)
    out = xp.zeros((B, H + 2 * pad, W + 2 * pad, C), dtype=g.dtype)
    for i in range(k):
        for j in range(k):
            out[:, i:i + stride * Ho:stride, j:j + stride * Wo:stride, :] += g[:, :, :, i, j, :]
    return out[:, pad:pad + H, pad:pad + W, :] if pad else out


class Conv2d(Module):
    """2-D convolution by im2col on a weight store. x (B, H, W, C_in) -> (B, Ho, Wo, C_out).

    Kernel matrix W: (C_out, k*k*C_in). Forward: one crossbar read per patch (B*Ho*Wo vectors);
    backward: one transposed read per output position, then col2im; weight gradient
    dL/dW = d^T patches, summed over batch and positions (one chi update per mini-batch).
    """

    def __init__(self, name: str, store, xp, c_in: int, kernel: int, stride: int = 1, padding: int = 0,
                 bias: bool = True, dtype="float32"):
        self.name, self.store, self.xp = name, store, xp
        self.c_out = int(store.shape[0])
        self.c_in, self.k, self.stride, self.pad = int(c_in), int(kernel), int(stride), int(padding)
        if self.k < 1 or self.stride < 1 or self.pad < 0:
            raise LayerError(f"{name}: kernel >= 1, stride >= 1, padding >= 0 required")
        if store.shape[1] != self.k * self.k * self.c_in:
            raise LayerError(f"{name}: store has {store.shape[1]} columns, kernel needs "
                             f"{self.k}*{self.k}*{self.c_in} = {self.k * self.k * self.c_in}")
        self.w = Param(f"{name}.w", store=store)
        self.b = Param(f"{name}.b", value=xp.zeros(self.c_out, dtype=dtype)) if bias else None
        self.out_scale = None
        self.record_mvm = False
        self.mvm = None
        self.positions = None      # Ho*Wo of the last input (crossbar reads per image)
        self._bufs = {}            # patch and padding buffers reused by the fast engine

    def params(self):
        return [p for p in (self.w, self.b) if p is not None]

    def out_shape(self, h: int, w: int) -> tuple[int, int]:
        return (h + 2 * self.pad - self.k) // self.stride + 1, (w + 2 * self.pad - self.k) // self.stride + 1

    def forward(self, x):
        if x.ndim != 4 or x.shape[3] != self.c_in:
            raise LayerError(f"{self.name}: input must be (batch, H, W, {self.c_in}), got {tuple(x.shape)}")
        B = x.shape[0]
        # the fast engine writes the patches into the layer's own buffers, kept across steps (the
        # patches live until this layer's backward; a new forward replaces them anyway)
        cols, Ho, Wo = im2col(self.xp, x, self.k, self.stride, self.pad, bufs=self._bufs)
        if Ho < 1 or Wo < 1:
            raise LayerError(f"{self.name}: input {tuple(x.shape[1:3])} smaller than the kernel")
        self.x_shape, self.cols, self.Ho, self.Wo = x.shape, cols, Ho, Wo
        self.positions = Ho * Wo
        y = self.store.forward(cols)               # one crossbar read per patch: (B*Ho*Wo, C_out)
        if self.out_scale is not None:
            y = y * self.out_scale
        if self.record_mvm:
            self.mvm = y
        if self.b is not None:
            y += self.b.value
        return y.reshape(B, Ho, Wo, self.c_out)

    def backward(self, d, need_dx: bool = True):
        d2 = d.reshape(-1, self.c_out)             # (B*Ho*Wo, C_out)
        if self.b is not None:
            self.b.grad = d2.sum(axis=0)
        self.w.cols = None
        self.w.grad = d2.T @ self.cols             # (C_out, k*k*C_in), summed over batch and positions
        # the whole unit's inputs: one factor row per patch (the fast engine's patch buffer lives
        # until this layer's next forward, after the update)
        self.w.factors = (self.cols, d2) if takes_factors(self.store) else None
        self.w.macs = int(d2.shape[0]) * self.w.size
        self.cols = None                           # free the patches
        if not need_dx:
            return None
        g = self.store.backward(d2)                # transposed read per position: (B*Ho*Wo, k*k*C_in)
        return col2im(self.xp, g, self.x_shape, self.k, self.stride, self.pad, self.Ho, self.Wo)


# --- parameter-free layers -------------------------------------------------------------------------
def _pool_view(x, k: int, name: str):
    B, H, W, C = x.shape
    if H % k or W % k:
        raise LayerError(f"{name}: input {H}x{W} is not divisible by the pool size {k}")
    return x.reshape(B, H // k, k, W // k, k, C)


class MaxPool2d(Module):
    """Max over k x k windows (stride k). (B, H, W, C) -> (B, H/k, W/k, C).

    Gradient to the window's maximum; tied maxima share it equally (a valid subgradient; ties are
    rare except for windows of ReLU zeros, whose own gradient is zero anyway).
    """

    def __init__(self, name: str, xp, k: int = 2):
        self.name, self.xp, self.k = name, xp, int(k)

    def forward(self, x):
        v = _pool_view(x, self.k, self.name)                 # (B, Ho, k, Wo, k, C), a view
        if use_numba(self.xp, x):
            x = np.ascontiguousarray(x)
            y = np.empty((v.shape[0], v.shape[1], v.shape[3], v.shape[5]), dtype=x.dtype)
            _fast.maxpool_fwd(x, self.k, y)                  # one pass (bit-identical)
        else:
            y = v.max(axis=(2, 4))
        self.x, self.y = x, y
        self._count(activations=y.size)
        return y

    def backward(self, d, need_dx: bool = True):
        if not need_dx:
            return None
        k = self.k
        if use_numba(self.xp, self.x, self.y, d):
            g = np.empty(self.x.shape, dtype=d.dtype)
            _fast.maxpool_bwd(np.ascontiguousarray(self.x), np.ascontiguousarray(self.y),
                              np.ascontiguousarray(d), k, g)  # one pass (bit-identical)
            self.x = self.y = None
            return g
        v = _pool_view(self.x, k, self.name)
        mask = v == self.y[:, :, None, :, None, :]           # where each window's maximum is
        share = d / mask.sum(axis=(2, 4))                    # split among ties (1 almost always)
        g = mask * share[:, :, None, :, None, :]
        self.x = self.y = None
        return g.reshape(self.x_shape_of(g)).astype(d.dtype, copy=False)

    @staticmethod
    def x_shape_of(g):
        B, Ho, k, Wo, k2, C = g.shape
        return (B, Ho * k, Wo * k2, C)


class AvgPool2d(Module):
    """Mean over k x k windows (stride k). (B, H, W, C) -> (B, H/k, W/k, C)."""

    def __init__(self, name: str, xp, k: int = 2):
        self.name, self.xp, self.k = name, xp, int(k)

    def forward(self, x):
        self.x_shape = x.shape
        v = _pool_view(x, self.k, self.name)
        if use_numba(self.xp, x):
            y = np.empty((v.shape[0], v.shape[1], v.shape[3], v.shape[5]), dtype=x.dtype)
            _fast.avgpool_fwd(np.ascontiguousarray(x), self.k, y)   # one pass (float-equal)
            return y
        return v.mean(axis=(2, 4))

    def backward(self, d, need_dx: bool = True):
        if not need_dx:
            return None
        k = self.k
        if use_numba(self.xp, d):
            g = np.empty(self.x_shape, dtype=d.dtype)
            _fast.avgpool_bwd(np.ascontiguousarray(d), k, g)        # one pass (bit-identical)
            return g
        g = self.xp.broadcast_to((d / (k * k))[:, :, None, :, None, :],
                                 (d.shape[0], d.shape[1], k, d.shape[2], k, d.shape[3]))
        return g.reshape(self.x_shape)


class Flatten(Module):
    """(B, ...) -> (B, prod(...)) (NHWC order)."""

    def __init__(self, name: str = "flatten"):
        self.name = name

    def forward(self, x):
        self.x_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, d, need_dx: bool = True):
        return d.reshape(self.x_shape) if need_dx else None


class _Activation(Module):
    """Elementwise nonlinearity in digital; derivative expressed through the output ``a``."""

    def __init__(self, name: str, xp):
        self.name, self.xp = name, xp

    def forward(self, z):
        a = self.fn(z)
        self.a = a
        self._count(activations=a.size)
        return a

    def backward(self, d, need_dx: bool = True):
        if not need_dx:
            return None
        self._count(activations=self.a.size)
        return d * self.grad(self.a)


class Sigmoid(_Activation):
    def fn(self, z):
        return 1.0 / (1.0 + self.xp.exp(-z))       # a = 1 / (1 + e^-z)

    def grad(self, a):
        return a * (1.0 - a)                       # da/dz = a (1 - a)


class Tanh(_Activation):
    def fn(self, z):
        return self.xp.tanh(z)

    def grad(self, a):
        return 1.0 - a * a                         # da/dz = 1 - a^2


class ReLU(_Activation):
    def fn(self, z):
        return self.xp.maximum(z, 0)

    def backward(self, d, need_dx: bool = True):
        if need_dx and use_numba(self.xp, d, self.a) and d.shape == self.a.shape:
            self._count(activations=self.a.size)
            g = np.empty(d.shape, dtype=d.dtype)
            _fast.relu_bwd(np.ascontiguousarray(d).reshape(-1), np.ascontiguousarray(self.a).reshape(-1),
                           g.reshape(-1))                  # one pass (bit-identical)
            return g
        return super().backward(d, need_dx)

    def grad(self, a):
        return (a > 0).astype(a.dtype)             # da/dz = [a > 0]


ACTIVATIONS = {"sigmoid": Sigmoid, "tanh": Tanh, "relu": ReLU}


class BatchNorm(Module):
    """Digital batch normalisation over every axis but the last (features or channels).

    Training: batch mean/variance, running statistics updated with ``BN_MOMENTUM``; evaluation:
    running statistics. y = gamma * (x - mean) / sqrt(var + eps) + beta.
    """

    def __init__(self, name: str, xp, n: int, dtype="float32"):
        self.name, self.xp, self.n = name, xp, int(n)
        self.gamma = Param(f"{name}.gamma", value=xp.ones(n, dtype=dtype))
        self.beta = Param(f"{name}.beta", value=xp.zeros(n, dtype=dtype))
        self.running_mean = xp.zeros(n, dtype=dtype)
        self.running_var = xp.ones(n, dtype=dtype)

    def params(self):
        return [self.gamma, self.beta]

    def forward(self, x):
        xp = self.xp
        if x.shape[-1] != self.n:
            raise LayerError(f"{self.name}: last axis must be {self.n}, got {tuple(x.shape)}")
        x2 = x.reshape(-1, self.n)
        fast = use_numba(xp, x2, self.gamma.value, self.beta.value)
        if fast:
            x2 = np.ascontiguousarray(x2)
        if self.training:
            if fast:
                mean, var = np.empty(self.n, dtype=x2.dtype), np.empty(self.n, dtype=x2.dtype)
                _fast.batchnorm_stats(x2, mean, var)      # NumPy's mean and var, one kernel
            else:
                mean = x2.mean(axis=0)
                var = x2.var(axis=0)
            m = x2.shape[0]
            self.running_mean *= 1 - BN_MOMENTUM
            self.running_mean += BN_MOMENTUM * mean
            self.running_var *= 1 - BN_MOMENTUM
            self.running_var += BN_MOMENTUM * var * (m / max(m - 1, 1))   # unbiased, as PyTorch
        else:
            mean, var = self.running_mean, self.running_var
        inv = 1.0 / xp.sqrt(var + BN_EPS)
        if fast and mean.dtype == x2.dtype and inv.dtype == x2.dtype:
            xhat, y = np.empty_like(x2), np.empty_like(x2)
            _fast.batchnorm_apply(x2, mean, inv, self.gamma.value, self.beta.value, xhat, y)
            self.xhat, self.inv = xhat, inv
            self._count(activations=x2.size)
            return y.reshape(x.shape)
        xhat = (x2 - mean) * inv
        self.xhat, self.inv = xhat, inv
        self._count(activations=x2.size)
        return (xhat * self.gamma.value + self.beta.value).reshape(x.shape)

    def backward(self, d, need_dx: bool = True):
        d2 = d.reshape(-1, self.n)
        xhat = self.xhat
        if use_numba(self.xp, d2, xhat, self.gamma.value, self.inv):
            d2 = np.ascontiguousarray(d2)
            db, dg = np.empty(self.n, dtype=d2.dtype), np.empty(self.n, dtype=d2.dtype)
            dx = np.empty_like(d2) if need_dx else np.empty((0, self.n), dtype=d2.dtype)
            _fast.batchnorm_bwd(d2, xhat, self.gamma.value, self.inv, need_dx, db, dg, dx)
            self.beta.grad, self.gamma.grad = db, dg
            if not need_dx:
                return None
            self._count(activations=d2.size)
            return dx.reshape(d.shape)
        self.beta.grad = d2.sum(axis=0)
        self.gamma.grad = (d2 * xhat).sum(axis=0)
        if not need_dx:
            return None
        self._count(activations=d2.size)
        m = d2.shape[0]
        # dL/dx = gamma/sigma * (d - mean(d) - xhat * mean(d * xhat))
        dx = (self.gamma.value * self.inv) * (d2 - self.beta.grad / m - xhat * (self.gamma.grad / m))
        return dx.reshape(d.shape)

    def state_dict(self, be):
        return {"running_mean": be.asnumpy(self.running_mean), "running_var": be.asnumpy(self.running_var)}

    def load_state_dict(self, st):
        self.running_mean[...] = self.xp.asarray(st["running_mean"])
        self.running_var[...] = self.xp.asarray(st["running_var"])


class Dropout(Module):
    """Inverted dropout in digital: training zeroes each element with probability ``p`` and scales
    the rest by 1/(1-p); evaluation is the identity. Masks come from its own seeded generator."""

    def __init__(self, name: str, xp, p: float, rng):
        if not 0 <= p < 1:
            raise LayerError(f"{name}: dropout probability must be in [0, 1), got {p}")
        self.name, self.xp, self.p, self.rng = name, xp, float(p), rng

    def forward(self, x):
        if not self.training or self.p == 0:
            self.mask = None
            return x
        keep = self.rng.random(x.shape, dtype="float32") >= self.p
        self.mask = keep.astype(x.dtype) * (1.0 / (1.0 - self.p))
        return x * self.mask

    def backward(self, d, need_dx: bool = True):
        if not need_dx:
            return None
        return d if self.mask is None else d * self.mask

    def state_dict(self, be):
        return {"rng": rng_state(self.rng)}

    def load_state_dict(self, st):
        set_rng_state(self.rng, st.get("rng"))


# --- container -------------------------------------------------------------------------------------
class Sequential(Module):
    """Layers applied in order; backward in reverse order (first layer: no input gradient)."""

    def __init__(self, layers: list, name: str = "net"):
        self.name = name
        self.layers = list(layers)
        names = [L.name for L in self.layers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise LayerError(f"{name}: duplicate layer names {dup}")

    def modules(self):
        out = []
        for L in self.layers:
            out.extend(L.modules())
        return out

    def params(self):
        return [p for L in self.layers for p in L.params()]

    def store_layers(self):
        return [m for L in self.layers for m in L.store_layers()]

    def bind_events(self, ev: EventCounts | None):
        for m in self.modules():
            m.events = ev

    def train(self, mode: bool = True):
        for m in self.modules():
            m.training = mode
        self.training = mode

    def eval(self):
        self.train(False)

    def forward(self, x):
        for L in self.layers:
            x = L.forward(x)
        return x

    def backward(self, d, need_dx: bool = False):
        n = len(self.layers)
        for i in range(n - 1, -1, -1):
            d = self.layers[i].backward(d, need_dx=need_dx or i > 0)
        return d

    def update_order(self) -> list[Param]:
        """Parameters in update order: last layer first (the order of the devices' random draws)."""
        return [p for L in reversed(self.layers) for p in L.params()]

    def state_dict(self, be) -> dict:
        out = {}
        for m in self.modules():
            st = m.state_dict(be) if m is not self else {}
            for p in m.params() if m is not self else []:
                st[p.key] = p.store.state_dict(be) if p.store is not None else be.asnumpy(p.value)
            if st:
                out[m.name] = st
        return out

    def load_state_dict(self, st: dict) -> None:
        for m in self.modules():
            if m is self:
                continue
            ms = st.get(m.name)
            if ms is None:
                if m.params() or m.state_dict.__func__ is not Module.state_dict:
                    raise LayerError(f"checkpoint has no state for layer {m.name}")
                continue
            m.load_state_dict(ms)
            for p in m.params():
                if p.store is not None:
                    p.store.load_state_dict(ms[p.key])
                else:
                    p.value[...] = m.xp.asarray(ms[p.key])


def apply_updates(params: list[Param], opt: Optimizer, lr: float, rand_rng, events: EventCounts | None,
                  batch_size: int) -> tuple[int, int]:
    """Optimizer deltas for every parameter (in the given order); stores route theirs through chi.

    Returns (SET pulses, refreshes) of this mini-batch. Event counts: update MACs, chi
    read-modify-writes (one per analog weight with a live input), optimizer ops, digital
    parameter updates. ``batch_size`` is only used for parameters that report no MACs. A store
    whose digital unit is the whole unit (:func:`takes_factors`) is first handed the layer's
    factors and ``lr`` (``offer(x, d, lr)``: it computes -lr d^T x itself; plain SGD only).
    """
    pulses = refreshes = 0
    ops = Optimizer.OPS_PER_WEIGHT[opt.kind]
    for p in params:
        if p.grad is None:
            continue
        if p.store is not None:
            if takes_factors(p.store):
                # the whole unit computes -lr d^T x itself from this batch's factors (plain SGD)
                if opt.kind != "sgd":
                    raise LayerError(f"{p.key}: the whole digital unit (synapse.dpu tile-golden | tile-rtl) "
                                     f"computes the plain-SGD update -lr d^T x from this mini-batch's "
                                     f"factors; optimizer {opt.kind!r} needs train.optimizer = \"sgd\"")
                if p.factors is None:
                    raise LayerError(f"{p.key}: the whole digital unit needs this layer's factors (x, d) "
                                     f"of the backward pass; this layer does not keep them")
                p.store.tile.digital.offer(p.factors[0], p.factors[1], lr)
            st = p.store.apply_update(opt.delta(p.key, p.grad, lr), rand_rng, p.cols)
            pulses += st.set_pulses
            refreshes += st.refreshes
            if events is not None:
                n_w = p.size
                events.add(update_macs=p.macs or batch_size * n_w,
                           chi_updates=n_w if p.store.kind == "analog" else 0, optimizer_ops=ops * n_w)
        else:
            p.value += opt.delta(p.key, p.grad, lr * p.lr_scale)
            if events is not None:
                events.add(optimizer_ops=ops * p.value.size, bias_updates=p.value.size)
        p.grad = p.factors = None
    return pulses, refreshes
