"""``python -m benchmarks.run --from-run RUN``: a run folder's checkpoint restored for timing."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks import run as bench_run
from benchmarks.common import run_trainer
from gpu_model.backend import make_backend
from sim.config import config_from_dict
from sim.data import load_digits_fallback
from sim.train import RunError, Trainer

from tests.conftest import to_host


def _pcm_run(folder):
    cfg = config_from_dict({"train": {"epochs": 1, "lr": 0.1, "seed": 3}, "model": {"hidden": [16]},
                            "synapse": {"mode": "pcm", "w_max": 1.0, "epsilon_uS": 0.5}})
    folder.mkdir()
    (folder / "config.toml").write_text(cfg.to_toml())     # as `mcasim train` writes it
    ds = load_digits_fallback()
    tr = Trainer(cfg, ds, make_backend("numpy", 3), folder, progress=False)
    tr.run()
    return tr, ds


def test_run_trainer_restores_the_checkpoint_and_writes_nothing(tmp_path):
    run = tmp_path / "run"
    tr, ds = _pcm_run(run)
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    again = run_trainer(run, ds, "numpy", "mlp")
    assert again.epoch == 1 and again.cfg.synapse.mode == "pcm"
    for a, b in zip(tr.task.store_layers(), again.task.store_layers()):
        np.testing.assert_array_equal(to_host(a.store.weights()), to_host(b.store.weights()))
    keys = again.task.epoch_batches(again.epoch)
    for k in keys[:3]:                                      # steps run, and the folder is untouched
        again.step(k, again.lr_at(again.epoch), again.be.child_rng(7))
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before
    fused = run_trainer(run, ds, "numpy", "mlp", engine="fused")     # the same state, carried over
    assert fused.cfg.tile_engine() == "fused" and fused.epoch == 1
    for a, b in zip(tr.task.store_layers(), fused.task.store_layers()):
        np.testing.assert_allclose(to_host(b.store.weights()), to_host(a.store.weights()), rtol=0, atol=1e-6)
    for k in keys[:3]:
        fused.step(k, fused.lr_at(fused.epoch), fused.be.child_rng(7))
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before
    with pytest.raises(RunError, match="'mlp' run; this benchmark times 'cnn'"):
        run_trainer(run, ds, "numpy", "cnn")
    with pytest.raises(RunError, match="not a run folder"):
        run_trainer(tmp_path, ds, "numpy", "mlp")


def test_from_run_cli_errors(tmp_path, capsys):
    run = tmp_path / "run"
    _pcm_run(run)
    cases = [(["--from-run", str(tmp_path / "nothing")], "is not a run folder"),
             (["cnn", "--from-run", str(run)], "is a 'mlp' run; none of cnn times 'mlp' runs"),
             (["--from-run", str(run), "--set", "train.lr=0.1"], "--set cannot change it")]
    for argv, msg in cases:
        with pytest.raises(SystemExit) as exc:
            bench_run.main(argv + ["--out", str(tmp_path / "r.json")])
        assert exc.value.code == 2
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
