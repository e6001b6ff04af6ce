"""The fused CPU engine (gpu_model/kernels): keyed RNG, and FusedSynapses against the reference
DifferentialSynapses.

The two engines draw different random numbers, so they are compared in distribution: tolerances
are 5 standard errors of the difference of the two estimators (fixed seeds, so never flaky), as in
tests/test_devices.py. Where the physics is deterministic (ideal devices, exact reads) they must
agree exactly. The fused engine itself must be bit-reproducible: across thread counts and across a
state_dict round trip.
"""
import dataclasses
import math

import numba
import numpy as np
import pytest

from gpu_model import IDEAL, JAP2018, JOSHI2020, DifferentialSynapses, PresetError, make_backend
from gpu_model.kernels import FusedDeviceState, FusedSynapses
from gpu_model.kernels import device_kernels as dk
from gpu_model.kernels import fused_synapses as fs
from gpu_model.kernels import keyed_rng as kr
from gpu_model.pulses import PulseList

pytestmark = pytest.mark.numpy_only   # the fused engine runs on NumPy (Numba) only

NP = make_backend("numpy", 0)
NO_DRIFT = JAP2018.with_overrides(nu_mean=0.0)
EXACT_READS = NO_DRIFT.with_overrides(read_noise_model="none")


# --- helpers -----------------------------------------------------------------------------------------
def ref(shape, preset=JAP2018, n=1, seed=0, **kw):
    be = make_backend("numpy", seed)
    be.backend_name = "numpy"
    return DifferentialSynapses(shape, preset, be, w_max=1.0, devices_per_side=n, stream=3, **kw)


def fused(shape, preset=JAP2018, n=1, seed=0, **kw):
    return FusedSynapses(shape, preset, NP, w_max=1.0, devices_per_side=n, seed=seed, stream=3, **kw)


def ref_apply(s, idx, counts, verify=False, rng=None):
    """The reference's apply_pulse_list as (set_pulses, refreshes, measured or None, capped or None),
    whether it returns a dict or an UpdateReport."""
    out = s.apply_pulse_list(idx, counts, verify=(rng,) if verify else None)
    if isinstance(out, dict):
        return out["set_pulses"], out["refreshes"], out.get("measured"), out.get("verified_capped")
    v = out.verify
    return out.set_pulses, out.refreshes, (v.measured if v else None), (v.capped if v else None)


def fused_apply(s, idx, counts, step, verify=False, noise=True):
    r = s.apply(PulseList(idx, counts), step, verify=verify, verify_read_noise=noise)
    return (r.set_pulses, r.refreshes, r.verify.measured if r.verify else None,
            r.verify.capped if r.verify else None)


def se_mean(x):
    return x.std() / math.sqrt(x.size)


def se_std(x):
    """Standard error of the sample std (from the sample's 4th central moment)."""
    d = x - x.mean()
    v = (d * d).mean()
    return math.sqrt(max((d ** 4).mean() - v * v, 0.0) / x.size) / (2 * math.sqrt(v) + 1e-30)


def assert_same_distribution(a, b, what, k=5.0):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    tm = k * math.hypot(se_mean(a), se_mean(b)) + 1e-6
    ts = k * math.hypot(se_std(a), se_std(b)) + 1e-6
    assert abs(a.mean() - b.mean()) < tm, f"{what}: mean {a.mean():.5f} vs {b.mean():.5f} (tol {tm:.2g})"
    assert abs(a.std() - b.std()) < ts, f"{what}: std {a.std():.5f} vs {b.std():.5f} (tol {ts:.2g})"


def ref_gplus(s):
    """Reference G+ conductances at t, (N, n_syn)."""
    return s.gp.conductance_at(s.t).reshape(s.n_dev, -1)


def random_list(rng, n_syn, frac, pos_bias=0.5, max_count=4):
    """A training-like pulse list: ~frac of the synapses, counts mostly 1, some 2..max_count."""
    idx = np.flatnonzero(rng.random(n_syn) < frac)
    mag = np.where(rng.random(idx.size) < 0.8, 1, rng.integers(2, max_count + 1, idx.size))
    sign = np.where(rng.random(idx.size) < pos_bias, 1, -1)
    return idx.astype(np.int64), (mag * sign).astype(np.int64)


# --- (a) keyed RNG -----------------------------------------------------------------------------------
def test_keyed_uniform_bits_identical_numpy_numba():
    rng = np.random.default_rng(0)
    n = 200_000
    s = rng.integers(0, 2 ** 62, n)
    d = rng.integers(0, kr.MAX_DEVICE, n)
    j = rng.integers(0, 2 ** 32, n)
    for kind in (kr.KIND_SET_STEP, kr.KIND_PROG_VERIFY):
        key = kr.stream_key(12345, 7, kind, 2 ** 40 + 3)
        a = kr.uniform_np(key, s, d, j)
        b = kr.uniform_nb_array(key, s, d, j)
        assert a.dtype == b.dtype == np.float64 and np.array_equal(a.view(np.uint64), b.view(np.uint64))
        assert np.array_equal(kr.hash_np(key, s[:5], d[:5], j[:5]), kr.hash_np(key, s[:5], d[:5], j[:5]))
        assert 0.0 < a.min() and a.max() < 1.0


def test_keyed_normals_agree_to_float32():
    n = 500_000
    s = np.arange(n, dtype=np.int64)
    key = kr.stream_key(1, 2, kr.KIND_SET_STEP, 3)
    a = kr.normal_np(key, s, s % 96, s % 7)
    b = kr.normal_nb_array(key, s, s % 96, s % 7)
    np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    ulp = np.abs(a32.view(np.int32).astype(np.int64) - b32.view(np.int32).astype(np.int64))
    assert ulp.max() <= 1 and (ulp == 0).mean() > 0.9999
    assert kr.normal_np(key, s[:10], 0, 0, dtype=np.float32).dtype == np.float32


def test_keyed_statistics_and_independence():
    n = 1_000_000
    s = np.arange(n, dtype=np.int64)
    key = kr.stream_key(0, 0, kr.KIND_RESET, 0)
    u = kr.uniform_np(key, s, 0, 0)
    # uniform: mean 1/2, var 1/12, flat histogram (chi-square over 100 bins, 99 dof: < 99 + 5 sqrt(198))
    assert abs(u.mean() - 0.5) < 5 * math.sqrt(1 / 12 / n)
    assert abs(u.var() - 1 / 12) < 5 * math.sqrt(1 / 180 / n)
    h = np.bincount((u * 100).astype(int), minlength=100)
    assert ((h - n / 100) ** 2 / (n / 100)).sum() < 99 + 5 * math.sqrt(198)
    z = kr.normal_np(key, s, 0, 0)
    assert abs(z.mean()) < 5 / math.sqrt(n) and abs(z.std() - 1) < 5 / math.sqrt(2 * n)
    assert abs((z ** 4).mean() - 3) < 5 * math.sqrt(96 / n)              # kurtosis of a normal
    assert abs((np.abs(z) > 3).mean() - 0.0026998) < 5 * math.sqrt(0.0027 / n)
    # neighbouring keys are uncorrelated: draws, devices, synapses, kinds, steps
    others = [kr.normal_np(key, s, 0, 1), kr.normal_np(key, s, 1, 0), kr.normal_np(key, s + 1, 0, 0),
              kr.normal_np(kr.stream_key(0, 0, kr.KIND_SET_STEP, 0), s, 0, 0),
              kr.normal_np(kr.stream_key(0, 0, kr.KIND_RESET, 1), s, 0, 0),
              kr.normal_np(kr.stream_key(0, 1, kr.KIND_RESET, 0), s, 0, 0),
              kr.normal_np(kr.stream_key(1, 0, kr.KIND_RESET, 0), s, 0, 0)]
    for o in others:
        assert abs(np.corrcoef(z, o)[0, 1]) < 5 / math.sqrt(n)
    # stateless: the same key, the same numbers
    assert np.array_equal(kr.normal_np(key, s[:100], 0, 0), z[:100])
    assert len(set(kr.KINDS.values())) == len(kr.KINDS)
    kinds = np.array(sorted(kr.KINDS.values()), np.int64)
    nb = kr.stream_keys_nb(kr.key_prefix(5, 6), kinds, 2 ** 33 + 1)
    assert list(nb) == [kr.stream_key(5, 6, k, 2 ** 33 + 1) for k in kinds]
    with pytest.raises(ValueError, match="kind"):
        kr.stream_key(0, 0, 999, 0)
    with pytest.raises(ValueError, match="step"):
        kr.stream_key(0, 0, kr.KIND_RESET, -1)


# --- (b) device curves from RESET --------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 3])
def test_set_curve_from_reset_matches_reference(n):
    """20k synapses from their fabrication RESET, 20 updates of +1 pulse each: the G+ devices'
    conductance distribution after every update (mean and std) as the reference's."""
    shape = (100, 200)
    a, b = ref(shape, n=n, seed=1), fused(shape, n=n, seed=1)
    idx = np.arange(a.n_syn, dtype=np.int64)
    one = np.ones(a.n_syn, dtype=np.int64)
    for step in range(20):
        ref_apply(a, idx, one)
        fused_apply(b, idx, one, step)
        ga, gb = ref_gplus(a), b.conductances()[0].reshape(n, -1)
        assert_same_distribution(ga, gb, f"N={n} G+ after update {step + 1}")
        na, nb = a.gp.n_set.reshape(n, -1), b.device_counts()[0][0].reshape(n, -1)
        assert np.array_equal(na, nb)                                  # the arbiter's schedule, exactly
    assert a.counters.set_pulses == b.counters.set_pulses == 20 * a.n_syn
    assert abs(a.counters.refreshes - b.counters.refreshes) < 5 * math.sqrt(a.counters.refreshes + b.counters.refreshes + 1)


def test_negative_counts_go_to_g_minus_and_d2d_multiplier():
    pre = JAP2018.with_overrides(step_d2d_std=0.2)
    shape = (100, 200)
    a, b = ref(shape, pre, seed=2), fused(shape, pre, seed=2)
    idx = np.arange(a.n_syn, dtype=np.int64)
    c = np.full(a.n_syn, -3, dtype=np.int64)
    for step in range(3):
        ref_apply(a, idx, c)
        fused_apply(b, idx, c, step)
    gm_a = a.gm.conductance_at(a.t)
    gm_b = b.conductances()[1].reshape(-1)
    assert_same_distribution(gm_a, gm_b, "G- after 9 pulses with d2d")
    assert np.all(b.conductances()[0] < 0.2)                           # G+ untouched (RESET level)
    assert_same_distribution(a.weights(), b.weights(), "W")
    m = b.state.step_mult
    assert abs(m.std() - 0.2) < 5 * 0.2 / math.sqrt(2 * m.size) and abs(m.mean() - 1) < 5 * 0.2 / math.sqrt(m.size)


# --- (c) program-and-verify, refresh and verify readout ----------------------------------------------
@pytest.mark.parametrize("preset,n,cm", [(JAP2018, 1, 0.0), (JAP2018, 3, 0.0), (JAP2018, 1, 2.0),
                                         (JOSHI2020, 2, 0.0)])
def test_programming_matches_reference(preset, n, cm):
    shape = (100, 200)
    w = np.random.default_rng(5).uniform(-0.4, 0.4, shape).astype(np.float32)
    a, b = ref(shape, preset, n=n, refresh_threshold=0.9, common_mode_uS=cm), \
        fused(shape, preset, n=n, refresh_threshold=0.9, common_mode_uS=cm)
    a.program(w)
    b.program(w)
    for ca, cb in ((a.counters.init_prog_pulses, b.counters.init_prog_pulses),
                   (a.counters.init_verify_reads, b.counters.init_verify_reads)):
        assert abs(ca - cb) < 5 * math.sqrt(ca + cb) + 1, (ca, cb)
    assert_same_distribution(a.weights() - w, b.weights() - w, "programming error of W")
    assert_same_distribution(a.read_variance(), b.read_variance(), "read variance")
    assert np.array_equal(a.gp.n_reset.reshape(n, -1), b.device_counts()[1][0].reshape(n, -1))
    if preset.drift_model == "joshi":
        assert_same_distribution(a.gp.nu, b.state.nu[:, :n], "Joshi nu of G+")


@pytest.mark.parametrize("n", [1, 3])
def test_refresh_and_verify_readout_match_reference(n):
    """Training-like updates pushing weights up (to provoke refreshes), verified: refresh counts,
    refresh programming attempts per refresh, and the measured change's mean/std."""
    shape = (100, 200)
    w = np.random.default_rng(6).uniform(-0.3, 0.3, shape).astype(np.float32)
    a, b = ref(shape, n=n, refresh_threshold=0.5), fused(shape, n=n, refresh_threshold=0.5)
    a.program(w)
    b.program(w)
    vrng = np.random.default_rng(99)
    rng = np.random.default_rng(7)
    meas_a, meas_b, cnt = [], [], []
    for step in range(25):
        idx, c = random_list(rng, a.n_syn, 0.3, pos_bias=0.85)
        _, _, ma, _ = ref_apply(a, idx, c, verify=True, rng=vrng)
        _, _, mb, capb = fused_apply(b, idx, c, step, verify=True)
        meas_a.append(ma)
        meas_b.append(mb)
        cnt.append(c)
        a.advance(1.0)
        b.advance(1.0)
    ca, cb = a.counters, b.counters
    assert ca.refreshes > 500
    assert abs(ca.refreshes - cb.refreshes) < 5 * math.sqrt(ca.refreshes + cb.refreshes), (ca, cb)
    assert ca.refresh_resets / ca.refreshes == cb.refresh_resets / cb.refreshes == 2 * n
    pa, pb = ca.refresh_prog_pulses / ca.refreshes, cb.refresh_prog_pulses / cb.refreshes
    assert abs(pa - pb) < 0.05 * pa, (pa, pb)
    ra = (ca.refresh_verify_reads - ca.refreshes) / ca.refreshes
    rb = (cb.refresh_verify_reads - cb.refreshes) / cb.refreshes
    assert abs(ra - rb) < 0.05 * ra
    assert ca.update_verify_reads - 2 * sum(x.size for x in cnt) == ca.refreshes
    assert cb.update_verify_reads - 2 * sum(x.size for x in cnt) == cb.refreshes
    cnt = np.concatenate(cnt)
    ma, mb = np.concatenate(meas_a), np.concatenate(meas_b)
    for k in (1, 2, -1):
        assert_same_distribution(ma[cnt == k], mb[cnt == k], f"measured change, count {k}")
    assert_same_distribution(a.weights(), b.weights(), "W after training")


def test_exact_verify_reads_measure_the_device_change():
    """verify_read_noise=False: the measured change of a pulsed, not refreshed synapse is exactly
    beta (G_after - G_before) of its device."""
    b = fused((50, 60), EXACT_READS, n=2)
    b.program(np.random.default_rng(1).uniform(-0.2, 0.2, (50, 60)))
    idx, c = random_list(np.random.default_rng(2), b.n_syn, 0.2)
    w0 = b.weights().copy().reshape(-1)
    _, n_ref, m, capped = fused_apply(b, idx, c, 0, verify=True, noise=False)
    assert n_ref == 0
    dw = b.weights().reshape(-1)[idx] - w0[idx]
    np.testing.assert_allclose(m, dw, atol=2e-6)


# --- (d) ideal devices -------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 4])
def test_ideal_preset_exact_steps_and_refresh(n):
    shape = (30, 40)
    b = fused(shape, IDEAL, n=n, refresh_threshold=0.5)
    w0 = np.random.default_rng(3).uniform(-0.2, 0.2, shape).astype(np.float32)
    b.program(w0)
    np.testing.assert_allclose(b.weights(), w0, atol=1e-6)
    rng = np.random.default_rng(4)
    total = np.zeros(b.n_syn)
    n_capped = 0
    for step in range(30):
        idx, c = random_list(rng, b.n_syn, 0.3, pos_bias=0.75)
        _, _, m, capped = fused_apply(b, idx, c, step, verify=True)
        # exact reads: the measured change is counts * epsilon_w, refreshes included, except where a
        # refresh had to cut the weight to what the synapse holds (capped)
        np.testing.assert_allclose(m[~capped], c[~capped] * b.epsilon_w, atol=1e-5)
        assert np.all(np.abs(m[capped]) < np.abs(c[capped]) * b.epsilon_w)
        n_capped += int(capped.sum())
        total[idx] += m
    assert n_capped < 0.05 * 30 * 0.3 * b.n_syn
    np.testing.assert_allclose(b.weights().reshape(-1), w0.reshape(-1) + total, atol=1e-5)
    assert b.counters.refreshes > 0
    assert np.all(b.conductances()[0] < 0.5 * IDEAL.g_max + n * 4 * IDEAL.ideal_step)
    np.testing.assert_allclose(b.read_weights(0), b.weights(), atol=1e-6)   # no read noise (cache: a running sum)


def test_ideal_refresh_matches_reference_exactly():
    """Ideal devices, exact reads: the reference and the fused engine give the same weights and counts."""
    shape = (20, 30)
    w0 = np.random.default_rng(8).uniform(-0.2, 0.2, shape).astype(np.float32)
    for n in (1, 3):
        a, b = ref(shape, IDEAL, n=n, refresh_threshold=0.45), fused(shape, IDEAL, n=n, refresh_threshold=0.45)
        a.program(w0)
        b.program(w0)
        rng = np.random.default_rng(9)
        for step in range(40):
            idx, c = random_list(rng, a.n_syn, 0.3)
            ref_apply(a, idx, c)
            fused_apply(b, idx, c, step)
        np.testing.assert_allclose(b.weights(), a.weights(), atol=1e-5)
        np.testing.assert_allclose(b.conductances()[0].reshape(n, -1), ref_gplus(a), atol=1e-4)
        ca, cb = dataclasses.asdict(a.counters), dataclasses.asdict(b.counters)
        # programming pulses ceil((G - g_min)/step): a target on a multiple of the step may round
        # either way (float32 sums in a different order)
        assert abs(ca.pop("refresh_prog_pulses") - cb.pop("refresh_prog_pulses")) <= 0.005 * ca["refreshes"] * n + 2
        assert abs(ca.pop("init_prog_pulses") - cb.pop("init_prog_pulses")) <= 2
        assert ca == cb


# --- (e) determinism: threads and resume -------------------------------------------------------------
def _run(preset, n, steps, seed=0, threads=None, resume_at=None, verify=True, tweak=None):
    b = fused((60, 70), preset, n=n, seed=seed, refresh_threshold=0.5)
    if tweak is not None:
        tweak(b)
    b.program(np.random.default_rng(10).uniform(-0.3, 0.3, (60, 70)))
    rng = np.random.default_rng(11)
    meas = []
    for step in range(steps):
        if step == resume_at:
            st = b.state_dict()
            assert all(isinstance(v, (np.ndarray, int, float)) for v in st.values())
            b = fused((60, 70), preset, n=n, seed=seed + 1, refresh_threshold=0.5)   # seed comes back
            b.load_state_dict(st)
        idx, c = random_list(rng, b.n_syn, 0.3, pos_bias=0.8)
        m = fused_apply(b, idx, c, step, verify=verify)[2]
        meas.append(np.zeros(0, np.float32) if m is None else m)
        b.advance(5.0)
        b.weights()
    return b, np.concatenate(meas)


@pytest.mark.parametrize("preset,n", [(JAP2018, 1), (JAP2018, 3), (JOSHI2020, 2)])
def test_same_result_for_1_and_2_threads_and_across_resume(preset, n, monkeypatch):
    monkeypatch.setattr(fs, "PARALLEL_MIN_ITEMS", 0)          # always the parallel kernel
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        b1, m1 = _run(preset, n, 12)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        b2, m2 = _run(preset, n, 12)
        b3, m3 = _run(preset, n, 12, resume_at=6)
    finally:
        numba.set_num_threads(old)
    assert b1.counters.refreshes > 0
    for b in (b2, b3):
        s1, s2 = b1.state_dict(), b.state_dict()
        assert s1.keys() == s2.keys()
        for k in s1:
            assert np.array_equal(np.asarray(s1[k]), np.asarray(s2[k])), k
    assert np.array_equal(m1, m2) and np.array_equal(m1, m3)
    monkeypatch.setattr(fs, "PARALLEL_MIN_ITEMS", 10 ** 12)   # the serial kernel: the same bits
    b4, m4 = _run(preset, n, 12)
    assert np.array_equal(b4.state.g_prog, b1.state.g_prog) and np.array_equal(m4, m1)


def test_state_dict_lists_the_dataclass_fields_and_layouts_agree():
    b = fused((10, 12), JAP2018, n=2)
    st = b.state_dict()
    for f in dataclasses.fields(FusedDeviceState):
        assert isinstance(st[f.name], np.ndarray) and st[f.name].flags.c_contiguous
    soa = fused((10, 12), JAP2018, n=2, layout="soa")
    for s in (b, soa):
        s.program(np.full((10, 12), 0.1))
        s.apply(PulseList(np.arange(0, 120, 3), np.ones(40, np.int64)), 0, verify=True)
    for k, v in b.state_dict().items():
        assert np.array_equal(np.asarray(v), np.asarray(soa.state_dict()[k])), k


def test_cache_running_sum_and_drift_sync():
    b = fused((40, 50), JAP2018, n=4, refresh_threshold=0.5)
    b.program(np.random.default_rng(12).uniform(-0.3, 0.3, (40, 50)))
    rng = np.random.default_rng(13)
    for step in range(20):
        b.apply(PulseList(*random_list(rng, b.n_syn, 0.3)), step)
    w = b.weights().copy()
    b.sync(force=True)
    np.testing.assert_allclose(w, b.weights(), atol=2e-6)           # before t0: float32 rounding only
    b.advance(1000.0)
    gp, gm = b.conductances()
    np.testing.assert_allclose(b.weights(), b.beta * (gp - gm).sum(0), rtol=1e-4, atol=1e-6)
    assert float(gp.max()) < 0.5 * JAP2018.g_max + 1e-3            # drift only lowers G


# --- (f) errors --------------------------------------------------------------------------------------
def test_bad_input_errors():
    b = fused((3, 4), JAP2018)
    with pytest.raises(ValueError, match="integers"):
        b.apply(PulseList(np.array([0, 1]), np.array([0.5, 1.0])), 0)
    b.apply(PulseList(np.array([0, 1]), np.array([2.0, -1.0])), 0)        # integer-valued floats are fine
    assert b.counters.set_pulses == 3
    with pytest.raises(ValueError, match="shape"):
        b.apply(PulseList(np.array([0, 1]), np.array([1, 1, 1])), 1)
    with pytest.raises(ValueError, match="1-D"):
        b.apply(PulseList(np.array([[0, 1]]), np.array([[1, 1]])), 1)
    with pytest.raises(ValueError, match="ascending"):
        b.apply(PulseList(np.array([3, 1]), np.array([1, 1])), 1)
    with pytest.raises(ValueError, match=r"\[0, 12\)"):
        b.apply(PulseList(np.array([5, 12]), np.array([1, 1])), 1)
    with pytest.raises(TypeError, match="integer"):
        b.apply(PulseList(np.array([0]), np.array([True])), 1)
    with pytest.raises(PresetError, match="step"):
        b.apply(PulseList(np.array([0]), np.array([1])), -1)
    with pytest.raises(ValueError, match="weights"):
        b.program(np.zeros(5))
    assert b.apply(PulseList(np.array([0, 1]), np.array([0, 0])), 2).set_pulses == 0
    r = b.apply(PulseList(np.zeros(0, np.int64), np.zeros(0, np.int64)), 2, verify=True)
    assert r.set_pulses == 0 and r.verify.idx.size == 0


@pytest.mark.parametrize("kw", [dict(w_max=0.0), dict(refresh_threshold=1.5), dict(epsilon_uS=-1.0),
                                dict(drift_cache_rtol=-1), dict(devices_per_side=0),
                                dict(common_mode_uS=19.0), dict(layout="aos"), dict(seed=-1)])
def test_bad_arguments(kw):
    with pytest.raises(PresetError):
        FusedSynapses((3, 4), JAP2018, NP, **{"w_max": 1.0, **kw})


def test_cupy_and_unsupported_options_raise_clearly():
    class FakeCupy:
        name = "cupy"
    with pytest.raises(NotImplementedError, match="tile engine 'reference'"):
        FusedSynapses((3, 4), JAP2018, FakeCupy(), w_max=1.0)
    bad = JAP2018.with_overrides()
    object.__setattr__(bad, "read_noise_model", "telegraph")
    with pytest.raises(PresetError, match="read_noise_model='telegraph'"):
        FusedSynapses((3, 4), bad, NP, w_max=1.0)


# --- (f) certified fast normals ----------------------------------------------------------------------
def test_fast_cos_and_normals_within_their_bounds():
    """cos2pi_fast within COS_FAST_ERR of libm's cos (all 2^32 arguments were checked once with
    cos_fast_max_error(0, 2**32), minutes; here the range's ends, the quarter-turn seams and a spread
    of draws), and normal_fast_nb within NORMAL_FAST_ERR of normal_nb."""
    span = 1 << 17
    for lo in (0, (1 << 30) - span // 2, (1 << 31) - span // 2, 3 * (1 << 30) - span // 2, (1 << 32) - span):
        assert kr.cos_fast_max_error(lo, lo + span) <= kr.COS_FAST_ERR
    n = 1_000_000
    s = np.arange(n, dtype=np.int64)
    key = kr.stream_key(4, 5, kr.KIND_PROG_ATTEMPT, 6)
    a = kr.normal_nb_array(key, s, s % 96, s % 5)
    b = kr.normal_fast_nb_array(key, s, s % 96, s % 5)
    assert np.abs(a - b).max() <= kr.NORMAL_FAST_ERR
    assert 0 < (a != b).mean() < 0.9          # not the same function, but most draws agree to the bit
    # the vectorised draws (log without libm; all 2^32 arguments checked once with log_fast_max_error)
    for lo in (0, (1 << 31) - span // 2, (1 << 32) - span):
        assert kr.log_fast_max_error(lo, lo + span) <= kr.LOG_FAST_ERR
    v = kr.normal_fast_nb_array(key, s, s % 96, s % 5, True)
    assert np.abs(a - v).max() <= kr.NORMAL_FAST_ERR
    out = np.empty(96)
    kr.normal_fast_fill(key, 7, 0, 1, 3, 0, 96, out)                # devices 0..95, draw 3
    assert np.array_equal(out, kr.normal_fast_nb_array(key, np.full(96, 7), np.arange(96), np.full(96, 3), True))


def _exact(s):
    s._M[dk.M_EXACT] = 1


def _perturbed(bound):
    def tweak(s):
        s._P[dk.P_ZPERT] = 1e-4                # fast normals off by up to 1e-4 ...
        if bound:                              # ... and the certification told so
            s._P[dk.P_ZERR] = kr.NORMAL_FAST_ERR + 1e-4
    return tweak


@pytest.mark.parametrize("preset,n,verify", [(JAP2018, 1, True), (JAP2018, 3, True), (JOSHI2020, 2, True),
                                             (JAP2018, 2, False)])
def test_certified_fast_normals_give_the_exact_paths_bits(preset, n, verify):
    """Outcomes with fast normals are those of the exact path (every normal by libm), also when the
    fast normals are perturbed by 1e-4 and the bound says so (many results then fail certification
    and are recomputed); a perturbation the bound does not cover changes them (the check has teeth)."""
    b0, m0 = _run(preset, n, 8, verify=verify, tweak=_exact)
    assert b0.counters.refreshes > 0
    s0 = b0.state_dict()
    for tweak in (None, _perturbed(True)):
        b, m = _run(preset, n, 8, verify=verify, tweak=tweak)
        st = b.state_dict()
        for k in s0:
            assert np.array_equal(np.asarray(s0[k]), np.asarray(st[k])), k
        assert np.array_equal(m0, m)
    b, m = _run(preset, n, 8, verify=verify, tweak=_perturbed(False))
    assert not (np.array_equal(b.state.g_prog, b0.state.g_prog) and np.array_equal(m, m0))
