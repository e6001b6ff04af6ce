"""Energy model (sim/energy.py) and `mcasim energy` CLI."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from energy_synth import synthetic_summary  # noqa: E402

from sim import energy as E  # noqa: E402
from sim.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def table():
    return E.load_table()


@pytest.fixture(scope="module")
def summ():
    return synthetic_summary(images=6_000)


def est(s, t):
    return E.estimate_summary(s, t)


def scaled(s, f, images=True):
    s2 = json.loads(json.dumps(s))
    for k, v in s2["events"].items():
        if k not in E.WIDTH_COUNTERS:
            s2["events"][k] = v * f
    if images:
        s2["images_trained"] = s["images_trained"] * f
    return s2


def test_default_table_loads_and_presets_validate(table):
    assert table.name == "default-45nm"
    for p in Path(E.default_table_path()).parent.glob("energy_*.toml"):
        E.load_table(p)


def test_per_image_energy_invariant_when_counts_and_images_scale(summ, table):
    a, b = est(summ, table), est(scaled(summ, 2), table)
    assert b.cm_total == pytest.approx(a.cm_total, rel=1e-12)
    assert b.digital_total == pytest.approx(a.digital_total, rel=1e-12)
    for k in a.cm:
        assert b.cm[k] == pytest.approx(a.cm[k], rel=1e-12, abs=1e-30)


def test_doubling_counts_alone_doubles_per_image_energy(summ, table):
    a, b = est(summ, table), est(scaled(summ, 2, images=False), table)
    assert b.cm_total == pytest.approx(2 * a.cm_total, rel=1e-12)
    assert b.digital_total == pytest.approx(2 * a.digital_total, rel=1e-12)
    assert b.ratio == pytest.approx(a.ratio, rel=1e-12)


@pytest.mark.parametrize("counter", [k for k in synthetic_summary(images=10)["events"]
                                     if k not in ("refreshes", "fwd_vectors", "bwd_vectors")])
def test_each_counter_moves_the_cm_total(summ, table, counter):
    """Every energy-bearing counter adds energy (refreshes/vectors are bookkeeping only)."""
    s2 = json.loads(json.dumps(summ))
    s2["events"][counter] = s2["events"][counter] * 2 + 1000
    assert est(s2, table).cm_total > est(summ, table).cm_total


def _numeric_entries(t):
    for sec, body in t.to_dict().items():
        for k, v in body.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                yield sec, k, v


@pytest.mark.parametrize("sec,key", [(s, k) for s, k, _ in _numeric_entries(E.load_table())
                                     if (s, k) != ("dpu", "default_chi_bits")])
def test_each_table_entry_moves_the_total(summ, table, sec, key):
    """Raising any energy raises the total of the design(s) that use it, never lowers any.
    (A memory class counts when something lives in it; state width when the optimizer has state.)"""
    if sec == "memory":
        table = table.replace("dpu", "chi_memory", key)
    if key == "optimizer_state_bits":
        summ = synthetic_summary(images=6_000, optimizer="adam")
    v = table[sec][key]
    up = table.replace(sec, key, v * 1.5 + 1.0)
    a, b = est(summ, table), est(summ, up)
    assert b.cm_total >= a.cm_total and b.digital_total >= a.digital_total
    assert b.cm_total + b.digital_total > a.cm_total + a.digital_total, f"[{sec}].{key} has no effect"


def test_memory_choice_and_fetch_mode_move_the_totals(summ, table):
    base = est(summ, table)
    big_chi = est(summ, table.replace("dpu", "chi_memory", "sram_1mb"))
    assert big_chi.cm_total > base.cm_total and big_chi.digital_total == base.digital_total
    dram_w = est(summ, table.replace("digital", "weight_memory", "dram"))
    assert dram_w.digital_total > base.digital_total and dram_w.cm_total == base.cm_total
    batch = est(summ, table.replace("digital", "weight_fetch", "per_batch"))
    assert batch.digital["weight reads"] < base.digital["weight reads"]


def test_default_chi_bits_used_only_without_a_counter(summ, table):
    s2 = json.loads(json.dumps(summ))
    s2["events"]["chi_bits"] = 0
    up = table.replace("dpu", "default_chi_bits", 40)
    assert est(s2, up).cm["chi memory"] == pytest.approx(2 * est(s2, table).cm["chi memory"])
    assert est(summ, up).cm["chi memory"] == est(summ, table).cm["chi memory"]


def test_momentum_adds_state_traffic(table):
    sgd = est(synthetic_summary(images=600, optimizer="sgd"), table)
    mom = est(synthetic_summary(images=600, optimizer="momentum"), table)
    assert mom.cm["optimizer"] > sgd.cm["optimizer"] and mom.digital["optimizer"] > sgd.digital["optimizer"]


def test_digital_layers_are_charged_to_both(table):
    s = synthetic_summary(images=600)
    s["layers"][1]["kind"] = "fp32"
    r = est(s, table)
    assert r.cm["digital layers"] == r.digital["digital layers"] > 0


def test_ratio_grows_with_batch_size(table):
    """chi is updated once per mini-batch: larger batches amortise it (CM) faster than the
    digital design amortises its per-image weight reads."""
    r1 = est(synthetic_summary(images=600, batch=1), table)
    r10 = est(synthetic_summary(images=600, batch=10), table)
    assert r10.ratio > r1.ratio


def test_crossbar_energy_by_hand(table):
    s = synthetic_summary(sizes=(4, 3), images=1, batch=1, set_pulses_per_image=0, refreshes=0)
    r = est(s, table)
    cx = table["crossbar"]
    assert r.cm["crossbar reads"] == pytest.approx(12 * cx["cell_read_pJ"] * 1e-12)
    assert r.cm["DAC"] == pytest.approx(4 * cx["dac_conversion_pJ"] * 1e-12)
    assert r.cm["ADC + post-processing"] == pytest.approx(
        3 * (cx["adc_conversion_pJ"] + cx["adc_postprocess_pJ"]) * 1e-12)
    fp = (table["digital"]["fp32_mult_pJ"] + table["digital"]["fp32_add_pJ"]) * 1e-12
    assert r.digital["forward/backward MACs"] == pytest.approx(12 * fp)


@pytest.mark.parametrize("mutate,msg", [
    (lambda d: d["crossbar"].pop("adc_conversion_pJ"), "missing key [crossbar].adc_conversion_pJ"),
    (lambda d: d["pcm"].__setitem__("set_pulse_pJ", -1.0), "must be >= 0"),
    (lambda d: d["pcm"].__setitem__("sett_pulse_pJ", 1.0), "unknown key(s) in [pcm]: sett_pulse_pJ"),
    (lambda d: d.__setitem__("extra", {}), "unknown section"),
    (lambda d: d["dpu"].__setitem__("chi_memory", "sram_2mb"), "not a key of [memory]"),
    (lambda d: d["digital"].__setitem__("weight_fetch", "never"), "weight_fetch must be one of"),
    (lambda d: d["pcm"].__setitem__("set_pulse_pJ", "5"), "must be a finite number"),
])
def test_table_errors(table, mutate, msg):
    d = table.to_dict()
    mutate(d)
    with pytest.raises(E.EnergyError) as ei:
        E.table_from_dict(d)
    assert msg in str(ei.value)


def test_table_file_errors(tmp_path):
    bad = tmp_path / "t.toml"
    bad.write_text("[meta\nname=")
    with pytest.raises(E.EnergyError, match="invalid TOML"):
        E.load_table(bad)
    with pytest.raises(E.EnergyError, match="not found"):
        E.load_table(tmp_path / "nope.toml")


def test_estimate_input_errors(summ, table):
    with pytest.raises(E.EnergyError, match="images"):
        E.estimate(summ["events"], 0, summ["layers"], table, 10)
    with pytest.raises(E.EnergyError, match="optimizer"):
        E.estimate(summ["events"], 10, summ["layers"], table, 10, optimizer="lion")
    ev = dict(summ["events"], set_pulses=-3)
    with pytest.raises(E.EnergyError, match="set_pulses"):
        E.estimate(ev, 10, summ["layers"], table, 10)


def _run_folder(tmp_path, **kw):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(synthetic_summary(**kw)))
    return run


def test_cli_table_json_and_png(tmp_path, capsys):
    run = _run_folder(tmp_path, images=60_000)
    assert main(["energy", str(run)]) == 0
    out = capsys.readouterr().out
    assert "ratio" in out and "chi memory" in out and "weight reads" in out
    assert (run / "energy.png").stat().st_size > 1000
    saved = json.loads((run / "energy.json").read_text())
    assert main(["energy", str(run), "--json", "--out", str(tmp_path / "e.png")]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (tmp_path / "e.png").is_file()
    assert d["ratio"] == pytest.approx(d["digital_J_per_image"] / d["cm_J_per_image"])
    assert d["ratio"] == pytest.approx(saved["ratio"])
    assert sum(d["cm_breakdown_J"].values()) == pytest.approx(d["cm_J_per_image"])
    # a shipped preset by name changes the digital reference only
    assert main(["energy", str(run), "--json", "--table", "dram-reference"]) == 0
    d2 = json.loads(capsys.readouterr().out)
    assert d2["cm_J_per_image"] == pytest.approx(d["cm_J_per_image"])
    assert d2["digital_J_per_image"] > d["digital_J_per_image"]


def test_cli_errors(tmp_path, capsys):
    assert main(["energy", str(tmp_path / "missing")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["energy", str(tmp_path / "empty")]) == 2
    assert "summary.json" in capsys.readouterr().err
    run = _run_folder(tmp_path, images=100)
    bad = tmp_path / "bad.toml"
    d = E.load_table().to_dict()
    d["pcm"]["set_pulse_pJ"] = -5
    bad.write_text(_to_toml(d))
    assert main(["energy", str(run), "--table", str(bad)]) == 2
    assert "set_pulse_pJ must be >= 0" in capsys.readouterr().err
    assert main(["energy", str(run), "--table", "no-such-preset"]) == 2
    assert "not found" in capsys.readouterr().err


def _to_toml(d: dict) -> str:
    lines = []
    for sec, body in d.items():
        lines.append(f"[{sec}]")
        for k, v in body.items():
            lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"


def test_toml_roundtrip_helper(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text(_to_toml(E.load_table().to_dict()))
    assert E.load_table(p).to_dict() == E.load_table().to_dict()
    assert math.isfinite(E.estimate_summary(synthetic_summary(images=10), E.load_table(p)).ratio)


def test_multi_device_synapses_read_more_pairs_for_the_same_macs(summ, table):
    """devices_per_side = N: the crossbar reads N device pairs per synapse (N x the read energy);
    the reference's MACs are the synapse reads, unchanged."""
    s3 = json.loads(json.dumps(summ))
    s3["events"]["cell_reads"] = summ["events"]["cell_reads"] * 3
    s3["devices_per_side"] = 3
    a, b = est(summ, table), est(s3, table)
    assert b.cm["crossbar reads"] == pytest.approx(3 * a.cm["crossbar reads"], rel=1e-12)
    assert b.digital == pytest.approx(a.digital, rel=1e-12)
