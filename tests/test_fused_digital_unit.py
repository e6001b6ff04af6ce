"""The fused engine's compiled digital unit (gpu_model/kernels/dpu_step.py) is bit-exact to the
golden model's array chain fed with the same keyed rounding bits (rtl.golden.shared_rand)."""
from __future__ import annotations

import numpy as np
import pytest

from gpu_model import JAP2018, make_backend
from gpu_model.digital_unit import DigitalUnit
from gpu_model.pulses import UpdateReport, VerifyReadout
from gpu_model.tile_config import SynapseConfig, TileConfig
from rtl.spec import DPUSpec

pytestmark = pytest.mark.numpy_only   # the compiled unit runs on NumPy (Numba)

SPECS = {
    "default": DPUSpec(),
    "nearest": DPUSpec(rounding="nearest"),
    "truncate": DPUSpec(rounding="truncate", round_bits=3),
    "no_round_bits": DPUSpec(rounding="nearest", round_bits=0),
    # chi_bits 31: the golden model's int64 path (rtl.golden.fits_int32 is False). inc_bits stays
    # <= 25: wider increments are not all representable in float32, where encode_update's
    # saturation compare (float32) and the kernel's (exact) could differ at inc_max
    "wide_int64_path": DPUSpec(chi_bits=31, inc_bits=24, frac_bits=14, round_bits=8, pmax=31),
    "narrow_saturating": DPUSpec(chi_bits=10, frac_bits=4, inc_bits=12, round_bits=2, pmax=3),
}


def _units(spec: DPUSpec, verified: bool, shape=(23, 37), seed=4):
    cfg = TileConfig(device=JAP2018, synapse=SynapseConfig(w_max=1.0, verified_update=verified),
                     dpu=spec, engine="fused")
    be = make_backend("numpy", seed)
    fast = DigitalUnit(shape, cfg, be, epsilon_w=0.0375, stream=103)
    chain = DigitalUnit(shape, cfg, be, epsilon_w=0.0375, stream=103)
    chain.compiled = False               # the array chain with the same keyed bits
    assert fast.compiled
    return fast, chain


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("verified", [False, True])
def test_compiled_unit_equals_the_golden_chain(name, verified):
    spec = SPECS[name]
    fast, chain = _units(spec, verified)
    rng = np.random.default_rng(11)
    rows, n_cols = fast.chi.shape
    total = 0
    for step in range(40):
        # every fourth update is far beyond the increment range (saturates inc)
        scale = fast.epsilon_w * (0.3 if step % 4 else 2.0 * spec.inc_max / spec.inc_scale)
        cols = None if step % 3 else np.sort(rng.choice(n_cols, 13, replace=False))
        width = n_cols if cols is None else cols.shape[0]
        d = (rng.standard_normal((rows, width)) * scale).astype(np.float32)
        a, b = fast.step(d.copy(), None, cols, step=step), chain.step(d.copy(), None, cols, step=step)
        np.testing.assert_array_equal(a.idx, b.idx)
        np.testing.assert_array_equal(a.counts, b.counts)
        assert np.array_equal(fast.chi, chain.chi) and fast.inc_saturated == chain.inc_saturated
        total += a.n
        if verified:                       # some feedback to carry into the next update
            meas = (a.counts * fast.epsilon_w * rng.uniform(0.5, 1.5, a.n)).astype(np.float32)
            rep = UpdateReport(set_pulses=int(np.abs(a.counts).sum()),
                               verify=VerifyReadout(a.idx, a.counts, meas, np.zeros(a.n, bool)))
            fast.absorb(rep)
            chain.absorb(rep)
            assert np.array_equal(fast.feedback, chain.feedback)
    assert total > 100 and fast.inc_saturated > 0
    if name == "narrow_saturating":
        assert int(np.abs(fast.chi).max()) <= spec.chi_max


def test_keyed_bits_depend_on_step_and_stream_only():
    """Resumable from the step number: a unit restored from a state dict continues identically."""
    fast, _ = _units(DPUSpec(), False)
    rng = np.random.default_rng(2)
    d = [(rng.standard_normal(fast.chi.shape) * 0.03).astype(np.float32) for _ in range(6)]
    for k in range(3):
        fast.step(d[k], None, None, step=k)
    st = fast.state_dict()
    again, _ = _units(DPUSpec(), False)
    again.load_state_dict(st)
    for k in range(3, 6):
        a, b = fast.step(d[k], None, None, step=k), again.step(d[k], None, None, step=k)
        np.testing.assert_array_equal(a.idx, b.idx)
        np.testing.assert_array_equal(a.counts, b.counts)


def test_bad_update_shapes_are_clear_errors():
    fast, _ = _units(DPUSpec(), False)
    with pytest.raises(ValueError, match="update of shape"):
        fast.step(np.zeros((3, 37), np.float32), None, None, step=0)
    with pytest.raises(ValueError, match="cols lists"):
        fast.step(np.zeros((23, 5), np.float32), None, np.arange(4), step=0)
