"""Plots of a run folder (matplotlib, Agg)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_run(out: Path, trainer) -> None:
    """The task's own plots (``task.plot(out, metrics)``: accuracy.png, bpc.png, the GAN's grids),
    pulses.png and the conductance (analog) or weight (fp32) histograms."""
    plt = _plt()
    m = trainer.metrics
    ep = [r["epoch"] for r in m]
    task_plot = getattr(trainer.task, "plot", None)
    if task_plot is not None:
        task_plot(Path(out), m)
    _pulses_plot(plt, out, m, ep)
    _hist_plot(plt, out, trainer)


def epoch_curves(path: Path, metrics: list[dict], series, ylabel: str, title: str, scale: float = 1.0) -> None:
    """One figure of per-epoch curves: ``series`` = [(key, style, label), ...] from the records in
    ``metrics`` (keys missing from the last record are skipped), each value times ``scale``."""
    plt = _plt()
    ep = [r["epoch"] for r in metrics]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, style, label in series:
        if key in metrics[-1]:
            ax.plot(ep, [scale * r[key] for r in metrics], style, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _pulses_plot(plt, out, m, ep):
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(ep, [r["pulses"] for r in m], label="SET pulses")
    ax2 = ax.twinx()
    ax2.plot(ep, [r["refreshes"] for r in m], "r.-", label="refreshes")
    ax.set_xlabel("epoch")
    ax.set_ylabel("SET pulses per epoch")
    ax2.set_ylabel("refreshes per epoch", color="r")
    fig.tight_layout()
    fig.savefig(out / "pulses.png", dpi=120)
    plt.close(fig)


def _hist_plot(plt, out, trainer):
    from .nn.stores import AnalogWeights
    layers = trainer.task.store_layers()
    analog = [L for L in layers if isinstance(L.store, AnalogWeights)]
    if analog:
        be = trainer.be
        ncol = min(len(analog), 3)
        nrow = -(-len(analog) // ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(5 * ncol, 3.6 * nrow), squeeze=False)
        for ax in axes.ravel()[len(analog):]:
            ax.set_visible(False)
        for ax, L in zip(axes.ravel(), analog):
            tile = L.store.tile
            for g, lab in zip(tile.conductances(), ("G+", "G-")):
                ax.hist(be.asnumpy(g).ravel(), bins=80, range=(0, tile.config.device.g_max), histtype="step",
                        label=lab, density=True)
            ax.set_xlabel("conductance (µS)")
            ax.set_title(f"{L.name}: end of training")
            ax.set_yscale("log")
            ax.legend()
        fig.tight_layout()
        fig.savefig(out / "conductance_hist.png", dpi=120)
        plt.close(fig)
    else:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for L in layers:
            ax.hist(np.ravel(trainer.be.asnumpy(L.store.weights())), bins=80, histtype="step", label=L.name, density=True)
        ax.set_xlabel("weight")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "weight_hist.png", dpi=120)
        plt.close(fig)
