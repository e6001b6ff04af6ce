"""Training orchestrator: gradients, modes, resume, config and CLI errors."""
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from gpu_model.backend import make_backend
from sim.cli import main
from sim.config import ConfigError, config_from_dict, load_config
from sim.data import Dataset, DatasetError, load_digits_fallback, load_mnist
from sim.train import Trainer
from tests.conftest import central_difference


def tiny_dataset(n=64, d=12, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, d)).astype(np.float32)
    y = rng.integers(0, k, n)
    return Dataset("tiny", x, y, x[:16], y[:16], source="test", n_classes=k)


def test_gradient_matches_finite_differences():
    """The MLP as built from config (fp32 mode, output gains) against central finite differences."""
    from sim.nn import softmax_cross_entropy
    from sim.tasks.models import build_network
    cfg = config_from_dict({"model": {"hidden": [7], "output_gain": True}, "synapse": {"mode": "fp32"}})
    be = make_backend("numpy", 0)   # CuPy under MCASIM_TEST_BACKEND=cupy (tests/conftest.py)
    xp = be.xp
    ds = tiny_dataset()
    net = build_network(cfg, (ds.n_features,), ds.n_classes, be)
    rng = np.random.default_rng(1)
    for p in net.params():   # float64 for a clean finite-difference check
        if p.store is not None:
            p.store.w = p.store.w.astype(np.float64)
        else:
            p.value = xp.asarray(rng.uniform(0.5, 1.5, p.value.shape) if p.key.endswith(".g")
                                 else rng.normal(0, 0.1, p.value.shape))
    xb, yb = xp.asarray(ds.x_train[:5].astype(np.float64)), xp.asarray(ds.y_train[:5])

    def loss_fn():
        return softmax_cross_entropy(xp, net.forward(xb), yb)[0]

    _, _, d = softmax_cross_entropy(xp, net.forward(xb), yb)
    net.backward(d)
    h = 1e-6

    def numeric(arr, idx):
        return central_difference(loss_fn, arr, idx, h)

    assert [p.key for p in net.params()] == ["fc1.w", "fc1.b", "fc1.g", "fc2.w", "fc2.b", "fc2.g"]
    for p in net.params():
        arr = p.store.w if p.store is not None else p.value
        for _ in range(6):
            idx = tuple(int(rng.integers(s)) for s in arr.shape)
            assert float(p.grad[idx]) == pytest.approx(numeric(arr, idx), rel=1e-4, abs=1e-8), p.key


REFERENCE = Path(__file__).parent / "data" / "mlp_reference_06c5263.json"


@pytest.mark.numpy_only("the reference summaries were made with NumPy's random stream")
@pytest.mark.parametrize("name", ["pcm_sgd", "pcm_mom"])
def test_mlp_on_the_layer_library_keeps_its_results(tmp_path, name):
    """The MLP is one instance of the layer library: the same commands give the summaries the
    MLP-only trainer gave (commit 06c5263): accuracy, loss, pulses, refreshes, every event count."""
    import shlex
    ref = json.loads(REFERENCE.read_text())[name]
    argv = shlex.split(ref["command"].replace("RUNS/", str(tmp_path) + "/"))[1:]
    assert main(argv) == 0
    s = json.loads((tmp_path / name / "summary.json").read_text())
    for k in ("test_accuracy", "best_test_accuracy", "train_accuracy", "loss", "total_pulses", "total_refreshes",
              "images_trained"):
        assert s[k] == ref[k], k
    # every event the reference counted, equal; events counted since (verified updates) are zero
    assert {k: v for k, v in s["events"].items() if k in ref["events"]} == ref["events"]
    assert set(ref["events"]) <= set(s["events"])
    assert all(v == 0 for k, v in s["events"].items() if k not in ref["events"])
    assert s["total_pulses"] > 0 and s["total_refreshes"] >= 0


def _train(tmp, mode, epochs=1, **train):
    d = {"train": {"epochs": epochs, "lr": 0.1, "seed": 3, **train}, "model": {"hidden": [32]},
         "synapse": {"mode": mode, "w_max": [1.0, 2.0], "epsilon_uS": [0.05, 0.05], "refresh_threshold": 0.9},
         "tile": {"quantize": False}}
    cfg = config_from_dict(d)
    be = make_backend("numpy", 3)
    tr = Trainer(cfg, load_digits_fallback(), be, tmp, progress=False)
    tr.run()
    return tr


def test_ideal_small_epsilon_tracks_fp32(tmp_path):
    """Ideal devices with a fine granularity follow floating-point SGD closely."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    fp = _train(tmp_path / "a", "fp32", epochs=2)
    ide = _train(tmp_path / "b", "ideal", epochs=2)
    for Lf, Li in zip(fp.task.store_layers(), ide.task.store_layers()):
        wf, wi = Lf.store.weights(), Li.store.weights()
        eps_w = Li.store.epsilon_w
        # chi holds at most one granule per weight; the rest is the float accumulation difference
        assert np.abs(wf - wi).max() < 6 * eps_w
        assert np.corrcoef(wf.ravel(), wi.ravel())[0, 1] > 0.999
    assert abs(fp.metrics[-1]["test_accuracy"] - ide.metrics[-1]["test_accuracy"]) < 0.02
    assert ide.metrics[-1]["pulses"] > 0


def test_pcm_short_run_on_mnist_learns(tmp_path, data_root):
    cfg = config_from_dict({"train": {"epochs": 1, "train_subset": 3000, "test_subset": 2000, "lr": 0.1},
                            "synapse": {"mode": "pcm"}})
    be = make_backend("numpy", 0)
    tr = Trainer(cfg, load_mnist(data_root), be, tmp_path, progress=False)
    tr.run()
    m = tr.metrics[-1]
    assert m["test_accuracy"] > 0.80, m
    assert m["pulses"] > 1000
    s = tr.summary()
    assert s["events"]["set_pulses"] == s["total_pulses"]
    assert s["events"]["cell_reads"] > 0 and s["events"]["chi_updates"] > 0


@pytest.mark.parametrize("devices", [1, 3])
def test_resume_equals_uninterrupted(tmp_path, devices):
    """1 epoch + --resume = 2 epochs, also with multi-device synapses (their arbiters checkpointed)."""
    common = ["train", "mlp", "--dataset", "digits", "--synapse", "pcm", "--quiet", "--backend", "numpy",
              "--seed", "5", "--set", "model.hidden=[16]", "--set", "train.lr=0.2",
              "--set", f"synapse.devices_per_side={devices}"]
    assert main(common + ["--epochs", "2", "--out", str(tmp_path / "full")]) == 0
    assert main(common + ["--epochs", "1", "--out", str(tmp_path / "part")]) == 0
    assert main(common + ["--epochs", "2", "--out", str(tmp_path / "part"), "--resume"]) == 0
    a = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b):
        for k in ("loss", "train_accuracy", "test_accuracy", "pulses", "refreshes"):
            assert ra[k] == rb[k], k
    sa = json.loads((tmp_path / "full" / "summary.json").read_text())
    sb = json.loads((tmp_path / "part" / "summary.json").read_text())
    assert sa["events"] == sb["events"] and sa["devices_per_side"] == devices
    for f in ("accuracy.png", "pulses.png", "conductance_hist.png", "config.toml", "checkpoint.npz"):
        assert (tmp_path / "full" / f).is_file(), f


def test_run_folder_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text("precious")
    rc = main(["train", "mlp", "--dataset", "digits", "--synapse", "fp32", "--epochs", "1", "--quiet",
               "--out", str(out)])
    assert rc == 2
    assert "exists" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == "precious"


@pytest.mark.parametrize("d, msg", [
    ({"train": {"lr": -1.0}}, "train.lr"),
    ({"train": {"epochs": "3"}}, "train.epochs must be an integer"),
    ({"train": {"nope": 1}}, "unknown key train.nope"),
    ({"bogus": {}}, "unknown config section"),
    ({"synapse": {"preset": "unobtainium"}}, "unknown preset"),
    ({"synapse": {"w_max": [0.5, 1.0, 2.0]}}, "one per layer"),
    ({"tile": {"adc_bits": 0}}, "adc_bits"),
    ({"synapse": {"devices_per_side": 0}}, "synapse.devices_per_side must be an integer >= 1, got 0"),
    ({"dpu": {"pmax": 0}}, "pmax"),
    ({"synapse": {"common_mode_uS": 10.0}}, r"common_mode_uS .*\(9 µS\)"),
    ({"device": {"colour": 1.0}}, r"unknown key device.colour; known keys: .*g_max"),
    ({"device": {"reset_std": -0.5}}, r"\[device\]: PCM preset 'jap2018': reset_std"),
    ({"synapse": {"mode": "ideal"}, "device": {"nu_mean": 0.0}}, r"\[device\] overrides the PCM preset and needs"),
    ({"synapse": {"common_mode_uS": 4.0}, "device": {"g_max": 5.0}}, r"common_mode_uS .*\(2.25 µS\)"),
    ({"synapse": {"verify_gain": 1.5}}, r"synapse.verify_gain must be in \(0, 1\], got 1.5"),
])
def test_bad_config_is_a_clear_error(d, msg):
    with pytest.raises(ConfigError, match=msg):
        config_from_dict(d)


def test_cli_bad_config_file(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nlr = = 3\n")
    rc = main(["train", "mlp", "--config", str(bad), "--out", str(tmp_path / "r")])
    assert rc == 2
    assert "invalid TOML" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_truncated_mnist_file_is_named(tmp_path, data_root):
    src = Path(data_root) / "mnist"
    dst = tmp_path / "mnist"
    dst.mkdir()
    for f in src.glob("*.gz"):
        data = f.read_bytes()
        if f.name.startswith("t10k-labels"):
            data = gzip.compress(gzip.decompress(data)[:-100])   # truncated payload, valid gzip
        (dst / f.name).write_bytes(data)
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path, download=False)


def test_corrupt_gzip_is_named(tmp_path):
    d = tmp_path / "mnist"
    d.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (d / (stem + ".gz")).write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DatasetError, match="idx"):
        load_mnist(tmp_path, download=False)


def test_device_overrides_reach_the_devices(tmp_path):
    """[device] replaces fields of the PCM preset in the stores (ablation studies), and is recorded
    in the run's config.toml so that --resume rebuilds the same devices."""
    d = {"train": {"epochs": 1, "seed": 3}, "model": {"hidden": [8]},
         "synapse": {"mode": "pcm", "w_max": [1.0, 2.0]}, "device": {"set_sigma_hist": 0.0, "nu_mean": 0.0}}
    cfg = config_from_dict(d)
    assert cfg.pcm_preset().set_sigma_hist == 0.0 and cfg.pcm_preset().set_mu_hist == 1.40
    tr = Trainer(cfg, load_digits_fallback(), make_backend("numpy", 3), tmp_path, progress=False)
    presets = [s.tile.config.device for s in tr.task.analog_stores()]
    assert presets and all(p.set_sigma_hist == 0.0 and p.nu_mean == 0.0 and p.set_sigma_offset == 0.26
                           for p in presets)
    assert load_config(None, {"device": {"set_sigma_hist": 0.0}}).pcm_preset().set_sigma_hist == 0.0
    again = config_from_dict(__import__("tomllib").loads(cfg.to_toml()))
    assert again.device == {"set_sigma_hist": 0.0, "nu_mean": 0.0}
    plain = config_from_dict({k: v for k, v in d.items() if k != "device"})
    assert plain.pcm_preset().set_sigma_hist == 2.15


def test_load_config_overrides(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[train]\nlr = 0.3\n[synapse]\nmode = "ideal"\n')
    cfg = load_config(f, {"train": {"epochs": 4}})
    assert cfg.train.lr == 0.3 and cfg.train.epochs == 4 and cfg.synapse.mode == "ideal"
    again = config_from_dict(__import__("tomllib").loads(cfg.to_toml()))
    assert again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize("verified", [False, True])
def test_rtl_dpu_in_the_loop_matches_golden(tmp_path, verified):
    """Training with the Verilator-compiled DPU gives exactly the golden model's run (bit-exact unit),
    also with verified updates (their corrections reach the unit as part of the increment)."""
    common = ["train", "mlp", "--dataset", "digits", "--synapse", "pcm", "--quiet", "--backend", "numpy",
              "--seed", "2", "--epochs", "1", "--set", "model.hidden=[16]", "--set", "train.lr=0.2",
              "--set", f"synapse.verified_update={'true' if verified else 'false'}"]
    assert main(common + ["--dpu", "golden", "--out", str(tmp_path / "g")]) == 0
    assert main(common + ["--dpu", "rtl", "--out", str(tmp_path / "r")]) == 0
    g = json.loads((tmp_path / "g" / "summary.json").read_text())
    r = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert r["dpu"] == "rtl" and g["dpu"] == "golden"
    assert g["events"]["set_pulses"] > 0
    for k in ("test_accuracy", "loss", "total_pulses", "total_refreshes", "events"):
        assert g[k] == r[k], k


def test_corrupt_mnist_never_falls_back(tmp_path):
    """A present but corrupt file is an error even when the bundled-digits fallback is allowed."""
    from sim.data import DatasetCorruptError, load_dataset
    d = tmp_path / "mnist"
    d.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (d / stem).write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 16)   # float IDX header: not ubyte
    with pytest.raises(DatasetCorruptError, match="does not match the published MNIST"):
        load_dataset("mnist", tmp_path, allow_fallback=True)


def test_diverged_training_is_a_clear_error(tmp_path, capsys):
    """A non-finite epoch loss stops the run with a message, not a traceback from the evaluation."""
    out = tmp_path / "div"
    rc = main(["train", "mlp", "--dataset", "digits", "--synapse", "fp32", "--epochs", "2", "--quiet",
               "--set", "train.lr=1e30", "--set", 'model.activation="relu"', "--out", str(out)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "mcasim train: error: training diverged in epoch 1" in err and "train.lr" in err, err
    assert not (out / "summary.json").exists() and not (out / "checkpoint.npz").exists()
