"""Common-mode programming: both devices of a pair written, the weight still lands on target."""
import numpy as np
import pytest

from gpu_model import JAP2018, DifferentialSynapses, PresetError, make_backend

from tests.conftest import to_host


def test_common_mode_program_and_refresh():
    pre = JAP2018.with_overrides(read_noise_model="none", read_sigma_slope=0.0, read_sigma_offset=0.0,
                                 drift_model="constant", nu_mean=0.0, prog_verify_max_pulses=200)
    be = make_backend("numpy", 1)   # CuPy under MCASIM_TEST_BACKEND=cupy (tests/conftest.py)
    syn = DifferentialSynapses((50, 40), pre, be, w_max=1.0, refresh_threshold=0.45, common_mode_uS=2.0)
    w = np.random.default_rng(0).uniform(-0.3, 0.3, (50, 40)).astype(np.float32)
    syn.program(be.xp.asarray(w))
    tol_w = syn.beta * pre.prog_residual_std
    # each device within tolerance of its target, so the weight within two tolerances
    assert np.abs(to_host(syn.weights()) - w).max() <= 2 * tol_w + 1e-6
    assert float(syn.gp.g_prog.min()) >= 2.0 - pre.prog_residual_std - 1e-6
    assert float(syn.gm.g_prog.min()) >= 2.0 - pre.prog_residual_std - 1e-6
    # no device is left at RESET: the history term is that of a device on its SET trajectory
    assert float(syn.gp.hist.max()) < 0.7 and float(syn.gm.hist.max()) < 0.7
    idx = be.xp.arange(0, 2000, 7)
    before = to_host(syn.weights().reshape(-1)[idx]).copy()
    syn.refresh(idx)
    after = to_host(syn.weights().reshape(-1)[idx])
    assert np.abs(after - before).max() <= 2 * tol_w + 1e-6
    assert float(syn.gp.g_prog[idx].min()) >= 2.0 - pre.prog_residual_std - 1e-6


def test_common_mode_must_sit_below_refresh_threshold():
    be = make_backend("numpy", 0)
    with pytest.raises(PresetError, match="common_mode_uS"):
        DifferentialSynapses((2, 2), JAP2018, be, w_max=1.0, refresh_threshold=0.2, common_mode_uS=5.0)
