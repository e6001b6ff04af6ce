"""Differential synapses (pulse application, refresh, drift cache) and crossbar tiles (MVM, DAC/ADC,
read-noise shortcut vs explicit noisy reads). Fixed seeds; 5-standard-error tolerances."""
import math

import numpy as np
import pytest

from gpu_model import (IDEAL, JAP2018, AnalogMatrix, DifferentialSynapses, PresetError, TilePreset,
                       make_backend)

from gpu_model.pulses import UpdateReport
from tests.conftest import to_host

BE = make_backend("numpy", 0)   # CuPy under MCASIM_TEST_BACKEND=cupy (tests/conftest.py)
XP = BE.xp

NO_READ_NOISE = dict(read_noise_model="none", read_sigma_slope=0.0, read_sigma_offset=0.0)


def dev(a):
    """A host array on the backend under test."""
    return XP.asarray(a)


def syn(shape=(40, 50), preset=JAP2018, seed=0, **kw):
    kw.setdefault("w_max", 1.0)
    return DifferentialSynapses(shape, preset, make_backend("numpy", seed), **kw)


# --- synapses --------------------------------------------------------------------------------------
def test_exact_signed_pulse_counts():
    s = syn()
    pulses = np.random.default_rng(0).integers(-3, 4, s.shape)
    st = s.apply_pulses(dev(pulses))
    assert st == UpdateReport(set_pulses=int(np.abs(pulses).sum()), refreshes=0)
    assert np.array_equal(to_host(s.gp.n_set).reshape(s.shape), np.maximum(pulses, 0))
    assert np.array_equal(to_host(s.gm.n_set).reshape(s.shape), np.maximum(-pulses, 0))
    assert s.counters.set_pulses == np.abs(pulses).sum()
    # untouched devices keep their state (sparse application)
    untouched = (pulses <= 0).reshape(-1)
    assert np.all(to_host(s.gp.g_prog)[untouched] < 0.2) and np.all(to_host(s.gp.n_reset) == 0)
    # a second call accumulates
    s.apply_pulses(dev(pulses))
    assert np.array_equal(to_host(s.gp.n_set).reshape(s.shape), 2 * np.maximum(pulses, 0))


def test_weight_is_beta_times_difference():
    s = syn(w_max=0.8)
    assert s.beta == pytest.approx(0.8 / 20.0)
    s.apply_pulses(dev(np.random.default_rng(1).integers(-2, 3, s.shape)))
    s.advance(500.0)
    want = s.beta * (s.gp.conductance_at(s.t) - s.gm.conductance_at(s.t))
    np.testing.assert_allclose(to_host(s.weights()), to_host(want).reshape(s.shape), atol=1e-3 * s.beta * 20)


def test_epsilon_derived_from_preset():
    s = syn(w_max=2.0)
    assert s.epsilon_uS == pytest.approx(-0.084 * 0.1 + 0.880 + 1.40 * math.exp(-1 / 2.6))
    assert s.epsilon_w == pytest.approx(s.beta * s.epsilon_uS)
    assert syn(epsilon_uS=0.5).epsilon_uS == 0.5


def test_pulse_argument_checks():
    s = syn(shape=(3, 4))
    s.apply_pulses(dev(np.array([[1.0, 0, -2, 0]] * 3)))     # integer-valued floats are fine
    assert s.counters.set_pulses == 9
    with pytest.raises(ValueError, match="integers"):
        s.apply_pulses(dev(np.full((3, 4), 0.5)))
    with pytest.raises(ValueError, match="shape"):
        s.apply_pulses(dev(np.ones((4, 3), dtype=int)))
    assert s.apply_pulses(dev(np.zeros((3, 4), dtype=int))) == UpdateReport()


@pytest.mark.parametrize("kw", [dict(w_max=0.0), dict(w_max=-1.0), dict(refresh_threshold=0.0),
                                dict(refresh_threshold=1.5), dict(epsilon_uS=-1.0), dict(drift_cache_rtol=-1)])
def test_bad_synapse_arguments(kw):
    with pytest.raises(PresetError):
        syn(**kw)


def test_refresh_triggered_and_weight_kept_ideal():
    """IDEAL devices: the pair passing the threshold is refreshed and keeps its weight exactly."""
    s = syn(shape=(2, 3), preset=IDEAL, refresh_threshold=0.5)        # threshold 10 uS
    thr = 10.0
    s.gp.g_prog[:] = dev(np.array([9.5, 9.5, 2.0, 1.0, 0.0, 0.0]))
    s.gm.g_prog[:] = dev(np.array([4.0, 0.0, 9.6, 0.0, 0.0, 0.0]))
    s.sync(force=True)
    st = s.apply_pulses(dev(np.array([[1, 0, -1], [1, 0, 0]])))      # pairs 0 and 2 cross 10 uS
    assert st.refreshes == 2 and s.counters.refresh_resets == 4
    step = IDEAL.ideal_step
    w = to_host(s.weights()).reshape(-1) / s.beta
    np.testing.assert_allclose(w, [9.5 + step - 4.0, 9.5, 2.0 - 9.6 - step, 1.0 + step, 0, 0], atol=1e-5)
    assert float(s.gm.g_prog[0]) == 0 and float(s.gp.g_prog[2]) == 0  # one device of each pair RESET
    assert (np.array_equal(to_host(s.gp.n_reset), [1, 0, 1, 0, 0, 0])
            and np.array_equal(to_host(s.gm.n_reset), [1, 0, 1, 0, 0, 0]))
    assert float(s.gp.g_prog.max()) < thr and float(s.gm.g_prog.max()) < thr


# --- multi-device synapses ---------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 3])
def test_multi_device_synapse_weight_steps_arbitration_refresh(n):
    """N devices per side: W = beta * sum_k (G+_k - G-_k), beta = w_max / (N g_max); each update
    goes to one device picked round robin; refresh keeps the weight and spreads it over N devices."""
    s = syn(shape=(2, 3), preset=IDEAL, refresh_threshold=0.5, devices_per_side=n)   # threshold 10 uS
    one = syn(shape=(2, 3), preset=IDEAL, refresh_threshold=0.5)
    assert s.beta == pytest.approx(one.beta / n) and s.epsilon_w == pytest.approx(one.epsilon_w / n)
    assert s.gp.size == s.gm.size == 6 * n
    g = np.arange(6 * n, dtype=np.float32).reshape(n, 6) * 0.1
    s.gp.g_prog[:] = dev(g.reshape(-1))
    s.sync(force=True)
    np.testing.assert_allclose(to_host(s.weights()).reshape(-1), s.beta * g.sum(axis=0), rtol=1e-6)
    step = IDEAL.ideal_step
    before = to_host(s.gp.g_prog).copy().reshape(n, 6)
    for k in range(n + 1):                               # n + 1 updates of synapse 4: devices 0, 1, ..., 0
        assert s.apply_pulse_list(dev(np.array([4])), dev(np.array([2]))) == UpdateReport(set_pulses=2)
    grown = (to_host(s.gp.g_prog).reshape(n, 6) - before)[:, 4] / step
    np.testing.assert_allclose(grown, [4] + [2] * (n - 1), atol=1e-4)
    assert int(s.arbiter[4]) == 1 and int(s.arbiter.sum()) == 1
    np.testing.assert_allclose(to_host(s.weights()).reshape(-1)[4], s.beta * (g[:, 4].sum() + 2 * (n + 1) * step),
                               rtol=1e-5)
    # refresh: a device of synapse 1 past 10 uS -> all 2N devices RESET, |W| spread equally over G+
    s.gp.g_prog[1] = 9.9                                  # device 0 of synapse 1
    s.sync(force=True)
    w1 = float(s.weights().reshape(-1)[1])
    st = s.apply_pulse_list(dev(np.array([1])), dev(np.array([1])))   # the arbiter sends it to device 0
    assert st.refreshes == 1 and s.counters.refresh_resets == 2 * n
    devs = np.arange(n) * 6 + 1
    np.testing.assert_allclose(to_host(s.gp.g_prog)[devs], (w1 + s.beta * step) / (s.beta * n), rtol=1e-5)
    assert np.all(to_host(s.gm.g_prog)[devs] == 0)
    np.testing.assert_allclose(to_host(s.weights()).reshape(-1)[1], w1 + s.beta * step, rtol=1e-5)
    # checkpoint state includes the arbiter
    s2 = syn(shape=(2, 3), preset=IDEAL, refresh_threshold=0.5, devices_per_side=n)
    s2.load_state_dict(s.state_dict())
    assert (np.array_equal(to_host(s2.arbiter), to_host(s.arbiter))
            and np.array_equal(to_host(s2.weights()), to_host(s.weights())))


def test_multi_device_programming_and_read_noise_jap():
    """JAP-2018: programmed weights land within tolerance on N = 4 as on one pair (finer, in weight
    units), and the read variance is the sum over the 2N devices."""
    rng = np.random.default_rng(1)
    w = rng.uniform(-0.4, 0.4, (20, 30)).astype(np.float32)
    errs = {}
    for n in (1, 4):
        s = syn(shape=(20, 30), devices_per_side=n, refresh_threshold=0.45)
        s.program(dev(w))
        errs[n] = float(np.abs(to_host(s.weights()) - w).max())
        gp = s.gp.conductance_at(s.t).reshape(n, -1)
        gm = s.gm.conductance_at(s.t).reshape(n, -1)
        var = s.beta ** 2 * ((s.gp.read_sigma(gp.reshape(-1), s.t) ** 2).reshape(n, -1).sum(0)
                             + (s.gm.read_sigma(gm.reshape(-1), s.t) ** 2).reshape(n, -1).sum(0))
        np.testing.assert_allclose(to_host(s.read_variance()).reshape(-1), to_host(var), rtol=1e-5)
    assert errs[4] < errs[1]


@pytest.mark.parametrize("n", [2, 8])
def test_multi_device_cache_running_sum_tracks_recompute(n):
    """N > 1: pulses update the cached W and Var by the pulsed device's change only. Before t0 (no
    drift, the cache is never re-summed) it stays within float32 rounding of a full recompute,
    refreshes included; after drift starts, within drift_cache_rtol; Var stays >= 0."""
    s = syn(shape=(30, 40), devices_per_side=n, refresh_threshold=0.45)
    rng = np.random.default_rng(5)
    s.program(dev(rng.uniform(-0.3, 0.3, s.shape).astype(np.float32)))
    recomputes = []
    orig = s._recompute
    s._recompute = lambda idx=None: (recomputes.append(idx is None), orig(idx))[1]
    refreshes = 0
    for _ in range(60):                                   # 6 s < t0 = 38.6 s: no drift
        p = rng.integers(-3, 4, s.shape) * (rng.random(s.shape) < 0.3)
        refreshes += s.apply_pulses(dev(p)).refreshes
        s.advance(0.1)
    assert refreshes > 0 and True not in recomputes       # only the refreshed synapses were re-summed
    assert len(recomputes) <= refreshes
    w, v = to_host(s.weights()).copy(), to_host(s.read_variance()).copy()
    assert (v >= 0).all()
    s.sync(force=True)
    np.testing.assert_allclose(w, to_host(s.weights()), rtol=0, atol=1e-6 * s.w_max)
    np.testing.assert_allclose(v, to_host(s.read_variance()), rtol=1e-5)
    s.advance(100.0)                                      # past t0: drift
    for _ in range(20):
        s.apply_pulses(dev(rng.integers(-3, 4, s.shape) * (rng.random(s.shape) < 0.3)))
        s.advance(0.5)
    w = to_host(s.weights()).copy()
    g_sum = to_host((s.gp.conductance_at(s.t) + s.gm.conductance_at(s.t)).reshape(n, *s.shape).sum(axis=0))
    s.sync(force=True)
    assert np.all(np.abs(w - to_host(s.weights())) <= 1.1e-3 * s.beta * g_sum + 1e-6 * s.w_max)


def test_multi_device_checkpoint_keeps_the_cache():
    """The running-sum cache of N > 1 is checkpointed: a loaded copy reads and continues bit-exactly."""
    a = syn(shape=(20, 30), devices_per_side=4, refresh_threshold=0.45)
    rng = np.random.default_rng(6)
    a.program(dev(rng.uniform(-0.3, 0.3, a.shape).astype(np.float32)))
    for _ in range(10):
        a.apply_pulses(dev(rng.integers(-2, 3, a.shape)))
        a.advance(0.1)
    b = syn(shape=(20, 30), devices_per_side=4, refresh_threshold=0.45, seed=9)
    b.load_state_dict(a.state_dict())
    b.rng.bit_generator.state = a.rng.bit_generator.state
    assert (np.array_equal(to_host(a.weights()), to_host(b.weights()))
            and np.array_equal(to_host(a.read_variance()), to_host(b.read_variance())))
    for _ in range(10):
        p = dev(rng.integers(-2, 3, a.shape))
        assert a.apply_pulses(p) == b.apply_pulses(p)
        a.advance(0.1)
        b.advance(0.1)
    assert (np.array_equal(to_host(a.weights()), to_host(b.weights()))
            and np.array_equal(to_host(a.read_variance()), to_host(b.read_variance())))


def test_no_drift_before_t0_shortcut_is_exact():
    """Until t - t_prog passes t0 for some device, drift factors are exactly 1: conductance_at is
    g_prog and the cache's scheduled recompute is only a time stamp (bit-identical to recomputing)."""
    s = syn(shape=(30, 30))
    s.apply_pulses(dev(np.random.default_rng(7).integers(-3, 4, s.shape)))
    s.advance(30.0)                                       # < t0 = 38.6 s since fabrication
    assert s.gp.undrifted(s.t) and s.gm.undrifted(s.t)
    np.testing.assert_array_equal(to_host(s.gp.conductance_at(s.t)), to_host(s.gp.g_prog))
    np.testing.assert_array_equal(to_host(s.gp.conductance_at(s.t)), to_host(s.gp.g_prog * s.gp.drift_factor(s.t)))
    w = to_host(s.weights()).copy()                       # drift bound > rtol: a scheduled recompute
    assert s._cache_t == s.t
    s.sync(force=True)
    assert np.array_equal(w, to_host(s.weights()))
    s.advance(10.0)                                       # 40 s: past t0
    assert not s.gp.undrifted(s.t)
    g = s.gp.conductance_at(s.t)
    np.testing.assert_array_equal(to_host(g), to_host(s.gp.g_prog * s.gp.drift_factor(s.t)))
    assert bool((g < s.gp.g_prog).all())
    s.gp.t_prog[:] = s.t                                  # written from outside: the bound follows on request
    s.gp.t_prog_changed()
    assert s.gp.undrifted(s.t + 1.0)
    s.gp.t_prog[0] = s.t - 100.0
    s.gp.t_prog_changed()
    assert not s.gp.undrifted(s.t)


def test_multi_device_bad_argument():
    for bad in (0, 1.5, True):
        with pytest.raises(PresetError, match="devices_per_side"):
            syn(devices_per_side=bad)


def test_refresh_within_programming_tolerance_jap():
    pre = JAP2018.with_overrides(prog_verify_max_pulses=200, **NO_READ_NOISE)
    s = syn(shape=(100, 100), preset=pre)
    rng = np.random.default_rng(2)
    s.gp.g_prog[:] = dev(rng.uniform(0.1, 17, s.gp.size))
    s.gm.g_prog[:] = dev(rng.uniform(0.1, 17, s.gm.size))
    s.sync(force=True)
    w0 = s.weights().copy()
    idx = rng.choice(s.gp.size, 3000, replace=False)
    assert s.refresh(dev(idx)) == 3000
    dw = to_host(s.weights() - w0).reshape(-1)
    assert np.abs(dw[idx]).max() <= s.beta * pre.prog_residual_std * (1 + 1e-5)
    others = np.setdiff1d(np.arange(s.gp.size), idx)
    assert np.all(dw[others] == 0)
    c = s.counters
    assert c.refreshes == 3000 and c.refresh_resets == 6000
    assert c.refresh_prog_pulses >= 3000 and c.refresh_verify_reads == c.refresh_prog_pulses + 3000


def test_program_sets_weights():
    pre = JAP2018.with_overrides(prog_verify_max_pulses=200, **NO_READ_NOISE)
    s = syn(preset=pre, w_max=1.0)
    w = np.random.default_rng(3).uniform(-0.8, 0.8, s.shape).astype(np.float32)
    s.program(dev(w))
    err = np.abs(to_host(s.weights()) - w)   # the RESET partner's conductance is compensated
    assert err.max() <= s.beta * pre.prog_residual_std * (1 + 1e-5)
    assert s.counters.init_prog_pulses >= s.gp.size


def test_clock_and_drift_cache():
    s = syn(shape=(60, 60))
    s.apply_pulses(dev(np.random.default_rng(4).integers(-4, 5, s.shape)))
    exact = lambda: to_host(s.beta * (s.gp.conductance_at(s.t) - s.gm.conductance_at(s.t)).reshape(s.shape))
    w_start = to_host(s.weights()).copy()
    s.advance(1e4)
    w1 = to_host(s.weights()).copy()
    np.testing.assert_allclose(w1, exact(), rtol=1e-5, atol=1e-7)     # past rtol: full recompute
    ratio = (1e4 / 38.6) ** -0.04
    np.testing.assert_allclose(w1, w_start * ratio, rtol=1e-4, atol=1e-7)
    s.advance(0.5)                                                     # moves drift by < 1e-3: cached
    w2 = to_host(s.weights())
    assert np.array_equal(w2, w1)
    np.testing.assert_allclose(w2, exact(), rtol=1.1e-3, atol=1e-7)
    s.advance(0.6)                          # 1.1 s since the last recompute: bound 1.13e-3 > rtol
    np.testing.assert_allclose(to_host(s.weights()), exact(), rtol=1e-5, atol=1e-7)
    assert not np.array_equal(to_host(s.weights()), w1)
    with pytest.raises(ValueError):
        s.advance(-1.0)


def test_same_seed_same_result_synapses():
    def run(seed):
        s = syn(seed=seed)
        rng = np.random.default_rng(9)
        for _ in range(4):
            s.apply_pulses(dev(rng.integers(-2, 3, s.shape)))
            s.advance(60.0)
        return to_host(s.weights()).copy(), to_host(s.read_weights())
    (a, ra), (b, rb), (c, _) = run(1), run(1), run(2)
    assert np.array_equal(a, b) and np.array_equal(ra, rb) and not np.array_equal(a, c)


# --- tiles -----------------------------------------------------------------------------------------
def ideal_matrix(out_f, in_f, tile, seed=0):
    m = AnalogMatrix(out_f, in_f, IDEAL, tile, make_backend("numpy", seed), w_max=1.0, read_noise=False)
    w = np.random.default_rng(seed).uniform(-0.8, 0.8, (out_f, in_f)).astype(np.float32)
    m.devices.program(dev(w))
    return m


def test_tiling_exact_without_converters():
    tile = TilePreset(quantize=False, max_rows=8, max_cols=7)
    m = ideal_matrix(30, 20, tile)
    assert m.n_tiles == 3 * 5
    W = to_host(m.devices.weights())
    rng = np.random.default_rng(1)
    x, d = rng.standard_normal((5, 20)).astype(np.float32), rng.standard_normal((5, 30)).astype(np.float32)
    np.testing.assert_allclose(to_host(m.forward(dev(x))), x @ W.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_host(m.backward(dev(d))), d @ W, rtol=1e-5, atol=1e-5)
    assert m.events.fwd_vectors == 5 and m.events.adc_conversions == 5 * 30 * 3 + 5 * 20 * 5
    with pytest.raises(ValueError, match="shape"):
        m.forward(dev(d))
    with pytest.raises(ValueError, match="shape"):
        m.backward(dev(x))


@pytest.mark.parametrize("bits", [3, 5, 8])
def test_dac_levels(bits):
    tile = TilePreset(dac_bits=bits, adc_bits=24, adc_range=2.0, dac_scaling="fixed", dac_fixed_scale=1.0)
    m = ideal_matrix(1, 1, tile)
    w = float(m.devices.weights()[0, 0])
    x = np.linspace(-1.2, 1.2, 5001, dtype=np.float32)[:, None]
    y = to_host(m.forward(dev(x)))[:, 0] / w
    levels = np.unique(np.round(y, 4))
    assert len(levels) == 2 ** bits - 1
    assert levels.min() == pytest.approx(-1, abs=1e-4) and levels.max() == pytest.approx(1, abs=1e-4)


@pytest.mark.parametrize("bits", [3, 4, 7])
def test_adc_levels_and_saturation(bits):
    r = 0.1
    tile = TilePreset(dac_bits=16, adc_bits=bits, adc_range=r, dac_scaling="fixed", dac_fixed_scale=1.0)
    m = ideal_matrix(1, 1, tile)
    x = np.linspace(-1, 1, 8001, dtype=np.float32)[:, None]
    y = to_host(m.forward(dev(x)))[:, 0]
    assert abs(float(m.devices.weights()[0, 0])) > r     # outputs must saturate
    levels = np.unique(np.round(y, 5))
    assert len(levels) == 2 ** bits - 1
    assert levels.max() == pytest.approx(r, abs=1e-6) and levels.min() == pytest.approx(-r, abs=1e-6)


def test_dac_max_scaling_restores_input_scale():
    m = ideal_matrix(4, 6, TilePreset(dac_bits=12, adc_bits=16))
    x = 37.0 * np.random.default_rng(5).standard_normal((3, 6)).astype(np.float32)
    np.testing.assert_allclose(to_host(m.forward(dev(x))), x @ to_host(m.devices.weights()).T, rtol=2e-3, atol=0.05)


def test_dac_all_zero_vector_reads_zero_and_leaves_the_input_alone():
    """A zero input vector (max |x| = 0) gets scale 1 and reads exactly 0; the DAC never writes into x."""
    m = ideal_matrix(4, 6, TilePreset())
    x = np.random.default_rng(6).standard_normal((3, 6)).astype(np.float32)
    x[1] = 0.0
    x0 = x.copy()
    xd = dev(x)
    y = to_host(m.forward(xd))
    assert np.all(np.isfinite(y)) and np.all(y[1] == 0.0)
    np.testing.assert_array_equal(to_host(xd), x0)


def test_read_noise_shortcut_matches_explicit_reads():
    """forward()'s (x^2) @ Var^T noise vs one explicit noisy read of W per vector: mean and variance."""
    be = make_backend("numpy", 11)
    m = AnalogMatrix(6, 12, JAP2018, TilePreset(quantize=False), be, w_max=1.0)
    rng = np.random.default_rng(0)
    m.devices.gp.g_prog[:] = dev(rng.uniform(0.1, 15, 72))
    m.devices.gm.g_prog[:] = dev(rng.uniform(0.1, 15, 72))
    m.devices.sync(force=True)
    x1 = rng.uniform(-2, 2, (1, 12)).astype(np.float32)
    B = 4000
    xb = dev(np.repeat(x1, B, axis=0))
    ys, ye = to_host(m.forward(xb)).astype(np.float64), to_host(m.explicit_forward(xb)).astype(np.float64)
    # independent expectation from the formulas: sigma = 0.03 G + 0.13 per device
    gp, gm = to_host(m.devices.gp.g_prog).reshape(6, 12), to_host(m.devices.gm.g_prog).reshape(6, 12)
    var_w = m.devices.beta ** 2 * ((0.03 * gp + 0.13) ** 2 + (0.03 * gm + 0.13) ** 2)
    mean = (x1 @ (m.devices.beta * (gp - gm)).T)[0]
    var = (x1 ** 2 @ var_w.T)[0]
    for y in (ys, ye):
        assert np.all(np.abs(y.mean(0) - mean) < 5 * np.sqrt(var / B))
        assert np.all(np.abs(y.var(0) / var - 1) < 5 * math.sqrt(2 / (B - 1)))
    se = np.sqrt(var * 2 / B)
    assert np.all(np.abs(ys.mean(0) - ye.mean(0)) < 5 * se)
    assert np.all(np.abs(ys.var(0) / ye.var(0) - 1) < 5 * 2 * math.sqrt(1 / (B - 1)))


def test_tile_reproducible():
    def run(seed):
        m = AnalogMatrix(20, 30, JAP2018, TilePreset(max_rows=16), make_backend("numpy", seed), w_max=1.0)
        m.devices.program(dev(np.random.default_rng(0).uniform(-0.5, 0.5, (20, 30))))
        x = np.random.default_rng(1).standard_normal((4, 30)).astype(np.float32)
        return to_host(m.forward(dev(x))), to_host(m.backward(XP.ones((4, 20), np.float32)))
    (a, b), (c, d), (e, _) = run(3), run(3), run(4)
    assert np.array_equal(a, c) and np.array_equal(b, d) and not np.array_equal(a, e)


def test_bad_tile_arguments():
    with pytest.raises(ValueError):
        AnalogMatrix(0, 4, JAP2018, TilePreset(), make_backend("numpy"), w_max=1.0)
    with pytest.raises(PresetError):
        AnalogMatrix(4, 4, JAP2018, TilePreset(), make_backend("numpy"), w_max=-1.0)
