"""The transposed pass uses its own ADC range (programmable gain)."""
import numpy as np

from gpu_model import IDEAL, AnalogMatrix, TilePreset, make_backend

from tests.conftest import to_host


def _levels(tile, backward):
    be = make_backend("numpy", 0)   # CuPy under MCASIM_TEST_BACKEND=cupy (tests/conftest.py)
    m = AnalogMatrix(10, 30, IDEAL, tile, be, w_max=1.0)
    rng = np.random.default_rng(0)
    m.devices.program(be.xp.asarray(rng.uniform(-0.3, 0.3, (10, 30)).astype(np.float32)))
    if backward:
        d = rng.standard_normal((200, 10)).astype(np.float32)
        y = to_host(m.backward(be.xp.asarray(d))) / np.abs(d).max(axis=1, keepdims=True)
    else:
        x = rng.standard_normal((200, 30)).astype(np.float32)
        y = to_host(m.forward(be.xp.asarray(x))) / np.abs(x).max(axis=1, keepdims=True)
    return y / m.devices.w_max


def test_backward_range_sets_backward_step_only():
    tile = TilePreset(adc_bits=6, adc_range=8.0, adc_range_backward=1.0)
    step_b = 1.0 / ((tile.adc_levels - 1) // 2)
    yb = _levels(tile, backward=True)
    k = yb / step_b
    assert np.allclose(k, np.rint(k), atol=1e-3)            # on the finer backward grid
    assert np.abs(yb).max() <= 1.0 + 1e-6                   # clipped to the backward range
    yf = _levels(tile, backward=False)
    step_f = 8.0 / ((tile.adc_levels - 1) // 2)
    kf = yf / step_f
    assert np.allclose(kf, np.rint(kf), atol=1e-3)
    assert not np.allclose(k[np.abs(k) > 0.5], np.rint(k[np.abs(k) > 0.5] * step_b / step_f) * step_f / step_b)
    assert TilePreset().backward_range == TilePreset().adc_range
