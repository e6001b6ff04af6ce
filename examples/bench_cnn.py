"""Speed: the paper's CNN converted from torch (examples/cnn_cifar10.py) against the native one.

    python examples/bench_cnn.py --config configs/cnn_cifar10_pcm.toml --images 640 --rounds 3

Trains both on the same CIFAR-10 mini-batches (the first ``--images`` training images, batch and
optimizer from the config, augmentation off: the data pipeline is the same code for both) and
times the training steps only (forward, loss, backward, update through chi and the digital unit),
round after round interleaved, best round kept: the native PCM network (``sim.tasks.models``), the
converted torch network on the same PCM config, and the torch network on fp32 stores (the same
config with ``synapse.mode = "fp32"``), all on NumPy, one thread. Prints one JSON line per
variant (seconds per 1,000 images) and the ratio converted / native.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

import mcasim.torch as mt
from cnn_cifar10 import build_cnn, nchw
from gpu_model.backend import make_backend
from sim.config import load_config
from sim.data import load_dataset
from sim.nn import Optimizer, apply_updates, softmax_cross_entropy
from sim.tasks.models import build_cnn as build_native_cnn
from sim.train import RAND_STREAM_BASE

PER_IMAGES = 1000      # the figure: seconds per 1,000 training images


def _batches(n: int, batch: int):
    return [slice(i, min(i + batch, n)) for i in range(0, n, batch)]


def native_run(cfg, ds, n: int) -> float:
    """Seconds of the native network's training steps on the first ``n`` images."""
    t = cfg.train
    be = make_backend("numpy", t.seed)
    net = build_native_cnn(cfg, ds.input_shape, ds.n_classes, be)
    opt = Optimizer(t.optimizer, be.xp, t.momentum, t.adam_beta1, t.adam_beta2, t.adam_eps)
    rr = be.child_rng(RAND_STREAM_BASE)
    tiles = [L.store.tile for L in net.store_layers() if hasattr(L.store, "tile")]
    x, y = ds.x_train[:n], ds.y_train[:n]
    t0 = time.perf_counter()
    for sl in _batches(n, t.batch_size):
        net.train()
        _, _, d = softmax_cross_entropy(np, net.forward(x[sl]), y[sl])
        opt.step_begin()
        net.backward(d)
        apply_updates(net.update_order(), opt, t.lr, rr, None, int(sl.stop - sl.start))
        for tile in tiles:
            tile.advance(t.seconds_per_batch)
    return time.perf_counter() - t0


def torch_run(cfg, ds, n: int) -> float:
    """Seconds of the converted torch network's training steps on the first ``n`` images."""
    t = cfg.train
    torch.manual_seed(t.seed)
    model = mt.convert_to_analog(build_cnn(cfg.model, ds.input_shape[2], ds.input_shape[0], ds.n_classes), cfg)
    opt = mt.AnalogOptimizer(torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum))
    x, y = ds.x_train[:n], torch.from_numpy(ds.y_train[:n].astype(np.int64))
    t0 = time.perf_counter()
    for sl in _batches(n, t.batch_size):
        F.cross_entropy(model(nchw(x[sl])), y[sl]).backward()
        opt.step()
        opt.zero_grad()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/cnn_cifar10_pcm.toml")
    ap.add_argument("--images", type=int, default=640)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(a.config)
    fp32 = load_config(a.config, {"synapse": {"mode": "fp32"}})
    ds = load_dataset("cifar10")
    n = min(a.images, len(ds.x_train))
    runs = {"native pcm": lambda: native_run(cfg, ds, n), "torch pcm": lambda: torch_run(cfg, ds, n),
            "torch fp32": lambda: torch_run(fp32, ds, n)}
    best = {k: math.inf for k in runs}
    for _ in range(a.rounds):
        for k, run in runs.items():
            best[k] = min(best[k], run())
    for k, s in best.items():
        print(json.dumps({"variant": k, "images": n, "rounds": a.rounds,
                          "s_per_1000_images": round(s * PER_IMAGES / n, 3)}))
    print(json.dumps({"torch_pcm_over_native_pcm": round(best["torch pcm"] / best["native pcm"], 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
