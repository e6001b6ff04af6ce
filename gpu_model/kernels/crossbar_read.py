"""The crossbar read (one tile block's MVM with DAC, read noise and ADC) as compiled passes around
the two BLAS matmuls: the fast twin of ``AnalogMatrix._dac`` / ``_mvm`` / ``_adc``
(:mod:`gpu_model.tile`), which stay the reference.

Per call, for a batch x (B, K) of input vectors (float32; input units) and a block W of the
weight matrix (weight units):

    pass 1 (compiled, one sweep per row)  DAC: s_b = max_k |x_bk| ("max"; 0 -> 1) or the fixed scale,
                                          x_n = x / s (clipped to [-1, 1] when fixed), quantised to
                                          2h + 1 levels (h = (dac_levels - 1) // 2): rint(x_n h) / h;
                                          and x_n^2 (only with read noise)
    BLAS                                  y = x_n @ W^T            (normalised input x weight units)
    BLAS (read noise only)                v = (x_n^2) @ Var^T      (output variance, weight units^2)
    pass 2 (compiled, one sweep)          y += sqrt(v) z, z ~ N(0, 1); y /= w_max; ADC: clip to
                                          [-r, r], rint(y h_a / r) r / h_a (h_a = (adc_levels-1)//2);
                                          out = y * (w_max s_b)  (weight units x input units)

(``transpose=True``: the transposed read z = W^T d of the backward pass: y = x_n @ W, v =
(x_n^2) @ Var with W, Var of shape (K, N); ``adc_range`` is then the tile's backward range.)

Same float32 operations in the same order as the reference, so with the same standard normals
(``noise=`` an array, or ``rng=`` the tile's NumPy generator with its ``noise_sampler``: the
ziggurat draws of the same stream into a reused buffer, or gpu_model.sampling.box_muller) the
output is bit-identical to ``AnalogTile._mvm`` (signed zeros included); with the read noise off
it is bit-identical whatever the noise source (tests/test_crossbar_read.py). :func:`tile_read`
does a whole tile's forward/backward this way, block by block.

Noise inside the kernel (``key=``): one standard normal per output from the counter-based
generator of :mod:`gpu_model.kernels.keyed_rng` (``normal_nb``; no normal array is materialised,
nothing is carried between calls): synapse field = the flat output index b*N + n, device field =
``block`` (the caller's tile-block index, so that the blocks of one matrix draw apart), draw = 0,
and the per-call key from :func:`read_key` (seed, stream, step). The same in distribution as the
reference (N(0, 1) per output), not the same stream. Cost on CPU: ``normal_nb`` is float64
log/sqrt/cos per draw, ~60 ns a normal on this machine against ~7 ns for NumPy's vectorised
Box-Muller (bench_layers.py): the keyed source pays where a read has many outputs per MAC
(conv1, every transposed conv read); it is the stateless choice (any order, any thread, GPU).

Cost floor: with read noise, two equal matmuls plus one normal per output; the ratio to one plain
matmul is >= 2 + (normal cost) / (K MACs per output), so small-K reads (conv1: K = 27) and the
transposed conv reads (K = C_out MACs per output) stay well above 2.5x on CPU whatever the
elementwise passes cost.

What the physics lets us share: the variance matmul is skipped when read noise is off (ideal
devices, ``read_noise = False``): y is then exact. With read noise it stays one matmul per call:
Var (per synapse, set by the device state) changes only where devices were pulsed or drift moved
them, which is the caller's W/Var cache (``DifferentialSynapses.read_variance``); the kernel
takes Var as given. It cannot be folded into the read matmul (different left operand x_n^2 and
different matrix), and approximating it (e.g. Var proportional to |W|) would change the noise
model, so it is not done here.

Work buffers (x_n, x_n^2, the variance, drawn normals) live in a :class:`ReadWork` (one per
caller, or the module's default) and are reused across calls of the same shape; the output is
fresh (or ``out=``) because the layers keep it.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..sampling import standard_normal
from .keyed_rng import _mix_int, key_prefix, normal_nb

FLOAT = np.float32
DAC_SCALINGS = ("max", "fixed")
# keyed-RNG kind of the MVM read noise. Not (yet) one of keyed_rng.KINDS (its owner registers it
# there; 16 is the next free value after KIND_READ_WEIGHTS = 15): the key is built here with the
# same chain as keyed_rng.stream_key.
KIND_MVM_READ = 16
NOISE_NONE, NOISE_ARRAY, NOISE_KEYED = 0, 1, 2


def read_key(seed: int, stream: int, step: int) -> np.uint64:
    """Per-call key of the MVM read noise: ``mix(mix(key_prefix(seed, stream) ^ KIND_MVM_READ) ^ step)``
    (the chain of :func:`keyed_rng.stream_key`). ``step``: the caller's read counter (each MVM
    call one value, so no two reads share normals)."""
    if int(step) < 0 or int(seed) < 0 or int(stream) < 0:
        raise ValueError(f"read_key: seed, stream and step must be >= 0, got {seed}, {stream}, {step}")
    k = _mix_int(int(key_prefix(seed, stream)) ^ KIND_MVM_READ)
    return np.uint64(_mix_int(k ^ (int(step) & ((1 << 64) - 1))))


class ReadWork:
    """Work buffers of :func:`fused_mvm`, kept by name and reused while the shape stays."""

    def __init__(self):
        self.bufs = {}

    def get(self, name: str, shape: tuple) -> np.ndarray:
        b = self.bufs.get(name)
        if b is None or b.shape != shape:
            b = np.empty(shape, dtype=FLOAT)
            self.bufs[name] = b
        return b


_DEFAULT_WORK = ReadWork()


@njit(cache=True)
def _dac(x, max_scaling, fixed_scale, quantize, half, square, xn, x2, s):
    """Pass 1: per row b of x (B, K): s[b] (the DAC scale), xn = the quantised x / s[b], and
    x2 = xn^2 when ``square``. float32 throughout, the reference's operation order (x / s, then
    rint(. * h) / h: no reciprocal multiply, which would round differently). One sweep for the
    row maximum, one for the rest."""
    B, K = x.shape
    one = np.float32(1.0)
    h = np.float32(half)
    for b in range(B):
        if max_scaling:
            m = np.float32(0.0)
            for k in range(K):
                m = max(m, abs(x[b, k]))
            if m == 0:
                m = one                              # an all-zero vector: any scale reads zero
        else:
            m = np.float32(fixed_scale)
        s[b] = m
        for k in range(K):
            t = x[b, k] / m                          # max scaling: |x| <= s, |x/s| <= 1, no clip needed
            if not max_scaling:
                t = min(max(t, -one), one)
            if quantize:
                t = np.rint(t * h) / h
            xn[b, k] = t
            if square:
                x2[b, k] = t * t


@njit(cache=True)
def _adc(y, v, z, key, block, mode, s, w_max, quantize, r, half):
    """Pass 2, in place on y (B, N): add the read noise sqrt(v) z (``mode``: none, array z, or
    keyed normals), y /= w_max, ADC clip to [-r, r] and quantise, out = y * (w_max s[b])."""
    B, N = y.shape
    wm = np.float32(w_max)
    up = np.float32(half / r)                        # the reference's y *= half / r (float32)
    down = np.float32(r / half)
    rr = np.float32(r)
    for b in range(B):
        scale = wm * s[b]
        for n in range(N):
            t = y[b, n]
            if mode == NOISE_ARRAY:
                t = t + np.sqrt(v[b, n]) * z[b, n]
            elif mode == NOISE_KEYED:
                zz = np.float32(normal_nb(key, b * N + n, block, 0))
                t = t + np.sqrt(v[b, n]) * zz
            t = t / wm
            if quantize:
                t = min(max(t, -rr), rr)
                t = np.rint(t * up) * down
            y[b, n] = t * scale


def fused_mvm(x, w, var, *, transpose: bool, dac_levels: int, dac_scaling: str, dac_fixed_scale: float,
              quantize: bool, adc_levels: int, adc_range: float, w_max: float, read_noise: bool,
              noise=None, rng=None, sampler: str = "ziggurat", key=None, block: int = 0,
              work: ReadWork | None = None, out=None):
    """One tile block's crossbar read, in weight units: (B, K) inputs -> (B, N) outputs.

    x: (B, K) float32 input vectors (input units); w, var: the block's weights (weight units) and
    read variances (weight units^2), (N, K) for the forward read (y = x W^T), (K, N) with
    ``transpose=True`` (the backward read y = x W). Converters as ``TilePreset``: ``dac_levels`` /
    ``adc_levels`` (2^bits - 1), ``dac_scaling`` "max" | "fixed" (``dac_fixed_scale``),
    ``quantize`` (False: no DAC/ADC quantisation or clipping beyond the fixed DAC's), ``adc_range``
    (normalised units; the backward range for ``transpose=True``), ``w_max`` (weight units).
    ``read_noise``: add N(0, (x_n^2) Var^T) per output; its standard normals from exactly one of
    ``noise`` ((B, N) array), ``rng`` (a NumPy Generator, drawn by ``sampler`` as the tile's
    ``TilePreset.noise_sampler``: "ziggurat" into a reused buffer, "box_muller" by
    :func:`gpu_model.sampling.box_muller`; the tile's stream, bit for bit) or ``key`` (uint64
    from :func:`read_key`: keyed normals drawn in the kernel, with ``block`` as their device
    field; no normal array at all). ``work``: reused buffers (default: the module's); ``out``: (B, N)
    float32 array to write (default: a fresh one). Returns the (B, N) outputs.
    """
    if dac_scaling not in DAC_SCALINGS:
        raise ValueError(f"dac_scaling must be one of {DAC_SCALINGS}, got {dac_scaling!r}")
    if not (isinstance(x, np.ndarray) and x.dtype == FLOAT):
        x = np.asarray(x, dtype=FLOAT)               # a column slice (a tile block) stays a view
    B, K = x.shape
    wt = w if transpose else w.T                     # (K, N) views: BLAS reads either layout
    if wt.shape[0] != K:
        raise ValueError(f"input has {K} columns, the weight block {tuple(w.shape)} "
                         f"(transpose={transpose}) needs {wt.shape[0]}")
    N = int(wt.shape[1])
    wk = work or _DEFAULT_WORK
    xn = wk.get("xn", (B, K))
    x2 = wk.get("x2", (B, K)) if read_noise else xn
    s = wk.get("s", (B,))
    _dac(x, dac_scaling == "max", float(dac_fixed_scale), bool(quantize), (int(dac_levels) - 1) // 2,
         bool(read_noise), xn, x2, s)
    if out is None:
        out = np.empty((B, N), dtype=FLOAT)
    np.matmul(xn, wt, out=out)                       # y = x_n W^T (BLAS)
    mode, z, v, k = NOISE_NONE, out, out, np.uint64(0)
    if read_noise:
        sources = sum(a is not None for a in (noise, rng, key))
        if sources != 1:
            raise ValueError("read_noise needs exactly one of noise=, rng=, key=")
        v = wk.get("v", (B, N))
        np.matmul(x2, var if transpose else var.T, out=v)   # output variance (x_n^2) Var^T (BLAS)
        if key is not None:
            mode, k = NOISE_KEYED, np.uint64(key)
        else:
            mode = NOISE_ARRAY
            if rng is not None and sampler == "ziggurat":
                z = wk.get("z", (B, N))
                rng.standard_normal(dtype=FLOAT, out=z)   # the tile's ziggurat stream, no new array
            elif rng is not None:
                z = standard_normal(np, rng, (B, N), FLOAT, sampler)   # Box-Muller: vectorised NumPy
            else:
                z = np.ascontiguousarray(noise, dtype=FLOAT)
                if z.shape != (B, N):
                    raise ValueError(f"noise must have shape {(B, N)}, got {tuple(z.shape)}")
    _adc(out, v, z, k, int(block), mode, s, float(w_max), bool(quantize), float(adc_range),
         (int(adc_levels) - 1) // 2)
    return out


def tile_kwargs(tile, w_max: float, read_noise: bool, transpose: bool) -> dict:
    """The converter (and normal-sampler) keywords of :func:`fused_mvm` from a ``TilePreset``
    (``AnalogTile.tile``)."""
    return {"transpose": transpose, "dac_levels": tile.dac_levels, "dac_scaling": tile.dac_scaling,
            "dac_fixed_scale": tile.dac_fixed_scale, "quantize": tile.quantize,
            "adc_levels": tile.adc_levels, "adc_range": tile.backward_range if transpose else tile.adc_range,
            "w_max": w_max, "read_noise": read_noise, "sampler": tile.noise_sampler}


def tile_read(tile, x, transpose: bool = False, *, key=None, work: ReadWork | None = None):
    """``AnalogTile.forward(x)`` (``transpose=False``; x (B, in_features)) or ``.backward(x)``
    (x (B, out_features)) through :func:`fused_mvm`, tile block by tile block and summed as the
    tile sums them; returns (B, out_features) or (B, in_features). Without ``key`` the normals
    come from the tile's generator and sampler: the tile's read, bit for bit. With ``key`` (from
    :func:`read_key`) they are keyed normals drawn in the kernel (device field = block index).
    Event counts stay the tile's business (``AnalogTile._count``)."""
    w, var = tile.devices.weights(), tile.devices.read_variance()
    kw = tile_kwargs(tile.tile, tile.w_max, tile.read_noise, transpose)
    src = {} if not tile.read_noise else ({"rng": tile.rng} if key is None else {"key": key})
    out = None
    for i, (a, b) in enumerate(tile.col_blocks if transpose else tile.row_blocks):
        if transpose:
            part = fused_mvm(x[:, a:b], w[a:b, :], var[a:b, :], block=i, work=work, **src, **kw)
        else:
            part = fused_mvm(x[:, a:b], w[:, a:b], var[:, a:b], block=i, work=work, **src, **kw)
        out = part if out is None else out + part
    return out
