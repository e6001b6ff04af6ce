"""What a task supplies to the trainer, and the registry of tasks.

A task is one registered unit, a :class:`TaskSpec` in the ``TASKS`` tuple of its module: the
``model.arch`` it trains, its config section (a dataclass read from ``[<arch>]``; None for the
classifiers, which read only ``[model]``), the validator of that section, the count of its weight
layers, its Task class (the builder of its networks) and its committed configs. ``sim.config`` asks
this registry for all of them; it names no task. Adding a native task: a module with its Task class
and ``TASKS = (TaskSpec(...),)``, and its name in :data:`TASK_MODULES`.

The trainer (``sim/train.py``) runs one loop for every task; it never imports a task module by
name: ``make_task`` picks one from ``model.arch``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .base import Task  # noqa: F401

# modules whose ``TASKS`` tuple registers tasks, in the order of ``ARCHS`` (CLI choices, messages)
TASK_MODULES = ("sim.tasks.classify", "sim.tasks.charlm", "sim.tasks.gan")

# the committed configs (configs/<stem>_<synapse>.toml) beside the package in a checkout
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


@dataclass(frozen=True)
class TaskSpec:
    arch: str                        # model.arch value (CLI `mcasim train ARCH`)
    task: type                       # Task subclass: builds the network(s) from the config, trains them
    n_weight_layers: Callable        # cfg -> number of weight matrices, in the order of the per-layer
                                     # lists (synapse.w_max, epsilon_uS, [tile] lists). A count, not a
                                     # build: validation needs the lists' length before any network
                                     # exists (no dataset, no devices) and the builders read the
                                     # per-layer values before they build; make_task checks it
                                     # against the built network
    validate: Callable | None = None  # (cfg, need) -> None: the task's own checks (need(cond, msg)
                                     # raises ConfigError(msg)); [train]/[model]/[synapse] basics are
                                     # checked by sim.config for every task
    section: type | None = None      # dataclass of the task's config section [<arch>]; None: none
    whole_unit: bool = False         # True: its layers hand the backward factors (x, d) to the whole
                                     # digital unit (synapse.dpu tile-golden | tile-rtl; sim/nn/layers.py
                                     # apply_updates) and nothing rescales a gradient before the update
    configs: dict = field(default_factory=dict)  # --dataset -> stem of its committed configs
                                     # (configs/<stem>_<fp32|ideal|pcm>.toml); the first dataset is
                                     # the default of `mcasim train ARCH`

    @property
    def default_dataset(self) -> str | None:
        return next(iter(self.configs), None)

    def committed_config(self, dataset: str, mode: str) -> Path | None:
        """The committed config of this task on ``dataset`` with ``synapse.mode = mode`` (None
        where the task has none for that dataset; the path may be missing outside a checkout)."""
        stem = self.configs.get(dataset)
        return None if stem is None else CONFIG_DIR / f"{stem}_{mode}.toml"


_REGISTRY: dict[str, TaskSpec] | None = None


def registry() -> dict[str, TaskSpec]:
    """``model.arch`` -> :class:`TaskSpec` of every registered task (task modules imported once)."""
    global _REGISTRY
    if _REGISTRY is None:
        reg: dict[str, TaskSpec] = {}
        for name in TASK_MODULES:
            for spec in importlib.import_module(name).TASKS:
                if spec.arch in reg:
                    raise RuntimeError(f"two tasks register model.arch {spec.arch!r} ({name})")
                reg[spec.arch] = spec
        _REGISTRY = reg
    return _REGISTRY


def archs() -> tuple[str, ...]:
    return tuple(registry())


def task_spec(arch: str) -> TaskSpec:
    try:
        return registry()[arch]
    except KeyError:
        raise ValueError(f"no task for model.arch {arch!r}; known: {', '.join(registry())}") from None


def task_class(arch: str) -> type:
    """The Task subclass that trains ``model.arch``."""
    return task_spec(arch).task


def epoch_metrics(arch: str) -> tuple[str, ...]:
    """Every numeric figure of a per-epoch record (``metrics.jsonl``) of ``arch``'s runs."""
    t = task_class(arch)
    return ("loss", t.train_metric) + tuple(t.eval_metrics) + ("pulses", "refreshes")


def metric_mode(arch: str, metric: str) -> str:
    """"max" where a higher ``metric`` is better for ``arch``'s task, else "min"."""
    return "max" if metric in task_class(arch).maximised else "min"


def make_task(cfg, ds, be) -> "Task":
    """Build ``model.arch``'s task; its built weight matrices must be the ones the config counted."""
    task = task_class(cfg.model.arch)(cfg, ds, be)
    built, counted = len(task.store_layers()), cfg.n_weight_layers()
    if built != counted:
        raise RuntimeError(f"model.arch {cfg.model.arch!r}: the network has {built} weight layers but "
                           f"its TaskSpec.n_weight_layers counts {counted} (the per-layer lists would shift)")
    return task

