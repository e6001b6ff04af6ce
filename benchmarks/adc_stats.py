"""Distribution of the normalised crossbar outputs that reach the ADC, per layer and direction.

    python -m benchmarks.adc_stats configs/cnn_cifar10_pcm.toml [--dataset cifar10] [--batches 4]
    python -m benchmarks.adc_stats --run runs/cnn/pcm_s0 [--dataset cifar10] [--set tile.adc_range=[...]]

Runs a few training mini-batches of the configured network (from its initial weights, or with
``--run`` from a PCM run's last checkpoint: the weights as training left them) and records, for
every weight layer's forward and backward (transposed) reads, |y_n| = |W x_n| / w_max before the
ADC (per tile): the median, the 99th and 99.9th percentiles, the maximum, the fraction that the
ADC range clips, and the median in ADC steps (LSBs: range / (2^(adc_bits-1) - 1)). Not part of
``make bench``.
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


def measure(cfg, ds, batches: int, seed: int = 0, state: dict | None = None) -> list[dict]:
    records = defaultdict(list)
    orig = tile_mod.AnalogTile._adc

    def recording_adc(self, yn, backward=False):
        a = np.abs(self.be.asnumpy(yn))
        r = self.tile.backward_range if backward else self.tile.adc_range
        lsb = r / ((self.tile.adc_levels - 1) // 2)
        records[(id(self), backward)].append((np.median(a), np.percentile(a, 99), a.max(), (a > r).mean(), r,
                                              np.percentile(a, 99.9), np.median(a) / lsb))
        return orig(self, yn, backward)

    tr = Trainer(cfg, ds, make_backend("numpy", seed), ".", progress=False)
    if state is not None:
        tr.load_state(state)
    names = {id(L.store.tile): L.name for L in tr.task.store_layers() if hasattr(L.store, "tile")}
    tile_mod.AnalogTile._adc = recording_adc
    try:
        keys = tr.task.epoch_batches(0)
        rng = tr.be.child_rng(3)
        for k in keys[:batches]:
            tr.step(k, tr.lr_at(0), rng)
    finally:
        tile_mod.AnalogTile._adc = orig
    out = []
    for (mid, bwd), v in records.items():
        v = np.array(v)
        out.append({"layer": names.get(mid, "?"), "direction": "backward" if bwd else "forward",
                    "median": float(v[:, 0].mean()), "p99": float(v[:, 1].mean()), "max": float(v[:, 2].max()),
                    "clipped_fraction": float(v[:, 3].mean()), "adc_range": float(v[0, 4]),
                    "p99_9": float(v[:, 5].mean()), "median_lsb": float(v[:, 6].mean())})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.adc_stats", description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", help="a config file (or give --run)")
    ap.add_argument("--run", help="a PCM/ideal run folder: its config and last checkpoint")
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = ap.parse_args(argv)
    if (args.config is None) == (args.run is None):
        ap.error("give a config file or --run RUN (one of them)")
    state = None
    if args.run:
        from pathlib import Path
        from sim.train import load_checkpoint
        cfg = load_config(Path(args.run) / "config.toml", parse_sets(args.set))
        state = load_checkpoint(Path(args.run))
    else:
        cfg = load_config(args.config, parse_sets(args.set))
    if cfg.synapse.mode == "fp32":
        ap.error("an fp32 config has no crossbars")
    try:
        ds = load_dataset(args.dataset)
        ds = Dataset(ds.name, ds.x_train[:cfg.train.batch_size * args.batches], ds.y_train[:cfg.train.batch_size * args.batches],
                     ds.x_test[:64], ds.y_test[:64], source=ds.source, n_classes=ds.n_classes)
    except DatasetError as exc:
        ap.error(str(exc))
    print("layer   direction  median|y_n|  median in LSBs  p99    p99.9  max    ADC range  clipped")
    for r in measure(cfg, ds, args.batches, state=state):
        print(f"{r['layer']:7s} {r['direction']:9s}  {r['median']:10.3f}  {r['median_lsb']:14.1f}  {r['p99']:5.2f}  "
              f"{r['p99_9']:5.2f}  {r['max']:5.2f}  {r['adc_range']:9.1f}  {100 * r['clipped_fraction']:6.3f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
