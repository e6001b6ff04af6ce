"""mcasim.torch: analog layers against torch's (exact tiles), zero-copy views, state_dict resume,
drift evaluation, the optimizer wrapper, convert_to_analog and its errors (docs/torch.md)."""
from __future__ import annotations

import io
import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)
# CPU tensors on NumPy tiles throughout (the CuPy/CUDA path: tests/test_torch_cuda.py)
pytestmark = pytest.mark.numpy_only("CPU tensors on NumPy tiles")

import mcasim.torch as mt  # noqa: E402
from mcasim.torch._arrays import as_array, as_tensor, check_tensor  # noqa: E402
from sim.config import config_from_dict  # noqa: E402

from torch import nn  # noqa: E402

SECONDS_PER_YEAR = 365 * 86400
# float32 agreement of two implementations of the same arithmetic in another order (BLAS blocking,
# torch's fused kernels): engineering choice, a few ulps of O(1) values
RTOL, ATOL = 1e-5, 1e-6


def _cfg(mode="pcm", engine="reference", **synapse):
    """A one-value-per-layer config (every converted layer gets w_max 1, epsilon 0.5 uS)."""
    syn = {"mode": mode, "w_max": 1.0, "epsilon_uS": 0.5, **synapse}
    return config_from_dict({"synapse": syn, "tile": {"engine": engine}})


EXACT_W_MAX = 4.0     # range of the exact tiles: no initial torch weight is clipped (engineering choice)


def exact_cfg():
    """Exact (noise-free) tiles: ideal devices, no read noise, no DAC/ADC."""
    return config_from_dict({"synapse": {"mode": "ideal", "w_max": EXACT_W_MAX, "epsilon_uS": 0.5, "read_noise": False},
                             "tile": {"quantize": False}})


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


# --- install ---------------------------------------------------------------------------------------
def test_missing_torch_says_how_to_install():
    code = "import sys; sys.modules['torch'] = None; import mcasim.torch"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode != 0
    assert "pip install 'mcasim[torch]'" in r.stderr


def test_public_module_name():
    import mcasim
    assert "torch" in mcasim.__all__ and mt.__name__ == "mcasim.torch"
    assert {"AnalogLinear", "AnalogConv2d", "AnalogLSTM", "AnalogOptimizer", "convert_to_analog"} <= set(mt.__all__)


# --- gradient checks with exact tiles --------------------------------------------------------------
@pytest.mark.parametrize("cfg", [exact_cfg(), _cfg("fp32")], ids=["exact-tile", "fp32"])
def test_linear_matches_nn_linear(cfg):
    torch.manual_seed(1)
    ref = nn.Linear(7, 5)
    a = mt.convert_to_analog(ref, cfg)
    assert isinstance(a, mt.AnalogLinear)
    with torch.no_grad():
        ref.weight.copy_(a.weight)          # the devices' weights (programming rounds them)
    x = torch.randn(2, 3, 7)
    xa, xr = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yr = a(xa), ref(xr)
    torch.testing.assert_close(ya, yr, rtol=RTOL, atol=ATOL)
    g = torch.randn_like(yr)
    ya.backward(g)
    yr.backward(g)
    for u, v in ((xa.grad, xr.grad), (a.weight.grad, ref.weight.grad), (a.bias.grad, ref.bias.grad)):
        torch.testing.assert_close(u, v, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("cfg", [exact_cfg(), _cfg("fp32")], ids=["exact-tile", "fp32"])
@pytest.mark.parametrize("stride,pad,bias", [(1, 1, True), (2, 0, False)])
def test_conv2d_matches_nn_conv2d(cfg, stride, pad, bias):
    torch.manual_seed(2)
    ref = nn.Conv2d(3, 4, 3, stride=stride, padding=pad, bias=bias)
    a = mt.convert_to_analog(ref, cfg)
    assert isinstance(a, mt.AnalogConv2d) and a.weight.shape == ref.weight.shape
    with torch.no_grad():
        ref.weight.copy_(a.weight)
    x = torch.randn(2, 3, 7, 6)
    xa, xr = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yr = a(xa), ref(xr)
    torch.testing.assert_close(ya, yr, rtol=RTOL, atol=ATOL)
    g = torch.randn_like(yr)
    ya.backward(g)
    yr.backward(g)
    torch.testing.assert_close(xa.grad, xr.grad, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(a.weight.grad, ref.weight.grad, rtol=RTOL, atol=ATOL)
    if bias:
        torch.testing.assert_close(a.bias.grad, ref.bias.grad, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("cfg", [exact_cfg(), _cfg("fp32")], ids=["exact-tile", "fp32"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_lstm_matches_nn_lstm(cfg, batch_first):
    torch.manual_seed(3)
    I, H, B, T = 5, 4, 3, 6
    ref = nn.LSTM(I, H, batch_first=batch_first)
    a = mt.convert_to_analog(ref, cfg)
    assert isinstance(a, mt.AnalogLSTM)
    with torch.no_grad():              # one gate matrix and one bias on the analog side
        ref.weight_ih_l0.copy_(a.weight_ih_l0)
        ref.weight_hh_l0.copy_(a.weight_hh_l0)
        ref.bias_ih_l0.copy_(a.bias)
        ref.bias_hh_l0.zero_()
    x = torch.randn(B, T, I) if batch_first else torch.randn(T, B, I)
    h0, c0 = torch.randn(1, B, H), torch.randn(1, B, H)
    leaves = [[t.clone().requires_grad_(True) for t in (x, h0, c0)] for _ in range(2)]
    (ya, (ha, ca)), (yr, (hr, cr)) = a(leaves[0][0], tuple(leaves[0][1:])), ref(leaves[1][0], tuple(leaves[1][1:]))
    for u, v in ((ya, yr), (ha, hr), (ca, cr)):
        torch.testing.assert_close(u, v, rtol=RTOL, atol=ATOL)
    g, gh = torch.randn_like(yr), torch.randn_like(hr)
    ((ya * g).sum() + (ha * gh).sum()).backward()
    ((yr * g).sum() + (hr * gh).sum()).backward()
    for u, v in zip(leaves[0], leaves[1]):
        torch.testing.assert_close(u.grad, v.grad, rtol=RTOL, atol=ATOL)
    gw = torch.cat([ref.weight_ih_l0.grad, ref.weight_hh_l0.grad], dim=1)
    torch.testing.assert_close(a.weight.grad, gw, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(a.bias.grad, ref.bias_ih_l0.grad, rtol=RTOL, atol=ATOL)


def test_lstm_refuses_a_gradient_through_c_n():
    a = mt.convert_to_analog(nn.LSTM(3, 2, batch_first=True), exact_cfg())
    _, (_, c) = a(torch.randn(2, 4, 3))
    with pytest.raises(RuntimeError, match="final cell state"):
        c.sum().backward()


# --- no copies ----------------------------------------------------------------------------------------
def _ptr(a) -> int:
    return a.ctypes.data


@pytest.mark.parametrize("layer", ["linear", "conv", "lstm"])
def test_weight_parameter_shares_the_tiles_memory(layer):
    """The weight Parameter views the store's weight array (no copy), before and after steps."""
    torch.manual_seed(4)
    net = {"linear": nn.Linear(4, 3), "conv": nn.Conv2d(2, 3, 3), "lstm": nn.LSTM(3, 2, batch_first=True)}[layer]
    m = mt.convert_to_analog(net, _cfg())
    opt = mt.AnalogOptimizer(torch.optim.SGD(m.parameters(), lr=0.5))
    x = {"linear": torch.randn(5, 4), "conv": torch.randn(2, 2, 5, 5), "lstm": torch.randn(2, 3, 3)}[layer]
    for _ in range(2):
        assert m.weight.data_ptr() == _ptr(m.store.weights())
        assert mt.same_memory(m.weight, m.store.weights())
        y = m(x)
        (y[0] if isinstance(y, tuple) else y).square().sum().backward()
        opt.step()
        opt.zero_grad()
    assert m.weight.data_ptr() == _ptr(m.store.weights())
    assert opt.steps == 2 and m.tile.updates == 2


def test_inputs_outputs_and_errors_are_views():
    """The tile reads the input tensor's memory, the output tensor is the tile's output array and
    the backward read gets the output gradient's memory (no copies per step)."""
    a = mt.AnalogLinear(6, 4, bias=False, config=_cfg())
    seen = {}
    fwd, bwd = a.store.forward, a.store.backward

    def forward(xa):
        seen["x"] = _ptr(xa)
        seen["y"] = y = fwd(xa)
        return y

    def backward(d):
        seen["d"] = _ptr(d)
        return bwd(d)

    a.store.forward, a.store.backward = forward, backward
    x = torch.randn(3, 6, requires_grad=True)
    y = a(x)
    assert seen["x"] == x.data_ptr()
    assert y.data_ptr() == _ptr(seen["y"])
    g = torch.randn(3, 4)
    y.backward(g)
    assert seen["d"] == g.data_ptr()
    arr = np.ones((2, 3), np.float32)
    assert mt.same_memory(as_tensor(arr), arr) and _ptr(as_array(torch.from_numpy(arr), np)) == _ptr(arr)


# --- state_dict: save, load, continue == uninterrupted ---------------------------------------------
def _train(model, opt, steps, seed):
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        x, y = torch.randn(5, 6, generator=g), torch.randint(0, 3, (5,), generator=g)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    return losses


def _tile_states(model):
    return [m.store.state_dict(m.backend) for m in mt.analog_modules(model)]


def _assert_same_state(a, b, where="state"):
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b)):
            _assert_same_state(u, v, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True), where
        assert np.array_equal(np.signbit(a), np.signbit(b)), where
    else:
        assert a == b, where


@pytest.mark.parametrize("engine", ["reference", "fused"])
def test_state_dict_resume_is_bit_exact(engine):
    """Full PCM (read noise, drift, refresh), momentum: 3 steps, torch.save, a fresh model and
    optimizer, torch.load(weights_only=True), 3 more steps == 6 uninterrupted steps, bit for bit:
    losses, devices, chi, random streams, clocks."""
    cfg = _cfg(engine=engine)

    def fresh(seed=0):
        model = mt.convert_to_analog(_mlp(seed), cfg)
        return model, mt.AnalogOptimizer(torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9))

    m1, o1 = fresh()
    whole = _train(m1, o1, 3, 10) + _train(m1, o1, 3, 11)
    m2, o2 = fresh()
    first = _train(m2, o2, 3, 10)
    buf = io.BytesIO()
    torch.save({"model": m2.state_dict(), "optimizer": o2.state_dict()}, buf)
    buf.seek(0)
    st = torch.load(buf, weights_only=True)
    m3, o3 = fresh(seed=99)                          # other initial weights: all overwritten by the load
    m3.load_state_dict(st["model"])
    o3.load_state_dict(st["optimizer"])
    assert mt.model_time(m3) == mt.model_time(m2)
    resumed = first + _train(m3, o3, 3, 11)
    assert whole == resumed
    _assert_same_state(_tile_states(m1), _tile_states(m3))
    for p, q in zip(m1.parameters(), m3.parameters()):
        assert torch.equal(p, q)
    assert mt.tile_events(m1, o1) == mt.tile_events(m3, o3)


def test_state_dict_carries_chi_and_devices():
    m = mt.convert_to_analog(_mlp(), _cfg())
    o = mt.AnalogOptimizer(torch.optim.SGD(m.parameters(), lr=0.3))
    _train(m, o, 2, 5)
    sd = m.state_dict()
    extra = sd["0._extra_state"]["state"]
    assert extra["digital"]["chi"].shape == (8, 6) and bool((extra["digital"]["chi"] != 0).any())
    assert "devices" in extra
    chi = m[0].store.chi
    assert torch.equal(extra["digital"]["chi"], torch.from_numpy(np.asarray(chi)))


def test_plain_torch_state_dict_programs_the_devices():
    """A state dict of the digital model (no tile state) programs its weights onto the devices."""
    net = _mlp(7)
    m = mt.convert_to_analog(_mlp(0), exact_cfg())
    m.load_state_dict(net.state_dict())
    torch.testing.assert_close(m[0].weight, net[0].weight, rtol=0, atol=1e-6)
    assert m[0].weight.data_ptr() == _ptr(m[0].store.weights())


def test_plain_lstm_state_dict_programs_the_gate_matrix():
    torch.manual_seed(8)
    ref = nn.LSTM(3, 2, batch_first=True)
    a = mt.convert_to_analog(nn.LSTM(3, 2, batch_first=True), exact_cfg())
    a.load_state_dict(ref.state_dict())
    torch.testing.assert_close(a.weight_ih_l0, ref.weight_ih_l0, rtol=0, atol=1e-6)
    torch.testing.assert_close(a.weight_hh_l0, ref.weight_hh_l0, rtol=0, atol=1e-6)
    torch.testing.assert_close(a.bias, (ref.bias_ih_l0 + ref.bias_hh_l0).detach())


def test_state_of_another_store_is_refused():
    m = mt.convert_to_analog(_mlp(), _cfg())
    sd = mt.convert_to_analog(_mlp(), _cfg("fp32")).state_dict()
    with pytest.raises(ValueError, match="store"):
        m.load_state_dict(sd)


# --- drift evaluation, clock, events, energy --------------------------------------------------------
def test_drift_evaluation_on_a_converted_model():
    """mcasim evaluate's logic: accuracy-like figure after drift, raw and with GDC; GDC factors
    > 1 after a year (drift lowers the conductances), ~1 right after training; the clock is
    restored and the reads are not training events."""
    m = mt.convert_to_analog(_mlp(), _cfg())
    o = mt.AnalogOptimizer(torch.optim.SGD(m.parameters(), lr=0.3), seconds_per_step=1.0)
    _train(m, o, 4, 3)
    assert mt.model_time(m) == 4.0
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g)
    ev0 = mt.tile_events(m, o)

    def mean_out(model):
        return float(model(x).abs().mean())

    res = mt.evaluate_drift(m, mean_out, [0.0, SECONDS_PER_YEAR], calibration=[x])
    assert res["t_end_of_training_s"] == 4.0 and mt.model_time(m) == 4.0
    p0, p1 = res["points"]
    assert p1["value"] < p0["value"]                                  # outputs shrink with drift
    assert all(s > 1.0 for s in p1["gdc_scales"])
    # right after training the factors only see read noise: within 5 % of 1 (engineering bound)
    assert all(abs(s - 1.0) < 0.05 for s in p0["gdc_scales"])
    assert abs(p1["value_gdc"] - p0["value"]) < abs(p1["value"] - p0["value"])
    assert mt.tile_events(m, o) == ev0 and m.training
    assert all(mm.out_scale is None for mm in mt.analog_modules(m))


def test_events_and_energy():
    """Event counts of the converted model: reads per vector and layer, the digital unit's work,
    and the energy model on them."""
    m = mt.convert_to_analog(_mlp(), _cfg())
    o = mt.AnalogOptimizer(torch.optim.SGD(m.parameters(), lr=0.3, momentum=0.9))
    _train(m, o, 3, 1)
    ev = mt.tile_events(m, o)
    B, steps = 5, 3
    assert ev["fwd_vectors"] == 2 * B * steps                    # two layers, B vectors each step
    assert ev["bwd_vectors"] == B * steps                        # the first layer needs no input error
    assert ev["cell_reads"] == B * steps * (8 * 6 + 3 * 8) + B * steps * 3 * 8
    assert ev["update_macs"] == steps * B * (8 * 6 + 3 * 8)
    assert ev["chi_updates"] == steps * (8 * 6 + 3 * 8)
    assert ev["bias_updates"] == steps * (8 + 3)
    assert ev["optimizer_ops"] == steps * 3 * (8 * 6 + 3 * 8 + 8 + 3)     # momentum: 3 ops per weight
    assert ev["set_pulses"] == sum(mm.tile.events.set_pulses for mm in mt.analog_modules(m)) > 0
    rep = mt.energy_report(m, images=B * steps, batch_size=B, optimizer=o)
    assert rep.cm_total > 0 and rep.digital_total > 0 and np.isfinite(rep.ratio)
    with mt.uncounted(m):
        m(torch.randn(4, 6))
    assert mt.tile_events(m, o) == ev


# --- the optimizer wrapper ------------------------------------------------------------------------------
@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.SGD(p, lr=0.1),
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
    lambda p: torch.optim.Adam(p, lr=0.01),
    lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
], ids=["sgd", "nesterov", "sgd-weight-decay", "adam", "adamw"])
def test_fp32_stores_train_as_plain_torch(make_opt):
    """On fp32 stores the wrapped optimizer's updates are the torch rule's: the converted model
    follows the plain torch model step by step (float tolerance: w + step vs in-place fused ops)."""
    plain = _mlp(5)
    m = mt.convert_to_analog(plain, _cfg("fp32"))
    o1, o2 = make_opt(plain.parameters()), mt.AnalogOptimizer(make_opt(m.parameters()))
    l1, l2 = _train(plain, o1, 4, 2), _train(m, o2, 4, 2)
    np.testing.assert_allclose(l2, l1, rtol=RTOL)
    for p, q in zip(plain.parameters(), m.parameters()):
        torch.testing.assert_close(q, p, rtol=RTOL, atol=ATOL)


def test_optimizer_needs_a_torch_optimizer():
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        mt.AnalogOptimizer([1, 2])


# --- convert_to_analog -----------------------------------------------------------------------------------
class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(10, 4)
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.dil = nn.Conv2d(2, 2, 3, dilation=2)
        self.head = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))


def test_convert_replaces_supported_layers_and_names_the_rest():
    with pytest.warns(mt.UnsupportedLayerWarning, match=r"emb: Embedding.*dil: dilation"):
        m = mt.convert_to_analog(_Net(), _cfg())
    assert isinstance(m.conv, mt.AnalogConv2d) and isinstance(m.head[0], mt.AnalogLinear)
    assert isinstance(m.emb, nn.Embedding) and isinstance(m.dil, nn.Conv2d) and isinstance(m.bn, nn.BatchNorm2d)
    assert [mm.layer_index for mm in mt.analog_modules(m)] == [0, 1, 2]
    with pytest.raises(mt.ConvertError, match=r"emb: Embedding"):
        mt.convert_to_analog(_Net(), _cfg(), unsupported="error")


def test_convert_skip_and_copy():
    net = _Net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mt.UnsupportedLayerWarning)
        m = mt.convert_to_analog(net, _cfg(), skip=("first", "last"))
        assert isinstance(m.conv, nn.Conv2d) and isinstance(m.head[2], nn.Linear)
        assert isinstance(m.head[0], mt.AnalogLinear) and m.head[0].layer_index == 0
        assert isinstance(net.head[0], nn.Linear)                       # the original is left alone
        m = mt.convert_to_analog(net, _cfg(), skip="head.0")
        assert isinstance(m.head[0], nn.Linear) and isinstance(m.head[2], mt.AnalogLinear)
        with pytest.raises(mt.ConvertError, match="no supported layer named 'nope'"):
            mt.convert_to_analog(net, _cfg(), skip="nope")


def test_convert_shared_module_is_one_tile():
    lin = nn.Linear(3, 3)
    net = nn.Sequential(lin, nn.ReLU(), lin)
    m = mt.convert_to_analog(net, _cfg())
    assert m[0] is m[2] and isinstance(m[0], mt.AnalogLinear)


def test_convert_per_layer_list_of_wrong_length_names_the_layers():
    cfg = config_from_dict({"synapse": {"mode": "pcm", "w_max": [1.0, 2.0], "epsilon_uS": 0.5}})
    with pytest.raises(mt.ConvertError, match=r"synapse.w_max has 2 values but 3 layers.*0, 2, 4"):
        mt.convert_to_analog(nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2), nn.ReLU(),
                                           nn.Linear(2, 2)), cfg)


def test_per_layer_values_follow_the_converted_order():
    cfg = config_from_dict({"synapse": {"mode": "pcm", "w_max": [1.0, 2.0], "epsilon_uS": 0.5}})
    m = mt.convert_to_analog(_mlp(), cfg)
    assert [mm.tile.w_max for mm in mt.analog_modules(m)] == [1.0, 2.0]


# --- clear errors --------------------------------------------------------------------------------------------
def test_dtype_and_device_errors_say_what_to_do():
    a = mt.AnalogLinear(3, 2, config=_cfg())
    with pytest.raises(mt.AnalogTensorError, match=r"float32.*x.float\(\)"):
        a(torch.randn(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        a(torch.randn(2, 4))

    class FakeCupy:                      # any array module but NumPy stands for the GPU side
        pass

    with pytest.raises(mt.AnalogTensorError, match=r"CuPy.*x.cuda\(\)"):
        check_tensor(torch.randn(2), FakeCupy, "input")



def test_rtl_digital_unit_from_torch_matches_golden():
    """synapse.dpu = "rtl": the Verilated digital unit in the loop of a converted model gives the
    golden model's devices bit for bit (verified updates on)."""
    out = {}
    for dpu in ("golden", "rtl"):
        m = mt.convert_to_analog(_mlp(), _cfg(dpu=dpu, verified_update=True))
        o = mt.AnalogOptimizer(torch.optim.SGD(m.parameters(), lr=0.5))
        _train(m, o, 3, 4)
        out[dpu] = (_tile_states(m), mt.tile_events(m, o))
        assert out[dpu][1]["set_pulses"] > 0
    _assert_same_state(out["golden"][0], out["rtl"][0])
    assert out["golden"][1] == out["rtl"][1]
