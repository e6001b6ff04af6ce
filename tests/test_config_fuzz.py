"""Bad input, fuzzed (issue 28): every invalid config value or CLI argument is a one-line error that
names the key, with exit status 2 from ``mcasim train``; never a traceback, never a change to an
existing run folder.

Each example takes a valid base config (a committed one or the built-in defaults), replaces one
value by an invalid one of the kinds a new user tries (wrong type, out of range, unknown key or
section, NaN/inf, huge arrays, empty and nested lists, strings where numbers belong), and feeds it
to ``config_from_dict`` and to ``mcasim train`` in-process (through a config file or ``--set``), with
``--out`` an existing run folder holding sentinel files. The default suite runs > 1,000 such
configs; ``-m slow`` many more, and a subprocess per case for a sample.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import subprocess
import sys
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpu_model.presets import TilePreset, get_pcm_preset
from rtl.spec import DPUSpec
from sim.cli import main
from sim.config import (MAX_DEVICES_PER_SIDE, MAX_KERNEL, MAX_LAYERS, MAX_WIDTH, PER_LAYER_TILE,
                        TILE_ENGINE_KEYS, W_MAX_RANGE, ConfigError, ModelSection, SynapseSection,
                        TrainSection, config_from_dict)
from sim.tasks import registry

REPO = Path(__file__).resolve().parents[1]
BASES = {   # name -> (arch, dataset, config dict)
    "defaults": ("mlp", "digits", {}),
    **{stem: (stem.split("_")[0], {"lstm": "ptb-char", "cnn": "cifar10"}.get(stem.split("_")[0], "mnist"),
              tomllib.loads((REPO / "configs" / f"{stem}.toml").read_text()))
       for stem in ("mlp_mnist_pcm", "mlp_mnist_ideal", "cnn_cifar10_pcm", "lstm_ptb_pcm", "gan_mnist_pcm",
                    "gan_mnist_fp32")},
}

# --- the keys and what is invalid for each -------------------------------------------------------
# out-of-range numbers per key (beyond the type errors every key gets)
BAD_RANGE = {
    "train.epochs": [0, -1], "train.batch_size": [0, -5], "train.lr": [0.0, -0.1, -1e300],
    "train.lr_decay": [0.0, 1.5, -0.5], "train.lr_min": [-1e-9], "train.momentum": [1.0, -0.1, 7.0],
    "train.adam_beta1": [1.0, -0.5], "train.adam_beta2": [1.0, 2.0], "train.adam_eps": [0.0, -1e-8],
    "train.seed": [-1, -2 ** 63], "train.seconds_per_batch": [-0.001], "train.train_subset": [-1],
    "train.test_subset": [-3], "train.eval_batch": [0, -1],
    "model.kernel": [0, 2, -3, MAX_KERNEL + 2, 4096], "model.dropout": [1.0, -0.1, 3.0],
    "model.init_gain": [0.0, -1.0], "model.output_gain_lr_scale": [-1.0],
    "synapse.refresh_threshold": [0.0, 1.01, -0.5], "synapse.verify_gain": [0.0, 1.5],
    "synapse.devices_per_side": [0, -1, MAX_DEVICES_PER_SIDE + 1, 10 ** 6], "synapse.common_mode_uS": [-1.0, 1e6],
    "synapse.refresh_tolerance_uS": [1e6, 20.0],
    "lstm.hidden": [0, MAX_WIDTH + 1], "lstm.bptt": [0], "lstm.clip_norm": [0.0, -1.0], "lstm.embedding": [-1],
    "lstm.input_scale": [0.0], "lstm.eval_streams": [0],
    "gan.latent_dim": [0, MAX_WIDTH + 1], "gan.leaky_slope": [0.0, -0.2], "gan.d_lr_scale": [0.0],
    "gan.d_dropout": [1.0, -0.1], "gan.real_label": [0.5, 1.1, 0.0], "gan.aux_weight": [0.0],
    "gan.clip_norm": [-1.0], "gan.eval_samples": [1, 0],
    "tile.dac_bits": [1, 0, 25], "tile.adc_bits": [1, 30], "tile.dac_fixed_scale": [0.0, -1.0],
    "tile.adc_range": [0.0, -12.0], "tile.adc_range_backward": [-1.0], "tile.max_rows": [0], "tile.max_cols": [-1],
    "dpu.lanes": [0], "dpu.frac_bits": [-1], "dpu.round_bits": [17, -1], "dpu.chi_bits": [32, 3],
    "dpu.inc_bits": [1, 32], "dpu.pmax": [0, 10 ** 6],
    "device.g_max": [0.0, -20.0], "device.reset_std": [-0.5], "device.drift_t0": [0.0], "device.nu_std": [-1.0],
    "device.t_read": [0.0], "device.history_tau_pulses": [0.0],
}
CHOICE_KEYS = {   # string keys with a fixed set of values
    "train.optimizer", "model.arch", "model.activation", "model.init", "model.pool", "synapse.mode",
    "synapse.preset", "synapse.dpu", "gan.conditioning", "gan.label_input", "tile.dac_scaling",
    "tile.noise_sampler", "tile.engine", "dpu.rounding", "device.drift_model", "device.read_noise_model",
    "device.prog_noise_model",
}
PER_LAYER = {"synapse.w_max", "synapse.epsilon_uS", *(f"tile.{k}" for k in PER_LAYER_TILE)}
W_LO, W_HI = W_MAX_RANGE


def section_fields(sec: str, base: dict) -> dict:
    """key -> default value of section ``sec`` (what its values must look like)."""
    if sec in ("train", "model", "synapse"):
        cls = {"train": TrainSection, "model": ModelSection, "synapse": SynapseSection}[sec]
        return {f.name: getattr(cls(), f.name) for f in fields(cls)}
    if sec == "tile":
        return {**{f.name: getattr(TilePreset(), f.name) for f in fields(TilePreset)},
                **{k: "reference" for k in TILE_ENGINE_KEYS}}
    if sec == "dpu":
        return {f.name: getattr(DPUSpec(), f.name) for f in fields(DPUSpec)}
    if sec == "device":
        p = get_pcm_preset(base.get("synapse", {}).get("preset", "jap2018"))
        return {f.name: getattr(p, f.name) for f in fields(p)}
    spec = registry()[sec]
    return {f.name: getattr(spec.section(), f.name) for f in fields(spec.section)}


def sections_of(arch: str, base: dict) -> list[str]:
    out = ["train", "model", "synapse", "tile", "dpu"]
    if base.get("synapse", {}).get("mode", "pcm") == "pcm":
        out.append("device")                 # [device] needs synapse.mode = "pcm" (its own error)
    return out + ([arch] if registry()[arch].section is not None else [])   # its own task section


safe_text = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-XYZ019 ", max_size=12)
junk_strings = st.one_of(safe_text, st.sampled_from(["", "0.5", "1", "nan", "inf", "true", "[1]", "M"]))
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
tables = st.dictionaries(st.sampled_from(["a", "b", "x_y"]), st.integers(0, 3), min_size=0, max_size=2)
nested = st.sampled_from([[[1, 2], [3]], [[0.5]], [[1.0, 2.0]], [1, [2]], [[]]])


def huge_list(item=0.5):
    return st.integers(MAX_LAYERS + 1, 5 * MAX_LAYERS).map(lambda n: [item] * n)


def not_int(t: str) -> bool:
    try:
        int(t)
        return False
    except ValueError:
        return True


def bad_values(key: str, default, arch: str, n_layers: int, analog: bool):
    """A strategy of values that are invalid for ``key`` whatever else the config says."""
    common = [tables, nested]
    if key in PER_LAYER:
        lo_hi = {"synapse.w_max": [0.0, -1.0, 1e-300, W_LO / 2, W_HI * 2, 1e300],
                 "synapse.epsilon_uS": [0.0, -0.5, 1e-300, 1e6],
                 "tile.adc_range_backward": [-1.0, -1e-9]}.get(key, [0.0, -1.0])
        # a list of the wrong length: checked where the weights are devices (fp32 ignores synapse.*)
        wrong_len = [n for n in range(2, 12) if n != n_layers] if analog or key.startswith("tile.") else [1001]
        return st.one_of(
            nested, tables, junk_strings, st.just(True), non_finite, st.just([]),
            st.lists(junk_strings, min_size=1, max_size=4),                  # strings where numbers belong
            st.lists(non_finite, min_size=1, max_size=3),
            st.sampled_from(lo_hi), st.sampled_from(lo_hi).map(lambda v: [v] * n_layers),
            st.sampled_from(wrong_len).map(lambda n: [1.0] * n), huge_list())
    if isinstance(default, bool):
        return st.one_of(st.integers(-2, 2), st.floats(allow_nan=True), junk_strings, st.lists(st.booleans()),
                         *common)
    if isinstance(default, int):
        opts = [st.floats(allow_nan=True).filter(lambda f: not float(f).is_integer() or not math.isfinite(f)),
                st.floats(0, 100).map(lambda f: float(int(f)) + 0.0),        # 3.0: a float, not an integer
                junk_strings, st.booleans(), st.lists(st.integers(1, 9), max_size=3), *common]
        if key in BAD_RANGE:
            opts.append(st.sampled_from(BAD_RANGE[key]))
        return st.one_of(*opts)
    if isinstance(default, float):
        opts = [non_finite, junk_strings, st.booleans(), st.lists(st.floats(0, 1), min_size=1, max_size=3), *common]
        if key in BAD_RANGE:
            opts.append(st.sampled_from(BAD_RANGE[key]))
        return st.one_of(*opts)
    if isinstance(default, str):
        opts = [st.integers(-5, 5), st.floats(allow_nan=True), st.booleans(), st.lists(safe_text, max_size=2), *common]
        if key in CHOICE_KEYS:
            opts.append(safe_text.map(lambda t: "zz" + t))                   # not one of the choices
        return st.one_of(*opts)
    if isinstance(default, list):   # model.hidden, model.conv, gan.generator, gan.discriminator
        item = "M" if key == "model.conv" else 7
        opts = [nested, tables, junk_strings.filter(lambda t: t not in ("",)), st.booleans(),
                st.lists(st.sampled_from([0, -1, 2.5, "x", True, MAX_WIDTH + 1, math.nan]), min_size=1, max_size=3)
                .filter(lambda v: any(x != "M" for x in v)),
                huge_list(item if key != "model.conv" else 8)]
        if (key == "model.hidden" and arch == "mlp") or (key == "model.conv" and arch == "cnn"):
            opts.append(st.just([]))
            if key == "model.conv":
                opts.append(st.just(["M", "M"]))                           # a cnn without a conv layer
        return st.one_of(*opts)
    raise AssertionError(key)


@st.composite
def bad_configs(draw):
    """(base name, arch, dataset, config dict, section, key or None): one invalid thing in a valid base."""
    name = draw(st.sampled_from(sorted(BASES)))
    arch, dataset, base = BASES[name]
    cfg = {s: dict(v) for s, v in base.items()}
    kind = draw(st.sampled_from(["value"] * 8 + ["unknown key", "unknown section", "not a table"]))
    secs = sections_of(arch, base)
    if kind == "unknown section":
        sec = draw(safe_text.map(lambda t: "s" + t.replace(" ", "_")).filter(lambda t: t not in secs + ["device"]))
        cfg[sec] = {"x": 1}
        return name, arch, dataset, cfg, sec, None
    sec = draw(st.sampled_from(secs))
    known = section_fields(sec, base)
    if kind == "not a table":
        cfg[sec] = draw(st.one_of(st.integers(), safe_text, st.lists(st.integers(), max_size=2)))
        return name, arch, dataset, cfg, sec, None
    if kind == "unknown key":
        key = draw(safe_text.map(lambda t: "k" + t.replace(" ", "_")).filter(lambda t: t not in known))
        cfg.setdefault(sec, {})[key] = draw(st.one_of(st.integers(0, 9), safe_text, st.floats(0, 1)))
        return name, arch, dataset, cfg, sec, key
    key = draw(st.sampled_from(sorted(k for k in known if not (sec == "device" and k == "name"))))
    full = f"{sec}.{key}"
    n_layers = config_from_dict(base).n_weight_layers()
    analog = base.get("synapse", {}).get("mode", "pcm") != "fp32"
    cfg.setdefault(sec, {})[key] = draw(bad_values(full, known[key], arch, n_layers, analog))
    return name, arch, dataset, cfg, sec, key


def check_message(msg: str, sec: str, key: str | None) -> None:
    assert "\n" not in msg.strip(), msg
    assert "Traceback" not in msg
    assert len(msg) < 1200, msg[:200]
    if key is None:
        assert sec in msg, msg
    else:
        assert f"{sec}.{key}" in msg, msg


# --- the TOML a user would write --------------------------------------------------------------------
def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f'"{k}" = {toml_value(x)}' for k, x in v.items()) + "}"
    raise TypeError(v)


def toml_file(d: dict) -> str:
    lines = [f'"{k}" = {toml_value(v)}' for k, v in d.items() if not isinstance(v, dict)]
    for sec, kv in d.items():
        if isinstance(kv, dict):
            lines.append(f'["{sec}"]')
            lines += [f'"{k}" = {toml_value(v)}' for k, v in kv.items()]
    return "\n".join(lines) + "\n"


# --- a run folder that must never change ------------------------------------------------------------
def make_run_folder(root: Path) -> Path:
    run = root / "existing_run"
    run.mkdir(parents=True, exist_ok=True)
    (run / "summary.json").write_text('{"precious": true}')
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (run / "config.toml").write_text("[train]\nepochs = 1\n")
    (run / "SENTINEL").write_text("do not touch")
    return run


def snapshot(run: Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(run.iterdir())}


def cli(argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as exc:       # argparse's errors
            rc = exc.code
    return rc, err.getvalue()


FAST = settings(max_examples=1200, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much, HealthCheck.large_base_example])


def _config_property(n: int, seen: list):
    @settings(FAST, max_examples=n)
    @given(bad_configs())
    def prop(case):
        _, _, _, d, sec, key = case
        with pytest.raises(ConfigError) as info:
            config_from_dict(d)
        check_message(str(info.value), sec, key)
        seen.append(1)
    return prop


def _cli_property(n: int, root: Path, seen: list):
    run = make_run_folder(root)
    before = snapshot(run)
    cfg_file = root / "bad.toml"

    @settings(FAST, max_examples=n)
    @given(bad_configs(), st.sampled_from(["file", "file", "set"]), st.booleans(), st.booleans())
    def prop(case, channel, overwrite, new_out):
        name, arch, dataset, d, sec, key = case
        out = root / "never_created" if new_out else run
        argv = ["train", arch, "--dataset", dataset, "--quiet", "--backend", "numpy", "--out", str(out)]
        if overwrite:
            argv.append("--overwrite")
        base = BASES[name][2]
        if channel == "set" and key is not None and isinstance(d.get(sec), dict):
            cfg_file.write_text(toml_file(base))
            argv += ["--config", str(cfg_file), "--set", f"{sec}.{key}={toml_value(d[sec][key])}"]
        else:
            cfg_file.write_text(toml_file(d))
            argv += ["--config", str(cfg_file)]
        with pytest.raises(ConfigError):      # never start a training: the case must be invalid
            config_from_dict(d)
        rc, err = cli(argv)
        assert rc == 2, (rc, err)
        assert err.startswith("mcasim train: error: "), err
        check_message(err, sec, key)
        assert snapshot(run) == before, "the run folder changed"
        assert not (root / "never_created").exists()
        seen.append(1)
    return prop


def test_fuzzed_bad_configs_are_clear_errors():
    """> 1,000 fuzzed invalid configs through config_from_dict: each a ConfigError naming its key."""
    seen: list = []
    _config_property(1200, seen)()
    assert len(seen) >= 1000


def test_fuzzed_bad_configs_through_the_cli(tmp_path):
    """> 1,000 fuzzed invalid configs through `mcasim train` (config file or --set, with and without
    --overwrite): exit 2, one line naming the key, no traceback, the existing run folder unchanged."""
    seen: list = []
    _cli_property(1100, tmp_path, seen)()
    assert len(seen) >= 1000


# --- CLI arguments ------------------------------------------------------------------------------------
@st.composite
def bad_argvs(draw):
    """(argv without --out, the word the error must name)."""
    arch = draw(st.sampled_from(sorted(registry())))
    dataset = {"lstm": "ptb-char", "cnn": "cifar10"}.get(arch, "digits")
    ok = ["train", arch, "--dataset", dataset, "--quiet", "--backend", "numpy", "--synapse", "fp32"]
    kind = draw(st.sampled_from(["epochs", "epochs_range", "seed", "seed_range", "choice", "arch", "set",
                                 "set_value", "option", "config"]))
    if kind == "epochs":
        return ok + ["--epochs", draw(junk_strings.filter(not_int))], "--epochs"
    if kind == "epochs_range":
        return ok + ["--epochs", str(draw(st.one_of(st.integers(-10 ** 6, 0), st.integers(2 ** 63, 2 ** 80))))], \
            "train.epochs"
    if kind == "seed":
        return ok + ["--seed", draw(st.sampled_from(["x", "1.5", "", "1e3", "--"]))], "--seed"
    if kind == "seed_range":
        return ok + ["--seed", str(draw(st.one_of(st.integers(-10 ** 9, -1), st.integers(2 ** 63, 2 ** 70))))], \
            "train.seed"
    if kind == "choice":
        opt = draw(st.sampled_from(["--dataset", "--synapse", "--backend", "--dpu"]))
        return ok + [opt, draw(safe_text.map(lambda t: "zz" + t))], opt
    if kind == "arch":
        return ["train", draw(safe_text.map(lambda t: "zz" + t)), "--quiet"], "arch"
    if kind == "set":
        item = draw(st.sampled_from(["foo", "=1", "train=1", ".lr=1", "train.=1", "nosuch.lr=1", "train.nosuch=1",
                                     "train.lr.x=1", "tile.nosuch=2", "dpu.zz=1", "device.zz=0.0", "lstm.zz=1",
                                     "train.lr=1\nx=2"]))
        word = {"foo": "--set", "=1": "--set", "train=1": "--set", ".lr=1": "--set", "train.=1": "--set",
                "nosuch.lr=1": "nosuch", "train.nosuch=1": "train.nosuch", "train.lr.x=1": "train.lr.x",
                "tile.nosuch=2": "tile.nosuch", "dpu.zz=1": "dpu.zz", "device.zz=0.0": "device",
                "lstm.zz=1": "lstm.zz", "train.lr=1\nx=2": "train.lr"}[item]
        return ok + ["--set", item], word
    if kind == "set_value":
        key, val = draw(st.sampled_from([("train.lr", "nan"), ("train.lr", "-inf"), ("train.lr", "abc"),
                                         ("train.lr", '"0.1"'), ("train.epochs", "1.5"), ("synapse.w_max", "[[1,2],[3]]"),
                                         ("synapse.w_max", '["a","b"]'), ("synapse.epsilon_uS", "inf"),
                                         ("synapse.epsilon_uS", "[[0.5],[0.5]]"), ("synapse.w_max", "1e-300"),
                                         ("model.hidden", "[[16]]"), ("train.augment", "1"), ("tile.adc_bits", "1.5"),
                                         ("train.seed", "{a = 1}")]))
        return ok + ["--synapse", "pcm", "--set", f"{key}={val}"], key
    if kind == "option":
        opt = draw(safe_text.map(lambda t: "--zz" + t.replace(" ", "")))
        return ok + [opt], opt
    return ok + ["--config", draw(st.sampled_from(["/nonexistent/c.toml", "/", str(REPO / "README.md"),
                                                   str(REPO / "tests" / "data")]))], "config"


def test_fuzzed_bad_cli_arguments(tmp_path):
    """Bad `mcasim train` arguments: exit 2, one line naming the option or key, run folder unchanged."""
    run = make_run_folder(tmp_path)
    before = snapshot(run)
    seen: list = []

    @settings(FAST, max_examples=300)
    @given(bad_argvs(), st.booleans())
    def prop(case, overwrite):
        argv, word = case
        rc, err = cli(argv + ["--out", str(run)] + (["--overwrite"] if overwrite else []))
        assert rc == 2, (argv, rc, err)
        assert "\n" not in err.strip() and "Traceback" not in err, err
        assert err.startswith("mcasim"), err
        assert word in err, (word, err)
        assert snapshot(run) == before
        seen.append(1)

    prop()
    assert len(seen) >= 250


# --- the cases issue 28 names ------------------------------------------------------------------------
@pytest.mark.parametrize("d, msg", [
    ({"synapse": {"w_max": [[1, 2], [3]]}}, r"synapse\.w_max\[0\] must be a number"),
    ({"synapse": {"w_max": ["a", "b"]}}, r"synapse\.w_max\[0\] must be a number, got 'a'"),
    ({"synapse": {"epsilon_uS": [[1, 2], [3]]}}, r"synapse\.epsilon_uS\[0\] must be a number"),
    ({"synapse": {"epsilon_uS": ["a", "b"]}}, r"synapse\.epsilon_uS\[0\] must be a number"),
    ({"synapse": {"epsilon_uS": math.inf}}, r"synapse\.epsilon_uS\[0\] must be a finite number, got inf"),
    ({"synapse": {"epsilon_uS": 25.0}}, r"synapse\.epsilon_uS must be in \[2e-05, 20\) µS"),
    ({"synapse": {"w_max": 1e-300}}, r"synapse\.w_max must be in \[0\.001, 1000\] weight units"),
    ({"synapse": {"w_max": [1.1, math.nan]}}, r"synapse\.w_max\[1\] must be a finite number"),
    ({"tile": {"adc_bitz": 9}}, r"^unknown key tile\.adc_bitz; known keys: adc_bits, "),
    ({"dpu": {"lanez": 8}}, r"^unknown key dpu\.lanez; known keys: chi_bits, "),
    ({"device": {"g_maxx": 20.0}}, r"^unknown key device\.g_maxx; known keys: "),
    ({"train": {"nope": 1}}, r"^unknown key train\.nope; known keys: "),
    ({"tile": {"adc_bits": "9"}}, r"tile\.adc_bits must be an integer, got '9'"),
    ({"tile": 3}, r"\[tile\] must be a table"),
])
def test_the_issue_cases(d, msg):
    with pytest.raises(ConfigError, match=msg):
        config_from_dict(d)


@pytest.mark.parametrize("mode", ["pcm", "ideal"])
@pytest.mark.parametrize("w_max, eps", [(W_LO, 2e-5), (W_LO, 19.9), (W_HI, 2e-5), (W_HI, 19.9)])
def test_range_edges_train_finite(tmp_path, mode, w_max, eps):
    """At the edges of the documented ranges of w_max and epsilon_uS a short training stays finite."""
    import numpy as np

    from gpu_model.backend import make_backend
    from sim.data import load_digits_fallback
    from sim.train import Trainer
    cfg = config_from_dict({"train": {"epochs": 1, "train_subset": 100, "test_subset": 50},
                            "model": {"hidden": [8]}, "synapse": {"mode": mode, "w_max": w_max, "epsilon_uS": eps}})
    tr = Trainer(cfg, load_digits_fallback(), make_backend("numpy", 0), tmp_path, progress=False)
    tr.run()
    assert math.isfinite(tr.metrics[-1]["loss"])
    assert all(np.isfinite(np.asarray(L.store.weights())).all() for L in tr.task.store_layers())


def _subprocess(argv, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "sim.cli", *argv], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=120)


SUBPROCESS_CASES = [
    (["--set", "synapse.w_max=[[1,2],[3]]"], "synapse.w_max"),
    (["--set", 'synapse.epsilon_uS=["a","b"]'], "synapse.epsilon_uS"),
    (["--set", "synapse.epsilon_uS=inf"], "synapse.epsilon_uS"),
    (["--set", "tile.nosuch=1"], "tile.nosuch"),
    (["--epochs", "x"], "--epochs"),
]


@pytest.mark.parametrize("extra, word", SUBPROCESS_CASES[:3])
def test_bad_input_from_a_subprocess(tmp_path, extra, word):
    """The real entry point: exit status 2, one line on stderr, no traceback, the folder as it was."""
    run = make_run_folder(tmp_path)
    before = snapshot(run)
    p = _subprocess(["train", "mlp", "--dataset", "digits", "--quiet", "--out", str(run), "--overwrite", *extra],
                    REPO)
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr and word in p.stderr, p.stderr
    assert snapshot(run) == before


# --- the slow suite: many more --------------------------------------------------------------------------
@pytest.mark.slow
def test_fuzzed_bad_configs_many():
    seen: list = []
    _config_property(20000, seen)()
    assert len(seen) >= 19000


@pytest.mark.slow
def test_fuzzed_bad_configs_through_the_cli_many(tmp_path):
    seen: list = []
    _cli_property(5000, tmp_path, seen)()
    assert len(seen) >= 4500


@pytest.mark.slow
@pytest.mark.parametrize("extra, word", SUBPROCESS_CASES[3:])
def test_bad_input_from_a_subprocess_more(tmp_path, extra, word):
    test_bad_input_from_a_subprocess(tmp_path, extra, word)
