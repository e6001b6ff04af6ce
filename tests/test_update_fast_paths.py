"""Fast paths of the PCM update are bit-identical to the plain ones they replace."""
import numpy as np
import pytest

from gpu_model.backend import make_backend
from gpu_model.presets import get_pcm_preset
from gpu_model.synapse import DifferentialSynapses
from rtl.spec import DPUSpec
from gpu_model.digital_unit import _pcg64_shortcut_ok, uniform_bits_uint8

from tests.conftest import to_host


def test_uniform_bits_match_integers():
    assert _pcg64_shortcut_ok()
    rs = np.random.default_rng(99)
    for _ in range(200):
        shape = tuple(int(v) for v in rs.integers(0, 40, size=int(rs.integers(1, 3))))
        bits, seed = int(rs.integers(1, 9)), int(rs.integers(0, 1000))
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        k = int(rs.integers(0, 4))                       # sometimes leave a spare 32-bit word
        a.integers(0, 16, size=k, dtype="uint8")
        b.integers(0, 16, size=k, dtype="uint8")
        for _ in range(3):
            x = a.integers(0, 1 << bits, size=shape, dtype="uint8")
            y = uniform_bits_uint8(b, bits, shape)
            assert x.shape == y.shape and x.dtype == y.dtype and (x == y).all()
            assert a.bit_generator.state == b.bit_generator.state
            assert a.random() == b.random()


@pytest.mark.parametrize("scale", [1.0, 1 / 0.0275, 1 / 0.11, 3.0])
def test_encode_update_scale_equals_prescaled(scale):
    spec = DPUSpec()
    rng = np.random.default_rng(1)
    for dt in ("float32", "float64"):
        d = (rng.normal(0, 2, (50, 40)) * rng.choice([1e-6, 1e-2, 1.0, 1e3, 1e6], (50, 40))).astype(dt)
        ref, sat_ref = spec.encode_update(d * scale, np)
        got, sat = spec.encode_update(d, np, scale=scale)
        assert sat == sat_ref and sat > 0
        assert got.dtype == ref.dtype and (got == ref).all()


def test_pulse_list_equals_dense():
    be1, be2 = make_backend("numpy", 3), make_backend("numpy", 3)   # CuPy under MCASIM_TEST_BACKEND=cupy
    xp = be1.xp
    pre = get_pcm_preset("jap2018")
    s1 = DifferentialSynapses((20, 30), pre, be1, w_max=1.0, refresh_threshold=0.5)
    s2 = DifferentialSynapses((20, 30), pre, be2, w_max=1.0, refresh_threshold=0.5)
    rng = np.random.default_rng(4)
    for _ in range(20):
        p = rng.integers(-3, 4, (20, 30)) * (rng.random((20, 30)) < 0.1)
        nz = np.flatnonzero(p)
        assert s1.apply_pulses(xp.asarray(p)) == s2.apply_pulse_list(xp.asarray(nz), xp.asarray(p.reshape(-1)[nz]))
        s1.advance(1e-3)
        s2.advance(1e-3)
    np.testing.assert_array_equal(to_host(s1.weights()), to_host(s2.weights()))
    assert s1.counters.as_dict() == s2.counters.as_dict()


@pytest.mark.parametrize("dt", ["float32", "float64"])
def test_encode_update_unsaturated_equals_rint(dt):
    """Without saturation the encoding is rint(delta * 2^(F+R)) cast to int32 (the direct-cast path)."""
    spec = DPUSpec()
    rng = np.random.default_rng(2)
    d = (rng.normal(0, 1, (64, 33)) * 3.0).astype(dt)
    d[0, :4] = np.array([0.5, -0.5, 1.5, 2.5]) / spec.inc_scale            # halves round to even
    got, sat = spec.encode_update(d, np)
    ref = np.rint(d * float(spec.inc_scale)).astype("int32")
    assert sat == 0 and got.dtype == np.int32 and np.array_equal(got, ref)
    assert list(got[0, :4]) == [0, 0, 2, 2]
    e = d[:, ::3] * np.dtype(dt).type(0.01)                                 # strided input
    got, sat = spec.encode_update(e, np, scale=1 / 0.0275)
    assert sat == 0 and np.array_equal(got, spec.encode_update(e * np.dtype(dt).type(1 / 0.0275), np)[0])
