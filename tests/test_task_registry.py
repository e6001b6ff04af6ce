"""The task registry (sim.tasks.TaskSpec) and the defaults of `mcasim train ARCH` (issue 25 papercuts).

A task is one registered unit: its config section, validator, weight-layer count, Task class and
committed configs; sim/config.py names no task. Without --config, `mcasim train ARCH` starts from
the architecture's committed config (configs/<arch>_<dataset>_<synapse>.toml), so the shortest
command trains the committed network.
"""
from __future__ import annotations

import sys
import tomllib
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import sim.config
import sim.tasks
from gpu_model.backend import make_backend
from sim.cli import build_parser, main
from sim.cli.train import command_overrides
from sim.config import ConfigError, config_from_dict, load_config
from sim.data import Dataset
from sim.data.ptb import CharCorpus
from sim.tasks import CONFIG_DIR, Task, TaskSpec, registry, task_spec
from sim.tasks.classify import ClassifyTask
from sim.train import Trainer

REPO = Path(__file__).resolve().parents[1]
SHORTEST = {"mlp": "mnist", "cnn": "cifar10", "lstm": "ptb-char", "gan": "mnist"}   # arch -> its dataset
STEMS = {"mlp": "mlp_mnist", "cnn": "cnn_cifar10", "lstm": "lstm_ptb", "gan": "gan_mnist"}


def test_registry_holds_the_four_tasks():
    reg = registry()
    assert tuple(reg) == ("mlp", "cnn", "lstm", "gan") == sim.config.ARCHS
    for arch, spec in reg.items():
        assert spec.arch == arch and issubclass(spec.task, Task)
        assert spec.default_dataset == SHORTEST[arch]
    assert {a for a, s in reg.items() if s.section is not None} == {"lstm", "gan"}
    d = config_from_dict({}).to_dict()
    assert list(d) == ["train", "model", "synapse", "lstm", "gan", "tile", "dpu", "device"]
    assert sim.tasks.task_class("lstm").__name__ == "CharLMTask"
    with pytest.raises(ValueError, match="no task for model.arch 'rnn'"):
        task_spec("rnn")


def test_config_module_names_no_task():
    """The four places a new task used to touch in config.py are gone: sections, counts, checks."""
    src = (REPO / "sim" / "config.py").read_text()
    for name in ("LSTMSection", "GANSection", "TASK_SECTIONS", "N_WEIGHT_LAYERS", "TASK_VALIDATORS", "cfg.gan",
                 "cfg.lstm", 'ARCHS = ('):
        assert name not in src, name
    assert "if arch ==" not in (REPO / "sim" / "tasks" / "__init__.py").read_text()


@dataclass
class ToySection:
    depth: int = 1              # hidden layers of the toy classifier (>= 1)


def _toy_layers(cfg) -> int:
    return cfg.toy.depth + 1


def _toy_validate(cfg, need):
    need(cfg.toy.depth >= 1, f"toy.depth must be >= 1, got {cfg.toy.depth}")


def test_a_new_task_is_one_registered_unit(monkeypatch):
    """A task module with a TASKS entry (section, validator, count, Task class) and its name in
    TASK_MODULES: config.py, the CLI and the trainer know it without another edit."""
    mod = types.ModuleType("toy_task_for_tests")
    mod.TASKS = (TaskSpec(arch="toy", task=ClassifyTask, n_weight_layers=_toy_layers, validate=_toy_validate,
                          section=ToySection),)
    monkeypatch.setitem(sys.modules, "toy_task_for_tests", mod)
    monkeypatch.setattr(sim.tasks, "TASK_MODULES", sim.tasks.TASK_MODULES + ("toy_task_for_tests",))
    monkeypatch.setattr(sim.tasks, "_REGISTRY", None)
    assert sim.config.ARCHS[-1] == "toy"
    cfg = config_from_dict({"model": {"arch": "toy"}, "toy": {"depth": 3},
                            "synapse": {"w_max": [1.0] * 4, "epsilon_uS": 0.5}})
    assert cfg.toy.depth == 3 and cfg.n_weight_layers() == 4 and "toy" in cfg.to_dict()
    with pytest.raises(ConfigError, match="toy.depth must be >= 1, got 0"):
        config_from_dict({"model": {"arch": "toy"}, "toy": {"depth": 0}})
    with pytest.raises(ConfigError, match="unknown key toy.width"):
        config_from_dict({"toy": {"width": 3}})
    with pytest.raises(ConfigError, match="synapse.w_max: need 1 or 4 values"):
        config_from_dict({"model": {"arch": "toy"}, "toy": {"depth": 3}})
    args = build_parser().parse_args(["train", "toy", "--out", "/nonexistent/r"])
    assert args.arch == "toy" and args.config is None      # no committed config: the built-in defaults


def test_a_wrong_count_is_caught_by_the_built_network(monkeypatch):
    """make_task compares the built network with TaskSpec.n_weight_layers."""
    spec = task_spec("mlp")
    monkeypatch.setitem(registry(), "mlp", TaskSpec(arch="mlp", task=spec.task, n_weight_layers=lambda cfg: 3,
                                                     validate=spec.validate, configs=spec.configs))
    cfg = config_from_dict({"model": {"hidden": [4]}, "synapse": {"mode": "fp32"}})
    with pytest.raises(RuntimeError, match="the network has 2 weight layers but its TaskSpec.n_weight_layers counts 3"):
        sim.tasks.make_task(cfg, _fake("mnist"), make_backend("numpy", 0))


def _fake(dataset: str):
    """A small dataset of the real one's shape (no files needed)."""
    rng = np.random.default_rng(0)
    if dataset == "cifar10":
        x = rng.normal(size=(16, 32, 32, 3)).astype(np.float32)
        y = rng.integers(0, 10, 16)
        return Dataset("cifar10", x, y, x[:8], y[:8], source="fake")
    if dataset == "mnist":
        x = rng.random((16, 784)).astype(np.float32)
        y = rng.integers(0, 10, 16)
        return Dataset("mnist", x, y, x[:8], y[:8], source="fake")
    vocab = sorted(set("abcdefghijklmnopqrstuvwxyz _\n"))
    t = rng.integers(0, len(vocab), 2000)
    return CharCorpus("ptb-char", vocab, t, t[:300], t[:300], source="fake")


@pytest.mark.parametrize("synapse", [None, "fp32", "ideal", "pcm"])
@pytest.mark.parametrize("arch", list(SHORTEST))
def test_the_shortest_command_starts_from_the_committed_config(arch, synapse, tmp_path):
    """`mcasim train ARCH [--synapse S] --out R` resolves to configs/<arch>_<dataset>_<S or pcm>.toml,
    with and without --dataset; the config it trains equals the committed file's."""
    for argv in (["train", arch], ["train", arch, "--dataset", SHORTEST[arch]]):
        argv = argv + (["--synapse", synapse] if synapse else []) + ["--out", str(tmp_path / "r")]
        args = build_parser().parse_args(argv)
        path = CONFIG_DIR / f"{STEMS[arch]}_{synapse or 'pcm'}.toml"
        assert args.dataset == SHORTEST[arch] and Path(args.config) == path and args.config_default
        made = load_config(args.config, command_overrides(args))
        assert made.to_dict() == load_config(path).to_dict()
        assert made.model.arch == arch and made.synapse.mode == (synapse or "pcm")


@pytest.mark.parametrize("arch", list(SHORTEST))
def test_the_shortest_command_builds_and_steps(arch, tmp_path):
    """The network of `mcasim train ARCH --out R` (the committed PCM config) builds, has the weight
    layers its config counts, and takes one finite training step (batch of 4 from a fake dataset)."""
    args = build_parser().parse_args(["train", arch, "--out", str(tmp_path / "r"), "--set", "train.batch_size=4"])
    cfg = load_config(args.config, command_overrides(args))
    tr = Trainer(cfg, _fake(args.dataset), make_backend("numpy", 0), tmp_path, progress=False)
    assert len(tr.task.store_layers()) == cfg.n_weight_layers() == len(cfg.per_layer("w_max", cfg.n_weight_layers()))
    assert tr.task.analog_stores()
    st = tr.step(tr.task.epoch_batches(0)[0], cfg.train.lr, tr.be.child_rng(1))
    assert np.isfinite(st["loss_sum"]) and st["n"] > 0


def test_the_committed_defaults_are_the_files_not_a_copy():
    """One source of truth: the committed configs hold the values (the task code names only the stem)."""
    for arch, stem in STEMS.items():
        assert task_spec(arch).configs[SHORTEST[arch]] == stem
        for mode in ("fp32", "ideal", "pcm"):
            d = tomllib.loads((CONFIG_DIR / f"{stem}_{mode}.toml").read_text())
            assert d["synapse"]["mode"] == mode
            assert d.get("model", {}).get("arch", "mlp") == arch


def test_no_committed_config_keeps_the_built_in_defaults(tmp_path):
    """mlp on digits has no committed config: the built-in defaults (the reference runs' commands)."""
    args = build_parser().parse_args(["train", "mlp", "--dataset", "digits", "--out", str(tmp_path / "r")])
    assert args.config is None and args.config_default is None
    assert load_config(args.config, command_overrides(args)).to_dict() == \
        config_from_dict({"model": {"arch": "mlp"}}).to_dict()


def test_no_committed_config_and_no_network_says_what_exists(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "cnn", "--dataset", "digits", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "model.conv: a cnn needs at least one conv layer" in err
    assert "configs/cnn_cifar10_*.toml" in err and err.count("\n") == 1
    assert not out.exists()


def test_a_committed_config_missing_from_the_installation(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sim.tasks, "CONFIG_DIR", tmp_path / "nowhere")
    assert main(["train", "cnn", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "cnn_cifar10_pcm.toml is not in this installation" in err and "--config" in err


def test_set_model_arch_against_the_command(tmp_path, capsys):
    assert main(["train", "mlp", "--dataset", "digits", "--set", 'model.arch="cnn"', "--out", str(tmp_path / "r")]) == 2
    assert "the architecture is the command's ARCH ('mlp')" in capsys.readouterr().err
