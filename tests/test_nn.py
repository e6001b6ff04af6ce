"""Layer library: gradient checks (float64, central finite differences) for every layer type and a
small conv net end to end; shapes and errors; conv on crossbar tiles reads every patch on its own."""
from __future__ import annotations

import numpy as np
import pytest

from gpu_model.backend import make_backend
from gpu_model.presets import IDEAL, TilePreset
from gpu_model.tile_config import SynapseConfig, TileConfig
from sim.nn import (AvgPool2d, BatchNorm, Conv2d, Dense, Dropout, Flatten, LayerError, MaxPool2d, ReLU,
                    Sequential, Sigmoid, Tanh, col2im, im2col, softmax_cross_entropy)
from sim.nn.layers import BN_EPS, BN_MOMENTUM
from sim.nn.stores import AnalogWeights, FP32Weights

from tests.conftest import central_difference, to_host

BE = make_backend("numpy", 0)   # CuPy under MCASIM_TEST_BACKEND=cupy (tests/conftest.py)
XP = BE.xp
H = 1e-6          # finite-difference step (float64)


def dev(a):
    """A host array on the backend under test."""
    return XP.asarray(a)


def f64_store(rng, n_out, n_in):
    st = FP32Weights(rng.normal(0, 0.5, (n_out, n_in)), BE)
    st.w = st.w.astype(np.float64)
    return st


def to_f64(net):
    for p in net.params():
        if p.store is None:
            p.value = p.value.astype(np.float64)
    for m in net.modules():
        if isinstance(m, BatchNorm):
            m.running_mean = m.running_mean.astype(np.float64)
            m.running_var = m.running_var.astype(np.float64)


def numeric_grad(f, arr, idx):
    return central_difference(f, arr, idx, H)


def check_layer(layer, x, rng, n_checks=6, params=True):
    """Loss = sum(r * layer(x)) for a fixed random r: analytic input and parameter gradients vs
    finite differences at random positions."""
    y = layer.forward(x)
    r = dev(rng.normal(size=y.shape))

    def loss():
        return float((layer.forward(x) * r).sum())

    layer.forward(x)
    dx = layer.backward(r.copy(), need_dx=True)
    assert dx.shape == x.shape
    for _ in range(n_checks):
        idx = tuple(int(rng.integers(s)) for s in x.shape)
        assert float(dx[idx]) == pytest.approx(numeric_grad(loss, x, idx), rel=1e-5, abs=1e-7)
    if params:
        layer.forward(x)
        layer.backward(r.copy(), need_dx=False)
        for p in layer.params():
            grad = p.grad.copy()
            arr = p.store.w if p.store is not None else p.value
            for _ in range(n_checks):
                idx = tuple(int(rng.integers(s)) for s in arr.shape)
                assert float(grad[idx]) == pytest.approx(numeric_grad(loss, arr, idx), rel=1e-5, abs=1e-7), p.key


def test_dense_gradients():
    rng = np.random.default_rng(0)
    L = Dense("fc", f64_store(rng, 5, 7), XP, gain=True)
    L.b.value = dev(rng.normal(size=5))
    L.g.value = dev(rng.uniform(0.5, 1.5, 5))
    check_layer(L, dev(rng.normal(size=(4, 7))), rng)


def test_dense_sparse_update_covers_live_columns_only():
    rng = np.random.default_rng(1)
    L = Dense("fc", f64_store(rng, 3, 10), XP)
    L.sparse_update = True
    x = rng.normal(size=(4, 10))
    x[:, [1, 4, 5, 8]] = 0.0
    L.forward(dev(x))
    L.backward(dev(rng.normal(size=(4, 3))), need_dx=False)
    assert to_host(L.w.cols).tolist() == [0, 2, 3, 6, 7, 9]
    assert L.w.grad.shape == (3, 6)
    assert L.w.macs == 4 * 3 * 6


@pytest.mark.parametrize("k, stride, pad", [(3, 1, 1), (3, 2, 1), (1, 1, 0), (5, 1, 2), (3, 2, 0)])
def test_conv_gradients(k, stride, pad):
    rng = np.random.default_rng(k * 10 + stride + pad)
    c_in, c_out = 2, 3
    L = Conv2d("conv", f64_store(rng, c_out, k * k * c_in), XP, c_in, k, stride=stride, padding=pad)
    L.b.value = dev(rng.normal(size=c_out))
    x = dev(rng.normal(size=(2, 7, 6, c_in)))
    y = L.forward(x)
    assert y.shape == (2, (7 + 2 * pad - k) // stride + 1, (6 + 2 * pad - k) // stride + 1, c_out)
    check_layer(L, x, rng, n_checks=8)


def test_conv_matches_direct_convolution():
    """im2col conv equals the textbook sum over kernel offsets and input channels."""
    rng = np.random.default_rng(3)
    c_in, c_out, k, pad = 3, 4, 3, 1
    L = Conv2d("conv", f64_store(rng, c_out, k * k * c_in), XP, c_in, k, padding=pad, bias=False)
    x = rng.normal(size=(2, 5, 5, c_in))
    y = to_host(L.forward(dev(x)))
    ker = to_host(L.store.w).reshape(c_out, k, k, c_in)
    xpd = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ref = np.zeros_like(y)
    for i in range(5):
        for j in range(5):
            ref[:, i, j, :] = np.einsum("bhwc,ohwc->bo", xpd[:, i:i + k, j:j + k, :], ker)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


def test_col2im_is_the_adjoint_of_im2col():
    rng = np.random.default_rng(4)
    x = dev(rng.normal(size=(2, 6, 5, 3)))
    cols, Ho, Wo = im2col(XP, x, 3, 2, 1)
    g = dev(rng.normal(size=cols.shape))
    lhs = float((cols * g).sum())
    rhs = float((x * col2im(XP, g, x.shape, 3, 2, 1, Ho, Wo)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-12)


@pytest.mark.parametrize("cls", [MaxPool2d, AvgPool2d])
def test_pool_gradients(cls):
    rng = np.random.default_rng(5)
    L = cls("pool", XP, 2)
    x = dev(rng.normal(size=(2, 4, 6, 3)))
    assert L.forward(x).shape == (2, 2, 3, 3)
    check_layer(L, x, rng, n_checks=10, params=False)


def test_maxpool_values_and_odd_size_error():
    x = XP.arange(16, dtype=float).reshape(1, 4, 4, 1)
    y = MaxPool2d("p", XP, 2).forward(x)
    assert y[0, :, :, 0].tolist() == [[5, 7], [13, 15]]
    with pytest.raises(LayerError, match="not divisible"):
        MaxPool2d("p", XP, 2).forward(XP.zeros((1, 5, 4, 1)))


@pytest.mark.parametrize("cls", [ReLU, Sigmoid, Tanh])
def test_activation_gradients(cls):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(3, 8))
    x[np.abs(x) < 1e-3] = 0.5          # keep ReLU away from its kink
    check_layer(cls("act", XP), dev(x), rng, params=False)


@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 4, 5)])
def test_batchnorm_gradients_and_eval_mode(shape):
    rng = np.random.default_rng(7)
    L = BatchNorm("bn", XP, shape[-1])
    L.gamma.value = dev(rng.uniform(0.5, 1.5, shape[-1]))
    L.beta.value = dev(rng.normal(size=shape[-1]))
    L.running_mean = L.running_mean.astype(np.float64)
    L.running_var = L.running_var.astype(np.float64)
    x = rng.normal(2.0, 3.0, size=shape)
    y = to_host(L.forward(dev(x)))
    y2 = ((y - to_host(L.beta.value)) / to_host(L.gamma.value)).reshape(-1, shape[-1])
    np.testing.assert_allclose(y2.mean(axis=0), 0, atol=1e-10)
    np.testing.assert_allclose(y2.std(axis=0), 1, atol=1e-3)
    # one training pass moves the running statistics by BN_MOMENTUM towards the batch's
    x2 = x.reshape(-1, shape[-1])
    np.testing.assert_allclose(to_host(L.running_mean), BN_MOMENTUM * x2.mean(axis=0), rtol=1e-12)
    m = x2.shape[0]
    np.testing.assert_allclose(to_host(L.running_var), 1 - BN_MOMENTUM + BN_MOMENTUM * x2.var(axis=0) * m / (m - 1),
                               rtol=1e-12)
    check_layer(L, dev(x), rng, n_checks=8)
    # evaluation normalises with the running statistics, not the batch's
    L.training = False
    ye = to_host(L.forward(dev(x))).reshape(-1, shape[-1])
    mean, var = to_host(L.running_mean), to_host(L.running_var)
    ref = (x2 - mean) / np.sqrt(var + BN_EPS) * to_host(L.gamma.value) + to_host(L.beta.value)
    np.testing.assert_allclose(ye, ref, rtol=1e-10)


def test_dropout_masks_and_gradient():
    rng = np.random.default_rng(8)
    L = Dropout("drop", XP, 0.5, BE.child_rng(0))
    x = XP.ones((200, 50))
    y = to_host(L.forward(x))
    assert set(np.unique(y)) == {0.0, 2.0}
    assert abs((y == 0).mean() - 0.5) < 0.02
    d = dev(rng.normal(size=x.shape))
    np.testing.assert_array_equal(to_host(L.backward(d)), to_host(d * L.mask))
    L.training = False
    np.testing.assert_array_equal(to_host(L.forward(x)), to_host(x))


def small_cnn(rng, dtype=np.float64):
    layers = [
        Conv2d("conv1", f64_store(rng, 4, 9 * 2), XP, 2, 3, padding=1), BatchNorm("bn1", XP, 4), ReLU("act1", XP),
        MaxPool2d("pool1", XP, 2),
        Conv2d("conv2", f64_store(rng, 3, 9 * 4), XP, 4, 3, stride=1, padding=1), Tanh("act2", XP),
        AvgPool2d("pool2", XP, 2), Flatten(),
        Dense("fc1", f64_store(rng, 5, 2 * 2 * 3), XP), Sigmoid("act3", XP), Dense("fc2", f64_store(rng, 3, 5), XP),
    ]
    net = Sequential(layers)
    to_f64(net)
    for p in net.params():
        if p.store is None and p.key.endswith(".b"):
            p.value[...] = dev(rng.normal(0, 0.1, p.value.shape))
    return net


def test_small_conv_net_end_to_end_gradient():
    """Softmax cross-entropy through conv, BatchNorm, pooling, dense layers (fp32 mode, float64)."""
    rng = np.random.default_rng(9)
    net = small_cnn(rng)
    x = dev(rng.normal(size=(4, 8, 8, 2)))
    y = dev(rng.integers(0, 3, 4))

    def loss():
        return float(softmax_cross_entropy(XP, net.forward(x), y)[0])

    _, _, d = softmax_cross_entropy(XP, net.forward(x), y)
    dx = net.backward(d, need_dx=True)
    grads = {p.key: p.grad.copy() for p in net.params()}
    for p in net.params():
        arr = p.store.w if p.store is not None else p.value
        for _ in range(4):
            idx = tuple(int(rng.integers(s)) for s in arr.shape)
            assert float(grads[p.key][idx]) == pytest.approx(numeric_grad(loss, arr, idx), rel=1e-4, abs=1e-8), p.key
    for _ in range(4):
        idx = tuple(int(rng.integers(s)) for s in x.shape)
        assert float(dx[idx]) == pytest.approx(numeric_grad(loss, x, idx), rel=1e-4, abs=1e-8)


def test_first_layer_gets_no_input_gradient():
    rng = np.random.default_rng(10)
    net = small_cnn(rng)
    x = dev(rng.normal(size=(2, 8, 8, 2)))
    out = net.forward(x)
    assert net.backward(XP.ones_like(out)) is None


def test_sequential_state_roundtrip_and_duplicate_names():
    rng = np.random.default_rng(11)
    a, b = small_cnn(rng), small_cnn(np.random.default_rng(12))
    a.forward(dev(rng.normal(size=(2, 8, 8, 2))))  # moves BatchNorm running statistics
    b.load_state_dict(a.state_dict(BE))
    for pa, pb in zip(a.params(), b.params()):
        va = pa.store.w if pa.store is not None else pa.value
        vb = pb.store.w if pb.store is not None else pb.value
        np.testing.assert_array_equal(to_host(va), to_host(vb))
    np.testing.assert_array_equal(to_host(a.layers[1].running_mean), to_host(b.layers[1].running_mean))
    with pytest.raises(LayerError, match="duplicate"):
        Sequential([ReLU("x", XP), ReLU("x", XP)])


def test_conv_layer_shape_errors():
    rng = np.random.default_rng(13)
    with pytest.raises(LayerError, match="columns"):
        Conv2d("c", f64_store(rng, 3, 10), XP, 2, 3)
    L = Conv2d("c", f64_store(rng, 3, 18), XP, 2, 3)
    with pytest.raises(LayerError, match="input must be"):
        L.forward(XP.zeros((1, 5, 5, 3)))


def test_analog_conv_reads_every_patch_as_its_own_vector():
    """On crossbar tiles (DAC/ADC on, read noise off) a conv's output equals reading each im2col
    patch alone: every patch gets its own DAC scaling and ADC."""
    be = make_backend("numpy", 1)
    rng = np.random.default_rng(14)
    c_in, c_out, k = 3, 4, 3
    w0 = rng.uniform(-0.4, 0.4, (c_out, k * k * c_in)).astype(np.float32)
    cfg = TileConfig(device=IDEAL.with_overrides(ideal_step=0.1),
                     synapse=SynapseConfig(w_max=1.0, epsilon_uS=0.1, refresh_threshold=0.9, read_noise=False))
    st = AnalogWeights(w0, be, cfg, stream=0)
    L = Conv2d("conv", st, be.xp, c_in, k, padding=1, bias=False)
    x = rng.normal(size=(2, 4, 4, c_in)).astype(np.float32)
    x[0, :2] *= 20.0                    # patches of very different scale
    x = be.xp.asarray(x)
    y = to_host(L.forward(x).reshape(-1, c_out))
    cols, _, _ = im2col(be.xp, x, k, 1, 1)
    one_by_one = np.concatenate([to_host(st.forward(cols[i:i + 1])) for i in range(cols.shape[0])])
    np.testing.assert_array_equal(y, one_by_one)
    assert st.tile.events.fwd_vectors == 2 * cols.shape[0]
