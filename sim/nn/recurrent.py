"""LSTM layer on one weight store, backprop through time, digital gradient clipping.

Gate matrix: ONE weight store W of shape (4H, in + H) (one crossbar array, split over tiles by the
tile grid), rows in gate order **i, f, g, o** (input, forget, cell candidate, output), columns
[x_t, h_{t-1}]. Per time step the concatenated vector z_t = [x_t, h_{t-1}] of every sequence is
one crossbar read (B vectors per step: its own DAC scaling, fresh read noise, ADC):

    a_t = W z_t + b                      (crossbar read + digital bias; forget-gate bias init 1.0)
    i, f, o = sigmoid(a_i, a_f, a_o);  g = tanh(a_g)
    c_t = f * c_{t-1} + i * g;  h_t = o * tanh(c_t)          (cell arithmetic in digital)

Backward (BPTT over the T steps of the truncated window): one transposed crossbar read per step,
da_t W, gives the error for h_{t-1} (and for x_t when the input needs it); the weight gradient
dL/dW = sum_t da_t^T z_t is summed over batch and time into ONE gradient per mini-batch (one chi
update, as for a dense layer). The state (h_T, c_T) is exposed as ``h``/``c`` so the task can carry
it (detached: no gradient flows into the previous window) to the next mini-batch.

Shapes: x_seq (B, T, in) -> h_seq (B, T, H); h0, c0 (B, H) or None (zeros).

Layer engine (:func:`sim.nn.layers.set_layer_engine`): ``"fast"`` runs each step's cell arithmetic
as compiled kernels (:func:`sim.nn.fast.lstm_cell_fwd` / ``lstm_cell_bwd``; NumPy, one float
dtype; the forward keeps NumPy's exp/tanh): both steps bit-identical to the reference
(tests/test_fast_layers.py).
"""
from __future__ import annotations

import numpy as np

from . import fast as _fast
from .layers import LayerError, Module, Param, use_numba


def _sigmoid(xp, a, out=None):
    """1 / (1 + exp(-a)), in place into ``out`` when given."""
    out = xp.negative(a, out=out)
    xp.exp(out, out=out)
    out += 1.0
    xp.reciprocal(out, out=out)
    return out


class LSTM(Module):
    """One LSTM layer: gate matrix (4H, in + H) on a weight store, bias and cell state in digital.

    ``forward(x_seq, h0, c0)`` keeps what ``backward`` needs (the window's z_t, gates and cell
    states); ``backward(d_h_seq, need_dx)`` stores the weight and bias gradients and returns the
    input error (B, T, in) or None. ``need_dh0``: also compute ``self.dh0``/``self.dc0`` (the error
    for the initial state; tests only: the trainer never propagates into the previous window).
    """

    def __init__(self, name: str, store, xp, n_in: int, hidden: int, forget_bias: float = 1.0,
                 dtype="float32"):
        self.name, self.store, self.xp = name, store, xp
        self.n_in, self.H = int(n_in), int(hidden)
        if tuple(store.shape) != (4 * self.H, self.n_in + self.H):
            raise LayerError(f"{name}: gate store must be (4H, in + H) = ({4 * self.H}, {self.n_in + self.H}), "
                             f"got {tuple(store.shape)}")
        self.w = Param(f"{name}.w", store=store)
        b0 = xp.zeros(4 * self.H, dtype=dtype)
        b0[self.H:2 * self.H] = forget_bias          # forget gate open at the start (standard practice)
        self.b = Param(f"{name}.b", value=b0)
        self.h = self.c = None                       # final state of the last forward
        self.dh0 = self.dc0 = None
        self._cache = None

    def params(self):
        return [self.w, self.b]

    def forward(self, x_seq, h0=None, c0=None):
        xp, H, n_in = self.xp, self.H, self.n_in
        if x_seq.ndim != 3 or x_seq.shape[2] != n_in:
            raise LayerError(f"{self.name}: input must be (batch, time, {n_in}), got {tuple(x_seq.shape)}")
        B, T = int(x_seq.shape[0]), int(x_seq.shape[1])
        dt = self.b.value.dtype
        z = xp.empty((T, B, n_in + H), dtype=dt)     # crossbar inputs [x_t, h_{t-1}] per step
        z[:, :, :n_in] = x_seq.transpose(1, 0, 2)
        z[0, :, n_in:] = 0 if h0 is None else h0
        c_prev = xp.zeros((B, H), dtype=dt) if c0 is None else xp.asarray(c0, dtype=dt)
        gates = xp.empty((T, B, 4 * H), dtype=dt)    # i, f, g, o after their nonlinearities
        cs = xp.empty((T + 1, B, H), dtype=dt)       # c_{-1} .. c_{T-1}
        tcs = xp.empty((T, B, H), dtype=dt)          # tanh(c_t)
        hs = xp.empty((B, T, H), dtype=dt)
        cs[0] = c_prev
        bias = self.b.value
        if use_numba(xp, z, bias, cs):
            for t in range(T):
                a = self.store.forward(z[t])         # one crossbar read per sequence: (B, 4H)
                if a.dtype != dt:
                    a = a.astype(dt)
                z_next = z[t + 1] if t + 1 < T else z[:0, 0]
                _fast.lstm_cell_fwd(a, bias, cs[t], gates[t], cs[t + 1], tcs[t], hs[:, t], z_next, n_in)
            self._count(activations=B * T * 5 * H)
            self._cache = (z, gates, cs, tcs)
            self.h, self.c = hs[:, T - 1].copy(), cs[T].copy()
            return hs
        for t in range(T):
            a = self.store.forward(z[t])             # one crossbar read per sequence: (B, 4H)
            a += bias
            gt = gates[t]
            _sigmoid(xp, a, out=gt)                  # i, f, (g overwritten), o
            xp.tanh(a[:, 2 * H:3 * H], out=gt[:, 2 * H:3 * H])
            c = cs[t + 1]
            xp.multiply(gt[:, H:2 * H], cs[t], out=c)          # c_t = f c_{t-1} + i g
            c += gt[:, :H] * gt[:, 2 * H:3 * H]
            xp.tanh(c, out=tcs[t])
            h = hs[:, t]
            xp.multiply(gt[:, 3 * H:], tcs[t], out=h)          # h_t = o tanh(c_t)
            if t + 1 < T:
                z[t + 1, :, n_in:] = h
        self._count(activations=B * T * 5 * H)       # 4 gate nonlinearities + tanh(c) per unit
        self._cache = (z, gates, cs, tcs)
        self.h, self.c = hs[:, T - 1].copy(), cs[T].copy()
        return hs

    def backward(self, d_h_seq, need_dx: bool = False, need_dh0: bool = False):
        if self._cache is None:
            raise LayerError(f"{self.name}: backward without a forward")
        xp, H, n_in = self.xp, self.H, self.n_in
        z, gates, cs, tcs = self._cache
        T, B = int(z.shape[0]), int(z.shape[1])
        if tuple(d_h_seq.shape) != (B, T, H):
            raise LayerError(f"{self.name}: error must be (batch, time, hidden) = {(B, T, H)}, "
                             f"got {tuple(d_h_seq.shape)}")
        dt = gates.dtype
        da = xp.empty((T, B, 4 * H), dtype=dt)
        dx = xp.empty((B, T, n_in), dtype=dt) if need_dx else None
        dh_next = xp.zeros((B, H), dtype=dt)
        dc = xp.zeros((B, H), dtype=dt)
        fast = use_numba(xp, gates, tcs, cs, d_h_seq)
        for t in range(T - 1, -1, -1):
            if fast:
                dat = da[t]
                _fast.lstm_cell_bwd(d_h_seq[:, t], dh_next, dc, gates[t], tcs[t], cs[t], dat)
                if t > 0 or need_dx or need_dh0:
                    dz = self.store.backward(dat)    # transposed crossbar read: (B, in + H)
                    dh_next = np.ascontiguousarray(dz[:, n_in:])
                    if need_dx:
                        dx[:, t] = dz[:, :n_in]
                continue
            gt, tc = gates[t], tcs[t]
            i, f, g, o = gt[:, :H], gt[:, H:2 * H], gt[:, 2 * H:3 * H], gt[:, 3 * H:]
            dh = d_h_seq[:, t] + dh_next
            # dc_t = dc_{t+1} f_{t+1} + dh_t o_t (1 - tanh^2 c_t)
            dc += dh * o * (1.0 - tc * tc)
            dat = da[t]
            xp.multiply(dh * tc, o * (1.0 - o), out=dat[:, 3 * H:])        # d a_o
            xp.multiply(dc * g, i * (1.0 - i), out=dat[:, :H])              # d a_i
            xp.multiply(dc * cs[t], f * (1.0 - f), out=dat[:, H:2 * H])     # d a_f
            xp.multiply(dc * i, 1.0 - g * g, out=dat[:, 2 * H:3 * H])       # d a_g
            dc *= f
            if t > 0 or need_dx or need_dh0:
                dz = self.store.backward(dat)        # transposed crossbar read: (B, in + H)
                dh_next = dz[:, n_in:]
                if need_dx:
                    dx[:, t] = dz[:, :n_in]
        self._count(activations=B * T * 5 * H)       # the nonlinearities' derivatives
        if need_dh0:
            self.dh0, self.dc0 = dh_next, dc
        da2 = da.reshape(T * B, 4 * H)
        self.b.grad = da2.sum(axis=0)
        self.w.cols = None
        self.w.grad = da2.T @ z.reshape(T * B, n_in + H)    # sum over batch and time: one chi update
        self.w.macs = T * B * self.w.size
        self._cache = None
        return dx


def global_grad_norm(params, xp) -> float:
    """L2 norm over every gradient of ``params`` together (digital)."""
    tot = 0.0
    for p in params:
        if p.grad is not None:
            tot += float((p.grad * p.grad).sum())
    return tot ** 0.5


def clip_gradients(params, max_norm: float, xp) -> float:
    """Digital gradient clipping: scale every gradient by max_norm / norm when the global L2 norm
    exceeds ``max_norm``. Returns the norm before clipping."""
    norm = global_grad_norm(params, xp)
    if norm > max_norm:
        s = max_norm / (norm + 1e-12)
        for p in params:
            if p.grad is not None:
                p.grad *= s
    return norm
