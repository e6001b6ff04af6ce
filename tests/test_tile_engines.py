"""The analog tile on both engines: one interface, the same statistics, checkpoints that know their
engine, and fused runs that resume bit for bit (gpu_model/tile.py, gpu_model/engines.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from gpu_model import JAP2018, AnalogTile, PresetError, SynapseConfig, TileConfig, make_backend
from gpu_model.engines import DEVICE_ARRAYS, make_device_array
from gpu_model.pulses import UpdateReport
from sim.cli import main

pytestmark = pytest.mark.numpy_only   # the fused engine runs on NumPy (Numba)


def _tile(engine: str, seed: int = 3, **syn):
    syn.setdefault("w_max", 1.0)
    syn.setdefault("epsilon_uS", 1.0)
    syn.setdefault("refresh_threshold", 0.45)
    cfg = TileConfig(device=JAP2018, synapse=SynapseConfig(**syn), engine=engine)
    w0 = np.random.default_rng(seed).uniform(-0.3, 0.3, (30, 40)).astype(np.float32)
    return AnalogTile(cfg, 30, 40, make_backend("numpy", seed), stream=101, w0=w0)


@pytest.mark.parametrize("syn", [{}, {"devices_per_side": 3, "verified_update": True, "verify_anti_windup": True}])
def test_engines_share_the_interface_and_the_statistics(syn):
    """Same updates on both engines: every call gives a typed UpdateReport, and the pulse and
    refresh totals and the weights' drift from their targets agree statistically (the random
    numbers differ: generator streams vs counter-based keys)."""
    res = {}
    for engine in ("reference", "fused"):
        sums = []
        for seed in range(4):
            t = _tile(engine, seed, **syn)
            rng = np.random.default_rng(100 + seed)
            asked = np.zeros(t.shape)
            w0 = np.asarray(t.weights()).copy()
            for k in range(40):
                d = (rng.standard_normal(t.shape) * 0.8 * t.epsilon_w).astype(np.float32)
                rep = t.update(d, t.be.child_rng(7 + k))
                assert isinstance(rep, UpdateReport)
                assert (rep.verify is not None) == bool(syn.get("verified_update"))
                asked += d
                t.advance(0.001)
            err = np.asarray(t.weights()) - w0 - asked + t.digital.chi / t.digital.spec.chi_scale * t.epsilon_w
            ev = t.events
            sums.append((ev.set_pulses, ev.refreshes, float(np.sqrt(np.mean(err ** 2)))))
        res[engine] = np.array(sums, dtype=float)
    ref, fus = res["reference"].mean(axis=0), res["fused"].mean(axis=0)
    spread = res["reference"].std(axis=0) + res["fused"].std(axis=0)
    assert abs(fus[0] - ref[0]) < 0.03 * ref[0] + 2 * spread[0], (ref, fus)    # SET pulses
    assert abs(fus[2] - ref[2]) < 0.1 * ref[2] + 2 * spread[2], (ref, fus)     # weight error rms


def test_a_state_of_the_other_engine_is_refused_with_what_to_do():
    a, b = _tile("reference"), _tile("fused")
    with pytest.raises(ValueError, match="tile.engine = 'reference'"):
        b.load_state_dict(a.state_dict())
    st = a.state_dict()
    st["layout"] = 1
    with pytest.raises(ValueError, match="layout 1"):
        a.load_state_dict(st)


def test_unknown_engine_backend_pair_is_a_clear_error():
    class FakeBackend:
        name = "cupy"
    cfg = TileConfig(device=JAP2018, synapse=SynapseConfig(w_max=1.0), engine="fused")
    assert ("fused", "cupy") not in DEVICE_ARRAYS
    with pytest.raises(PresetError, match="does not run on the cupy backend"):
        make_device_array(cfg, (2, 2), FakeBackend(), 0)
    with pytest.raises(PresetError, match="engine must be one of"):
        TileConfig(device=JAP2018, synapse=SynapseConfig(w_max=1.0), engine="turbo")


@pytest.mark.parametrize("extra", [[], ["--set", "synapse.verified_update=true", "--set", "synapse.devices_per_side=3"]])
def test_fused_run_resumes_bit_identically(tmp_path, extra):
    common = ["train", "mlp", "--dataset", "digits", "--synapse", "pcm", "--quiet", "--backend", "numpy",
              "--seed", "5", "--set", "model.hidden=[16]", "--set", "train.lr=0.2",
              "--set", "tile.engine=\"fused\""] + extra
    assert main(common + ["--epochs", "2", "--out", str(tmp_path / "full")]) == 0
    assert main(common + ["--epochs", "1", "--out", str(tmp_path / "part")]) == 0
    assert main(common + ["--epochs", "2", "--out", str(tmp_path / "part"), "--resume"]) == 0
    a = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert len(a) == len(b) == 2 and a[-1]["pulses"] > 0
    for ra, rb in zip(a, b):
        for k in ("loss", "train_accuracy", "test_accuracy", "pulses", "refreshes"):
            assert ra[k] == rb[k], k
    sa = json.loads((tmp_path / "full" / "summary.json").read_text())
    sb = json.loads((tmp_path / "part" / "summary.json").read_text())
    assert sa["events"] == sb["events"]


@pytest.mark.parametrize("tile", [{}, {"max_rows": 16, "max_cols": 12}, {"noise_sampler": "box_muller"},
                                  {"dac_scaling": "fixed", "dac_fixed_scale": 0.5}])
def test_fused_engine_reads_the_reference_read_bit_for_bit(tile):
    """The fused engine's forward/backward go through the compiled crossbar read
    (gpu_model/kernels/crossbar_read.py) with the tile's own normals: the reference read's
    outputs bit for bit, read after read (the noise stream stays in step), over a tile grid."""
    from dataclasses import replace
    outs = []
    for compiled in (True, False):
        t = _tile("fused")
        t.config = replace(t.config, converters=replace(t.config.converters, **tile))
        t.tile = t.config.converters
        t.row_blocks = [(s, min(s + t.tile.max_rows, 40)) for s in range(0, 40, t.tile.max_rows)]
        t.col_blocks = [(s, min(s + t.tile.max_cols, 30)) for s in range(0, 30, t.tile.max_cols)]
        assert t._fused_read is not None
        if not compiled:
            t._fused_read = None                      # the reference read (AnalogTile._mvm)
        rng = np.random.default_rng(11)
        res = []
        for _ in range(3):
            x = rng.standard_normal((5, 40)).astype(np.float32)
            d = rng.standard_normal((5, 30)).astype(np.float32)
            res += [t.forward(x), t.backward(d), t.forward(x[:, :40])]
        outs.append((res, t.events.as_dict()))
    for a, b in zip(outs[0][0], outs[1][0]):
        assert a.dtype == b.dtype == np.float32
        assert np.array_equal(a, b) and np.array_equal(np.signbit(a), np.signbit(b))
    assert outs[0][1] == outs[1][1]


@pytest.mark.parametrize("syn", [{}, {"devices_per_side": 3, "verified_update": True}])
def test_a_reference_tile_carries_over_to_the_fused_engine(syn):
    """gpu_model/convert.py: a trained reference tile loaded into a fused tile (``convert_from``)
    has the same conductances bit for bit, the same weights (to float32 rounding), chi, counters
    and clock, and trains on; without the opt-in the state is refused."""
    from gpu_model.convert import ConversionError, convert_tile_state
    ref = _tile("reference", **syn)
    rng = np.random.default_rng(4)
    for k in range(15):
        ref.update((rng.standard_normal(ref.shape) * 2 * ref.epsilon_w).astype(np.float32), ref.be.child_rng(k))
        ref.advance(0.01)
    st = ref.state_dict()
    fus = _tile("fused", seed=9, **syn)
    with pytest.raises(ValueError, match="tile.engine = 'reference'"):
        fus.load_state_dict(st)
    fus.convert_from = ("reference",)
    fus.load_state_dict(st)
    for a, b in zip(ref.conductances(), fus.conductances()):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(np.asarray(fus.weights()), np.asarray(ref.weights()), rtol=0, atol=1e-6)
    assert np.array_equal(fus.digital.chi, ref.digital.chi) and fus.t == ref.t and fus.updates == ref.updates
    ea, eb = ref.events.as_dict(), fus.events.as_dict()
    assert ea == eb and ea["set_pulses"] > 0
    before = eb["set_pulses"]
    fus.update((rng.standard_normal(fus.shape) * 2 * fus.epsilon_w).astype(np.float32), None)
    assert fus.events.set_pulses > before
    st2 = dict(st, engine="turbo")
    with pytest.raises(ConversionError, match="only reference -> fused"):
        convert_tile_state(st2, fus)
