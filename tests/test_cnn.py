"""The CNN on the layer library: ideal devices track fp32, resume is exact, the RTL digital unit
gives the golden run, and the event counts cover conv layers (energy model)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from gpu_model.backend import make_backend
from sim.config import config_from_dict
from sim.data import Dataset
from sim.energy import estimate_summary, load_table
from sim.train import Trainer
from tests.conftest import to_host


def image_dataset(n=448, hw=8, seed=0):
    """Synthetic 3-class NHWC images: a bright square in one of three places, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(0, 0.3, (n, hw, hw, 3)).astype(np.float32)
    for c in range(3):
        x[y == c, 2 * c:2 * c + 3, 2:5, :] += 2.5
    return Dataset("squares", x[:n - 64], y[:n - 64], x[n - 64:], y[n - 64:], source="test", n_classes=3)


def cnn_cfg(mode, **over):
    d = {"train": {"epochs": 2, "batch_size": 16, "lr": 0.05, "optimizer": "sgd", "seed": 4, "eval_batch": 64,
                   "seconds_per_batch": 0.001, **over.pop("train", {})},
         "model": {"arch": "cnn", "conv": [4, "M", 6, "M"], "hidden": [8], "activation": "relu",
                   "batch_norm": True, "init": "he_normal", **over.pop("model", {})},
         "synapse": {"mode": mode, "w_max": [2.0, 1.0, 1.0, 2.0], "epsilon_uS": 0.5, "refresh_threshold": 0.9,
                     **over.pop("synapse", {})},
         **over}
    return config_from_dict(d)


def train(tmp_path, cfg, ds=None, seed=4, epochs=None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    tr = Trainer(cfg, ds or image_dataset(), make_backend("numpy", seed), tmp_path, progress=False)
    if epochs is not None:
        cfg.train.epochs = epochs
    tr.run()
    return tr


def test_ideal_fine_epsilon_tracks_fp32_on_a_conv_net(tmp_path):
    """Ideal devices with a fine granularity (and no DAC/ADC quantisation) follow fp32 SGD."""
    fine = {"synapse": {"epsilon_uS": 0.01}, "tile": {"quantize": False}}
    fp = train(tmp_path / "fp", cnn_cfg("fp32"))
    ide = train(tmp_path / "ide", cnn_cfg("ideal", **fine))
    for Lf, Li in zip(fp.task.store_layers(), ide.task.store_layers()):
        wf, wi = to_host(Lf.store.weights()), to_host(Li.store.weights())
        eps_w = Li.store.epsilon_w
        # weights are hundreds of granules; chi holds < 1 granule per weight, and that difference
        # grows slowly through BatchNorm over the 16 updates: a few granules, ~1 % of the weights
        rms = float(np.sqrt((wf ** 2).mean()))
        assert rms > 100 * eps_w, Lf.name
        assert np.abs(wf - wi).mean() < min(8 * eps_w, 0.03 * rms), Lf.name
        assert np.corrcoef(wf.ravel(), wi.ravel())[0, 1] > 0.999, Lf.name
    assert abs(fp.metrics[-1]["test_accuracy"] - ide.metrics[-1]["test_accuracy"]) <= 0.05
    assert ide.metrics[-1]["pulses"] > 0
    assert fp.metrics[-1]["test_accuracy"] > 0.6        # the task is learnable


def test_conv_net_resume_equals_uninterrupted(tmp_path):
    """PCM conv net with BatchNorm, dropout, augmentation and momentum: stopping after epoch 1 and
    resuming from the checkpoint gives the uninterrupted run exactly."""
    over = {"model": {"dropout": 0.3}, "train": {"optimizer": "momentum", "augment": True}}
    full = train(tmp_path / "full", cnn_cfg("pcm", **over))
    part = train(tmp_path / "part", cnn_cfg("pcm", **over), epochs=1)
    from sim.train import load_checkpoint
    again = Trainer(cnn_cfg("pcm", **over), image_dataset(), make_backend("numpy", 4), tmp_path / "part",
                    progress=False)
    again.load_state(load_checkpoint(tmp_path / "part"))
    again.run()
    assert part.task.augment
    for a, b in zip(full.metrics, again.metrics):
        for k in ("loss", "train_accuracy", "test_accuracy", "pulses", "refreshes"):
            assert a[k] == b[k], k
    assert full.summary()["events"] == again.summary()["events"]
    assert full.metrics[-1]["pulses"] > 0


def test_conv_event_counts_and_energy(tmp_path):
    ds = image_dataset()
    tr = train(tmp_path, cnn_cfg("pcm", train={"epochs": 1}), ds)
    s = tr.summary()
    ev, layers = s["events"], s["layers"]
    assert [L["name"] for L in layers] == ["conv1", "conv2", "fc1", "fc2"]
    assert [L.get("vectors_per_image") for L in layers] == [64, 16, None, None]
    n = len(ds.x_train)
    per_image_fwd = sum(L.get("vectors_per_image", 1) for L in layers)
    assert ev["fwd_vectors"] == n * per_image_fwd
    # every crossbar read of a patch reads every cell of the kernel matrix once
    fwd_cells = sum(L.get("vectors_per_image", 1) * L["in"] * L["out"] for L in layers)
    bwd_cells = sum(L.get("vectors_per_image", 1) * L["in"] * L["out"] for L in layers[1:])
    assert ev["cell_reads"] == n * (fwd_cells + bwd_cells)
    assert ev["bwd_vectors"] == n * sum(L.get("vectors_per_image", 1) for L in layers[1:])
    # weight gradients: batch x positions x weights MACs; one chi update per weight per batch
    n_batches = -(-n // 16)
    n_w = sum(L["in"] * L["out"] for L in layers)
    assert ev["chi_updates"] == n_batches * n_w
    assert ev["update_macs"] == n * sum(L.get("vectors_per_image", 1) * L["in"] * L["out"] for L in layers)
    assert ev["set_pulses"] == s["total_pulses"] > 0
    rep = estimate_summary(s, load_table())
    assert rep.ratio > 1 and not any("beyond" in note for note in rep.notes)
    # mcasim energy on the run folder
    (tmp_path / "summary.json").write_text(json.dumps(s))
    from sim.cli import main
    assert main(["energy", str(tmp_path), "--json"]) == 0


def test_rtl_dpu_trains_a_conv_net_like_the_golden_model(tmp_path):
    """The DPU sees flat arrays: the Verilator-compiled unit gives the golden run for a CNN too."""
    g = train(tmp_path / "g", cnn_cfg("pcm", train={"epochs": 1}))
    r = train(tmp_path / "r", cnn_cfg("pcm", train={"epochs": 1}, synapse={"dpu": "rtl"}))
    sg, sr = g.summary(), r.summary()
    assert sr["dpu"] == "rtl" and sg["dpu"] == "golden"
    for k in ("test_accuracy", "loss", "total_pulses", "total_refreshes", "events"):
        assert sg[k] == sr[k], k
    assert sg["total_pulses"] > 0


@pytest.mark.parametrize("over, msg", [
    ({"model": {"conv": []}}, "at least one conv"),
    ({"model": {"conv": [4, "X"]}}, "model.conv"),
    ({"model": {"kernel": 2}}, "odd"),
    ({"model": {"pool": "min"}}, "model.pool"),
    ({"model": {"dropout": 1.0}}, "model.dropout"),
    ({"synapse": {"w_max": [1.0, 2.0]}}, "one per layer"),
])
def test_bad_cnn_config_is_a_clear_error(over, msg):
    from sim.config import ConfigError
    with pytest.raises(ConfigError, match=msg):
        cnn_cfg("pcm", **over)


def test_cnn_on_flat_inputs_is_a_clear_error(tmp_path):
    from sim.config import ConfigError
    rng = np.random.default_rng(0)
    flat = Dataset("flat", rng.random((32, 12)).astype(np.float32), rng.integers(0, 3, 32),
                   rng.random((8, 12)).astype(np.float32), rng.integers(0, 3, 8), source="t", n_classes=3)
    with pytest.raises(ConfigError, match="image inputs"):
        Trainer(cnn_cfg("fp32"), flat, make_backend("numpy", 0), tmp_path, progress=False)


def test_drift_evaluation_with_compensation_on_a_conv_net(tmp_path):
    """mcasim evaluate's drift + global drift compensation works layer by layer on a CNN."""
    from sim.cli.evaluate import evaluate_drift
    tr = train(tmp_path, cnn_cfg("pcm", train={"epochs": 1}))
    before = tr.collect_events()
    res = evaluate_drift(tr, [1.0, 3.0e7], repeats=1)
    assert tr.collect_events() == before                  # evaluation reads are not training events
    p0, p1 = res["points"]
    assert len(p1["gdc_scales"]) == 4
    assert all(s > 1.0 for s in p1["gdc_scales"][:1])     # a year of drift shrinks the conv outputs
    assert 0.0 <= p1["accuracy"] <= 1.0 and 0.0 <= p1["accuracy_gdc"] <= 1.0
