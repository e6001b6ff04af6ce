"""CNN training cost: PCM vs fp32 epoch of the same net, and im2col/conv cost vs a plain matmul.

Side by side in one process, BLAS pinned to one thread, interleaved repetitions (fp32, pcm,
fp32, pcm, ...; the minimum of each is reported) so that machine noise hits both alike. The net
and its knobs are those of ``configs/cnn_cifar10_{fp32,pcm}.toml`` (batch 64); CIFAR-10 when it
is found, else random inputs of its shape. Conv layers: for each conv of the net at batch 64, the
forward cost of (a) a plain matmul of the patch matrix (B*H*W, 9*C_in) with the kernel,
(b) im2col + that matmul (the fp32 conv), (c) im2col + the crossbar read of every patch (DAC,
read noise, ADC), and the backward of (c) (transposed read of every position + col2im + the
weight-gradient matmul), as ratios to (a).

``from_run`` (``python -m benchmarks.run cnn --from-run RUN``): the PCM side is the CNN run folder
``RUN`` at its last checkpoint (its config, drifted devices and late-training pulse rate) instead of
a fresh PCM net; the fp32 side stays the committed fp32 config (its step cost does not depend on
the weights).
"""
from __future__ import annotations


import numpy as np

from sim.data import Dataset, DatasetError
from sim.nn import im2col

from .common import best_time, blas_threads, interleaved_best, mode_trainer, run_trainer

WARMUP = 2
BATCHES = 8            # mini-batches timed per repetition (512 images)
REPEATS = 3
EPOCH_IMAGES = 50_000
CONV_REPEATS = 5
ARCH = "cnn"           # the model of the runs that --from-run accepts


def _data(n: int = 2048) -> Dataset:
    try:
        from sim.data.cifar10 import load_cifar10
        ds = load_cifar10()
        return Dataset("cifar10", ds.x_train[:n], ds.y_train[:n], ds.x_test[:256], ds.y_test[:256],
                       source=ds.source, n_classes=10)
    except DatasetError:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(n, 32, 32, 3)).astype(np.float32)
        y = rng.integers(0, 10, n)
        return Dataset("random-cifar-shape", x, y, x[:256], y[:256], source="random")


def epoch_ratio(backend: str = "numpy", pcm_overrides: dict | None = None, from_run=None) -> dict:
    ds = _data()
    trainers = {m: _trainer(m, ds, backend, pcm_overrides) for m in ("fp32",) + (() if from_run else ("pcm", "pcm_fused"))}
    if from_run:
        trainers["pcm"] = run_trainer(from_run, ds, backend, ARCH)
        if backend == "numpy":         # the same trained state on the fused engine (gpu_model/convert.py)
            trainers["pcm_fused"] = run_trainer(from_run, ds, backend, ARCH, engine="fused")
    batch = trainers["fp32"].cfg.train.batch_size
    keys = {m: tr.task.epoch_batches(0) for m, tr in trainers.items()}   # also seeds the augmentation
    best = interleaved_best(trainers, keys, WARMUP, BATCHES, REPEATS)
    per_epoch = {m: best[m] / (BATCHES * batch) * EPOCH_IMAGES for m in trainers}
    return {"backend": backend, "dataset": ds.name, "batch_size": batch, "seconds_per_epoch": per_epoch,
            "pcm_over_fp32": per_epoch["pcm"] / per_epoch["fp32"],
            **({"pcm_fused_over_fp32": per_epoch["pcm_fused"] / per_epoch["fp32"]} if "pcm_fused" in per_epoch else {}),
            "pcm_from": {"run": str(from_run), "epoch": trainers["pcm"].epoch} if from_run else "configs/cnn_cifar10_pcm.toml"}


def conv_costs(backend: str = "numpy", batch: int = 64, pcm_overrides: dict | None = None) -> list[dict]:
    ds = _data(batch)
    tr = _trainer("pcm", ds, backend, pcm_overrides)
    xp = tr.xp
    net = tr.task.net
    x = xp.asarray(ds.x_train[:batch])
    out = []
    for L in net.layers:
        if L.__class__.__name__ == "Conv2d":
            st = L.store
            w = st.weights()
            cols, _, _ = im2col(xp, x, L.k, L.stride, L.pad)

            def best(fn):
                return best_time(fn, CONV_REPEATS, tr.be)

            with tr.task.uncounted():
                t_mm = best(lambda: cols @ w.T)
                t_fp = best(lambda: im2col(xp, x, L.k, L.stride, L.pad)[0] @ w.T)
                t_an = best(lambda: L.forward(x))
                d = xp.full(L.forward(x).shape, 0.01, dtype=x.dtype)

                def fwd_bwd():
                    L.forward(x)
                    L.backward(d, need_dx=True)

                t_bw = best(fwd_bwd) - t_an     # transposed reads + col2im + weight gradient
            out.append({"layer": L.name, "patches": [int(cols.shape[0]), int(cols.shape[1])], "c_out": L.c_out,
                        "matmul_s": t_mm, "im2col_matmul_over_matmul": t_fp / t_mm,
                        "crossbar_conv_over_matmul": t_an / t_mm, "crossbar_conv_backward_over_matmul": t_bw / t_mm})
        x = L.forward(x)
    return out


def _trainer(mode: str, ds: Dataset, backend: str, pcm_overrides: dict | None = None):
    return mode_trainer("cnn_cifar10", mode, ds, backend, pcm_overrides)


def run(backend: str = "numpy", threads: int | None = 1, pcm_overrides: dict | None = None, from_run=None) -> dict:
    """``pcm_overrides``: ``{section: {key: value}}`` applied to the PCM config (``--set``);
    ``from_run``: time the PCM run folder at its checkpoint instead (the epoch ratio only)."""
    with blas_threads(threads):
        if from_run:
            return {"epoch": epoch_ratio(backend, from_run=from_run)}
        return {"epoch": epoch_ratio(backend, pcm_overrides), "conv": conv_costs(backend, pcm_overrides=pcm_overrides)}


def table(res: dict) -> str:
    e = res["epoch"]
    lines = [f"  CNN epoch (50,000 images, batch {e['batch_size']}, {e['dataset']}, backend {e['backend']}):",
             f"    fp32 {e['seconds_per_epoch']['fp32']:.0f} s   pcm {e['seconds_per_epoch']['pcm']:.0f} s   "
             f"pcm / fp32 = {e['pcm_over_fp32']:.2f}x (reference engine)"]
    if "pcm_fused_over_fp32" in e:
        lines.append(f"    fused engine: pcm {e['seconds_per_epoch']['pcm_fused']:.0f} s = {e['pcm_fused_over_fp32']:.2f}x fp32")
    if isinstance(e.get("pcm_from"), dict):
        lines.append(f"    pcm: {e['pcm_from']['run']} at its checkpoint of epoch {e['pcm_from']['epoch']}")
    if "conv" not in res:
        return "\n".join(lines)
    lines += ["  conv forward at batch 64 vs a plain matmul of the patch matrix (same shape):",
              "    layer   patches        matmul ms  im2col+matmul  crossbar conv  crossbar backward"]
    for c in res["conv"]:
        lines.append(f"    {c['layer']:6s}  {c['patches'][0]:6d}x{c['patches'][1]:<5d}  {1e3 * c['matmul_s']:8.1f}  "
                     f"{c['im2col_matmul_over_matmul']:12.2f}x  {c['crossbar_conv_over_matmul']:12.2f}x  "
                     f"{c['crossbar_conv_backward_over_matmul']:15.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    r = run()
    print(table(r))
