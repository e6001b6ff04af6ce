"""The whole unit in the training loop (issue 27): a tiny two-layer MLP on PCM tiles whose digital
units are :class:`gpu_model.digital_unit.WholeUnitDigital`, once on the golden model
(``tile-golden``) and once on the Verilator model of rtl.tile.TileUnit (``tile-rtl``): the same
losses, weights, chi, pulse lists and status counters, bit for bit.

The spec is the small one of tests/test_dpu_tile_rtl.py (one Verilator build serves both files);
the layers (8 x 14, 3 x 8) are not multiples of its 6 x 9 block, so edge blocks run padded.
Self-tests: the host encoding agrees with the float update -lr d^T x (sign, scale), and the
comparison finds a difference when the rounding bits differ (another seed) or a code is wrong.
"""
from __future__ import annotations

import numpy as np
import pytest

from gpu_model import JAP2018, AnalogTile, TilePreset, make_backend
from gpu_model.digital_unit import (TILE_DPU_KINDS, WholeUnitDigital, attach_whole_unit,
                                    make_digital_unit, whole_unit_spec)
from gpu_model.tile_config import SynapseConfig, TileConfig
from tests.test_dpu_tile_rtl import SMALL

pytestmark = pytest.mark.numpy_only

N_IN, N_HID, N_OUT = 14, 8, 3       # test choice: both layers need padded edge blocks of SMALL
LR = 0.5                            # test choice: scale mantissa mid-range (m ~ 5 of SMALL's 0..511)
STEPS = 12


def _config():
    return TileConfig(device=JAP2018, synapse=SynapseConfig(w_max=1.0),
                      converters=TilePreset(dac_bits=SMALL.x_bits), dpu=SMALL.dpu)


def _data(seed=5):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((N_OUT, N_IN))
    y = rng.integers(0, N_OUT, STEPS * SMALL.batch)
    x = (centres[y] + 0.5 * rng.standard_normal((y.size, N_IN))).astype(np.float32)
    return x, y


def train(kind: str, seed: int = 3, corrupt=None):
    """STEPS of plain SGD; returns (losses, per-layer weights, chi, pulse lists, counters)."""
    be = make_backend("numpy", seed)
    cfg = _config()
    init = np.random.default_rng(seed + 100)
    t1 = AnalogTile(cfg, N_HID, N_IN, be, stream=1, w0=(0.3 * init.standard_normal((N_HID, N_IN))).astype(np.float32))
    t2 = AnalogTile(cfg, N_OUT, N_HID, be, stream=2, w0=(0.3 * init.standard_normal((N_OUT, N_HID))).astype(np.float32))
    units = [attach_whole_unit(t, kind, SMALL) for t in (t1, t2)]
    if corrupt is not None:
        units[0].encode = corrupt(units[0].encode)
    x_all, y_all = _data()
    losses, pulses = [], []
    B = SMALL.batch
    for s in range(STEPS):
        x, y = x_all[s * B:(s + 1) * B], y_all[s * B:(s + 1) * B]
        h = np.maximum(t1.forward(x), 0)
        z = t2.forward(h)
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        losses.append(float(-np.log(p[np.arange(B), y]).mean()))
        d2 = p.copy()
        d2[np.arange(B), y] -= 1
        d2 /= B
        d1 = t2.backward(d2) * (h > 0)
        for t, u, xin, d in ((t2, units[1], h, d2), (t1, units[0], x, d1)):
            u.offer(xin, d, LR)
            rep = t.update(-LR * (d.T @ xin))
            pulses.append(int(rep.set_pulses))
    return (np.array(losses), [np.asarray(t.weights()) for t in (t1, t2)], [u.chi for u in units],
            pulses, [u.counters() for u in units])


def _same(a, b) -> bool:
    la, wa, ca, pa, na = a
    lb, wb, cb, pb, nb = b
    return (np.array_equal(la, lb) and all(np.array_equal(p, q) for p, q in zip(wa, wb))
            and all(np.array_equal(p, q) for p, q in zip(ca, cb)) and pa == pb and na == nb)


def test_tiny_mlp_rtl_equals_golden_bit_for_bit():
    g = train("tile-golden")
    r = train("tile-rtl")
    assert sum(g[3]) > 0, "no pulses at all: the run tests nothing"
    assert g[4][0]["events"] > 0 and g[4][0]["batches"] == STEPS * 4   # layer 1: 2 x 2 blocks per step
    np.testing.assert_array_equal(g[0], r[0])
    for wg, wr in zip(g[1], r[1]):
        np.testing.assert_array_equal(wg, wr)
    for cg, cr in zip(g[2], r[2]):
        np.testing.assert_array_equal(cg, cr)
    assert g[3] == r[3] and g[4] == r[4]


def test_comparison_sees_other_rounding_bits_and_a_wrong_code():
    g = train("tile-golden")
    assert not _same(g, train("tile-golden", seed=4)), "another seed gave the same run: the check is blind"

    def flip(encode):                       # a broken host encoder: one delta code off by one
        def wrong(x, d, lr):
            xc, dc, m, cl = encode(x, d, lr)
            dc = dc.copy()
            dc[0, 0] += 1 if dc[0, 0] < SMALL.delta_max else -1
            return xc, dc, m, cl
        return wrong
    assert not _same(g, train("tile-golden", corrupt=flip)), "a wrong delta code went unnoticed"


def test_host_encoding_matches_the_float_update():
    """From chi = 0 with nearest rounding off the table (stochastic), the unit's Delta chi (chi' +
    pulses) follows -lr d^T x / epsilon_w up to the code quantisation (5-bit x, 7-bit delta)."""
    be = make_backend("numpy", 0)
    cfg = _config()
    u = WholeUnitDigital((N_HID, N_IN), cfg, be, epsilon_w=0.05, stream=1, kind="tile-golden", tile_spec=SMALL)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((SMALL.batch - 1, N_IN)).astype(np.float32)   # one padded sample
    d = 0.02 * rng.standard_normal((SMALL.batch - 1, N_HID))
    u.offer(x, d, LR)
    pl = u.step()
    moved = u.chi.astype(np.float64).reshape(-1)
    moved[pl.idx] += pl.counts * SMALL.dpu.chi_scale
    moved /= SMALL.dpu.chi_scale                                          # in epsilon
    want = (-LR * d.T @ x / 0.05).reshape(-1)
    assert np.corrcoef(moved, want)[0, 1] > 0.97
    assert abs(moved @ want / (want @ want) - 1) < 0.1
    assert u.scale_clamped == 0 and u.batches == 1


def test_kinds_and_errors():
    assert TILE_DPU_KINDS == ("tile-golden", "tile-rtl")
    be = make_backend("numpy", 0)
    cfg = TileConfig(device=JAP2018, synapse=SynapseConfig(w_max=1.0), dpu_kind="tile-golden")
    assert isinstance(make_digital_unit((4, 4), cfg, be, 0.05, 0), WholeUnitDigital)
    ts = whole_unit_spec(cfg, 6)
    assert ts.batch == 6 and ts.taps == 2 and ts.x_bits == cfg.converters.dac_bits and ts.dpu == cfg.dpu
    u = WholeUnitDigital((4, 4), cfg, be, 0.05, 0)
    with pytest.raises(ValueError, match="offer"):
        u.step(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="factors"):
        u.offer(np.zeros((2, 3)), np.zeros((2, 4)), 0.1)
    with pytest.raises(ValueError, match="verified"):
        WholeUnitDigital((4, 4), TileConfig(device=JAP2018, synapse=SynapseConfig(w_max=1.0, verified_update=True)),
                         be, 0.05, 0, "tile-golden")
    from rtl.dpu import make_dpu
    with pytest.raises(ValueError, match="make_digital_unit"):
        make_dpu("tile-rtl", cfg.dpu, np)
