"""The "fast" layer engine against the "reference" engine (sim/nn/fast.py, sim/nn/layers.py):
bit-identical where the kernels keep the reference's operation order (im2col, col2im, max
pooling, average-pooling backward, ReLU backward, BatchNorm, the LSTM steps), float32-equal where
they cannot (the average-pooling forward: another summation order); the layer library's gradient checks on both
engines; an fp32 CNN (and a PCM one) and an fp32 LSTM train to the same losses on both engines
(bit for bit where every kernel on the path is bit-identical)."""
from __future__ import annotations

import numpy as np
import pytest

import tests.test_cnn as tcnn
import tests.test_lstm as tlstm
import tests.test_nn as tnn
from gpu_model.backend import make_backend
from sim.nn import LSTM, AvgPool2d, BatchNorm, MaxPool2d, ReLU, col2im, im2col
from sim.nn.layers import LAYER_ENGINES, LayerError, get_layer_engine, layer_engine, set_layer_engine
from sim.nn.stores import FP32Weights
from sim.train import Trainer
from tests.conftest import to_host

BE = make_backend("numpy", 0)   # CuPy under MCASIM_TEST_BACKEND=cupy (tests/conftest.py)
XP = BE.xp
F32_RTOL = 1e-5    # float32-equal: a few ulp (2^-23 = 1.2e-7) of accumulated difference
LOSS_RTOL = 1e-4   # losses after a few training steps on the two engines


def dev(a):
    return XP.asarray(a)


def both(fn):
    """fn() on the reference engine, then on the fast one: (reference result, fast result)."""
    with layer_engine("reference"):
        ref = fn()
    with layer_engine("fast"):
        fast = fn()
    return ref, fast


def assert_identical(a, b, what=""):
    """Same dtype, shape and bits (signed zeros included)."""
    a, b = to_host(a), to_host(b)
    assert a.dtype == b.dtype and a.shape == b.shape, what
    np.testing.assert_array_equal(a, b, err_msg=what)
    assert np.array_equal(np.signbit(a), np.signbit(b)), f"{what}: signed zeros differ"


CONV_SHAPES = [  # (B, H, W, C, k, stride, pad): odd sizes, strides, paddings, 1x1 and 5x5 kernels
    (2, 7, 6, 3, 3, 1, 1), (3, 9, 5, 2, 3, 2, 1), (2, 5, 5, 4, 1, 1, 0), (1, 8, 7, 2, 5, 1, 2),
    (2, 7, 7, 3, 3, 2, 0), (1, 11, 4, 1, 3, 3, 2), (4, 6, 6, 16, 3, 1, 1),
]


def test_engine_switch():
    assert LAYER_ENGINES == ("reference", "fast") and get_layer_engine() == "fast"
    with layer_engine("reference"):
        assert get_layer_engine() == "reference"
    assert get_layer_engine() == "fast"
    with pytest.raises(LayerError, match="unknown layer engine"):
        set_layer_engine("turbo")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B, H, W, C, k, stride, pad", CONV_SHAPES)
def test_im2col_col2im_bit_identical(B, H, W, C, k, stride, pad, dtype):
    rng = np.random.default_rng(B * 100 + H * 10 + k)
    x = dev(rng.normal(size=(B, H, W, C)).astype(dtype))
    (cr, Ho, Wo), (cf, Ho2, Wo2) = both(lambda: im2col(XP, x, k, stride, pad))
    assert (Ho, Wo) == (Ho2, Wo2)
    assert_identical(cr, cf, "im2col")
    bufs = {}
    for _ in range(2):          # the buffers a layer keeps: the second call reuses them
        cb, _, _ = im2col(XP, x, k, stride, pad, engine="fast", bufs=bufs)
        assert_identical(cr, cb, "im2col into reused buffers")
    g = dev(rng.normal(size=cr.shape).astype(dtype))
    gr, gf = both(lambda: col2im(XP, g, x.shape, k, stride, pad, Ho, Wo))
    assert_identical(gr, gf, "col2im")


@pytest.mark.parametrize("shape", [(3, 6, 8, 5), (2, 4, 4, 1), (5, 10, 2, 7)])
def test_pooling_fast_vs_reference(shape):
    rng = np.random.default_rng(sum(shape))
    x = rng.normal(size=shape).astype(np.float32)
    x[0, 0, 0, :] = x[0, 0, 1, :]                 # tied maxima share the gradient
    x[-1, :2, :2, 0] = 0.0                        # a window of four ties (ReLU zeros)
    x = dev(x)
    d = dev(rng.normal(size=(shape[0], shape[1] // 2, shape[2] // 2, shape[3])).astype(np.float32))

    def run(cls):
        L = cls("pool", XP, 2)
        return L.forward(x), L.backward(d)

    (yr, gr), (yf, gf) = both(lambda: run(MaxPool2d))
    assert_identical(yr, yf, "maxpool forward")
    assert_identical(gr, gf, "maxpool backward")
    (yr, gr), (yf, gf) = both(lambda: run(AvgPool2d))
    np.testing.assert_allclose(to_host(yf), to_host(yr), rtol=F32_RTOL, atol=1e-7)
    assert_identical(gr, gf, "avgpool backward")


def test_relu_backward_bit_identical():
    rng = np.random.default_rng(12)
    z = rng.normal(size=(4, 5, 5, 3)).astype(np.float32)
    z[0, 0, 0, :] = 0.0                                   # at the kink: no gradient
    d = rng.normal(size=z.shape).astype(np.float32)

    def run():
        L = ReLU("act", XP)
        return L.forward(dev(z)), L.backward(dev(d))

    (yr, gr), (yf, gf) = both(run)
    assert_identical(yr, yf, "relu forward")
    assert_identical(gr, gf, "relu backward")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(6, 5), (7, 3), (3, 4, 4, 5), (16, 8, 8, 32), (1, 3, 3, 2)])
def test_batchnorm_bit_identical(shape, dtype):
    rng = np.random.default_rng(len(shape) * 7 + shape[-1])
    n = shape[-1]
    x = dev((rng.normal(size=shape) * 3 + 2).astype(dtype))
    d = dev(rng.normal(size=shape).astype(dtype))
    gamma, beta = rng.uniform(0.5, 1.5, n).astype(dtype), rng.normal(size=n).astype(dtype)

    def run():
        L = BatchNorm("bn", XP, n, dtype=dtype)
        L.gamma.value[...], L.beta.value[...] = dev(gamma), dev(beta)
        L.running_mean, L.running_var = L.running_mean.astype(dtype), L.running_var.astype(dtype)
        y = L.forward(x)
        dx = L.backward(d.copy())
        out = [y, dx, L.gamma.grad, L.beta.grad, L.running_mean.copy(), L.running_var.copy()]
        L.backward(d.copy(), need_dx=False)
        out += [L.gamma.grad, L.beta.grad]
        L.training = False
        out.append(L.forward(x))
        return out

    ref, fast = both(run)
    names = ["y", "dx", "dgamma", "dbeta", "running_mean", "running_var", "dgamma (no dx)", "dbeta (no dx)", "y eval"]
    for name, a, b in zip(names, ref, fast):
        assert_identical(a, b, name)


def lstm_pair(rng, B, T, n_in, H, dtype):
    w = rng.normal(0, 0.3, (4 * H, n_in + H)).astype(dtype)
    L = LSTM("lstm", FP32Weights(w, BE), XP, n_in, H, dtype=dtype)
    L.store.w = L.store.w.astype(dtype)
    L.b.value[...] = dev(rng.normal(0, 0.3, 4 * H).astype(dtype))
    return L


@pytest.mark.parametrize("B, T, n_in, H", [(3, 7, 4, 5), (1, 1, 3, 2), (8, 20, 50, 33)])
def test_lstm_fast_vs_reference(B, T, n_in, H):
    """Forward and backward (from one and the same forward) bit-identical."""
    rng = np.random.default_rng(B + T + H)
    dt = np.float32
    L = lstm_pair(rng, B, T, n_in, H, dt)
    x = dev(rng.normal(size=(B, T, n_in)).astype(dt))
    h0, c0 = dev(rng.normal(0, 0.5, (B, H)).astype(dt)), dev(rng.normal(0, 0.5, (B, H)).astype(dt))
    r = dev(rng.normal(size=(B, T, H)).astype(dt))
    (hr, cr), (hf, cf) = both(lambda: (L.forward(x, h0, c0), L.c))
    L._cache = None
    assert_identical(hr, hf, "h_seq")
    assert_identical(cr, cf, "c_T")
    with layer_engine("reference"):
        L.forward(x, h0, c0)
    cache = L._cache

    def back():
        L._cache = cache
        dx = L.backward(r.copy(), need_dx=True, need_dh0=True)
        return [dx, L.dh0, L.dc0, L.w.grad, L.b.grad]

    ref, fast = both(back)
    for name, a, b in zip(["dx", "dh0", "dc0", "dW", "db"], ref, fast):
        assert_identical(a, b, name)


# --- the layer library's gradient checks (float64, finite differences) on both engines -------------
@pytest.mark.parametrize("engine", LAYER_ENGINES)
@pytest.mark.parametrize("k, stride, pad", [(3, 1, 1), (3, 2, 1), (1, 1, 0), (5, 1, 2), (3, 2, 0)])
def test_conv_gradients_on_both_engines(engine, k, stride, pad):
    with layer_engine(engine):
        tnn.test_conv_gradients(k, stride, pad)


@pytest.mark.parametrize("engine", LAYER_ENGINES)
def test_layer_gradient_checks_on_both_engines(engine):
    with layer_engine(engine):
        for cls in (MaxPool2d, AvgPool2d):
            tnn.test_pool_gradients(cls)
        tnn.test_activation_gradients(ReLU)
        for shape in [(6, 5), (3, 4, 4, 5)]:
            tnn.test_batchnorm_gradients_and_eval_mode(shape)
        tnn.test_conv_matches_direct_convolution()
        tnn.test_col2im_is_the_adjoint_of_im2col()
        tnn.test_maxpool_values_and_odd_size_error()
        tnn.test_small_conv_net_end_to_end_gradient()
        tlstm.test_lstm_gradient_check_through_time()
        tlstm.test_lstm_with_projection_and_cross_entropy_gradient()


# --- fp32 networks: the same losses on both engines ------------------------------------------------
def train_losses(tmp_path, cfg, ds, steps: int):
    tr = Trainer(cfg, ds, make_backend("numpy", cfg.train.seed), tmp_path, progress=False)
    keys = tr.task.epoch_batches(0)[:steps]
    rng = tr.be.child_rng(7)
    return [float(tr.step(k, tr.lr_at(0), rng)["loss_sum"]) for k in keys], tr


@pytest.mark.numpy_only("the fast kernels run on NumPy arrays")
@pytest.mark.parametrize("mode, pool, exact", [("fp32", "max", True), ("fp32", "avg", False), ("pcm", "max", True)])
def test_cnn_same_losses_on_both_engines(tmp_path, mode, pool, exact):
    """A CNN trains to the same losses and weights on both engines: bit for bit with max pooling
    (every kernel on its path is bit-identical; PCM crossbars included: the same reads, pulses
    and device states), to float32 tolerance with average pooling."""
    steps = 6 if mode == "fp32" else 3
    cfg = tcnn.cnn_cfg(mode, model={"pool": pool})
    (lr, tr_r), (lf, tr_f) = both(lambda: train_losses(tmp_path, cfg, tcnn.image_dataset(), steps))
    assert len(lr) == steps and lr[-1] != lr[0]
    for a, b in zip(tr_r.task.store_layers(), tr_f.task.store_layers()):
        wa, wb = to_host(a.store.weights()), to_host(b.store.weights())
        if exact:
            np.testing.assert_array_equal(wb, wa)
        else:
            np.testing.assert_allclose(wb, wa, rtol=1e-4, atol=1e-5)
    if exact:
        assert lf == lr
    else:
        np.testing.assert_allclose(lf, lr, rtol=LOSS_RTOL)


@pytest.mark.numpy_only("the fast kernels run on NumPy arrays")
def test_fp32_lstm_same_losses_on_both_engines(tmp_path):
    """The char LSTM trains to the same losses, bit for bit, on both engines."""
    steps = 6
    (lr, tr_r), (lf, tr_f) = both(lambda: train_losses(tmp_path, tlstm.lstm_cfg("fp32"), tlstm.tiny_corpus(), steps))
    assert len(lr) == steps and lr[-1] != lr[0]
    assert lf == lr
    for a, b in zip(tr_r.task.store_layers(), tr_f.task.store_layers()):
        np.testing.assert_array_equal(to_host(b.store.weights()), to_host(a.store.weights()))
