"""What a task supplies to the trainer: its network(s), loss and error vector, metric, batches.

The trainer (``sim/train.py``) runs one loop for every task; it never imports a task module by
name: ``make_task`` picks one from ``model.arch``.
"""
from __future__ import annotations

from .base import Task  # noqa: F401


def make_task(cfg, ds, be) -> "Task":
    arch = cfg.model.arch
    if arch in ("mlp", "cnn"):
        from .classify import ClassifyTask
        return ClassifyTask(cfg, ds, be)
    if arch == "lstm":
        from .charlm import CharLMTask
        return CharLMTask(cfg, ds, be)
    if arch == "gan":
        from .gan import GANTask
        return GANTask(cfg, ds, be)
    raise ValueError(f"no task for model.arch {arch!r}")
