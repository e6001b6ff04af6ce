"""benchmarks/gan_devices.py: the FD-against-devices-per-side table and plot (issue 26)."""
from __future__ import annotations

import json

import pytest

from benchmarks.gan_devices import main, run_point
from sim.config import config_from_dict


def fake_run(path, fds, synapse, pulses=1000):
    path.mkdir(parents=True)
    cfg = config_from_dict({"model": {"arch": "gan"}, "synapse": {"w_max": [0.5], "epsilon_uS": [1.5], **synapse}})
    (path / "config.toml").write_text(cfg.to_toml())
    rows = [{"epoch": i + 1, "fd": fd, "coverage_min": 0.08, "pulses": pulses, "refreshes": 10}
            for i, fd in enumerate(fds)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_table_ratios_and_the_smallest_synapse(tmp_path, capsys):
    fp32 = fake_run(tmp_path / "fp32", [10.0, 8.0, 6.0], {"mode": "fp32"})
    a = fake_run(tmp_path / "n8", [30.0, 20.0, 9.0], {"mode": "pcm", "devices_per_side": 8, "verified_update": True})
    b = fake_run(tmp_path / "n16", [20.0, 9.0, 7.2], {"mode": "pcm", "devices_per_side": 16, "verified_update": True})
    c = fake_run(tmp_path / "n32", [20.0, 7.0, 6.5], {"mode": "pcm", "devices_per_side": 32, "verified_update": True})
    out = tmp_path / "out"
    assert main([str(a), str(b), str(c), "--fp32", str(fp32), "--epoch", "3", "--out", str(out)]) == 0
    md = (out / "gan_devices.md").read_text()
    assert "| 8 (16) | verified | 9.00 | 1.50x |" in md
    assert "| 16 (32) | verified | 7.20 | 1.20x | 7.20 (3) |" in md
    assert "Smallest PCM synapse that meets it: N = 16 per side" in md     # 7.2 <= 1.25 x 6 = 7.5; N 8 does not
    assert "3,000" in md                                                    # pulses summed over epochs 1-3
    assert (out / "gan_devices.png").stat().st_size > 1000
    p = run_point(c, 2)
    assert p["fd"] == 7.0 and p["best_epoch"] == 2 and p["pulses"] == 2000


def test_errors_name_the_run(tmp_path, capsys):
    a = fake_run(tmp_path / "n8", [30.0, 20.0], {"mode": "pcm", "devices_per_side": 8})
    assert main([str(a), "--epoch", "5", "--out", str(tmp_path / "o")]) == 2
    assert "has 2 epochs, --epoch 5 asked" in capsys.readouterr().err
    assert main([str(tmp_path / "nothing"), "--epoch", "1", "--out", str(tmp_path / "o")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(a), "--epoch", "0", "--out", str(tmp_path / "o")])
