"""Compiled (Numba) kernels of the digital layers: the ``"fast"`` layer engine.

Every kernel here is the one-pass twin of a NumPy expression in :mod:`sim.nn.layers` /
:mod:`sim.nn.recurrent` (the ``"reference"`` engine, which stays the definition). The kernels run
on NumPy arrays only; on CuPy the layers keep their array-module code (``sim.nn.layers.use_numba``).

What is bit-identical to the reference and what is only float-equal (tests/test_fast_layers.py):

==========================  ================  ===============================================
kernel                      vs reference      why
==========================  ================  ===============================================
im2col_view (strided view)  bit-identical     copies only
col2im_nb (scatter-add)     bit-identical     same (kh, kw) order of the sums onto each pixel
maxpool_fwd / maxpool_bwd   bit-identical     max is exact; d / ties rounded once, as NumPy
avgpool_fwd                 float-equal       sum of the k*k window in another order
avgpool_bwd                 bit-identical     d / (k*k), broadcast
relu_bwd                    bit-identical     d * [a > 0], one pass
batchnorm_stats/apply/bwd   bit-identical     sequential row sums (NumPy's order on axis 0),
                                              two-pass variance, same operation order
lstm_cell_fwd               bit-identical     compiled arithmetic, NumPy's exp/tanh
lstm_cell_bwd               bit-identical     same float32 operations in the same order
==========================  ================  ===============================================

All arithmetic is in the arrays' own dtype: float constants are cast to it (a float64 literal
would promote a float32 expression in Numba). No ``fastmath``: it would reorder sums and break
the bit-identical rows above.
"""
from __future__ import annotations

import numpy as np
from numba import njit


# --- im2col / col2im --------------------------------------------------------------------------------
def im2col_view(xp, x, k: int, stride: int, pad: int, out=None, pad_buf=None):
    """(B, H, W, C) -> patches (B*Ho*Wo, k*k*C) (columns (kh, kw, c)) by ONE copy of a strided view.

    The padded input is written once into a zeroed buffer (``pad_buf`` when it fits: its border is
    zero already and stays so), the (B, Ho, Wo, k, k, C) view over it (no copy) is then copied into
    the patch matrix (``out`` when it fits) by one array-module copy (NumPy or CuPy; NumPy's
    strided copy moves the (kw, c) runs, contiguous in both, with memcpy-like loops). Buffers kept
    across steps fault in no fresh pages. Returns (patches, Ho, Wo, pad_buf). Bit-identical to the
    reference (only copies)."""
    B, H, W, C = x.shape
    Ho, Wo = (H + 2 * pad - k) // stride + 1, (W + 2 * pad - k) // stride + 1
    if pad:
        shape = (B, H + 2 * pad, W + 2 * pad, C)
        if pad_buf is None or tuple(pad_buf.shape) != shape or pad_buf.dtype != x.dtype:
            pad_buf = xp.zeros(shape, dtype=x.dtype)
        pad_buf[:, pad:pad + H, pad:pad + W, :] = x
        xpad = pad_buf
    else:
        xpad = xp.ascontiguousarray(x)
    Ho_, Wo_ = max(Ho, 0), max(Wo, 0)
    n = B * Ho_ * Wo_ * k * k * C
    if out is None or out.size != n or out.dtype != x.dtype or not out.flags.c_contiguous:
        out = xp.empty(n, dtype=x.dtype)
    cols = out.reshape(B, Ho_, Wo_, k, k, C)
    if n:
        sb, sh, sw, sc = xpad.strides
        view = xp.lib.stride_tricks.as_strided(
            xpad, shape=(B, Ho, Wo, k, k, C), strides=(sb, stride * sh, stride * sw, sh, sw, sc))
        cols[...] = view
    return cols.reshape(B * Ho_ * Wo_, k * k * C), Ho, Wo, pad_buf


@njit(cache=True)
def _col2im_nb(g, k, s, outp):
    """outp (B, H + 2p, W + 2p, C), the padded image, = sum of the patch gradients
    g (B, Ho, Wo, k, k, C) over the patches that cover each pixel. g is read in one sequential
    sweep (scatter-add); with the positions visited from the last to the first, the patches reach
    each pixel in increasing (kh, kw) order, the reference's order of additions from 0:
    bit-identical."""
    B, Ho, Wo = g.shape[0], g.shape[1], g.shape[2]
    C = g.shape[5]
    outp[...] = 0
    for b in range(B):
        for ho in range(Ho - 1, -1, -1):
            for wo in range(Wo - 1, -1, -1):
                for i in range(k):
                    gr = g[b, ho, wo, i]                      # (k, C), contiguous
                    if s == 1:
                        orow = outp[b, ho + i, wo:wo + k]     # (k, C), contiguous
                        for j in range(k):
                            for c in range(C):
                                orow[j, c] += gr[j, c]
                    else:
                        for j in range(k):
                            o = outp[b, ho * s + i, wo * s + j]
                            for c in range(C):
                                o[c] += gr[j, c]


def col2im_nb(g, shape, k: int, stride: int, pad: int, Ho: int, Wo: int):
    """Adjoint of im2col: (B*Ho*Wo, k*k*C) patch gradients -> (B, H, W, C), one compiled pass
    (a view into the padded image when ``pad``, as the reference returns)."""
    B, H, W, C = shape
    g6 = np.ascontiguousarray(g).reshape(B, Ho, Wo, k, k, C)
    outp = np.empty((B, H + 2 * pad, W + 2 * pad, C), dtype=g.dtype)
    _col2im_nb(g6, k, stride, outp)
    return outp[:, pad:pad + H, pad:pad + W, :] if pad else outp


# --- pooling ----------------------------------------------------------------------------------------
@njit(cache=True)
def maxpool_fwd(x, k, y):
    """y (B, H/k, W/k, C) = max of each k x k window of x (B, H, W, C) (stride k)."""
    B, Ho, Wo, C = y.shape
    for b in range(B):
        for ho in range(Ho):
            for wo in range(Wo):
                for c in range(C):
                    y[b, ho, wo, c] = x[b, ho * k, wo * k, c]
                for i in range(k):
                    for j in range(k):
                        for c in range(C):
                            v = x[b, ho * k + i, wo * k + j, c]
                            if v > y[b, ho, wo, c]:
                                y[b, ho, wo, c] = v


@njit(cache=True)
def maxpool_bwd(x, y, d, k, g):
    """g (B, H, W, C): d of each window to its maximum, shared equally among tied maxima
    (d / ties, rounded once in the dtype: as the reference, whose float64 quotient rounds to the
    same float32)."""
    B, Ho, Wo, C = y.shape
    zero = g.dtype.type(0)
    n = np.empty(C, dtype=np.int64)
    share = np.empty(C, dtype=g.dtype)
    for b in range(B):
        for ho in range(Ho):
            for wo in range(Wo):
                for c in range(C):
                    n[c] = 0
                for i in range(k):
                    for j in range(k):
                        for c in range(C):
                            if x[b, ho * k + i, wo * k + j, c] == y[b, ho, wo, c]:
                                n[c] += 1
                for c in range(C):
                    share[c] = d[b, ho, wo, c] / g.dtype.type(n[c])
                for i in range(k):
                    for j in range(k):
                        for c in range(C):
                            if x[b, ho * k + i, wo * k + j, c] == y[b, ho, wo, c]:
                                g[b, ho * k + i, wo * k + j, c] = share[c]
                            else:                 # 0 * share: the reference's mask * share, signed zero
                                g[b, ho * k + i, wo * k + j, c] = zero * share[c]


@njit(cache=True)
def avgpool_fwd(x, k, y):
    """y (B, H/k, W/k, C) = mean of each k x k window of x (B, H, W, C) (stride k)."""
    B, Ho, Wo, C = y.shape
    n = y.dtype.type(k * k)
    for b in range(B):
        for ho in range(Ho):
            for wo in range(Wo):
                for c in range(C):
                    y[b, ho, wo, c] = 0
                for i in range(k):
                    for j in range(k):
                        for c in range(C):
                            y[b, ho, wo, c] += x[b, ho * k + i, wo * k + j, c]
                for c in range(C):
                    y[b, ho, wo, c] = y[b, ho, wo, c] / n


@njit(cache=True)
def avgpool_bwd(d, k, g):
    """g (B, H, W, C) = d / (k*k) on every element of its window."""
    B, Ho, Wo, C = d.shape
    n = g.dtype.type(k * k)
    for b in range(B):
        for ho in range(Ho):
            for i in range(k):
                for wo in range(Wo):
                    for j in range(k):
                        for c in range(C):
                            g[b, ho * k + i, wo * k + j, c] = d[b, ho, wo, c] / n


# --- activations ----------------------------------------------------------------------------------
@njit(cache=True)
def relu_bwd(d, a, g):
    """g = d * [a > 0] over flat arrays, one pass (the reference's d * (a > 0).astype: a product
    with 1 or 0, so signed zeros and NaNs come out the same)."""
    one = g.dtype.type(1)
    zero = g.dtype.type(0)
    for i in range(g.shape[0]):
        g[i] = d[i] * (one if a[i] > 0 else zero)


# --- BatchNorm ------------------------------------------------------------------------------------
@njit(cache=True)
def batchnorm_stats(x, mean, var):
    """Batch mean and (biased) variance over the rows of x (M, F), NumPy's way: sequential row
    sums, then the mean of the squared deviations (two passes over x)."""
    M, F = x.shape
    m = mean.dtype.type(M)
    for f in range(F):
        mean[f] = 0
        var[f] = 0
    for r in range(M):
        for f in range(F):
            mean[f] += x[r, f]
    for f in range(F):
        mean[f] = mean[f] / m
    for r in range(M):
        for f in range(F):
            t = x[r, f] - mean[f]
            var[f] += t * t
    for f in range(F):
        var[f] = var[f] / m


@njit(cache=True)
def batchnorm_apply(x, mean, inv, gamma, beta, xhat, y):
    """xhat = (x - mean) * inv and y = xhat * gamma + beta, per row of x (M, F), one pass."""
    M, F = x.shape
    for r in range(M):
        for f in range(F):
            t = (x[r, f] - mean[f]) * inv[f]
            xhat[r, f] = t
            y[r, f] = t * gamma[f] + beta[f]


@njit(cache=True)
def batchnorm_bwd(d, xhat, gamma, inv, need_dx, dbeta, dgamma, dx):
    """dbeta = sum d, dgamma = sum d * xhat (sequential row sums); with ``need_dx``
    dx = (gamma inv) * (d - dbeta/M - xhat * dgamma/M), the reference's operation order."""
    M, F = d.shape
    m = dbeta.dtype.type(M)
    for f in range(F):
        dbeta[f] = 0
        dgamma[f] = 0
    for r in range(M):
        for f in range(F):
            dbeta[f] += d[r, f]
            dgamma[f] += d[r, f] * xhat[r, f]
    if not need_dx:
        return
    a = np.empty(F, dtype=dx.dtype)
    mb = np.empty(F, dtype=dx.dtype)
    mg = np.empty(F, dtype=dx.dtype)
    for f in range(F):
        a[f] = gamma[f] * inv[f]
        mb[f] = dbeta[f] / m
        mg[f] = dgamma[f] / m
    for r in range(M):
        for f in range(F):
            dx[r, f] = a[f] * ((d[r, f] - mb[f]) - xhat[r, f] * mg[f])


# --- LSTM cell ------------------------------------------------------------------------------------
@njit(cache=True)
def lstm_gates_pre(a, bias, H, gates):
    """gates (B, 4H) = -(a + bias) on the sigmoid gates (i, f, o), a + bias on g: the arguments
    of the exp / tanh that NumPy applies next (its own SIMD exp/tanh, as the reference)."""
    B = a.shape[0]
    for b in range(B):
        for u in range(4 * H):
            v = a[b, u] + bias[u]
            gates[b, u] = v if 2 * H <= u < 3 * H else -v


@njit(cache=True)
def lstm_cell_mid(gates, c_prev, H, c):
    """Sigmoid gates from their exp(-a) (1 / (exp(-a) + 1), in place), then
    c (B, H) = f c_prev + i g."""
    B = c.shape[0]
    one = gates.dtype.type(1)
    for b in range(B):
        for u in range(H):
            gates[b, u] = one / (gates[b, u] + one)
            gates[b, H + u] = one / (gates[b, H + u] + one)
            gates[b, 3 * H + u] = one / (gates[b, 3 * H + u] + one)
        for u in range(H):
            c[b, u] = gates[b, H + u] * c_prev[b, u] + gates[b, u] * gates[b, 2 * H + u]


@njit(cache=True)
def lstm_cell_out(gates, tc, H, h, z_next, n_in):
    """h (B, H) = o tanh(c); also into the next step's crossbar input z_next[:, n_in:] when that
    has rows (a (0, 0) array on the last step)."""
    B = h.shape[0]
    nxt = z_next.shape[0] > 0
    for b in range(B):
        for u in range(H):
            v = gates[b, 3 * H + u] * tc[b, u]
            h[b, u] = v
            if nxt:
                z_next[b, n_in + u] = v


def lstm_cell_fwd(a, bias, c_prev, gates, c, tc, h, z_next, n_in: int):
    """One LSTM step for B sequences, in place; bit-identical to the reference step.

    a (B, 4H): gate pre-activations W z without the bias, gate order i, f, g, o. Writes gates
    (B, 4H) = sigmoid / tanh of a + bias, c (B, H) = f c_prev + i g, tc = tanh(c), h = o tc (h
    may be a strided view) and h into z_next[:, n_in:] (the next crossbar input; a (0, 0) array
    on the last step). The compiled passes do the arithmetic, NumPy's exp/tanh the
    transcendentals (Numba's scalar libm expf/tanhf would cost more than they save and round
    differently)."""
    H = c.shape[1]
    lstm_gates_pre(a, bias, H, gates)
    np.exp(gates[:, :2 * H], out=gates[:, :2 * H])
    np.exp(gates[:, 3 * H:], out=gates[:, 3 * H:])
    np.tanh(gates[:, 2 * H:3 * H], out=gates[:, 2 * H:3 * H])
    lstm_cell_mid(gates, c_prev, H, c)
    np.tanh(c, out=tc)
    lstm_cell_out(gates, tc, H, h, z_next, n_in)


@njit(cache=True)
def lstm_cell_bwd(d_h, dh_next, dc, gates, tc, c_prev, da):
    """One BPTT step, in place: dh = d_h + dh_next; dc += dh o (1 - tc^2); da (B, 4H) = the gate
    pre-activation errors (i, f, g, o); then dc *= f (the error for c_{t-1})."""
    B, H = dc.shape
    one = da.dtype.type(1)
    for b in range(B):
        for u in range(H):
            i = gates[b, u]
            f = gates[b, H + u]
            g = gates[b, 2 * H + u]
            o = gates[b, 3 * H + u]
            t = tc[b, u]
            dh = d_h[b, u] + dh_next[b, u]
            dcu = dc[b, u] + dh * o * (one - t * t)
            da[b, 3 * H + u] = (dh * t) * (o * (one - o))
            da[b, u] = (dcu * g) * (i * (one - i))
            da[b, H + u] = (dcu * c_prev[b, u]) * (f * (one - f))
            da[b, 2 * H + u] = (dcu * i) * (one - g * g)
            dc[b, u] = dcu * f
