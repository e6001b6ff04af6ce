"""PCM device model: statistics against the preset formulas, drift, read noise, programming.

Tolerances are 5 standard errors of the estimator (fixed seeds, so never flaky) — tight enough that
a wrong coefficient in a formula fails.
"""
import math

import numpy as np
import pytest

from gpu_model import (IDEAL, JAP2018, JOSHI2020, PCMArray, PresetError, TilePreset, get_pcm_preset,
                       make_backend)
from gpu_model.presets import JOSHI_NU_MU, JOSHI_NU_SIGMA, JOSHI_PROG, JOSHI_QS

from tests.conftest import to_host

XP = make_backend("numpy", 0).xp   # CuPy under MCASIM_TEST_BACKEND=cupy (tests/conftest.py)
N = 200_000
DECAY = math.exp(-1 / 2.6)


def dev(a):
    """A host array (or scalar) on the backend under test."""
    return XP.asarray(a)


def ones(n):
    return XP.ones(n, dtype=XP.int64)


def arr(preset, n=N, seed=0, g=None, p=None):
    a = PCMArray((n,), preset, make_backend("numpy", seed))
    if g is not None:
        a.g_prog[:] = dev(g)
    if p is not None:
        a.hist[:] = dev(p)
    return a


def assert_moments(x, mean, std, what=""):
    x = to_host(x)
    n = x.size
    se_m, se_s = std / math.sqrt(n), std / math.sqrt(2 * n)
    assert abs(x.mean() - mean) < 5 * se_m + 1e-6, f"{what}: mean {x.mean():.5f} vs {mean:.5f} (se {se_m:.2g})"
    assert abs(x.std() - std) < 5 * se_s + 1e-6, f"{what}: std {x.std():.5f} vs {std:.5f} (se {se_s:.2g})"


def jap_mu_sigma(g, p):
    """The JAP 2018 formulas, written independently of the preset object."""
    return -0.084 * g + 0.880 + 1.40 * p, max(0.091 * g + 0.260 + 2.15 * p, 0.0)


# --- SET step statistics ---------------------------------------------------------------------------
@pytest.mark.parametrize("g0,p0", [(4.0, 0.0), (10.0, 0.6), (7.0, 0.3)])
def test_set_step_matches_jap2018(g0, p0):
    # states where clipping at g_min / g_max is > 4.5 sigma away (negligible)
    a = arr(JAP2018, g=g0, p=p0)
    idx = XP.arange(N)
    applied = a.apply_set_pulses(idx, ones(N), t=0.0)
    assert applied == N and np.all(to_host(a.n_set) == 1)
    p1 = p0 * DECAY
    np.testing.assert_allclose(to_host(a.hist), p1, rtol=1e-6)
    mu, sigma = jap_mu_sigma(g0, p1)
    assert_moments(to_host(a.g_prog).astype(np.float64) - g0, mu, sigma, f"dG at G={g0}, P={p0}")


def test_sigma_is_floored_at_zero():
    pre = JAP2018.with_overrides(set_sigma_offset=-100.0)
    a = arr(pre, n=1000, g=5.0, p=0.5)
    a.apply_set_pulses(XP.arange(1000), ones(1000), 0.0)
    mu, _ = jap_mu_sigma(5.0, 0.5 * DECAY)
    np.testing.assert_allclose(to_host(a.g_prog), 5.0 + mu, atol=2e-5)


def test_multi_pulse_counts_follow_recursion_exactly():
    """Deterministic steps (sigma floored to 0): a mixed-count call equals the per-device recursion."""
    pre = JAP2018.with_overrides(set_sigma_offset=-100.0)
    rng = np.random.default_rng(1)
    n = 5000
    g0 = rng.uniform(0.5, 6.0, n).astype(np.float32)
    p0 = rng.uniform(0.0, 1.0, n).astype(np.float32)
    a = arr(pre, n=n, g=g0, p=p0)
    counts = rng.integers(0, 7, n)
    idx = rng.permutation(n)[: n // 2]             # a subset, in random order
    applied = a.apply_set_pulses(dev(idx), dev(counts[idx]), 0.0)
    assert applied == counts[idx].sum()
    g, p = g0.astype(np.float64), p0.astype(np.float64)
    want_n = np.zeros(n, dtype=np.int64)
    for i in idx:
        for _ in range(counts[i]):
            p[i] *= DECAY
            g[i] = min(max(g[i] + jap_mu_sigma(g[i], p[i])[0], 0.1), 20.0)
        want_n[i] = counts[i]
    np.testing.assert_allclose(to_host(a.g_prog), g, atol=1e-4)
    np.testing.assert_allclose(to_host(a.hist), p, atol=1e-6)
    assert np.array_equal(to_host(a.n_set), want_n)         # exact pulse counts, untouched devices zero


def test_multi_pulse_call_matches_repeated_single_pulses():
    """Stochastic: 3 pulses in one call have the same distribution as 3 calls of one pulse."""
    n = 100_000
    a, b = arr(JAP2018, n=n, seed=1, g=5.0, p=0.5), arr(JAP2018, n=n, seed=2, g=5.0, p=0.5)
    idx = XP.arange(n)
    a.apply_set_pulses(idx, XP.full(n, 3, dtype=XP.int64), 0.0)
    for _ in range(3):
        b.apply_set_pulses(idx, ones(n), 0.0)
    ga, gb = to_host(a.g_prog).astype(np.float64), to_host(b.g_prog).astype(np.float64)
    se = math.sqrt(ga.var() / n + gb.var() / n)
    assert abs(ga.mean() - gb.mean()) < 5 * se
    assert abs(ga.std() / gb.std() - 1) < 5 * math.sqrt(1 / n)


def test_device_to_device_multiplier():
    s = 0.2
    pre = JAP2018.with_overrides(step_d2d_std=s, set_sigma_offset=-100.0)   # dG = m * mu exactly
    a = arr(pre, g=5.0, p=0.0)
    a.apply_set_pulses(XP.arange(N), ones(N), 0.0)
    mu, _ = jap_mu_sigma(5.0, 0.0)
    assert_moments(to_host(a.g_prog).astype(np.float64) - 5.0, mu, s * mu, "d2d")
    # the multiplier is a fixed property of each device: same ratio on the next pulse
    g1 = to_host(a.g_prog).copy()
    m1 = (g1 - 5.0) / mu
    a.apply_set_pulses(XP.arange(N), ones(N), 0.0)
    mu2 = -0.084 * g1 + 0.880
    np.testing.assert_allclose((to_host(a.g_prog) - g1) / mu2, m1, atol=2e-3)


def test_negative_counts_rejected():
    a = arr(JAP2018, n=10)
    with pytest.raises(ValueError, match=">= 0"):
        a.apply_set_pulses(XP.arange(3), dev(np.array([1, -1, 2])), 0.0)


def test_reset_statistics():
    a = arr(JAP2018)
    # G ~ N(0.1, 0.01) clipped at g_min = 0.1: mean of max(X, 0.1) = 0.1 + 0.01 * phi(0)
    g = to_host(a.g_prog)
    assert abs(g.mean() - (0.1 + 0.01 / math.sqrt(2 * math.pi))) < 5 * 0.01 / math.sqrt(N)
    assert g.min() >= 0.1 and np.all(to_host(a.hist) == 1) and np.all(to_host(a.n_reset) == 0)
    idx = np.arange(0, N, 2)
    a.g_prog[:] = 7.0
    a.reset(dev(idx), t=5.0)
    g, n_reset, t_prog = to_host(a.g_prog), to_host(a.n_reset), to_host(a.t_prog)
    assert np.all(n_reset[idx] == 1) and np.all(n_reset[1::2] == 0)
    assert g[idx].max() < 0.2 and np.all(g[1::2] == 7.0) and np.all(t_prog[idx] == 5.0)


def test_mean_step_after_reset():
    p1 = DECAY
    want = -0.084 * 0.1 + 0.880 + 1.40 * p1
    assert JAP2018.mean_step_after_reset(1) == pytest.approx(want, rel=1e-12)
    assert IDEAL.mean_step_after_reset(1) == IDEAL.ideal_step


# --- drift -------------------------------------------------------------------------------------------
def fit_nu(a, times, read=False):
    """Per-device least-squares slope of log G vs log(t/t0): returns -slope (= nu)."""
    x = np.log(np.asarray(times) / a.preset.drift_t0)
    y = np.stack([np.log(to_host(a.read(t) if read else a.conductance_at(t))) for t in times]).astype(np.float64)
    xc = x - x.mean()
    return -(xc[:, None] * (y - y.mean(0))).sum(0) / (xc ** 2).sum()


def test_drift_fit_recovers_nu_distribution():
    n = 100_000
    pre = JAP2018.with_overrides(nu_std=0.01)
    a = arr(pre, n=n, g=10.0)
    a._update_nu(XP.arange(n))
    times = JAP2018.drift_t0 * np.logspace(0, 4, 9)
    nu = fit_nu(a, times)
    assert_moments(nu, 0.04, 0.01, "fitted nu")
    # no drift before t0
    np.testing.assert_array_equal(to_host(a.conductance_at(0.5 * pre.drift_t0)), to_host(a.g_prog))


def test_drift_fit_from_noisy_reads_default_preset():
    n = 100_000
    a = arr(JAP2018, n=n, g=10.0)
    times = JAP2018.drift_t0 * np.logspace(0.5, 4, 6)
    x = np.log(times / JAP2018.drift_t0)
    y = np.log([float(a.read(t).astype(np.float64).mean()) for t in times])
    slope = np.polyfit(x, y, 1)[0]
    # read noise 0.03*G+0.13 ~ 0.4 uS on 10 uS over 1e5 devices: SE of log-mean ~ 1.3e-4
    assert abs(-slope - 0.04) < 2e-3


def clipped_moments(mu, sd):
    """Mean and std of max(X, 0), X ~ N(mu, sd)."""
    a = mu / sd
    phi, Phi = math.exp(-a * a / 2) / math.sqrt(2 * math.pi), 0.5 * (1 + math.erf(a / math.sqrt(2)))
    m = mu * Phi + sd * phi
    m2 = (mu * mu + sd * sd) * Phi + mu * sd * phi
    return m, math.sqrt(m2 - m * m)


@pytest.mark.parametrize("G", [1.0, 5.0])
def test_joshi_drift_exponent_distribution(G):
    pre = JOSHI2020.with_overrides(prog_noise_model="none")
    a = arr(pre, n=N)
    a.program_verify(XP.arange(N), XP.full(N, G, dtype=XP.float32), t=0.0)
    g = G / 25.0
    mu_nu = min(max(-0.0155 * math.log(g) + 0.0244, 0.049), 0.1)
    sd_nu = min(max(-0.0125 * math.log(g) - 0.0059, 0.008), 0.045)
    m, s = clipped_moments(mu_nu, sd_nu)
    assert_moments(to_host(a.nu).astype(np.float64), m, s, "Joshi nu")
    nu_fit = fit_nu(a, pre.drift_t0 * np.logspace(0, 4, 5))
    np.testing.assert_allclose(nu_fit, to_host(a.nu), atol=2e-4)


def test_joshi_constants_match_paper():
    assert JOSHI_NU_MU == (-0.0155, 0.0244, 0.049, 0.1)
    assert JOSHI_NU_SIGMA == (-0.0125, -0.0059, 0.008, 0.045)
    assert JOSHI_QS == (0.0088, 0.65, 0.2)
    assert JOSHI_PROG == (-1.1731, 1.9650, 0.2635)
    assert (JOSHI2020.g_max, JOSHI2020.drift_t0, JOSHI2020.t_read) == (25.0, 20.0, 250e-9)
    assert (JAP2018.g_max, JAP2018.g_min, JAP2018.drift_t0, JAP2018.nu_mean) == (20.0, 0.1, 38.6, 0.04)


# --- read noise ---------------------------------------------------------------------------------------
def test_jap_read_noise_fresh_each_read():
    a = arr(JAP2018, g=10.0)
    r1, r2 = to_host(a.read(0.0)).astype(np.float64), to_host(a.read(0.0)).astype(np.float64)
    assert_moments(r1, 10.0, 0.03 * 10 + 0.13, "read")
    assert abs(np.corrcoef(r1, r2)[0, 1]) < 5 / math.sqrt(N)
    np.testing.assert_array_equal(to_host(a.g_prog), 10.0)  # reading does not disturb the state


def test_joshi_1f_read_noise():
    pre = JOSHI2020.with_overrides(prog_noise_model="none")
    a = arr(pre)
    a.program_verify(XP.arange(N), XP.full(N, 5.0, dtype=XP.float32), t=0.0)
    t = 1000.0
    gd = to_host(a.conductance_at(t)).astype(np.float64)
    np.testing.assert_allclose(gd, 5.0 * (t / 20.0) ** (-to_host(a.nu).astype(np.float64)), rtol=1e-5)
    qs = min(0.0088 / (5.0 / 25.0) ** 0.65, 0.2)
    sig = gd * qs * math.sqrt(math.log((t + 250e-9) / (2 * 250e-9)))
    z = (to_host(a.read(t)) - gd) / sig
    assert_moments(z, 0.0, 1.0, "standardised 1/f read noise")


def test_ideal_preset_exact():
    a = arr(IDEAL, n=100)
    assert np.all(to_host(a.g_prog) == 0)
    counts = np.arange(100) % 5
    a.apply_set_pulses(XP.arange(100), dev(counts), 0.0)
    np.testing.assert_allclose(to_host(a.g_prog), np.minimum(counts * IDEAL.ideal_step, IDEAL.g_max), rtol=1e-6)
    np.testing.assert_array_equal(to_host(a.read(1e6)), to_host(a.g_prog))      # no drift, no read noise


# --- program-and-verify ---------------------------------------------------------------------------------
def test_jap_program_verify_within_tolerance():
    pre = JAP2018.with_overrides(read_noise_model="none", read_sigma_slope=0.0, read_sigma_offset=0.0,
                                 prog_verify_max_pulses=200)
    n = 20_000
    a = arr(pre, n=n)
    target = np.random.default_rng(3).uniform(1, 18, n).astype(np.float32)
    st = a.program_verify(XP.arange(n), dev(target), t=2.0)
    assert st.failed == 0 and st.pulses == st.verify_reads and st.pulses > n
    assert np.abs(to_host(a.g_prog) - target).max() <= pre.prog_residual_std + 1e-5
    assert np.all(to_host(a.t_prog) == 2.0)
    # history term: that of the mean SET trajectory from RESET at the first pulse reaching the target
    gs, ps = pre.mean_set_trajectory()
    n_inc = next((k for k in range(1, len(gs)) if gs[k] <= gs[k - 1] + 1e-6), len(gs))
    k = np.minimum(np.searchsorted(np.asarray(gs[:n_inc], np.float32), target), n_inc - 1)
    hist = to_host(a.hist)
    np.testing.assert_allclose(hist, np.asarray(ps, np.float32)[k], rtol=1e-6)
    order = np.argsort(target)
    assert np.all(np.diff(hist[order]) <= 1e-7)             # higher targets took more pulses
    assert hist.max() <= np.exp(-1 / pre.history_tau_pulses) + 1e-6


def test_joshi_programming_noise():
    a = arr(JOSHI2020)
    st = a.program_verify(XP.arange(N), XP.full(N, 12.5, dtype=XP.float32), t=0.0)
    g = 0.5
    sd = max(-1.1731 * g * g + 1.9650 * g + 0.2635, 0)
    assert st.pulses == N
    assert_moments(to_host(a.g_prog).astype(np.float64), 12.5, sd, "Joshi programming noise")


# --- reproducibility and validation -------------------------------------------------------------------
def test_same_seed_same_result():
    def run(seed):
        a = arr(JAP2018, n=5000, seed=seed)
        rng = np.random.default_rng(0)
        for k in range(5):
            idx = rng.choice(5000, 800, replace=False)
            a.apply_set_pulses(dev(idx), dev(rng.integers(1, 4, 800)), t=100.0 * k)
        return to_host(a.g_prog).copy(), to_host(a.read(1000.0))
    (g1, r1), (g2, r2), (g3, _) = run(5), run(5), run(6)
    assert np.array_equal(g1, g2) and np.array_equal(r1, r2)
    assert not np.array_equal(g1, g3)


@pytest.mark.parametrize("kw", [dict(g_max=-20.0), dict(g_max=0.0), dict(g_min=30.0), dict(drift_t0=0.0),
                                dict(history_tau_pulses=0.0), dict(drift_model="linear"),
                                dict(read_noise_model="pink"), dict(prog_verify_max_pulses=0)])
def test_bad_presets_rejected(kw):
    with pytest.raises(PresetError, match="jap2018"):
        JAP2018.with_overrides(**kw)


def test_bad_preset_names_and_fields():
    with pytest.raises(PresetError, match="unknown PCM preset 'nope'.*jap2018"):
        get_pcm_preset("nope")
    with pytest.raises(PresetError, match="unknown PCM preset field"):
        JAP2018.with_overrides(gmax=3)
    with pytest.raises(PresetError, match="ideal_step"):
        IDEAL.with_overrides(ideal_step=0.0)
    assert get_pcm_preset("joshi2020") is JOSHI2020


@pytest.mark.parametrize("kw", [dict(dac_bits=0), dict(adc_bits=0), dict(adc_bits=1), dict(adc_range=0.0),
                                dict(max_rows=0), dict(dac_scaling="min")])
def test_bad_tile_presets_rejected(kw):
    with pytest.raises(PresetError):
        TilePreset(**kw)


def test_blocked_program_verify_has_the_loop_statistics():
    """The GPU's blocked program-and-verify (several attempts per round) against the one-attempt
    loop, both run here on the same backend: the same distribution of the programmed error and of
    the attempts, and the same books (pulses = verify reads, failures within the pulse budget)."""
    be = make_backend("numpy", 0)
    xp, n = be.xp, 40_000
    target = xp.asarray(np.random.default_rng(1).uniform(1.0, 15.0, n).astype(np.float32))
    res = {}
    for blocked in (False, True):
        d = PCMArray((n,), JAP2018, be, rng=be.child_rng(5 + blocked))
        d.blocked_verify = blocked
        st = d.program_verify(xp.arange(n), target, t=0.0)
        err = to_host(d.g_prog - target)
        res[blocked] = (st, err)
        assert st.pulses == st.verify_reads and st.pulses >= n
    (s0, e0), (s1, e1) = res[False], res[True]
    assert abs(s1.pulses / s0.pulses - 1) < 0.03               # mean attempts per device
    assert abs(s1.failed - s0.failed) <= 5 * np.sqrt(max(s0.failed, 1)) + 5
    assert abs(e1.mean() - e0.mean()) < 5 * e0.std() / np.sqrt(n) * np.sqrt(2)
    assert abs(e1.std() / e0.std() - 1) < 0.03
    ok0, ok1 = np.abs(e0) <= 3 * JAP2018.prog_residual_std, np.abs(e1) <= 3 * JAP2018.prog_residual_std
    assert abs(ok1.mean() - ok0.mean()) < 0.01


def test_blocked_program_verify_small_blocks_and_budget():
    """A block cap smaller than the pending set (whole-array programming) still spends at most
    prog_verify_max_pulses attempts per device."""
    import gpu_model.devices as devices
    be = make_backend("numpy", 0)
    xp, n = be.xp, 5_000
    d = PCMArray((n,), JAP2018, be, rng=be.child_rng(3))
    d.blocked_verify = True
    old = devices.VERIFY_BLOCK_ELEMENTS
    devices.VERIFY_BLOCK_ELEMENTS = 3 * n          # 3 attempts per round
    try:
        st = d.program_verify(xp.arange(n), xp.full(n, 8.0, dtype=xp.float32), t=0.0, tolerance=0.01)
    finally:
        devices.VERIFY_BLOCK_ELEMENTS = old
    assert n < st.pulses <= n * JAP2018.prog_verify_max_pulses
    assert st.failed > 0           # a tolerance this tight leaves some outside it after the budget
