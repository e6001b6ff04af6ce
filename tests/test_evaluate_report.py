"""mcasim evaluate (accuracy after drift) and mcasim report (tables from summaries)."""
import json

import pytest

from sim.cli import main


@pytest.fixture(scope="module")
def pcm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "pcm"
    rc = main(["train", "mlp", "--dataset", "digits", "--synapse", "pcm", "--epochs", "2", "--quiet",
               "--backend", "numpy", "--seed", "1", "--set", "model.hidden=[24]", "--set", "train.lr=0.2",
               "--out", str(out)])
    assert rc == 0
    return out


def test_evaluate_writes_accuracy_vs_time(pcm_run):
    assert main(["evaluate", str(pcm_run), "--times", "1,86400,31536000", "--backend", "numpy"]) == 0
    res = json.loads((pcm_run / "drift_eval.json").read_text())
    pts = res["points"]
    assert [p["t_after_training_s"] for p in pts] == [1.0, 86400.0, 31536000.0]
    # drift shrinks the conductances: the compensation factors grow with time and exceed 1
    g = [p["gdc_scales"][0] for p in pts]
    assert g[0] < g[1] < g[2] and g[2] > 1.05
    assert all(0.0 <= p["accuracy"] <= 1.0 and 0.0 <= p["accuracy_gdc"] <= 1.0 for p in pts)
    assert (pcm_run / "drift_eval.png").stat().st_size > 1000


def test_evaluate_errors(tmp_path, pcm_run, capsys):
    assert main(["evaluate", str(tmp_path / "nope")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["evaluate", str(pcm_run), "--times", "1,abc"]) == 2
    assert "--times" in capsys.readouterr().err


def test_report_table(pcm_run, tmp_path, capsys):
    out = tmp_path / "table.md"
    assert main(["report", str(pcm_run), str(pcm_run), "--labels", "a,b", "--stats", "--out", str(out)]) == 0
    text = out.read_text()
    s = json.loads((pcm_run / "summary.json").read_text())
    assert f"| a | {100 * s['test_accuracy']:.2f} |" in text
    assert "mcasim train mlp --dataset digits" in text          # the run's own command
    assert f"{100 * s['test_accuracy']:.2f} ± 0.00" in text
    assert main(["report", str(tmp_path)]) == 2
    capsys.readouterr()
    # extra columns: final values of other summary keys (ints as they are), mean in the stats line
    assert main(["report", str(pcm_run), str(pcm_run), "--stats", "--columns", "loss,epochs"]) == 0
    text = capsys.readouterr().out
    assert "| loss final | epochs final |" in text
    assert f"| {s['loss']:.3f} | {s['epochs']} |" in text
    assert f"| {s['loss']:.3f} ± 0.000 |" in text
    assert main(["report", str(pcm_run), "--columns", "no_such_key"]) == 2
    assert "no_such_key" in capsys.readouterr().err


def test_report_command_makes_the_run_from_scratch(tmp_path, capsys):
    """The command column drops --resume, and shows the run's config.toml instead when the command
    no longer resolves to it (its config file changed since)."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[model]\nhidden = [12]\n[synapse]\nmode = "ideal"\n')
    out = tmp_path / "run"
    common = ["train", "mlp", "--dataset", "digits", "--config", str(cfg), "--quiet", "--backend", "numpy",
              "--out", str(out)]
    assert main(common + ["--epochs", "1"]) == 0
    assert main(common + ["--epochs", "2", "--resume"]) == 0
    assert "--resume" in json.loads((out / "summary.json").read_text())["command"]
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"`mcasim train mlp --dataset digits --config {cfg} --quiet --backend numpy --out {out} --epochs 2`" in text
    assert "--resume" not in text
    cfg.write_text('[model]\nhidden = [13]\n[synapse]\nmode = "ideal"\n')   # the file changed since
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"(config: `{out}/config.toml`)" in text and "mcasim train" not in text


def test_evaluate_readout_ablation(pcm_run):
    """--readout: four readouts of the trained devices, scored by the task's evaluation; the one with
    neither read noise nor converters is the exact MVM of the noise-free weights; tiles restored."""
    import numpy as np

    from gpu_model.backend import make_backend
    from sim.cli.evaluate import evaluate_readout
    from sim.config import load_config
    from sim.data import load_dataset
    from sim.train import restore_trainer

    assert main(["evaluate", str(pcm_run), "--readout", "--backend", "numpy"]) == 0
    res = json.loads((pcm_run / "readout_eval.json").read_text())
    assert [r["readout"] for r in res["rows"]] == ["as trained", "no read noise", "no DAC/ADC", "neither"]
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in res["rows"])

    cfg = load_config(pcm_run / "config.toml")
    tr = restore_trainer(pcm_run, cfg, make_backend("numpy", 1), load_dataset("digits", None))
    mats = [st.tile for st in tr.task.analog_stores()]
    before = [(m.read_noise, m.tile) for m in mats]
    neither = evaluate_readout(tr)["rows"][3]["test_accuracy"]
    assert [(m.read_noise, m.tile) for m in mats] == before
    x = tr.task.x_test                              # the same net with exact digital MVMs of W
    for L in tr.task.store_layers():
        L.store.forward = (lambda w: (lambda v: v @ w.T))(L.store.weights())
    exact = float((tr.task.predict(x, 256) == tr.task.y_test).mean())
    assert neither == pytest.approx(exact, abs=1.5 / len(x))


def test_evaluate_readout_needs_devices(tmp_path, capsys):
    out = tmp_path / "fp32"
    assert main(["train", "mlp", "--dataset", "digits", "--synapse", "fp32", "--epochs", "1", "--quiet",
                 "--backend", "numpy", "--set", "model.hidden=[16]", "--out", str(out)]) == 0
    assert main(["evaluate", str(out), "--readout"]) == 2
    assert "no devices to read on crossbars" in capsys.readouterr().err
