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
