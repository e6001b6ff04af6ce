"""`mcasim device-curve` end to end (small N), through sim.cli.main."""
import json

import pytest

from gpu_model.backend import make_backend
from sim.cli import main


def run_curve(tmp_path, *extra, name="out"):
    out = tmp_path / name
    rc = main(["device-curve", "--devices", "3000", "--pulses", "12", "--out", str(out),
               "--backend", "numpy", "--drift-points", "8", *extra])
    assert rc == 0
    return out, json.loads((out / "device_curve.json").read_text())


def test_jap2018_curve(tmp_path):
    out, d = run_curve(tmp_path, "--seed", "4")
    assert (out / "device_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert d["preset"] == "jap2018" and d["backend"] == make_backend("numpy").name and d["devices"] == 3000
    pp = d["per_pulse"]
    assert [p["pulse"] for p in pp] == list(range(1, 13))
    means = [p["mean_uS"] for p in pp]
    assert all(b > a for a, b in zip(means[:8], means[1:9]))           # G rises with SET pulses
    assert 0.1 < means[0] < 3 and 5 < means[-1] < 12                   # JAP 2018 range (saturating ~10 uS)
    assert all(p["std_uS"] > 0 and p["read_std_uS"] > p["std_uS"] for p in pp)
    dr = d["drift"]
    assert len(dr["mean_uS"]) == 8 and dr["t_since_last_pulse_s"][0] == pytest.approx(38.6)
    assert dr["t_since_last_pulse_s"][-1] == pytest.approx(1e6)
    assert dr["nu_fit"] == pytest.approx(0.04, abs=1e-4)                 # constant nu: exact power law
    assert all(b < a for a, b in zip(dr["mean_uS"], dr["mean_uS"][1:]))
    # same seed, same result
    _, d2 = run_curve(tmp_path, "--seed", "4", "--no-plot", name="again")
    assert d2["per_pulse"] == pp and d2["drift"] == dr


def test_ideal_curve_is_linear(tmp_path):
    _, d = run_curve(tmp_path, "--preset", "ideal", "--no-plot")
    for p in d["per_pulse"]:
        assert p["mean_uS"] == pytest.approx(0.75 * p["pulse"], rel=1e-6) and p["std_uS"] < 1e-5
    assert d["drift"]["nu_fit"] == pytest.approx(0.0, abs=1e-9)


def test_joshi_curve_drifts(tmp_path):
    _, d = run_curve(tmp_path, "--preset", "joshi2020", "--no-plot", "--pulse-interval", "1")
    assert d["per_pulse"][-1]["t_s"] == 11.0
    nu = d["drift"]["nu_fit"]
    assert 0.045 < nu < 0.1                      # Joshi 2020 mu_nu is clipped to [0.049, 0.1]


@pytest.mark.parametrize("argv,msg", [
    (["--devices", "0"], "--devices"),
    (["--pulses", "-1"], "--pulses"),
    (["--preset", "nope"], "unknown PCM preset"),
    (["--backend", "torch"], "--backend"),
    (["--pulse-interval", "-2"], "--pulse-interval"),
    (["--drift-tmax", "10"], "--drift-tmax"),
])
def test_bad_arguments_exit_2(tmp_path, capsys, argv, msg):
    with pytest.raises(SystemExit) as exc:
        main(["device-curve", "--out", str(tmp_path / "x"), *argv])
    assert exc.value.code == 2
    assert msg in capsys.readouterr().err
    assert not (tmp_path / "x" / "device_curve.json").exists()


def test_cupy_without_gpu_is_clear_error(tmp_path, capsys):
    from gpu_model.backend import _cupy_status
    if _cupy_status()[0] is not None:
        pytest.skip("CuPy with a GPU is available")
    with pytest.raises(SystemExit) as exc:
        main(["device-curve", "--out", str(tmp_path / "x"), "--backend", "cupy"])
    assert exc.value.code == 2 and "backend 'cupy' requested but unavailable" in capsys.readouterr().err
