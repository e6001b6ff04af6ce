"""The paper's CNN and char LSTM in plain torch, converted, against the native runs: per-step
outputs and weights on the same config and seed (fp32, ideal devices, noise-free PCM)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.numpy_only("CPU tensors on NumPy tiles")
torch.set_num_threads(1)

import mcasim.torch as mt  # noqa: E402
from gpu_model.backend import make_backend  # noqa: E402
from sim.config import load_config  # noqa: E402
from sim.nn import Optimizer, apply_updates, init_weights, softmax_cross_entropy  # noqa: E402
from sim.nn.recurrent import clip_gradients  # noqa: E402
from sim.tasks.models import INIT_STREAM, build_cnn, make_store  # noqa: E402
from sim.train import RAND_STREAM_BASE  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _cfg(path, mode, **sections):
    over = {"synapse": {"mode": mode}}
    for sec, kv in sections.items():
        over.setdefault(sec, {}).update(kv)
    if mode == "pcm":
        over["synapse"]["read_noise"] = False          # noise-free PCM: no read noise
    return load_config(ROOT / path, over)


def _init_list(cfg, shapes):
    rng = np.random.default_rng(np.random.SeedSequence([cfg.train.seed, INIT_STREAM]))
    return [init_weights(o, i, cfg.model.init, cfg.model.init_gain, rng) for o, i in shapes]


# --- CNN -----------------------------------------------------------------------------------------
CNN_SMALL = dict(model={"conv": [4, "M", 8, "M"], "hidden": [16], "dropout": 0.0},
                 train={"batch_size": 8, "augment": False}, synapse={"w_max": [2.2, 0.66, 0.25, 1.0]})


def _cnn_pair(mode, batch_norm=True, pool=True):
    """(config, backend, native net, converted torch net) of a small paper CNN, same initial
    weights. ``pool=False``: no max pooling (an ADC-quantised conv output has tied maxima, whose
    gradient the native pool shares and torch's gives to one of them)."""
    small = {k: dict(v) for k, v in CNN_SMALL.items()}
    small["model"]["batch_norm"] = batch_norm
    if not pool:
        small["model"]["conv"] = [4, 8]
    size = 16 if pool else 8
    cfg = _cfg("configs/cnn_cifar10_pcm.toml", mode, **small)
    be = make_backend("numpy", cfg.train.seed)
    native = build_cnn(cfg, (size, size, 3), 10, be)
    k = cfg.model.kernel
    flat = (size // 4) ** 2 * 8 if pool else size * size * 8
    w0 = _init_list(cfg, [(4, k * k * 3), (8, k * k * 4), (16, flat), (10, 16)])
    ex = _example("cnn_cifar10")
    net = ex.build_cnn(cfg.model, 3, size, 10)
    lin = [m for m in net if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        for m, w in zip(lin, w0):
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(torch.from_numpy(w).view(m.out_channels, k, k, m.in_channels).permute(0, 3, 1, 2))
            else:
                m.weight.copy_(torch.from_numpy(w))
    model = mt.convert_to_analog(net, cfg)
    return cfg, be, native, model


def _native_store_weights(net):
    return [L.store.weights().copy() for L in net.store_layers()]


def _torch_store_weights(model):
    return [m.store.weights().copy() for m in mt.analog_modules(model)]


def _run_cnn(mode, steps=3, batch_norm=True, native_loss=False, pool=True):
    """Both nets ``steps`` mini-batches on the same data: per step (native logits, torch logits,
    native store weights, torch store weights). ``native_loss``: the torch net's loss gradient is
    the native softmax_cross_entropy's (bit for bit the native error vector)."""
    cfg, be, native, model = _cnn_pair(mode, batch_norm, pool)
    rng = np.random.default_rng(7)
    size = 16 if pool else 8
    data = [(rng.standard_normal((8, size, size, 3)).astype(np.float32), rng.integers(0, 10, 8)) for _ in range(steps)]
    t = cfg.train
    opt_n = Optimizer(t.optimizer, np, t.momentum)
    rr = be.child_rng(RAND_STREAM_BASE + 0)
    aopt = mt.AnalogOptimizer(torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum))
    aopt.set_epoch(0)
    out = []
    for xb, yb in data:
        native.train()
        ln = native.forward(xb)
        _, _, d = softmax_cross_entropy(np, ln, yb)
        opt_n.step_begin()
        native.backward(d)
        apply_updates(native.update_order(), opt_n, t.lr, rr, None, 8)
        for L in native.store_layers():
            if hasattr(L.store, "tile"):
                L.store.tile.advance(t.seconds_per_batch)
        lt = model(torch.from_numpy(xb).permute(0, 3, 1, 2))
        if native_loss:
            lt.backward(torch.from_numpy(softmax_cross_entropy(np, lt.detach().numpy(), yb)[2]))
        else:
            torch.nn.functional.cross_entropy(lt, torch.from_numpy(yb)).backward()
        aopt.step()
        aopt.zero_grad()
        out.append((ln.copy(), lt.detach().numpy().copy(), _native_store_weights(native), _torch_store_weights(model)))
    return out


def _assert_steps(out, logits_tol=0.0, weights_tol=0.0):
    for i, (ln, lt, wn, wt) in enumerate(out):
        if logits_tol == 0.0:
            assert np.array_equal(ln, lt), f"step {i}: logits differ by {np.abs(ln - lt).max()}"
        else:
            np.testing.assert_allclose(lt, ln, rtol=0, atol=logits_tol, err_msg=f"step {i}: logits")
        for j, (a, b) in enumerate(zip(wn, wt)):
            if weights_tol == 0.0:
                assert np.array_equal(a, b), f"step {i}, layer {j}: weights differ by {np.abs(a - b).max()}"
            else:
                np.testing.assert_allclose(b, a, rtol=0, atol=weights_tol, err_msg=f"step {i}, layer {j}")


# float32 tolerances for what torch computes with other arithmetic than the native library (BatchNorm's
# mean/variance reductions, fused Adam): a few float32 ulps of O(1) values. Engineering choice.
LOGITS_TOL = 1e-5
WEIGHTS_TOL = 1e-6


@pytest.mark.parametrize("mode", ["fp32", "ideal", "pcm"])
def test_cnn_bit_identical_without_batchnorm_and_pooling(mode):
    """Conv -> ReLU -> conv -> dense: every logit and every device-derived weight of 3 momentum
    steps bit for bit the native run's, on fp32, ideal and noise-free PCM stores (loss gradient:
    the native softmax cross-entropy's)."""
    _assert_steps(_run_cnn(mode, steps=3, batch_norm=False, native_loss=True, pool=False))


@pytest.mark.parametrize("mode", ["fp32", "ideal", "pcm"])
def test_cnn_with_torch_cross_entropy(mode):
    """torch's own F.cross_entropy: its gradient (softmax - onehot) / B is rounded differently from
    the native one, so fp32 agrees to float tolerance; the pulses of the analog stores agree."""
    _assert_steps(_run_cnn(mode, steps=3, batch_norm=False, native_loss=False, pool=False),
                  logits_tol=LOGITS_TOL, weights_tol=WEIGHTS_TOL if mode == "fp32" else 0.0)


@pytest.mark.parametrize("mode", ["fp32", "ideal"])
def test_cnn_with_max_pooling_bit_identical_on_untied_maxima(mode):
    """With 2x2 max pooling (no BatchNorm): bit-identical for fp32; for ideal devices the first step
    is (the ADC then quantises conv outputs, so later steps have tied maxima: see test below)."""
    out = _run_cnn(mode, steps=3 if mode == "fp32" else 1, batch_norm=False, native_loss=True, pool=True)
    _assert_steps(out)


def test_max_pooling_ties_are_the_known_difference():
    """The one documented difference (docs/torch.md, limits): an ADC-quantised conv output has
    tied maxima in a pooling window; the native pool shares their gradient, torch's MaxPool2d
    gives it to one of them, so pulse counts part after the first update. It must show as a
    difference (this test fails the day the two agree, and the doc must then change)."""
    out = _run_cnn("ideal", steps=3, batch_norm=False, native_loss=True, pool=True)
    assert any(not np.array_equal(a, b) for _, _, wn, wt in out for a, b in zip(wn, wt))


@pytest.mark.parametrize("mode", ["fp32", "ideal", "pcm"])
def test_cnn_with_batchnorm(mode):
    """The paper CNN's BatchNorm (no pooling): torch's BN reduces in another order, so logits
    agree to float tolerance; the analog weights (pulses) stay bit-identical, the fp32 weights
    agree to float tolerance."""
    _assert_steps(_run_cnn(mode, steps=3, batch_norm=True, native_loss=True, pool=False),
                  logits_tol=LOGITS_TOL, weights_tol=WEIGHTS_TOL if mode == "fp32" else 0.0)


# --- char LSTM -----------------------------------------------------------------------------------
LSTM_V, LSTM_H, LSTM_B, LSTM_T = 12, 8, 4, 5     # a tiny vocabulary, state, batch and window
NO_CLIP = 1e9           # clip_norm so large that neither side clips (torch adds 1e-6, native 1e-12)


def _run_lstm(mode, optimizer="momentum", steps=3):
    """Native LSTM + projection (as sim.tasks.charlm) and the example's CharLSTM converted, same
    weights and data, ``steps`` windows with the state carried: per step (logits, logits,
    native weights, torch weights)."""
    from sim.nn import LSTM, Dense
    over = {"train": {"optimizer": optimizer, "batch_size": LSTM_B, "lr": 0.05 if optimizer == "momentum" else 0.002},
            "lstm": {"hidden": LSTM_H, "bptt": LSTM_T, "clip_norm": NO_CLIP}}
    cfg = _cfg("configs/lstm_ptb_pcm.toml", mode, **over)
    t, lc = cfg.train, cfg.lstm
    be = make_backend("numpy", t.seed)
    w0 = _init_list(cfg, [(4 * LSTM_H, LSTM_V + LSTM_H), (LSTM_V, LSTM_H)])
    analog = mode != "fp32"
    wm = cfg.per_layer("w_max", 2) if analog else [None] * 2
    ep = cfg.per_layer("epsilon_uS", 2) if analog else [None] * 2
    stores = [make_store(cfg, be, w.copy(), i, wm[i], ep[i]) for i, w in enumerate(w0)]
    lstm = LSTM("lstm", stores[0], np, LSTM_V, LSTM_H, forget_bias=lc.forget_bias)
    proj = Dense("proj", stores[1], np, bias=True)
    from sim.nn import Sequential
    native = Sequential([lstm, proj], name="charlm")
    ex = _example("lstm_ptb")
    net = ex.CharLSTM(LSTM_V, LSTM_H, 0, lc.input_scale, lc.forget_bias)
    with torch.no_grad():
        w = torch.from_numpy(w0[0])
        net.lstm.weight_ih_l0.copy_(w[:, :LSTM_V])
        net.lstm.weight_hh_l0.copy_(w[:, LSTM_V:])
        net.proj.weight.copy_(torch.from_numpy(w0[1]))
    model = mt.convert_to_analog(net, cfg)
    eye = np.eye(LSTM_V, dtype=np.float32) * lc.input_scale
    if optimizer == "momentum":
        opt_n = Optimizer("momentum", np, t.momentum)
        topt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum)
    else:
        opt_n = Optimizer("adam", np, beta1=t.adam_beta1, beta2=t.adam_beta2, eps=t.adam_eps)
        topt = torch.optim.Adam(model.parameters(), lr=t.lr, betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_eps)
    aopt = mt.AnalogOptimizer(topt)
    aopt.set_epoch(0)
    rr = be.child_rng(RAND_STREAM_BASE + 0)
    rng = np.random.default_rng(11)
    text = rng.integers(0, LSTM_V, (LSTM_B, steps * LSTM_T + 1))
    h = c = None
    state = None
    out = []
    for s in range(steps):
        xb = text[:, s * LSTM_T:(s + 1) * LSTM_T]
        yb = text[:, s * LSTM_T + 1:(s + 1) * LSTM_T + 1].reshape(-1)
        native.train()
        hs = lstm.forward(eye[xb], h, c)
        ln = proj.forward(hs.reshape(-1, LSTM_H))
        h, c = lstm.h, lstm.c
        _, _, d = softmax_cross_entropy(np, ln, yb)
        opt_n.step_begin()
        dh = proj.backward(d, need_dx=True).reshape(LSTM_B, LSTM_T, LSTM_H)
        lstm.backward(dh, need_dx=False)
        clip_gradients(native.params(), lc.clip_norm, np)
        apply_updates(native.update_order(), opt_n, t.lr, rr, None, LSTM_B * LSTM_T)
        for st in stores:
            if hasattr(st, "tile"):
                st.tile.advance(t.seconds_per_batch)
        lt, state = model(torch.from_numpy(xb), state)
        state = tuple(v.detach() for v in state)
        lt.backward(torch.from_numpy(softmax_cross_entropy(np, lt.detach().numpy(), yb)[2]))
        torch.nn.utils.clip_grad_norm_(model.parameters(), lc.clip_norm)
        aopt.step()
        aopt.zero_grad()
        out.append((ln.copy(), lt.detach().numpy().copy(), [st.weights().copy() for st in stores],
                    _torch_store_weights(model)))
    return out


@pytest.mark.parametrize("mode", ["fp32", "ideal", "pcm"])
def test_lstm_bit_identical_with_momentum(mode):
    """The example's CharLSTM (plain nn.LSTM + nn.Linear, one-hot x input_scale) converted: 3 BPTT
    windows with the state carried, momentum SGD: logits and weights bit for bit the native ones."""
    _assert_steps(_run_lstm(mode, "momentum"))


@pytest.mark.parametrize("mode", ["fp32", "pcm"])
def test_lstm_with_adam(mode):
    """Adam (the committed LSTM config's rule): torch's Adam divides by the bias corrections in
    another order than the native rule, so fp32 agrees to float tolerance; on noise-free PCM the
    first window's pulses are identical (later ones may differ by a rounding at a chi threshold)."""
    out = _run_lstm(mode, "adam", steps=3 if mode == "fp32" else 1)
    _assert_steps(out, logits_tol=LOGITS_TOL, weights_tol=WEIGHTS_TOL if mode == "fp32" else 0.0)


def test_event_counts_and_energy_match_the_native_cnn():
    """The converted CNN's event counts (crossbar reads, conversions, pulses, the digital unit's
    MACs, chi updates, optimizer ops) are the native network's, so the energy model gives both the
    same crossbar and update energy (torch does not count activations and the softmax)."""
    from sim.events import EventCounts
    from sim.energy import estimate, load_table
    cfg, be, native, model = _cnn_pair("pcm", batch_norm=False, pool=False)
    rng = np.random.default_rng(3)
    t = cfg.train
    opt_n = Optimizer(t.optimizer, np, t.momentum)
    rr = be.child_rng(RAND_STREAM_BASE + 0)
    aopt = mt.AnalogOptimizer(torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum))
    ev = EventCounts(chi_bits=aopt.events.chi_bits)
    steps, B = 2, 8
    for _ in range(steps):
        xb, yb = rng.standard_normal((B, 8, 8, 3)).astype(np.float32), rng.integers(0, 10, B)
        native.train()
        _, _, d = softmax_cross_entropy(np, native.forward(xb), yb)
        opt_n.step_begin()
        native.backward(d)
        apply_updates(native.update_order(), opt_n, t.lr, rr, ev, B)
        lt = model(torch.from_numpy(xb).permute(0, 3, 1, 2))
        lt.backward(torch.from_numpy(softmax_cross_entropy(np, lt.detach().numpy(), yb)[2]))
        aopt.step()
        aopt.zero_grad()
    for L in native.store_layers():
        ev.add(**{k: v for k, v in L.store.tile.events.as_dict().items() if k in ev.as_dict()})
    nat, tor = ev.as_dict(), mt.tile_events(model, aopt)
    assert tor == nat
    assert tor["cell_reads"] > 0 and tor["set_pulses"] > 0 and tor["update_macs"] > 0
    table = load_table()
    layers = mt.layer_summary(model)
    assert [(e["out"], e["in"]) for e in layers] == [tuple(L.store.shape) for L in native.store_layers()]
    r_t = mt.energy_report(model, images=steps * B, batch_size=B, optimizer=aopt)
    r_n = estimate(nat, steps * B, layers, table, batch_size=B, optimizer="momentum",
                   devices_per_side=cfg.synapse.devices_per_side)
    assert r_t.cm == r_n.cm and r_t.digital == r_n.digital
