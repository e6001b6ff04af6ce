"""What a task supplies to the trainer: its network(s), loss and error vector, metric, batches.

The trainer (``sim/train.py``) runs one loop for every task; it never imports a task module by
name: ``make_task`` picks one from ``model.arch``.
"""
from __future__ import annotations

from .base import Task  # noqa: F401


def task_class(arch: str) -> type:
    """The Task subclass that trains ``model.arch`` (imported on demand)."""
    if arch in ("mlp", "cnn"):
        from .classify import ClassifyTask
        return ClassifyTask
    if arch == "lstm":
        from .charlm import CharLMTask
        return CharLMTask
    if arch == "gan":
        from .gan import GANTask
        return GANTask
    raise ValueError(f"no task for model.arch {arch!r}")


def epoch_metrics(arch: str) -> tuple[str, ...]:
    """Every numeric figure of a per-epoch record (``metrics.jsonl``) of ``arch``'s runs."""
    t = task_class(arch)
    return ("loss", t.train_metric) + tuple(t.eval_metrics) + ("pulses", "refreshes")


def metric_mode(arch: str, metric: str) -> str:
    """"max" where a higher ``metric`` is better for ``arch``'s task, else "min"."""
    return "max" if metric in task_class(arch).maximised else "min"


def make_task(cfg, ds, be) -> "Task":
    return task_class(cfg.model.arch)(cfg, ds, be)
