"""The whole digital unit in ``mcasim train`` (issue 27): ``--dpu tile-golden`` and ``--dpu tile-rtl``.

An MLP on the bundled 8x8 digits (64-16-10, batch 8: the unit's spec is then the shipped
rtl.spec.TileSpec(), one Verilator build shared with the slow tests of tests/test_dpu_tile_rtl.py,
~60 s the first time) trained once with the golden model of the whole unit and once with its
Verilator model gives the same metrics.jsonl losses and accuracies, pulse and event counts, bit
for bit, on either device-update engine (tile.engine reference | fused); the golden run trains,
and differs from the float-update path (``--dpu golden``), so the unit is really in the loop. Like
tests/test_dpu_whole_unit_loop.py (no skip) this needs the RTL toolchain: Verilator, c++, make
(rtl/tile_verilated.py raises ToolchainError naming what is missing).
What the unit cannot do is refused when the config is validated: momentum and Adam (their update is
not -lr d^T x of this batch's factors), verified updates (no feedback input), tasks whose layers do
not hand over the factors (lstm, gan). The factors Dense and Conv2d keep reproduce their gradient,
and a small CNN trains with the whole unit on every layer.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from gpu_model import JAP2018, make_backend
from gpu_model.digital_unit import WholeUnitDigital
from gpu_model.tile_config import SynapseConfig, TileConfig
from sim.cli import main
from sim.config import ConfigError, config_from_dict
from sim.nn import Conv2d, Dense, Optimizer, apply_updates
from sim.nn.layers import LayerError
from sim.nn.stores import AnalogWeights
from tests.test_cnn import cnn_cfg, image_dataset, train

pytestmark = pytest.mark.numpy_only   # the whole unit runs on the NumPy backend only

COMMON = ["train", "mlp", "--dataset", "digits", "--synapse", "pcm", "--quiet", "--backend", "numpy",
          "--seed", "2", "--epochs", "1", "--set", "model.hidden=[16]", "--set", "train.lr=0.2",
          "--set", "train.batch_size=8"]      # batch 8: the shipped TileSpec (one Verilator build)
TIMING = ("seconds", "eval_seconds")        # metrics.jsonl fields that are wall-clock times


def _run(tmp_path, dpu, *extra):
    out = tmp_path / dpu
    assert main(COMMON + list(extra) + ["--dpu", dpu, "--out", str(out)]) == 0
    metrics = [{k: v for k, v in json.loads(line).items() if k not in TIMING}
               for line in (out / "metrics.jsonl").read_text().splitlines()]
    return metrics, json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("engine", ["reference", "fused"])
def test_mcasim_train_tile_rtl_equals_tile_golden(tmp_path, engine):
    eng = ["--set", f'tile.engine="{engine}"']
    mg, sg = _run(tmp_path, "tile-golden", *eng)
    mr, sr = _run(tmp_path, "tile-rtl", *eng)
    assert sg["dpu"] == "tile-golden" and sr["dpu"] == "tile-rtl"
    assert mg == mr                                   # loss, accuracies, pulses, refreshes per epoch
    for k in ("test_accuracy", "train_accuracy", "loss", "total_pulses", "total_refreshes", "events", "layers"):
        assert sg[k] == sr[k], k
    assert sg["events"]["set_pulses"] > 1000
    assert sg["test_accuracy"] > 0.5, sg["test_accuracy"]    # trains: chance is 0.1 (10 classes)
    # the float-update path (chi/pulse lanes fed -lr d^T x in float) gives another run: the unit's
    # quantised x / delta codes are really what drives the devices
    mf, sf = _run(tmp_path, "golden", *eng)
    assert (sf["loss"], sf["total_pulses"]) != (sg["loss"], sg["total_pulses"])


@pytest.mark.parametrize("sets, words", [
    (["train.optimizer=\"momentum\""], ["plain-SGD", "train.optimizer = 'momentum'", "sgd"]),
    (["train.optimizer=\"adam\""], ["plain-SGD", "train.optimizer = 'adam'", "sgd"]),
    (["synapse.verified_update=true"], ["verify-feedback", "synapse.verified_update = false"]),
])
@pytest.mark.parametrize("dpu", ["tile-golden", "tile-rtl"])
def test_what_the_whole_unit_cannot_do_is_a_config_error(tmp_path, capsys, dpu, sets, words):
    args = COMMON + [a for s in sets for a in ("--set", s)] + ["--dpu", dpu, "--out", str(tmp_path / "x")]
    assert main(args) != 0
    err = capsys.readouterr().err
    assert f"synapse.dpu = {dpu!r} is the whole digital unit" in err, err
    for w in words:
        assert w in err, (w, err)
    assert not (tmp_path / "x" / "summary.json").exists()


def test_tasks_without_factors_are_refused():
    for arch in ("lstm", "gan"):
        with pytest.raises(ConfigError, match=f"model.arch = '{arch}' does not hand them over"):
            config_from_dict({"model": {"arch": arch}, "synapse": {"dpu": "tile-golden"}})
    with pytest.raises(ConfigError, match="synapse.dpu must be one of golden, rtl, tile-golden, tile-rtl"):
        config_from_dict({"synapse": {"dpu": "tile"}})
    with pytest.raises(ConfigError, match=r"tile.dac_bits in \[2, 18\]"):
        config_from_dict({"synapse": {"dpu": "tile-golden"}, "tile": {"dac_bits": 20}})


def _store(shape, stream, kind="tile-golden", seed=0):
    be = make_backend("numpy", seed)
    cfg = TileConfig(device=JAP2018, synapse=SynapseConfig(w_max=1.0), dpu_kind=kind)
    w0 = (0.3 * np.random.default_rng(stream).standard_normal(shape)).astype(np.float32)
    return AnalogWeights(w0, be, cfg, stream), be


def test_layers_hand_the_unit_factors_that_reproduce_the_gradient():
    rng = np.random.default_rng(0)
    st, be = _store((5, 12), 1)
    assert isinstance(st.tile.digital, WholeUnitDigital)
    dense = Dense("fc", st, np)
    dense.sparse_update = True
    x = rng.standard_normal((6, 12)).astype(np.float32)
    x[:, 3:] = 0                                      # 9 dead columns: the sparse update hands over 3
    dense.forward(x)
    dense.backward(rng.standard_normal((6, 5)).astype(np.float32), need_dx=False)
    xf, d = dense.w.factors
    assert dense.w.cols is not None and xf.shape == (6, 12)
    np.testing.assert_array_equal(d.T @ xf[:, dense.w.cols], dense.w.grad)

    cs, _ = _store((4, 3 * 3 * 2), 2)
    conv = Conv2d("conv", cs, np, c_in=2, kernel=3, padding=1)
    y = conv.forward(rng.standard_normal((2, 5, 5, 2)).astype(np.float32))
    conv.backward(rng.standard_normal(y.shape).astype(np.float32), need_dx=False)
    xc, dc = conv.w.factors
    assert xc.shape == (2 * 25, 18) and dc.shape == (2 * 25, 4)
    np.testing.assert_array_equal(dc.T @ xc, conv.w.grad)

    params = [dense.w, conv.w]
    apply_updates(params, Optimizer("sgd", np), 0.5, None, None, 6)
    assert st.tile.digital.batches == 1 and cs.tile.digital.batches == 1
    assert dense.w.factors is None and conv.w.factors is None

    # momentum reaching the unit past the config check: refused at the update too
    dense.forward(x)
    dense.backward(rng.standard_normal((6, 5)).astype(np.float32), need_dx=False)
    with pytest.raises(LayerError, match="plain-SGD update -lr d\\^T x"):
        apply_updates([dense.w], Optimizer("momentum", np), 0.5, None, None, 6)


def test_a_small_cnn_trains_with_the_whole_unit(tmp_path):
    tr = train(tmp_path / "c", cnn_cfg("pcm", train={"epochs": 1}, synapse={"dpu": "tile-golden"}))
    s = tr.summary()
    steps = -(-image_dataset().x_train.shape[0] // 16)
    for L in tr.task.store_layers():
        u = L.store.tile.digital
        assert isinstance(u, WholeUnitDigital) and u.batches == steps, L.name
    conv1 = tr.task.store_layers()[0].store.tile.digital
    assert conv1.tile_spec.batch == 16 * 8 * 8        # one factor row per patch: batch x positions
    assert s["total_pulses"] > 0 and s["test_accuracy"] > 0.5    # 3 classes: chance 1/3


def test_resume_with_the_whole_unit_says_it_is_not_bit_exact(tmp_path, capsys):
    """--resume on tile-golden continues the run (2 epochs in metrics.jsonl) and warns that the
    unit's generators restart; --dpu golden resumes without the warning."""
    _run(tmp_path, "tile-golden")
    out = tmp_path / "tile-golden"
    capsys.readouterr()
    assert main([a if a != "1" else "2" for a in COMMON] + ["--dpu", "tile-golden", "--out", str(out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "generators restart on resume" in err and "not bit for bit" in err
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    _run(tmp_path, "golden")
    assert main([a if a != "1" else "2" for a in COMMON] + ["--dpu", "golden", "--out", str(tmp_path / "golden"),
                                                          "--resume"]) == 0
    assert "generators restart" not in capsys.readouterr().err
