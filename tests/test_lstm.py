"""Character LSTM on crossbars: gradient check through time, the PTB character loader and its
errors, ideal devices tracking fp32, exact resume, RTL DPU = golden, event counts and energy,
``mcasim train lstm`` / ``mcasim sample`` on a tiny PTB run."""
from __future__ import annotations

import gzip
import io
import json
import math
import shutil
from contextlib import redirect_stdout

import numpy as np
import pytest

from gpu_model.backend import make_backend
from sim.config import ConfigError, config_from_dict
from sim.data import DatasetCorruptError, DatasetError
from sim.data.ptb import EOS, CharCorpus, load_ptb_char
from sim.energy import estimate_summary, load_table
from sim.nn import LSTM, Dense, softmax_cross_entropy
from sim.nn.recurrent import clip_gradients
from sim.nn.stores import FP32Weights
from sim.train import Trainer, load_checkpoint

from tests.conftest import central_difference, to_host

BE = make_backend("numpy", 0)   # CuPy under MCASIM_TEST_BACKEND=cupy (tests/conftest.py)
XP = BE.xp
FD = 1e-6


def dev(a):
    """A host array on the backend under test."""
    return XP.asarray(a)


# --- gradient check through time ---------------------------------------------------------------------
def f64_lstm(rng, n_in, H):
    st = FP32Weights(rng.normal(0, 0.5, (4 * H, n_in + H)), BE)
    st.w = st.w.astype(np.float64)
    L = LSTM("lstm", st, XP, n_in, H, dtype="float64")
    L.b.value = dev(rng.normal(0, 0.3, 4 * H))
    return L


def numeric(f, arr, idx):
    return central_difference(f, arr, idx, FD)


def test_lstm_gradient_check_through_time():
    """float64, central differences: weights, bias, inputs and the carried state (h0, c0) of a
    window of 6 steps; every parameter position checked is off by < 1e-7 (relative)."""
    rng = np.random.default_rng(0)
    B, T, n_in, H = 3, 6, 4, 5
    L = f64_lstm(rng, n_in, H)
    x = dev(rng.normal(size=(B, T, n_in)))
    h0, c0 = dev(rng.normal(0, 0.5, (B, H))), dev(rng.normal(0, 0.5, (B, H)))    # a carried state
    r = dev(rng.normal(size=(B, T, H)))

    def loss():
        return float((L.forward(x, h0, c0) * r).sum())

    loss()
    dx = L.backward(r.copy(), need_dx=True, need_dh0=True)
    checks = [("x", x, dx), ("h0", h0, L.dh0), ("c0", c0, L.dc0), ("W", L.store.w, L.w.grad),
              ("b", L.b.value, L.b.grad)]
    for name, arr, g in checks:
        assert g.shape == arr.shape, name
        for _ in range(10):
            idx = tuple(int(rng.integers(s)) for s in arr.shape)
            num = numeric(loss, arr, idx)
            assert abs(num - float(g[idx])) <= 1e-7 * max(1.0, abs(num)), (name, idx, num, float(g[idx]))
    # every gate block of W is exercised (gate order i, f, g, o)
    wg = to_host(L.w.grad)
    for k in range(4):
        assert np.abs(wg[k * H:(k + 1) * H]).sum() > 0


def test_lstm_with_projection_and_cross_entropy_gradient():
    """The task's loss (projection + softmax cross-entropy over the window) checked end to end."""
    rng = np.random.default_rng(1)
    B, T, V, H = 2, 5, 6, 4
    L = f64_lstm(rng, V, H)
    pst = FP32Weights(rng.normal(0, 0.5, (V, H)), BE)
    pst.w = pst.w.astype(np.float64)
    P = Dense("proj", pst, XP, dtype="float64")
    idx = rng.integers(0, V, (B, T))
    x = dev(np.eye(V)[idx])
    y = dev(rng.integers(0, V, (B, T)).reshape(-1))
    h0, c0 = dev(rng.normal(0, 0.5, (B, H))), dev(rng.normal(0, 0.5, (B, H)))

    def loss():
        return softmax_cross_entropy(XP, P.forward(L.forward(x, h0, c0).reshape(B * T, H)), y)[0]

    z = P.forward(L.forward(x, h0, c0).reshape(B * T, H))
    _, _, d = softmax_cross_entropy(XP, z, y)
    L.backward(P.backward(d, need_dx=True).reshape(B, T, H))
    for arr, g in ((L.store.w, L.w.grad), (P.store.w, P.w.grad), (L.b.value, L.b.grad)):
        for _ in range(8):
            i = tuple(int(rng.integers(s)) for s in arr.shape)
            assert abs(numeric(loss, arr, i) - float(g[i])) < 1e-8


def test_carried_state_equals_one_long_sequence_and_clipping():
    rng = np.random.default_rng(2)
    L = f64_lstm(rng, 3, 4)
    x = dev(rng.normal(size=(2, 9, 3)))
    full = to_host(L.forward(x))
    a = to_host(L.forward(x[:, :4]))
    b = L.forward(x[:, 4:], L.h, L.c)
    assert np.allclose(np.concatenate([a, to_host(b)], axis=1), full, atol=1e-14)
    # clipping: global L2 norm over all gradients scaled down to max_norm, untouched below it
    L.backward(XP.ones_like(b))
    params = L.params()
    n0 = math.sqrt(sum(float((p.grad ** 2).sum()) for p in params))
    assert float(clip_gradients(params, n0 / 2, XP)) == pytest.approx(n0)
    assert math.sqrt(sum(float((p.grad ** 2).sum()) for p in params)) == pytest.approx(n0 / 2)
    g = [to_host(p.grad).copy() for p in params]
    clip_gradients(params, n0, XP)
    assert all(np.array_equal(a, to_host(p.grad)) for a, p in zip(g, params))


# --- PTB characters -------------------------------------------------------------------------------------
def test_ptb_char_real_files(data_root):
    if not (data_root / "ptb" / "ptb.char.train.txt.gz").is_file():
        pytest.skip("PTB character files not in the data folder")
    c = load_ptb_char(data_root)
    assert c.name == "ptb-char" and len(c.vocab) == 50 and c.vocab == sorted(c.vocab) and EOS in c.vocab
    # PROVENANCE.md: 4,975,414 / 389,672 / 438,662 character tokens + one EOS per line
    assert (len(c.train), len(c.valid), len(c.test)) == (4_975_414 + 42_068, 389_672 + 3_370, 438_662 + 3_761)
    assert c.symbols_to_text(c.train[:24]) == "aer banknote berlitz cal"
    assert c.symbols_to_text(c.valid[:9]) == "consumers"


def _write_corpus(folder, texts):
    folder.mkdir(parents=True, exist_ok=True)
    for split, text in texts.items():
        with gzip.open(folder / f"ptb.char.{split}.txt.gz", "wb") as f:
            f.write(text.encode())


SMALL = {"train": " t h e _ c a t \n a _ d o g \n", "valid": " t h e _ d o g \n", "test": " a _ c a t \n"}


def test_ptb_char_small_copy_and_errors(tmp_path):
    _write_corpus(tmp_path / "ok" / "ptb", SMALL)
    c = load_ptb_char(tmp_path / "ok", verify=False)
    assert c.vocab == sorted(set("thecatadog_") | {EOS})
    assert c.symbols_to_text(c.train) == "the cat\na dog\n"
    # the published checksums are checked by default: a different file is an error naming it
    with pytest.raises(DatasetCorruptError, match=r"ptb\.char\.\w+\.txt\.gz.*SHA-256"):
        load_ptb_char(tmp_path / "ok")
    # truncated gzip
    bad = tmp_path / "trunc"
    shutil.copytree(tmp_path / "ok", bad)
    p = bad / "ptb" / "ptb.char.valid.txt.gz"
    p.write_bytes(p.read_bytes()[:-12])
    with pytest.raises(DatasetCorruptError, match=r"ptb\.char\.valid\.txt\.gz"):
        load_ptb_char(bad, verify=False)
    # not gzip at all
    p.write_bytes(b"\x1f\x8bgarbage")
    with pytest.raises(DatasetCorruptError, match=r"ptb\.char\.valid\.txt\.gz"):
        load_ptb_char(bad, verify=False)
    # a symbol in test that the train split does not have: file, symbol and line named
    _write_corpus(tmp_path / "unk", {**SMALL, "test": " a _ c a t \n a _ c o w \n"})
    with pytest.raises(DatasetError, match=r"ptb\.char\.test\.txt\.gz, line 2: symbol 'w'"):
        load_ptb_char(tmp_path / "unk", verify=False)
    # a token that is not one character
    _write_corpus(tmp_path / "tok", {**SMALL, "valid": " th e \n"})
    with pytest.raises(DatasetCorruptError, match=r"valid.*line 1.*'th'"):
        load_ptb_char(tmp_path / "tok", verify=False)
    # incomplete folder
    (tmp_path / "part").mkdir()
    shutil.copy(tmp_path / "ok" / "ptb" / "ptb.char.train.txt.gz", tmp_path / "part")
    with pytest.raises(DatasetError, match="missing ptb.char.valid.txt, ptb.char.test.txt"):
        load_ptb_char(tmp_path / "part", verify=False)


# --- training on a tiny synthetic corpus ---------------------------------------------------------------
def tiny_corpus(n_train=1300, n_eval=300, seed=0) -> CharCorpus:
    """Sentences from a small grammar: learnable structure, 14 symbols."""
    rng = np.random.default_rng(seed)
    words = ["the", "cat", "dog", "sat", "on", "a", "mat"]

    def text(n):
        out = []
        while len(out) < n:
            k = int(rng.integers(2, 6))
            out += list("_".join(words[int(i)] for i in rng.integers(0, len(words), k))) + [EOS]
        return out[:n]

    tr, va, te = text(n_train), text(n_eval), text(n_eval)
    vocab = sorted(set(tr))
    enc = {s: i for i, s in enumerate(vocab)}
    arr = [np.array([enc[s] for s in t], dtype=np.int64) for t in (tr, va, te)]
    return CharCorpus("tiny-char", vocab, *arr, source="test")


def lstm_cfg(mode, **over):
    d = {"train": {"epochs": 2, "batch_size": 4, "lr": 0.5, "optimizer": "sgd", "seed": 3,
                   "seconds_per_batch": 0.001, **over.pop("train", {})},
         "model": {"arch": "lstm", **over.pop("model", {})},
         "lstm": {"hidden": 8, "bptt": 12, "clip_norm": 5.0, "eval_streams": 4, **over.pop("lstm", {})},
         "synapse": {"mode": mode, "w_max": [2.0, 2.0], "epsilon_uS": 0.5, "refresh_threshold": 0.9,
                     **over.pop("synapse", {})},
         **over}
    return config_from_dict(d)


def train(path, cfg, ds=None, epochs=None):
    path.mkdir(parents=True, exist_ok=True)
    if epochs is not None:
        cfg.train.epochs = epochs
    tr = Trainer(cfg, ds or tiny_corpus(), make_backend("numpy", cfg.train.seed), path, progress=False)
    tr.run()
    return tr


def test_ideal_fine_epsilon_tracks_fp32(tmp_path):
    """Ideal devices with a fine granularity and no DAC/ADC quantisation follow the fp32 run."""
    fine = {"synapse": {"epsilon_uS": 0.005, "read_noise": False}, "tile": {"quantize": False}}
    fp = train(tmp_path / "fp", lstm_cfg("fp32"))
    ide = train(tmp_path / "ide", lstm_cfg("ideal", **fine))
    for Lf, Li in zip(fp.task.store_layers(), ide.task.store_layers()):
        wf, wi = Lf.store.weights(), Li.store.weights()
        eps_w = Li.store.epsilon_w
        rms = float(np.sqrt((wf ** 2).mean()))
        assert rms > 100 * eps_w, Lf.name
        assert np.abs(wf - wi).mean() < 0.03 * rms, Lf.name
        assert np.corrcoef(wf.ravel(), wi.ravel())[0, 1] > 0.999, Lf.name
    mf, mi = fp.metrics[-1], ide.metrics[-1]
    assert abs(mf["valid_bpc"] - mi["valid_bpc"]) < 0.05 and abs(mf["test_bpc"] - mi["test_bpc"]) < 0.05
    assert mi["pulses"] > 0
    assert mf["valid_bpc"] < fp.metrics[0]["train_bpc"] < math.log2(14) + 0.2    # it learns
    s = fp.summary()
    assert s["metric"] == "valid_bpc" and s["best_valid_bpc"] == min(r["valid_bpc"] for r in fp.metrics)


def test_resume_equals_uninterrupted(tmp_path):
    """PCM LSTM with Adam: stopping after epoch 1 and resuming gives the uninterrupted run exactly."""
    over = {"train": {"optimizer": "adam", "lr": 0.01}, "lstm": {"input_scale": 4.0}}
    full = train(tmp_path / "full", lstm_cfg("pcm", **over))
    train(tmp_path / "part", lstm_cfg("pcm", **over), epochs=1)
    again = Trainer(lstm_cfg("pcm", **over), tiny_corpus(), make_backend("numpy", 3), tmp_path / "part",
                    progress=False)
    again.load_state(load_checkpoint(tmp_path / "part"))
    again.run()
    for a, b in zip(full.metrics, again.metrics):
        for k in ("loss", "train_bpc", "valid_bpc", "test_bpc", "pulses", "refreshes"):
            assert a[k] == b[k], k
    assert full.summary()["events"] == again.summary()["events"]
    assert full.metrics[-1]["pulses"] > 0


def test_rtl_dpu_equals_golden(tmp_path):
    g = train(tmp_path / "g", lstm_cfg("pcm", train={"epochs": 1}))
    r = train(tmp_path / "r", lstm_cfg("pcm", train={"epochs": 1}, synapse={"dpu": "rtl"}))
    sg, sr = g.summary(), r.summary()
    assert sr["dpu"] == "rtl" and sg["dpu"] == "golden"
    for k in ("valid_bpc", "test_bpc", "loss", "total_pulses", "total_refreshes", "events"):
        assert sg[k] == sr[k], k
    assert sg["total_pulses"] > 0


def test_event_counts_embedding_and_energy(tmp_path):
    """Every character is one gate read forward and one transposed read backward (but the first of
    each window), the projection is read once per character; the embedding is a weight store too."""
    ds = tiny_corpus()
    cfg = lstm_cfg("pcm", train={"epochs": 1}, lstm={"embedding": 5}, synapse={"w_max": [1.0, 2.0, 2.0]})
    tr = train(tmp_path, cfg, ds)
    s = tr.summary()
    ev, layers = s["events"], s["layers"]
    assert [L["name"] for L in layers] == ["embed", "lstm", "proj"]
    V, H, E = len(ds.vocab), 8, 5
    assert [(L["out"], L["in"]) for L in layers] == [(E, V), (4 * H, E + H), (V, H)]
    B, T = 4, 12
    L = (len(ds.train) - 1) // B
    n = B * L                                          # characters trained
    n_win = -(-L // T)
    assert s["images_trained"] == n
    assert ev["fwd_vectors"] == 3 * n                  # embedding, gates, projection
    # backward: projection and gates (need_dx: every step, as the embedding needs its error)
    assert ev["bwd_vectors"] == 2 * n
    sizes = [L_["in"] * L_["out"] for L_ in layers]
    assert ev["cell_reads"] == n * (sum(sizes) + sizes[1] + sizes[2])
    assert ev["chi_updates"] == n_win * sum(sizes)
    assert ev["update_macs"] == n * sum(sizes)
    assert ev["activations"] == 2 * n * 5 * H
    assert ev["softmax_outputs"] == n * V
    assert ev["set_pulses"] == s["total_pulses"] > 0
    rep = estimate_summary(s, load_table())
    assert rep.ratio > 1
    # one-hot inputs: no transposed read at the first step of a window (nothing below needs it)
    tr1 = train(tmp_path / "onehot", lstm_cfg("pcm", train={"epochs": 1}), ds)
    assert tr1.summary()["events"]["bwd_vectors"] == 2 * n - B * n_win


def test_per_layer_adc_range_reaches_each_matrix(tmp_path):
    """tile.adc_range / adc_range_backward as lists: one programmable ADC range per weight layer."""
    cfg = lstm_cfg("pcm", tile={"adc_range": [3.0, 8.0], "adc_range_backward": [1.0, 1.5]})
    assert cfg.tile_preset(0).adc_range == 3.0 and cfg.tile_preset(1).adc_range == 8.0
    assert cfg.tile_preset(0).backward_range == 1.0 and cfg.tile_preset(1).backward_range == 1.5
    tr = Trainer(cfg, tiny_corpus(), make_backend("numpy", 3), tmp_path, progress=False)
    ranges = [(L.store.tile.tile.adc_range, L.store.tile.tile.backward_range) for L in tr.task.store_layers()]
    assert ranges == [(3.0, 1.0), (8.0, 1.5)]
    assert "adc_range = [3.0, 8.0]" in cfg.to_toml()
    with pytest.raises(ConfigError, match="ask for one layer"):
        cfg.tile_preset()
    with pytest.raises(ConfigError, match="need 1 or 2 values"):
        lstm_cfg("pcm", tile={"adc_range": [3.0, 8.0, 1.0]})
    with pytest.raises(ConfigError, match="per-layer lists only for"):
        lstm_cfg("pcm", tile={"adc_bits": [8, 9]})
    with pytest.raises(ConfigError, match="adc_range must be > 0"):
        lstm_cfg("pcm", tile={"adc_range": [3.0, -1.0]})


def test_bad_lstm_config_is_a_clear_error():
    with pytest.raises(ConfigError, match="one per layer"):
        lstm_cfg("pcm", lstm={"embedding": 4})          # 3 weight layers, 2 w_max values
    with pytest.raises(ConfigError, match="lstm.eval_streams"):
        lstm_cfg("pcm", lstm={"eval_streams": 0})


def test_cli_train_sample_energy_on_ptb(tmp_path, data_root):
    """mcasim train lstm on a slice of PTB, then sample N characters; the energy report of the run."""
    if not (data_root / "ptb" / "ptb.char.train.txt.gz").is_file():
        pytest.skip("PTB character files not in the data folder")
    from sim.cli import main
    out = tmp_path / "run"
    rc = main(["train", "lstm", "--dataset", "ptb-char", "--data-dir", str(data_root), "--synapse", "pcm",
               "--config", "configs/lstm_ptb_pcm.toml", "--epochs", "1", "--out", str(out), "--quiet",
               "--set", "train.train_subset=2000", "--set", "train.test_subset=400", "--set", "lstm.hidden=16",
               "--set", "lstm.bptt=20", "--set", "train.batch_size=8", "--set", "lstm.eval_streams=4"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["dataset"] == "ptb-char" and s["metric"] == "valid_bpc" and 0 < s["test_bpc"] < 8
    assert (out / "bpc.png").is_file()
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["sample", str(out), "--chars", "40", "--prime", "the ", "--seed", "1",
                     "--data-dir", str(data_root)]) == 0
    text = buf.getvalue()
    assert text.startswith("the ") and len(text) == len("the ") + 40 + 1 and text.endswith("\n")
    buf2 = io.StringIO()
    with redirect_stdout(buf2):
        main(["sample", str(out), "--chars", "40", "--prime", "the ", "--seed", "1", "--data-dir", str(data_root)])
    assert buf2.getvalue() == text                   # seeded (fresh read noise is seeded too)
    assert main(["sample", str(out), "--chars", "5", "--prime", "THE", "--data-dir", str(data_root)]) == 2
    rep = estimate_summary(s, load_table())          # what mcasim energy reports for the run
    assert rep.ratio > 1 and rep.images == s["images_trained"] == 8 * ((2000 - 1) // 8)
    # the readout ablation scores the LSTM by its own BPC; the drift evaluation is for classifiers
    assert main(["evaluate", str(out), "--readout", "--data-dir", str(data_root)]) == 0
    rows = json.loads((out / "readout_eval.json").read_text())["rows"]
    assert [r["readout"] for r in rows][-1] == "neither" and all(0 < r["test_bpc"] < 8 for r in rows)
    assert main(["evaluate", str(out), "--data-dir", str(data_root)]) == 2
