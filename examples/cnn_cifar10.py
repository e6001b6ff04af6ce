"""The paper's VGG-style CIFAR-10 CNN written in plain torch.nn, converted onto PCM crossbars.

    python examples/cnn_cifar10.py --config configs/cnn_cifar10_pcm.toml --out runs/torch_cnn \
        [--epochs 2] [--train-subset 5000] [--test-subset 1000]

Same network, data order, augmentation and update path as ``mcasim train cnn`` on that config:
every conv and dense layer on PCM tiles (im2col), BatchNorm/ReLU/pooling/dropout digital, momentum
SGD in digital with its step through chi and the digital unit. A checkpoint (``torch.save``) is
written every epoch; running the command again resumes from it.
"""
from __future__ import annotations

from pathlib import Path
import argparse
import json
import math
import shlex
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import mcasim.torch as mt
from sim.config import load_config
from sim.data import load_dataset
from sim.data.cifar10 import augment

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
# SeedSequence([seed, stream, epoch]) streams, as sim.tasks.classify: 2 the batch order, 3 the
# augmentation; 5 seeds torch's generator (dropout masks) per epoch, so a resumed run draws the
# masks of an uninterrupted one (engineering choice: a stream number the native tasks leave unused)
ORDER_STREAM, AUGMENT_STREAM, DROPOUT_STREAM = 2, 3, 5


class FlattenNHWC(nn.Module):
    """(B, C, H, W) -> (B, H*W*C): flattened in (H, W, C) order, as the native NHWC network."""

    def forward(self, x):
        return x.permute(0, 2, 3, 1).flatten(1)


def build_cnn(model_cfg, in_channels: int = 3, size: int = 32, n_classes: int = 10) -> nn.Sequential:
    """``[model]`` of the config as a torch.nn.Sequential (conv k x k same padding -> [BN] -> act,
    "M" 2x2 pooling, then dropout -> dense -> [BN] -> act ..., the output layer)."""
    m = model_cfg
    layers, C, H = [], in_channels, size
    for c in m.conv:
        if isinstance(c, str):
            layers.append(nn.MaxPool2d(2) if m.pool == "max" else nn.AvgPool2d(2))
            H //= 2
            continue
        layers.append(nn.Conv2d(C, int(c), m.kernel, padding=m.kernel // 2, bias=not m.batch_norm))
        if m.batch_norm:
            layers.append(nn.BatchNorm2d(int(c)))
        layers.append(ACTIVATIONS[m.activation]())
        C = int(c)
    layers.append(FlattenNHWC())
    sizes = [H * H * C] + [int(h) for h in m.hidden] + [n_classes]
    for j in range(len(sizes) - 1):
        last = j == len(sizes) - 2
        if m.dropout > 0:
            layers.append(nn.Dropout(m.dropout))
        bn = m.batch_norm and not last
        layers.append(nn.Linear(sizes[j], sizes[j + 1], bias=not bn))
        if bn:
            layers.append(nn.BatchNorm1d(sizes[j + 1]))
        if not last:
            layers.append(ACTIVATIONS[m.activation]())
    for L in layers:                    # He-normal weights (model.init = "he_normal"), zero biases
        if isinstance(L, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(L.weight, nonlinearity="relu")
            if L.bias is not None:
                nn.init.zeros_(L.bias)
    return nn.Sequential(*layers)


def nchw(x: np.ndarray) -> torch.Tensor:
    """NHWC NumPy images as an NCHW tensor (a view, no copy)."""
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)


def accuracy(model, x, y, batch: int) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(nchw(x[i:i + batch])).argmax(1) for i in range(0, len(x), batch)])
    model.train()
    return float((pred.numpy() == y).mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/cnn_cifar10_pcm.toml")
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--train-subset", type=int)
    ap.add_argument("--test-subset", type=int)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(a.config)
    t = cfg.train
    epochs = a.epochs or t.epochs
    ds = load_dataset("cifar10")
    ntr, nte = a.train_subset or t.train_subset or len(ds.x_train), a.test_subset or t.test_subset or len(ds.x_test)
    x_tr, y_tr, x_te, y_te = ds.x_train[:ntr], ds.y_train[:ntr], ds.x_test[:nte], ds.y_test[:nte]
    torch.manual_seed(t.seed)
    net = build_cnn(cfg.model, ds.input_shape[2], ds.input_shape[0], ds.n_classes)
    model = mt.convert_to_analog(net, cfg)          # fp32 mode: the same layers on fp32 stores
    opt = mt.AnalogOptimizer(torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    args = sys.argv[1:] if argv is None else list(argv)
    (out / "command.txt").write_text(" ".join(["python examples/cnn_cifar10.py"] + [shlex.quote(x) for x in args]) + "\n")
    ck, epoch = out / "checkpoint.pt", 0
    if ck.is_file():
        st = torch.load(ck)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        epoch = st["epoch"]
    while epoch < epochs:
        lr = max(t.lr * t.lr_decay ** epoch, t.lr_min)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.set_epoch(epoch)
        perm = np.random.default_rng(np.random.SeedSequence([t.seed, ORDER_STREAM, epoch])).permutation(ntr)
        aug = np.random.default_rng(np.random.SeedSequence([t.seed, AUGMENT_STREAM, epoch]))
        torch.manual_seed(int(np.random.SeedSequence([t.seed, DROPOUT_STREAM, epoch]).generate_state(1)[0]))
        t0, tot, correct, pulses = time.perf_counter(), 0.0, 0, 0
        for i in range(math.ceil(ntr / t.batch_size)):
            idx = perm[i * t.batch_size:(i + 1) * t.batch_size]
            xb = augment(np, x_tr[idx], aug, pad=4, flip=True) if t.augment else x_tr[idx]
            yb = torch.from_numpy(y_tr[idx])
            logits = model(nchw(xb))
            loss = F.cross_entropy(logits, yb)
            loss.backward()
            opt.step()
            opt.zero_grad()
            tot += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            pulses += opt.last_pulses
        epoch += 1
        rec = {"epoch": epoch, "lr": lr, "loss": tot / ntr, "train_accuracy": correct / ntr,
               "test_accuracy": accuracy(model, x_te, y_te, t.eval_batch), "pulses": pulses,
               "seconds": time.perf_counter() - t0}
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch}, ck)
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
