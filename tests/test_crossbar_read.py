"""The fused crossbar read (gpu_model/kernels/crossbar_read.py) against the tile's reference read
(AnalogMatrix.forward / backward: _dac, _mvm, _adc): bit-identical with the read noise off (DAC and
ADC quantisation exactly equal) and with the tile's own normals (the same generator stream);
with keyed normals drawn in the kernel, the same mean and standard deviation over many draws."""
from __future__ import annotations

import math

import numpy as np
import pytest

from gpu_model import IDEAL, JAP2018, AnalogMatrix, TilePreset
from gpu_model.backend import make_backend
from gpu_model.kernels.crossbar_read import ReadWork, fused_mvm, read_key, tile_kwargs, tile_read

pytestmark = pytest.mark.numpy_only("the fused read is a NumPy/Numba kernel")

N_SIGMA = 5.0          # statistical bounds: 5 standard errors (false failure ~ 6e-7 per check)


def matrix(out_f, in_f, tile, seed=0, preset=JAP2018, read_noise=True):
    m = AnalogMatrix(out_f, in_f, preset, tile, make_backend("numpy", seed), w_max=1.0, read_noise=read_noise)
    rng = np.random.default_rng(seed + 100)
    m.program(rng.uniform(-0.8, 0.8, (out_f, in_f)).astype(np.float32))
    return m


def fused_read(m, x, transpose=False, key_step=None, work=None):
    """The tile's forward (or backward) through fused_mvm per tile block (tile_read)."""
    key = None if key_step is None else read_key(7, m.stream, key_step)
    return tile_read(m, x, transpose, key=key, work=work)


def assert_identical(a, b):
    """Same bits (signed zeros included)."""
    np.testing.assert_array_equal(a, b)
    assert a.dtype == b.dtype and np.array_equal(np.signbit(a), np.signbit(b))


def clone_rng(rng):
    g = np.random.Generator(type(rng.bit_generator)())
    g.bit_generator.state = rng.bit_generator.state
    return g


TILES = [
    TilePreset(),                                                   # 8-bit DAC (max), 9-bit ADC
    TilePreset(max_rows=16, max_cols=8),                            # a grid of tile blocks
    TilePreset(dac_scaling="fixed", dac_fixed_scale=0.7, dac_bits=4, adc_bits=5, adc_range=2.0),
    TilePreset(quantize=False),
    TilePreset(adc_range=1.0, adc_range_backward=0.5, adc_bits=6),  # clipping ADC, own backward range
]


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("shape", [(13, 37, 5), (1, 3, 2), (40, 20, 33)])
def test_no_read_noise_bit_identical(tile, shape):
    """Ideal devices (no read noise): DAC and ADC quantisation, forward and transposed, exactly
    the tile's; the variance matmul is skipped."""
    B, K, N = shape
    m = matrix(N, K, tile, preset=IDEAL, read_noise=False)
    rng = np.random.default_rng(B * K)
    x = rng.normal(0, 1.5, (B, K)).astype(np.float32)
    x[0, :] = 0.0                                                   # an all-zero vector (scale 1)
    d = rng.normal(0, 0.3, (B, N)).astype(np.float32)
    assert_identical(fused_read(m, x), m.forward(x))
    assert_identical(fused_read(m, d, transpose=True), m.backward(d))


@pytest.mark.parametrize("tile", TILES[:3] + [TilePreset(noise_sampler="box_muller", max_rows=16)])
def test_tile_normals_bit_identical(tile):
    """With the tile's own generator (its sampler, same stream) the noisy read is the tile's, bit
    for bit, forward and backward, and buffers reused across calls change nothing."""
    B, K, N = 17, 45, 21
    m = matrix(N, K, tile)
    x = np.random.default_rng(1).normal(0, 1, (B, K)).astype(np.float32)
    d = np.random.default_rng(2).normal(0, 0.2, (B, N)).astype(np.float32)
    saved = clone_rng(m.rng)
    ref_f, ref_b = m.forward(x), m.backward(d)
    m.rng = saved
    work = ReadWork()
    assert_identical(fused_read(m, x, work=work), ref_f)
    assert_identical(fused_read(m, d, transpose=True, work=work), ref_b)


def test_noise_argument_bit_identical_and_errors():
    B, K, N = 6, 10, 4
    m = matrix(N, K, TilePreset())
    x = np.random.default_rng(3).normal(size=(B, K)).astype(np.float32)
    z = np.random.default_rng(4).standard_normal((B, N), dtype=np.float32)
    w, var = m.devices.weights(), m.devices.read_variance()
    kw = tile_kwargs(m.tile, m.w_max, True, False)

    class Fixed:                                                   # the tile draws exactly z
        def standard_normal(self, shape, dtype=None):
            return z.copy()

    m.rng = Fixed()
    assert_identical(fused_mvm(x, w, var, noise=z, **kw), m.forward(x))
    with pytest.raises(ValueError, match="exactly one"):
        fused_mvm(x, w, var, **kw)
    with pytest.raises(ValueError, match="exactly one"):
        fused_mvm(x, w, var, noise=z, key=read_key(0, 0, 0), **kw)
    with pytest.raises(ValueError, match="noise must have shape"):
        fused_mvm(x, w, var, noise=z[:, :2], **kw)
    with pytest.raises(ValueError, match="needs"):
        fused_mvm(x[:, :5], w, var, noise=z, **kw)
    with pytest.raises(ValueError, match="dac_scaling"):
        fused_mvm(x, w, var, noise=z, **{**kw, "dac_scaling": "log"})


@pytest.mark.parametrize("tile", [TilePreset(quantize=False), TilePreset(adc_bits=12, adc_range=12.0),
                                  TilePreset(max_rows=16)])
@pytest.mark.parametrize("transpose", [False, True])
def test_keyed_noise_statistics(tile, transpose):
    """Keyed normals in the kernel: the same mean and standard deviation per output as the
    tile's read over many draws of one vector (repeated B times in a batch), forward and
    transposed, and a fresh draw per step and per block."""
    K, N, B = 40, 6, 6000
    m = matrix(N, K, tile, seed=5)
    n_in = N if transpose else K
    x1 = np.random.default_rng(6).uniform(-2, 2, (1, n_in)).astype(np.float32)
    xb = np.repeat(x1, B, axis=0)
    ref = (m.backward(xb) if transpose else m.forward(xb)).astype(np.float64)
    got = fused_read(m, xb, transpose=transpose, key_step=3).astype(np.float64)
    se = np.sqrt(ref.var(0) / B + got.var(0) / B)
    assert np.all(np.abs(got.mean(0) - ref.mean(0)) <= N_SIGMA * se + 1e-6)
    ratio = got.std(0) / ref.std(0)
    assert np.all(np.abs(ratio - 1) < N_SIGMA * math.sqrt(1 / (B - 1)))
    again = fused_read(m, xb, transpose=transpose, key_step=3)
    np.testing.assert_array_equal(again, got.astype(np.float32))    # a pure function of the key
    other = fused_read(m, xb, transpose=transpose, key_step=4)
    assert np.mean(other != again) > 0.5


def test_keyed_noise_matches_the_variance_formula():
    """Unquantised keyed read of one vector: mean x W^T, variance (x^2) Var^T (max DAC scaling
    with s = max|x| undone by the output scale)."""
    K, N, B = 30, 5, 8000
    m = matrix(N, K, TilePreset(quantize=False), seed=8)
    w, var = m.devices.weights().astype(np.float64), m.devices.read_variance().astype(np.float64)
    x1 = np.random.default_rng(9).uniform(-1, 1, (1, K)).astype(np.float32)
    y = fused_read(m, np.repeat(x1, B, axis=0), key_step=0).astype(np.float64)
    x64 = x1.astype(np.float64)
    mean, v = (x64 @ w.T)[0], (x64 ** 2 @ var.T)[0]
    assert np.all(np.abs(y.mean(0) - mean) < N_SIGMA * np.sqrt(v / B))
    assert np.all(np.abs(y.var(0) / v - 1) < N_SIGMA * math.sqrt(2 / (B - 1)))


def test_read_key():
    assert read_key(1, 2, 3) == read_key(1, 2, 3)
    assert len({int(read_key(1, 2, s)) for s in range(100)}) == 100
    assert read_key(1, 2, 3) != read_key(1, 3, 3) != read_key(2, 2, 3)
    with pytest.raises(ValueError, match=">= 0"):
        read_key(0, 0, -1)
