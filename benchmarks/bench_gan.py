"""GAN training cost: a PCM GAN epoch vs the fp32 GAN epoch, side by side.

The GANs are those of ``configs/gan_mnist_{fp32,pcm,pcm_blind8}.toml`` (batch 64; one mini-batch =
generator forward, discriminator forward on real and fake, its backward and update, discriminator
forward and backward with the input gradient, generator backward and update). One process, BLAS
pinned to one thread, interleaved repetitions (fp32, pcm, pcm_reference, pcm_blind8, fp32, ...;
the minimum of each is reported) so that machine noise hits all alike; the time of ``BATCHES``
mini-batches, after ``WARMUP`` mini-batches (so that the PCM run is sending pulses), is
extrapolated to an epoch of 60,000 images. MNIST when it is found, else random images of its shape
(the cost does not depend on the pixel values). The per-epoch evaluation (10,000 generated images
and the FD) is not part of the epoch time, as in the trainer's ``seconds``.

Modes: ``pcm`` is the faithful config as committed (48 devices per side, verified updates, the
fused engine; issue 26), ``pcm_reference`` the same on the reference engine, ``pcm_blind8`` the
cheap config (8 devices per side, blind; the PCM line of the BENCHMARKS.md GAN tables made before
issue 26, when it was ``gan_mnist_pcm.toml``). ``--set`` overrides go to ``pcm`` and
``pcm_reference``.

``from_run`` (``python -m benchmarks.run gan --from-run RUN``): the PCM side is the GAN run folder
``RUN`` at its last checkpoint (its config, drifted devices and late-training pulse and refresh
rates) instead of a fresh PCM GAN, on the engine the run names; a reference-engine run is also
timed converted to the fused engine (``pcm_fused``); the fp32 side stays the committed fp32 config.
"""
from __future__ import annotations


import numpy as np

from sim.data import Dataset, DatasetError

from .common import blas_threads, config_trainer, interleaved_best, merge_overrides, mode_trainer, run_trainer

BATCHES = 10           # mini-batches timed per repetition (640 images)
REPEATS = 3
WARMUP = 80            # mini-batches before timing: with Adam at lr 2e-4 chi needs ~60 steps to reach
                       # one granule (0.0125 weight units), so the first steps send no pulses at all
EPOCH_IMAGES = 60_000
ARCH = "gan"           # the model of the runs that --from-run accepts


def _data(n: int = 8192) -> Dataset:
    try:
        from sim.data.mnist import load_mnist
        ds = load_mnist(download=False)
        return Dataset("mnist", ds.x_train[:n], ds.y_train[:n], ds.x_test[:256], ds.y_test[:256], source=ds.source)
    except DatasetError:
        rng = np.random.default_rng(0)
        x = rng.random((n, 784), dtype=np.float32)
        y = rng.integers(0, 10, n)
        return Dataset("random-mnist-shape", x, y, x[:256], y[:256], source="random")


REFERENCE = {"tile": {"engine": "reference"}}     # the faithful config on the reference engine


def _trainer(mode: str, ds: Dataset, backend: str, pcm_overrides: dict | None = None):
    if mode == "pcm_reference":
        return config_trainer("gan_mnist_pcm", ds, backend, merge_overrides(pcm_overrides, REFERENCE))
    if mode == "pcm_blind8":
        return config_trainer("gan_mnist_pcm_blind8", ds, backend)
    return mode_trainer("gan_mnist", mode, ds, backend, pcm_overrides)


def epoch_ratio(backend: str = "numpy", pcm_overrides: dict | None = None, from_run=None) -> dict:
    ds = _data()
    modes = ("fp32",) if from_run else ("fp32", "pcm", "pcm_reference", "pcm_blind8")
    trainers = {m: _trainer(m, ds, backend, pcm_overrides) for m in modes}
    if from_run:
        trainers["pcm"] = run_trainer(from_run, ds, backend, ARCH)
        if backend == "numpy" and trainers["pcm"].cfg.tile.get("engine", "reference") == "reference":
            # the same trained state on the fused engine (gpu_model/convert.py)
            trainers["pcm_fused"] = run_trainer(from_run, ds, backend, ARCH, engine="fused")
    batch = trainers["fp32"].cfg.train.batch_size
    keys = {m: tr.task.epoch_batches(0) for m, tr in trainers.items()}     # also seeds the latent streams
    best = interleaved_best(trainers, keys, WARMUP, BATCHES, REPEATS)
    per_epoch = {m: best[m] / (BATCHES * batch) * EPOCH_IMAGES for m in trainers}
    weights = {m: sum(int(np.prod(L.store.shape)) for L in tr.task.store_layers()) for m, tr in trainers.items()}
    out = {"backend": backend, "dataset": ds.name, "batch_size": batch, "seconds_per_epoch": per_epoch,
           "pcm_over_fp32": per_epoch["pcm"] / per_epoch["fp32"], "weights": weights["pcm"],
           "engine": trainers["pcm"].cfg.tile.get("engine", "reference"),
           "pcm_from": {"run": str(from_run), "epoch": trainers["pcm"].epoch} if from_run else "configs/gan_mnist_pcm.toml"}
    for m in ("pcm_reference", "pcm_blind8", "pcm_fused"):
        if m in per_epoch:
            out[f"{m}_over_fp32"] = per_epoch[m] / per_epoch["fp32"]
    return out


def run(backend: str = "numpy", threads: int | None = 1, pcm_overrides: dict | None = None, from_run=None) -> dict:
    """``pcm_overrides``: ``{section: {key: value}}`` applied to the PCM config (``--set``);
    ``from_run``: time the PCM run folder at its checkpoint instead."""
    with blas_threads(threads):
        return {"epoch": epoch_ratio(backend, pcm_overrides, from_run)}


def table(res: dict) -> str:
    e = res["epoch"]
    sec = e["seconds_per_epoch"]
    lines = [
        f"  GAN epoch (60,000 images, batch {e['batch_size']}, {e['weights']:,} weights in G + D, "
        f"{e['dataset']}, backend {e['backend']}):",
        f"    fp32 {sec['fp32']:.0f} s   pcm {sec['pcm']:.0f} s   pcm / fp32 = {e['pcm_over_fp32']:.2f}x   "
        f"({e['engine']} engine; target <= 4x on one CPU core, issue 23)"]
    if isinstance(e.get("pcm_from"), dict):
        lines.append(f"    pcm: {e['pcm_from']['run']} at its checkpoint of epoch {e['pcm_from']['epoch']}")
    else:
        lines.append("    pcm: configs/gan_mnist_pcm.toml (the faithful config) with the --set overrides, fresh")
    if "pcm_reference_over_fp32" in e:
        lines.append(f"    the same on the reference engine: {sec['pcm_reference']:.0f} s = {e['pcm_reference_over_fp32']:.2f}x")
    if "pcm_fused_over_fp32" in e:
        lines.append(f"    the same state on the fused engine: {sec['pcm_fused']:.0f} s = {e['pcm_fused_over_fp32']:.2f}x")
    if "pcm_blind8_over_fp32" in e:
        lines.append(f"    the cheap config (configs/gan_mnist_pcm_blind8.toml, 8 devices per side, blind): "
                     f"{sec['pcm_blind8']:.0f} s = {e['pcm_blind8_over_fp32']:.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(run()))
