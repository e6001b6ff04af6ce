"""Verified updates (synapse.verified_update): the digital unit returns (asked - measured) to chi.

The bookkeeping identity that makes it useful: with exact verify reads, everything the trainer
asked for is either on the devices, pending in chi, or pending in the feedback buffer,
    W_now - W_0 + chi * eps_w + feedback = sum of the updates (up to chi's rounding),
whatever the devices did with their pulses. Without verification the device's own errors
(the JAP-2018 step spread and its nonlinearity) stay in the weight.
"""
import json

import numpy as np
import pytest

from gpu_model import JAP2018, make_backend
from gpu_model.presets import IDEAL
from gpu_model.tile_config import SynapseConfig, TileConfig
from sim.cli import main
from sim.nn.stores import AnalogWeights

from tests.conftest import to_host

NO_DRIFT = JAP2018.with_overrides(drift_model="constant", nu_mean=0.0, nu_std=0.0)
# exact reads everywhere (also the refresh's own read of W, which a verified update takes as the
# refresh's "before": with read noise its error stays in the weight, as on a chip)
EXACT_READS = NO_DRIFT.with_overrides(read_noise_model="none")


def _store(preset, verified, read_noise=False, shape=(40, 30), seed=0, eps=1.5, devices=1, gain=1.0,
           anti_windup=False, w0=None):
    be = make_backend("numpy", seed)        # CuPy under MCASIM_TEST_BACKEND=cupy (tests/conftest.py)
    if w0 is None:
        w0 = np.random.default_rng(seed).normal(0, 0.05, shape).astype(np.float32)
    syn = SynapseConfig(w_max=1.0, epsilon_uS=eps, refresh_threshold=0.45, read_noise=read_noise,
                        verified_update=verified, devices_per_side=devices, verify_gain=gain,
                        verify_anti_windup=anti_windup)
    return AnalogWeights(w0, be, TileConfig(device=preset, synapse=syn), stream=7), w0


def _drive(store, steps=60, seed=1):
    """Random updates of ~0.8 granule rms; returns the sum of what was asked (weight units, host)."""
    rng = np.random.default_rng(seed)
    rand_rng = store.be.child_rng(seed + 1)   # the rounding draws: a generator of the backend's array module
    eps_w = store.epsilon_w
    asked = np.zeros(store.shape, np.float64)
    for _ in range(steps):
        d = (rng.normal(0.0, 0.8, store.shape) * eps_w).astype(np.float32)
        asked += d
        store.apply_update(store.xp.asarray(d), rand_rng)
    return asked


def _residual(store, w_start, asked):
    """sum asked - (device change + pending chi + pending feedback), weight units."""
    chi_w = to_host(store.tile.digital.chi).astype(np.float64) / store.tile.digital.spec.chi_scale * store.epsilon_w
    fb = to_host(store.tile.digital.feedback) if store.tile.digital.feedback is not None else 0.0
    return asked - (to_host(store.weights()).astype(np.float64) - w_start + chi_w + fb)


@pytest.mark.parametrize("devices", [1, 3])
def test_verified_update_keeps_the_books_on_pcm(devices):
    ver, _ = _store(EXACT_READS, True, devices=devices)
    w_start = to_host(ver.weights()).astype(np.float64)
    asked = _drive(ver)
    err = np.abs(_residual(ver, w_start, asked))
    assert ver.tile.devices.counters.set_pulses > 500 and ver.tile.devices.counters.refreshes > 0   # refreshes measured too
    # chi's rounding (stochastic, to one chi LSB = 2^-12 granule) bounds it: 60 updates
    assert err.max() < 60 * ver.epsilon_w / ver.tile.digital.spec.chi_scale
    # and the reference: blind pulses leave the device's own error (granules off) in the weight
    blind, _ = _store(EXACT_READS, False, devices=devices)
    w_start = to_host(blind.weights()).astype(np.float64)
    asked = _drive(blind)
    err_blind = np.abs(_residual(blind, w_start, asked))
    assert np.median(err_blind) > 0.5 * blind.epsilon_w


def test_verified_update_on_ideal_devices_measures_exactly_what_it_asked():
    """Ideal devices step exactly epsilon: nothing to correct (except at the conductance limits)."""
    st, _ = _store(IDEAL.with_overrides(ideal_step=0.5), True, eps=0.5)
    _drive(st, steps=20)
    assert st.tile.devices.counters.set_pulses > 100
    assert np.abs(to_host(st.tile.digital.feedback)).max() < 1e-5 * st.epsilon_w


def test_verify_reads_are_counted_and_noisy():
    """Two reads of the pulsed device per pulsed synapse. With read noise the feedback differs from
    the exact-read feedback by the noise of those two reads of one device, N(0, b^2 (s(G0)^2 +
    s(G1)^2)) with s(G) = 0.03 G + 0.13 µS (same pulses: the verify reads have their own stream)."""
    d = (np.random.default_rng(2).normal(0, 1.2, (40, 30)) * 0.075).astype(np.float32)
    noisy, _ = _store(NO_DRIFT, True, read_noise=True)
    exact, _ = _store(NO_DRIFT, True, read_noise=False)
    g0p, g0m = to_host(exact.tile.devices.gp.g_prog).copy(), to_host(exact.tile.devices.gm.g_prog).copy()
    reports = [st.apply_update(st.xp.asarray(d), st.be.child_rng(3)) for st in (noisy, exact)]   # same stream: same pulses
    fb_exact, fb_noisy = to_host(exact.tile.digital.feedback), to_host(noisy.tile.digital.feedback)
    pulsed = (fb_exact != 0).reshape(-1)
    n_pulsed, n_ref = int(np.count_nonzero(pulsed)), exact.tile.devices.counters.refreshes
    assert n_pulsed > 300 and n_ref < 10
    # two reads per pulsed device, one more per refreshed synapse
    assert noisy.tile.devices.counters.update_verify_reads == exact.tile.devices.counters.update_verify_reads == 2 * n_pulsed + n_ref
    if n_ref:                                                        # (their devices were re-written)
        r = reports[1].verify
        pulsed[to_host(r.idx[r.refreshed])] = False
    assert np.array_equal(to_host(noisy.weights()), to_host(exact.weights()))   # the same pulses and devices
    g1p, g1m = to_host(exact.tile.devices.gp.g_prog), to_host(exact.tile.devices.gm.g_prog)
    up = (g1p != g0p)[pulsed]                                        # which device each one pulsed
    g0 = np.where(up, g0p[pulsed], g0m[pulsed])
    g1 = np.where(up, g1p[pulsed], g1m[pulsed])
    sig = lambda g: NO_DRIFT.read_sigma_slope * g + NO_DRIFT.read_sigma_offset
    expect = exact.tile.devices.beta * np.sqrt(np.mean(sig(g0) ** 2 + sig(g1) ** 2))
    diff = (fb_noisy - fb_exact).reshape(-1)[pulsed]
    assert 0.85 < diff.std() / expect < 1.15
    assert np.abs(diff.mean()) < 4 * expect / np.sqrt(n_pulsed)


def test_verified_update_resumes_bit_identically(tmp_path):
    common = ["train", "mlp", "--dataset", "digits", "--synapse", "pcm", "--quiet", "--backend", "numpy",
              "--seed", "5", "--set", "model.hidden=[16]", "--set", "train.lr=0.2",
              "--set", "synapse.verified_update=true"]
    assert main(common + ["--epochs", "2", "--out", str(tmp_path / "full")]) == 0
    assert main(common + ["--epochs", "1", "--out", str(tmp_path / "part")]) == 0
    assert main(common + ["--epochs", "2", "--out", str(tmp_path / "part"), "--resume"]) == 0
    a = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    b = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    for ra, rb in zip(map(json.loads, a), map(json.loads, b)):
        for k in ("loss", "train_accuracy", "test_accuracy", "pulses", "refreshes"):
            assert ra[k] == rb[k], k
    sa = json.loads((tmp_path / "full" / "summary.json").read_text())
    sb = json.loads((tmp_path / "part" / "summary.json").read_text())
    assert sa["events"] == sb["events"]
    assert sa["events"]["update_verify_reads"] > 0
    assert main(["energy", str(tmp_path / "full")]) == 0


def test_verify_gain_returns_that_share_of_the_error():
    """Damped corrections: the same first update (same pulses, same devices) leaves gain x the
    full correction in the buffer; a gain outside (0, 1] is refused."""
    d = (np.random.default_rng(4).normal(0, 1.5, (40, 30)) * 0.075).astype(np.float32)
    full, _ = _store(NO_DRIFT, True)
    half, _ = _store(NO_DRIFT, True, gain=0.5)
    for st in (full, half):
        st.apply_update(st.xp.asarray(d), st.be.child_rng(5))     # the same stream for both: same pulses
    assert np.array_equal(to_host(full.weights()), to_host(half.weights()))
    assert np.count_nonzero(to_host(full.tile.digital.feedback)) > 300
    np.testing.assert_allclose(to_host(half.tile.digital.feedback), 0.5 * to_host(full.tile.digital.feedback), rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="verify_gain"):
        _store(NO_DRIFT, True, gain=0.0)


@pytest.mark.parametrize("devices", [1, 3])
def test_anti_windup_stops_the_corrections_at_the_range_edge(devices):
    """Weights at the edge of the pair's range (0.40 of w_max = 1, refresh at 0.45 g_max), pushed
    outwards by one granule every update. Without anti-windup the part beyond the range comes back
    as a correction every update and grows: the pulses per update climb to the unit's limit
    (pmax = 15 per synapse, rtl.spec), each update refreshing about half of the synapses. With it
    a synapse whose refresh write hit the cap returns nothing, and the pulses stay near what is
    asked (the devices near the threshold under-deliver, so a few granules wait until the refresh)."""
    w0 = np.full((20, 10), 0.40, np.float32)
    last = {}
    for aw in (False, True):
        st, _ = _store(NO_DRIFT, True, devices=devices, anti_windup=aw, w0=w0)
        push = st.xp.full(st.shape, st.epsilon_w, dtype=st.xp.float32)
        rr = st.be.child_rng(1)
        pulses = []
        capped_seen = 0
        for _ in range(60):
            before = st.tile.devices.counters.set_pulses
            rep = st.apply_update(push, rr)
            pulses.append(st.tile.devices.counters.set_pulses - before)
            if aw and rep.refreshes:
                r = rep.verify
                capped = to_host(r.capped)
                assert not np.any(capped & ~to_host(r.refreshed))      # only a refresh write is capped
                capped_seen += int(capped.sum())
                assert np.all(to_host(st.tile.digital.feedback).reshape(-1)[to_host(r.idx)[capped]] == 0.0)
        last[aw] = np.mean(pulses[-10:]) / w0.size           # pulses per synapse per update
        assert float(st.weights().max()) < 0.55                # the range holds either way
        if aw:
            assert capped_seen > 500
    assert last[False] > 12.0                                   # wound up
    assert last[True] < 5.0


def test_anti_windup_is_inert_without_verified_updates(tmp_path):
    """Blind updates return no corrections, so anti-windup changes nothing there: a verified config
    ablated with --set synapse.verified_update=false runs as blind, bit for bit."""
    common = ["train", "mlp", "--dataset", "digits", "--synapse", "pcm", "--quiet", "--backend", "numpy",
              "--seed", "5", "--epochs", "1", "--set", "model.hidden=[16]", "--set", "train.lr=0.2"]
    assert main(common + ["--out", str(tmp_path / "a")]) == 0
    assert main(common + ["--out", str(tmp_path / "b"), "--set", "synapse.verify_anti_windup=true"]) == 0
    sa = json.loads((tmp_path / "a" / "summary.json").read_text())
    sb = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert sa["total_pulses"] > 0
    for k in ("test_accuracy", "loss", "total_pulses", "total_refreshes", "events"):
        assert sa[k] == sb[k], k
