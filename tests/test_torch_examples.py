"""The example scripts (examples/*.py) run end to end on a few samples, write their metrics, and
the CNN and LSTM ones resume from their checkpoint as an uninterrupted run would."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from types import SimpleNamespace

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.numpy_only("CPU tensors on NumPy tiles")

ROOT = Path(__file__).resolve().parents[1]


def _example(name):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(ROOT / "examples"))
    return mod


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _fake_cifar(n_train=128, n_test=32):
    """CIFAR-10-shaped random images (the example's loop is under test, not the data: loading
    the real set takes longer than this whole file may)."""
    rng = np.random.default_rng(0)
    return SimpleNamespace(x_train=rng.standard_normal((n_train, 32, 32, 3)).astype(np.float32),
                           y_train=rng.integers(0, 10, n_train), x_test=rng.standard_normal((n_test, 32, 32, 3)).astype(np.float32),
                           y_test=rng.integers(0, 10, n_test), input_shape=(32, 32, 3), n_classes=10)


def _fake_ptb(vocab=50, n_train=3300, n_test=400):
    rng = np.random.default_rng(1)
    return SimpleNamespace(train=rng.integers(0, vocab, n_train), valid=rng.integers(0, vocab, n_test),
                           test=rng.integers(0, vocab, n_test), vocab=[chr(48 + i) for i in range(vocab)])


def _same_metrics(ma, mb):
    drop = ("seconds",)
    assert [{k: v for k, v in m.items() if k not in drop} for m in ma] == \
        [{k: v for k, v in m.items() if k not in drop} for m in mb]


def test_cnn_example_trains_and_resumes(monkeypatch, tmp_path):
    ex = _example("cnn_cifar10")
    monkeypatch.setattr(ex, "load_dataset", lambda name: _fake_cifar())
    monkeypatch.chdir(ROOT)
    args = ["--config", "configs/cnn_cifar10_pcm.toml"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert ex.main(args + ["--out", str(a), "--epochs", "2"]) == 0
    assert ex.main(args + ["--out", str(b), "--epochs", "1"]) == 0
    assert ex.main(args + ["--out", str(b), "--epochs", "2"]) == 0        # resumes from checkpoint.pt
    ma, mb = _metrics(a), _metrics(b)
    assert [m["epoch"] for m in mb] == [1, 2] and ma[-1]["pulses"] > 0
    _same_metrics(ma, mb)


def test_lstm_example_trains_and_resumes(monkeypatch, tmp_path):
    ex = _example("lstm_ptb")
    monkeypatch.setattr(ex, "load_dataset", lambda name: _fake_ptb())
    monkeypatch.chdir(ROOT)
    args = ["--config", "configs/lstm_ptb_pcm.toml"]       # 32 streams of ~100 characters: one window
    a, b = tmp_path / "a", tmp_path / "b"
    assert ex.main(args + ["--out", str(a), "--epochs", "2"]) == 0
    assert ex.main(args + ["--out", str(b), "--epochs", "1"]) == 0
    assert ex.main(args + ["--out", str(b), "--epochs", "2"]) == 0
    ma, mb = _metrics(a), _metrics(b)
    assert [m["epoch"] for m in mb] == [1, 2]
    _same_metrics(ma, mb)


def test_transformer_example_runs(monkeypatch, tmp_path):
    ex = _example("transformer_ptb")
    monkeypatch.setattr(ex, "load_dataset", lambda name: _fake_ptb(n_train=4200, n_test=2100))
    monkeypatch.chdir(ROOT)
    out = tmp_path / "tf"
    assert ex.main(["--synapse", "pcm", "--out", str(out), "--train-subset", "4200", "--test-subset", "2100",
                    "--layers", "1", "--d-model", "32", "--context", "32", "--batch", "16"]) == 0
    (m,) = _metrics(out)
    assert 0 < m["test_bpc"] < 10
    st = torch.load(out / "checkpoint.pt", weights_only=True)
    assert sum(k.endswith("_extra_state") for k in st["model"]) == 5    # qkv, out, fc1, fc2 + head


def test_report_tables_and_plots_example_runs(monkeypatch, tmp_path, capsys):
    from mcasim.torch import report
    ex = _example("transformer_ptb")
    monkeypatch.setattr(ex, "load_dataset", lambda name: _fake_ptb())
    monkeypatch.chdir(ROOT)
    out = tmp_path / "tf_fp32"
    assert ex.main(["--synapse", "fp32", "--out", str(out), "--train-subset", "3300", "--test-subset", "400",
                    "--layers", "1", "--d-model", "16", "--context", "16", "--batch", "8", "--epochs", "2"]) == 0
    assert report.main([str(out), "--plot", str(tmp_path / "curve.png")]) == 0
    text = capsys.readouterr().out
    assert "| tf_fp32 |" in text and "test_bpc" in text
    assert "`python examples/transformer_ptb.py --synapse fp32 --out" in text
    assert (tmp_path / "curve.png").stat().st_size > 0
