"""Distribution of the normalised crossbar outputs that reach the ADC, per layer and direction.

    python -m benchmarks.adc_stats configs/cnn_cifar10_pcm.toml [--dataset cifar10] [--batches 4]

Runs a few training mini-batches of the configured network and records, for every weight layer's
forward and backward (transposed) reads, |y_n| = |W x_n| / w_max before the ADC (per tile): the
median, the 99th percentile, the maximum, and the fraction that the configured ADC range clips.
This is how the CNN's ADC ranges were chosen (docs/cnn.md). Not part of ``make bench``.
"""
from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from gpu_model import tile as tile_mod
from gpu_model.backend import make_backend
from sim.config import load_config, parse_sets
from sim.data import Dataset, DatasetError, load_dataset
from sim.train import Trainer


def measure(cfg, ds, batches: int, seed: int = 0) -> list[dict]:
    records = defaultdict(list)
    orig = tile_mod.AnalogMatrix._adc

    def recording_adc(self, yn, backward=False):
        a = np.abs(self.be.asnumpy(yn))
        r = self.tile.backward_range if backward else self.tile.adc_range
        records[(id(self), backward)].append((np.median(a), np.percentile(a, 99), a.max(), (a > r).mean(), r))
        return orig(self, yn, backward)

    tr = Trainer(cfg, ds, make_backend("numpy", seed), ".", progress=False)
    names = {id(L.store.matrix): L.name for L in tr.task.store_layers() if hasattr(L.store, "matrix")}
    tile_mod.AnalogMatrix._adc = recording_adc
    try:
        keys = tr.task.epoch_batches(0)
        rng = tr.be.child_rng(3)
        for k in keys[:batches]:
            tr.step(k, tr.lr_at(0), rng)
    finally:
        tile_mod.AnalogMatrix._adc = orig
    out = []
    for (mid, bwd), v in records.items():
        v = np.array(v)
        out.append({"layer": names.get(mid, "?"), "direction": "backward" if bwd else "forward",
                    "median": float(v[:, 0].mean()), "p99": float(v[:, 1].mean()), "max": float(v[:, 2].max()),
                    "clipped_fraction": float(v[:, 3].mean()), "adc_range": float(v[0, 4])})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.adc_stats", description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, parse_sets(args.set))
    if cfg.synapse.mode == "fp32":
        ap.error("an fp32 config has no crossbars")
    try:
        ds = load_dataset(args.dataset)
        ds = Dataset(ds.name, ds.x_train[:cfg.train.batch_size * args.batches], ds.y_train[:cfg.train.batch_size * args.batches],
                     ds.x_test[:64], ds.y_test[:64], source=ds.source, n_classes=ds.n_classes)
    except DatasetError as exc:
        ap.error(str(exc))
    print("layer   direction  median|y_n|  p99    max    ADC range  clipped")
    for r in measure(cfg, ds, args.batches):
        print(f"{r['layer']:7s} {r['direction']:9s}  {r['median']:10.3f}  {r['p99']:5.2f}  {r['max']:5.2f}  "
              f"{r['adc_range']:9.1f}  {100 * r['clipped_fraction']:6.3f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
