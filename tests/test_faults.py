"""Device faults, endurance and the exclusion policy on the reference engine (gpu_model/faults.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from gpu_model.backend import make_backend
from gpu_model.faults import (FAULT_PRESETS, STUCK_HIGH, STUCK_LOW, FaultConfig, cycle_counts, endurance_report,
                              get_fault_preset, plot_endurance_histogram)
from gpu_model.presets import IDEAL, JAP2018, PresetError
from gpu_model.synapse import DifferentialSynapses
from gpu_model.tile import AnalogTile
from gpu_model.tile_config import SynapseConfig, TileConfig
from sim.config import ConfigError, config_from_dict

SHAPE = (40, 50)


def tile(faults=None, seed=3, stream=5, preset=JAP2018, **syn):
    syn.setdefault("w_max", 1.0)
    kw = {} if faults is None else {"faults": faults}
    cfg = TileConfig(device=preset, synapse=SynapseConfig(**syn), **kw)
    w0 = np.random.default_rng(0).uniform(-0.3, 0.3, SHAPE).astype(np.float32)
    return AnalogTile(cfg, *SHAPE, make_backend("numpy", seed), stream=stream, w0=w0), w0


def train(t, n=40, seed=1, scale=0.05):
    rng, rr = np.random.default_rng(seed), np.random.default_rng(seed + 1)
    for _ in range(n):
        t.update(rng.normal(0, scale, SHAPE).astype(np.float32), rr)
        t.advance(0.5)


def kinds(t):
    return np.stack([t.devices.gp.faults.kind, t.devices.gm.faults.kind])


# --- no faults: nothing changes -------------------------------------------------------------------
@pytest.mark.parametrize("syn", [dict(), dict(devices_per_side=3, verified_update=True, refresh_threshold=0.45)])
def test_fault_path_without_a_fault_gives_the_fault_free_conductances_bit_for_bit(syn):
    """A tile whose fault code runs (an endurance limit no device reaches) sees exactly the draws and
    conductances of the fault-free tile: the fault stream is its own, and pinning touches nobody."""
    ref, _ = tile(None, **syn)
    far, _ = tile(FaultConfig(endurance_cycles=1e12), **syn)
    assert far.devices.faults is not None and ref.devices.faults is None
    train(ref)
    train(far)
    for a, b in zip(ref.conductances(), far.conductances()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ref.weights(), far.weights())
    assert ref.events.set_pulses == far.events.set_pulses > 0


def test_default_fault_config_is_no_faults():
    cfg = TileConfig(device=JAP2018, synapse=SynapseConfig(w_max=1.0))
    assert cfg.faults == FaultConfig() and not cfg.faults.enabled
    t, _ = tile(None)
    assert t.devices.faults is None
    assert t.events.faulty_devices == t.events.excluded_devices == t.events.skipped_pulses == 0


# --- placement --------------------------------------------------------------------------------------
def test_placement_follows_the_rates_and_is_seeded():
    f = FaultConfig(stuck_low_rate=0.1, stuck_high_rate=0.05, weak_rate=0.05)
    a, _ = tile(f, devices_per_side=4)
    n = 2 * 4 * SHAPE[0] * SHAPE[1]
    k = kinds(a)
    for code, rate in ((STUCK_LOW, 0.1), (STUCK_HIGH, 0.05)):
        frac = (k == code).sum() / n
        assert abs(frac - rate) < 5 * math.sqrt(rate * (1 - rate) / n), (code, frac)
    weak = np.concatenate([a.devices.gp.faults.set_scale, a.devices.gm.faults.set_scale]) == 0.5
    assert abs(weak.mean() - 0.05) < 5 * math.sqrt(0.05 * 0.95 / n)
    assert not (weak & (k.reshape(-1) != 0)).any()          # disjoint classes
    b, _ = tile(f, devices_per_side=4)
    np.testing.assert_array_equal(kinds(a), kinds(b))       # same seed and stream: same placement
    c, _ = tile(f, devices_per_side=4, stream=6)
    assert (kinds(a) != kinds(c)).any()                     # another tile: another placement
    assert a.events.faulty_devices == int((k != 0).sum())


def test_faults_do_not_perturb_the_working_devices_draws():
    """Stuck-low devices and no refresh: every working device ends where the fault-free tile's does
    (a RESET without spread, so that a stuck-low partner holds exactly what a RESET one would)."""
    syn = dict(refresh_threshold=1.0, preset=JAP2018.with_overrides(reset_std=0.0))
    ref, _ = tile(None, **syn)
    bad, _ = tile(FaultConfig(stuck_low_rate=0.2), **syn)
    train(ref)
    train(bad)
    ok = kinds(bad) == 0
    g_ref = np.stack([x.reshape(-1) for x in ref.conductances()])
    g_bad = np.stack([x.reshape(-1) for x in bad.conductances()])
    np.testing.assert_array_equal(g_bad[ok], g_ref[ok])
    assert np.all(g_bad[~ok] == JAP2018.g_min)


# --- what faulty devices do -----------------------------------------------------------------------
def test_stuck_devices_do_not_respond_and_do_not_drift():
    f = FaultConfig(stuck_low_rate=0.1, stuck_high_rate=0.1, stuck_high_uS=15.0)
    t, _ = tile(f, refresh_threshold=0.45)
    train(t, n=30)
    t.advance(1e5)
    g = np.stack([x.reshape(-1) for x in t.conductances()])
    k = kinds(t)
    assert np.all(g[k == STUCK_LOW] == JAP2018.g_min)
    assert np.all(g[k == STUCK_HIGH] == 15.0)
    assert (t.devices.gp.nu[t.devices.gp.faults.kind != 0] == 0).all()


def test_weak_devices_take_the_given_share_of_each_set_step():
    ideal = IDEAL.with_overrides(ideal_step=0.5)
    syn = DifferentialSynapses((10, 10), ideal, make_backend("numpy", 0), w_max=1.0,
                               faults=FaultConfig(weak_rate=0.5, weak_factor=0.25), refresh_threshold=1.0)
    g0 = syn.gp.g_prog.copy()
    syn.apply_pulses(np.full((10, 10), 3))
    step = (syn.gp.g_prog - g0) / 3
    weak = syn.gp.faults.set_scale == 0.25
    assert weak.any() and (~weak).any()
    np.testing.assert_allclose(step[weak], 0.25 * 0.5, rtol=1e-6)
    np.testing.assert_allclose(step[~weak], 0.5, rtol=1e-6)


# --- endurance ----------------------------------------------------------------------------------------
def test_devices_wear_out_at_the_endurance_limit():
    """Limit 2 RESET cycles: programming is the first, a refresh the second: the refreshed synapses'
    devices wear out into the stuck-high state, the others keep working."""
    syn = DifferentialSynapses((8, 8), JAP2018, make_backend("numpy", 0), w_max=1.0,
                               faults=FaultConfig(endurance_cycles=2, wearout_state="high"))
    syn.program(np.zeros(64, dtype=np.float32))
    assert syn.fault_counts()["worn_out"] == 0
    syn.refresh(np.arange(10))
    c = syn.fault_counts()
    assert c["worn_out"] == c["stuck"] == 20                  # both devices of 10 synapses
    assert np.all(syn.gp.faults.kind[:10] == STUCK_HIGH) and np.all(syn.gp.faults.kind[10:] == 0)
    assert np.all(syn.gp.g_prog[:10] == JAP2018.g_max)
    cyc = cycle_counts(syn)
    assert cyc.shape == (2, 1, 8, 8) and cyc.reshape(2, -1)[:, :10].min() == 2


def test_random_onset_per_pulse_follows_its_rate():
    p, k = 0.02, 30
    syn = DifferentialSynapses((50, 50), IDEAL.with_overrides(ideal_step=0.01), make_backend("numpy", 0), w_max=1.0,
                               faults=FaultConfig(onset_per_pulse=p), refresh_threshold=1.0)
    for _ in range(k):
        syn.apply_pulses(np.ones((50, 50), dtype=np.int64))
    frac = (syn.gp.faults.kind != 0).mean()
    expect = 1 - (1 - p) ** k                                 # k pulses, each a chance p of failing
    assert abs(frac - expect) < 5 * math.sqrt(expect * (1 - expect) / 2500), frac
    assert syn.fault_counts()["onset"] == int((syn.gp.faults.kind != 0).sum())


def test_endurance_report_most_cycled_histogram_and_projection(tmp_path):
    syn = DifferentialSynapses((4, 5), JAP2018, make_backend("numpy", 0), w_max=1.0)
    syn.gm.n_reset[:] = np.arange(20)
    syn.gp.n_reset[7] = 100
    rep = endurance_report({"fc1": syn}, epochs=4, limit=1000, top=3)
    assert rep["max_cycles"] == 100
    assert rep["top"][0] == {"layer": "fc1", "side": "+", "device": 0, "row": 1, "col": 2, "cycles": 100}
    assert [r["cycles"] for r in rep["top"][1:]] == [19, 18]
    assert sum(rep["histogram"]["counts"]) == 20 and rep["zero_cycle_devices"] == 20
    assert rep["epochs_to_first_wearout"] == pytest.approx((1000 - 100) / (100 / 4))
    all_ = endurance_report({"fc1": syn}, epochs=4, limit=1000, counts="all")
    assert all_["max_cycles"] == 100
    plot_endurance_histogram(rep, tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 0
    fresh = DifferentialSynapses((2, 2), JAP2018, make_backend("numpy", 0), w_max=1.0)
    assert endurance_report({"x": fresh}, epochs=1)["epochs_to_first_wearout"] == math.inf


# --- exclusion policy -----------------------------------------------------------------------------------
def test_exclusion_finds_the_stuck_high_devices_and_programs_around_them():
    f = FaultConfig(stuck_high_rate=0.05)
    blind, w0 = tile(f, devices_per_side=3, refresh_threshold=0.45)
    excl, _ = tile(f.with_overrides(exclude=True), devices_per_side=3, refresh_threshold=0.45)
    k = kinds(excl)
    found = np.stack([excl.devices.gp.faults.excluded, excl.devices.gm.faults.excluded])
    np.testing.assert_array_equal(found, k == STUCK_HIGH)     # every stuck-high device, nothing else
    assert excl.events.excluded_devices == int(found.sum()) > 0
    assert excl.events.fault_check_reads > 0
    err_blind = np.abs(blind.weights() - w0).mean()
    err_excl = np.abs(excl.weights() - w0).mean()
    assert err_excl < 0.5 * err_blind, (err_excl, err_blind)


def test_excluded_devices_get_no_pulses_and_a_dead_side_skips_them():
    f = FaultConfig(stuck_high_rate=0.1, stuck_low_rate=0.1, exclude=True)
    t, _ = tile(f, devices_per_side=3, refresh_threshold=0.45, verified_update=True)
    ex = [t.devices.gp.faults.excluded.copy(), t.devices.gm.faults.excluded.copy()]
    n0 = [t.devices.gp.n_set.copy(), t.devices.gm.n_set.copy()]
    train(t, n=40)
    for arr, e, n in zip((t.devices.gp, t.devices.gm), ex, n0):
        assert (arr.n_set[e] == n[e]).all()                  # excluded before training: never pulsed
        assert (arr.n_set[~e] > n[~e]).any()
    one, _ = tile(FaultConfig(stuck_high_rate=0.2, exclude=True), refresh_threshold=0.45)
    train(one, n=20)
    ev = one.events
    assert ev.skipped_pulses > 0 and ev.excluded_devices > 0  # one device per side: nothing to route to
    # an update whose every pulse targets an excluded device sends nothing and counts all of it
    d = one.devices
    dead = np.flatnonzero(d.gp.faults.excluded)[:5]
    before = d.counters.skipped_pulses
    r = d.apply_pulse_list(dead.astype(np.int64), np.full(5, 3, dtype=np.int64))
    assert r.set_pulses == 0 and r.skipped_pulses == 15 and d.counters.skipped_pulses == before + 15


def test_blind_stuck_high_devices_keep_refreshing_and_exclusion_stops_it():
    """A pulsed stuck-high device sits above the refresh threshold: blind, every pulse to it refreshes
    its synapse again; excluded, it triggers nothing (what is left over the fault-free tile comes from
    the synapses whose other side cannot balance a 20 µS device and sit at the range edge)."""
    f = FaultConfig(stuck_high_rate=0.05)
    kw = dict(devices_per_side=2, refresh_threshold=0.45)
    ref, _ = tile(None, **kw)
    blind, _ = tile(f, **kw)
    excl, _ = tile(f.with_overrides(exclude=True), **kw)
    for t in (ref, blind, excl):
        train(t, n=30)
    base = ref.events.refreshes
    assert blind.events.refreshes - base > 2 * (excl.events.refreshes - base) > 0


def test_verified_update_flags_a_device_the_refresh_could_not_reset():
    """Devices that wear out into stuck-high during training are found by the verify reads of
    the next update that pulses them (or the check reads of the refresh that wore them out)."""
    f = FaultConfig(endurance_cycles=2, wearout_state="high", exclude=True)
    t, _ = tile(f, devices_per_side=2, refresh_threshold=0.3, verified_update=True)
    train(t, n=60, scale=0.1)
    c = t.devices.fault_counts()
    assert c["worn_out"] > 0
    assert c["excluded"] >= 0.9 * c["worn_out"]


def test_fault_state_resumes_bit_identically():
    f = FaultConfig(stuck_high_rate=0.05, weak_rate=0.05, onset_per_pulse=1e-3, endurance_cycles=3, exclude=True)
    kw = dict(devices_per_side=2, refresh_threshold=0.45, verified_update=True)
    a, _ = tile(f, **kw)
    train(a, n=20)
    st = a.state_dict()
    b, _ = tile(f, **kw)
    b.load_state_dict(st)
    train(a, n=15, seed=9)
    train(b, n=15, seed=9)
    for x, y in zip(a.conductances(), b.conductances()):
        np.testing.assert_array_equal(x, y)
    assert a.events == b.events
    assert a.devices.fault_counts() == b.devices.fault_counts()


# --- configuration ------------------------------------------------------------------------------------
def test_fused_engine_with_faults_is_a_one_line_error_naming_the_key():
    with pytest.raises(PresetError, match="tile.engine") as e:
        TileConfig(device=JAP2018, synapse=SynapseConfig(w_max=1.0), engine="fused",
                   faults=FaultConfig(stuck_low_rate=0.01))
    assert "\n" not in str(e.value)
    TileConfig(device=JAP2018, synapse=SynapseConfig(w_max=1.0), engine="fused")   # no faults: fine


@pytest.mark.parametrize("kw, key", [
    (dict(stuck_low_rate=1.5), "stuck_low_rate"), (dict(weak_factor=-0.1), "weak_factor"),
    (dict(stuck_low_rate=0.6, stuck_high_rate=0.6), "<= 1"), (dict(onset_per_pulse=1.0), "onset_per_pulse"),
    (dict(endurance_cycles=0.5), "endurance_cycles"), (dict(onset_state="mid"), "onset_state"),
    (dict(endurance_counts="set"), "endurance_counts"), (dict(detect_tol_uS=0), "detect_tol_uS"),
    (dict(stuck_high_uS=float("nan")), "stuck_high_uS"), (dict(exclude=1), "exclude")])
def test_fault_config_validates_each_field(kw, key):
    with pytest.raises(PresetError, match=key):
        FaultConfig(**kw)


def test_presets_have_sources_and_the_typical_one_is_mild():
    assert set(FAULT_PRESETS) >= {"none", "pcm_typical", "pcm_low_endurance"}
    p = get_fault_preset("pcm_typical")
    assert p.endurance_cycles == 1e9 and p.stuck_low_rate + p.stuck_high_rate + p.weak_rate <= 0.02
    with pytest.raises(PresetError, match="unknown preset"):
        get_fault_preset("nope")


@pytest.mark.parametrize("faults, key", [
    ({"stuck_low_rate": 2}, "faults.stuck_low_rate"), ({"bogus": 1}, "faults.bogus"),
    ({"preset": "nope"}, "faults.preset"), ({"stuck_high_uS": "a"}, "faults.stuck_high_uS"),
    ({"stuck_high_uS": 50.0}, "faults.stuck_high_uS"), ({"exclude": "yes"}, "faults.exclude"),
    ({"endurance_cycles": float("inf")}, "faults.endurance_cycles"), ({"onset_state": 3}, "faults.onset_state")])
def test_faults_section_errors_are_one_line_naming_the_key(faults, key):
    with pytest.raises(ConfigError) as e:
        config_from_dict({"faults": faults})
    assert key in str(e.value) and "\n" not in str(e.value)


def test_faults_section_rules_between_sections():
    with pytest.raises(ConfigError, match="reference engine"):
        config_from_dict({"faults": {"stuck_low_rate": 0.01}, "tile": {"engine": "fused"}})
    with pytest.raises(ConfigError, match="analog synapses"):
        config_from_dict({"faults": {"stuck_low_rate": 0.01}, "synapse": {"mode": "fp32"}})
    with pytest.raises(ConfigError, match="common_mode_uS"):
        config_from_dict({"faults": {"exclude": True}, "synapse": {"common_mode_uS": 1.0}})


def test_faults_section_reaches_every_tile_and_round_trips():
    from sim.tasks.models import tile_config
    cfg = config_from_dict({"faults": {"preset": "pcm_typical", "exclude": True, "stuck_low_rate": 0.02}})
    fc = tile_config(cfg, 0, 1.0, 0.5).faults
    assert fc.exclude and fc.stuck_low_rate == 0.02 and fc.endurance_cycles == 1e9
    import tomllib
    again = config_from_dict(tomllib.loads(cfg.to_toml()))
    assert again.fault_config() == cfg.fault_config()
    plain = config_from_dict({})
    assert "faults" not in plain.to_dict() and not tile_config(plain, 0, 1.0, 0.5).faults.enabled


def test_fault_study_points_and_table(tmp_path):
    from benchmarks.fault_study import fault_overrides, write_table
    assert fault_overrides(0.0, False) == {}
    assert fault_overrides(10.0, True) == {"stuck_low_rate": 0.05, "stuck_high_rate": 0.05, "exclude": True}
    cfg = config_from_dict({"faults": fault_overrides(1.0, False)})
    fc = cfg.fault_config()
    assert fc.stuck_low_rate + fc.stuck_high_rate == pytest.approx(0.01)
    res = {"command": "python -m benchmarks.fault_study --out X", "fp32_test_accuracy": 0.98,
           "points": {"train@0": {"test_accuracy": 0.97}, "inject@1": {"test_accuracy": 0.5}}}
    write_table(res, [0.0, 1.0], ["train", "inject"], tmp_path)
    md = (tmp_path / "fault_study.md").read_text()
    assert "| 0 | 97.00 |  |" in md and "| 1 |  | 50.00 |" in md and "fp32 (no devices): 98.00 %" in md
    assert (tmp_path / "fault_study.png").stat().st_size > 0


def test_fault_study_combines_seeds(tmp_path):
    import json
    from benchmarks.fault_study import main
    for i, acc in enumerate((0.96, 0.98)):
        d = tmp_path / f"s{i}"
        d.mkdir()
        (d / "fault_study.json").write_text(json.dumps(
            {"arch": "mlp", "fp32_test_accuracy": acc, "points": {"train@0": {"test_accuracy": acc}}}))
    assert main(["--combine", str(tmp_path / "s0"), "--combine", str(tmp_path / "s1"), "--rates", "0",
                 "--modes", "train", "--out", str(tmp_path / "c")]) == 0
    md = (tmp_path / "c" / "fault_study_combined.md").read_text()
    assert "| 0 | 97.00 ± 1.41 |" in md and (tmp_path / "c" / "fault_study_combined.png").is_file()


def test_a_training_run_summary_carries_the_fault_counts_and_prices_the_check_reads(tmp_path):
    """The trainer's summary sums the tiles' fault counts with the energy events, and the energy
    model charges the exclusion policy's check reads (one verify read each); without faults the
    counts are 0 and no such line appears."""
    from sim.data import load_digits_fallback
    from sim.energy import estimate_summary, load_table
    from sim.train import Trainer
    base = {"train": {"epochs": 1, "seed": 3, "train_subset": 300, "test_subset": 100}, "model": {"hidden": [8]},
            "synapse": {"mode": "pcm", "w_max": [1.0, 2.0]}}
    ds = load_digits_fallback()
    runs = {}
    for name, faults in (("clean", None), ("faulty", {"stuck_low_rate": 0.02, "stuck_high_rate": 0.02, "exclude": True})):
        cfg = config_from_dict({**base, **({"faults": faults} if faults else {})})
        (tmp_path / name).mkdir()
        tr = Trainer(cfg, ds, make_backend("numpy", 3), tmp_path / name, progress=False)
        runs[name] = tr.run()
    ev = runs["faulty"]["events"]
    tiles = sum(s.tile.events.faulty_devices for s in tr.task.analog_stores())
    assert ev["faulty_devices"] == tiles > 0 and ev["excluded_devices"] > 0 and ev["fault_check_reads"] > 0
    clean = runs["clean"]["events"]
    assert all(clean[k] == 0 for k in ("faulty_devices", "worn_out_devices", "excluded_devices", "skipped_pulses",
                                        "fault_check_reads"))
    table = load_table(None)
    rep = estimate_summary(runs["faulty"], table)
    per_read = table["pcm"]["verify_read_pJ"] * 1e-12
    assert rep.cm["fault check reads"] == pytest.approx(ev["fault_check_reads"] * per_read / rep.images)
    assert "fault check reads" not in estimate_summary(runs["clean"], table).cm


def test_endurance_cli_reads_an_lstm_run_in_characters(tmp_path, data_root):
    """`fault_study --endurance` on a character-LSTM run: epochs are characters trained / the
    training split's characters (the LSTM's dataset has no images)."""
    import json
    from benchmarks.fault_study import main as study
    from sim.cli import main
    run = tmp_path / "lstm"
    assert main(["train", "lstm", "--dataset", "ptb-char", "--data-dir", str(data_root), "--synapse", "pcm",
                 "--epochs", "1", "--quiet", "--set", "lstm.hidden=16", "--set", "train.train_subset=20000",
                 "--set", "train.test_subset=2000", "--out", str(run)]) == 0
    assert study(["--endurance", str(run), "--counts", "all", "--out", str(tmp_path / "e"),
                  "--data-dir", str(data_root)]) == 0
    rep = json.loads((tmp_path / "e" / "endurance.json").read_text())["reports"][str(run)]
    from sim.data.ptb import load_ptb_char
    n = len(load_ptb_char(data_root).train)
    summ = json.loads((run / "summary.json").read_text())
    assert rep["epochs"] == pytest.approx(summ["images_trained"] / n) and 0 < rep["epochs"] < 0.01
    assert rep["max_cycles"] > 0
