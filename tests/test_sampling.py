"""The read-noise normal samplers (gpu_model/sampling.py): same statistics, reproducible streams."""
import math

import numpy as np
import pytest
from scipy import stats

from gpu_model.backend import make_backend
from gpu_model.presets import JAP2018, PresetError, TilePreset
from gpu_model.sampling import NOISE_SAMPLERS, box_muller, standard_normal
from gpu_model.tile import AnalogMatrix

from tests.conftest import to_host


@pytest.mark.parametrize("method", NOISE_SAMPLERS)
def test_samplers_are_standard_normal(method):
    n = 400_000
    z = standard_normal(np, np.random.default_rng(3), (n,), "float32", method).astype(np.float64)
    se = 1 / math.sqrt(n)
    assert abs(z.mean()) < 5 * se
    assert abs(z.var() - 1) < 5 * math.sqrt(2) * se
    assert abs(stats.skew(z)) < 5 * math.sqrt(6) * se
    assert abs(stats.kurtosis(z)) < 5 * math.sqrt(24) * se          # excess kurtosis 0
    assert stats.kstest(z, "norm").pvalue > 1e-4
    # tail mass beyond 3 sigma: 2 * Phi(-3) = 0.0027
    p3 = 2 * stats.norm.sf(3)
    assert abs(np.mean(np.abs(z) > 3) - p3) < 5 * math.sqrt(p3 / n)


def test_box_muller_pairs_are_independent_and_shapes_odd():
    z = box_muller(np, np.random.default_rng(0), (7, 101))
    assert z.shape == (7, 101) and z.dtype == np.float32
    z = box_muller(np, np.random.default_rng(0), (300_001,)).astype(np.float64)
    m = len(z) // 2
    r = np.corrcoef(z[:m], z[m:2 * m])[0, 1]                    # cos and sin halves of one draw
    assert abs(r) < 5 / math.sqrt(m)
    r2 = np.corrcoef(z[:m] ** 2, z[m:2 * m] ** 2)[0, 1]         # independent, not only uncorrelated
    assert abs(r2) < 5 / math.sqrt(m)
    assert np.abs(z).max() <= math.sqrt(2 * 24 * math.log(2)) + 1e-6   # the float32 tail cut


def test_unknown_sampler_is_an_error():
    with pytest.raises(ValueError, match="unknown normal sampler"):
        standard_normal(np, np.random.default_rng(0), (3,), method="polar")
    with pytest.raises(PresetError, match="noise_sampler"):
        TilePreset(noise_sampler="polar")


def _noisy_reads(method, seed=11, B=4000):
    be = make_backend("numpy", seed)            # CuPy under MCASIM_TEST_BACKEND=cupy (tests/conftest.py)
    m = AnalogMatrix(6, 12, JAP2018, TilePreset(quantize=False, noise_sampler=method), be, w_max=1.0)
    rng = np.random.default_rng(0)
    m.devices.gp.g_prog[:] = be.xp.asarray(rng.uniform(0.1, 15, 72))
    m.devices.gm.g_prog[:] = be.xp.asarray(rng.uniform(0.1, 15, 72))
    m.devices.sync(force=True)
    x1 = rng.uniform(-2, 2, (1, 12)).astype(np.float32)
    return m, x1, to_host(m.forward(be.xp.asarray(np.repeat(x1, B, axis=0)))).astype(np.float64)


def test_tile_read_noise_same_statistics_either_sampler():
    """Per output: mean W x and variance (x^2) @ Var^T with either sampler; different streams."""
    B = 4000
    (m, x1, yz), (_, _, yb) = _noisy_reads("ziggurat", B=B), _noisy_reads("box_muller", B=B)
    mean = (x1 @ to_host(m.devices.weights()).T.astype(np.float64))[0]
    var = (x1.astype(np.float64) ** 2 @ to_host(m.devices.read_variance()).T.astype(np.float64))[0]
    for y in (yz, yb):
        assert np.all(np.abs(y.mean(0) - mean) < 5 * np.sqrt(var / B))
        assert np.all(np.abs(y.var(0) / var - 1) < 5 * math.sqrt(2 / (B - 1)))
    assert not np.array_equal(yz, yb)
    assert np.array_equal(yb, _noisy_reads("box_muller", B=B)[2])     # reproducible per seed
