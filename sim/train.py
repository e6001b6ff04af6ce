"""One training loop for every network (the mixed-precision architecture).

Per mini-batch the task (``sim/tasks``) runs:
1. forward: each weight layer's MVMs on its crossbar tiles (DAC -> noisy read -> ADC) or in fp32;
   activations, normalisation, pooling and the loss in digital floating point;
2. backward: error vectors through the transposed crossbar reads (the first layer's transposed
   read is not needed and not done);
3. digital update: the optimizer turns gradients into delta_w; the DPU accumulates delta_w /
   epsilon into chi and returns pulse counts (``sim.nn.apply_updates``, last layer first);
4. pulses applied to the devices, refresh where due.

The trainer then advances the simulated clock by ``train.seconds_per_batch``; per epoch it writes
a metrics line, evaluates, and checkpoints (``--resume`` continues bit-exactly).

``synapse.mode`` picks the weight store: ``fp32`` (software baseline), ``ideal`` (ideal linear
devices: the algorithm alone) or ``pcm`` (full device model); the loop is the same for all three.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from gpu_model.backend import Backend
from . import checkpoint as ckpt
from .config import Config
from .data import Dataset
from .events import EventCounts
from .nn import Optimizer
from .tasks import Task, make_task

CHECKPOINT = "checkpoint.npz"            # sim/checkpoint.py: arrays + JSON manifest, never a pickle
CHECKPOINT_PREV = "checkpoint.prev.npz"  # the one before it, kept until the new one is complete
LEGACY_CHECKPOINT = "checkpoint.pkl"     # mcasim before the .npz checkpoints: not read (see load_checkpoint)
CHECKPOINT_FORMAT = 2      # the state layout: 1: the MLP-only trainer (layers as a list); 2: named layers per network
RAND_STREAM_BASE = 1_000_000   # stochastic-rounding bits: child_rng(RAND_STREAM_BASE + epoch)


class RunError(RuntimeError):
    """A run folder cannot be used as asked."""


class DivergedError(RunError):
    """Training diverged: the loss of an epoch is not finite (the run keeps its last checkpoint)."""


class Trainer:
    def __init__(self, cfg: Config, ds: Dataset, be: Backend, out_dir: Path, progress: bool = True,
                 task: Task | None = None):
        self.cfg, self.ds, self.be, self.xp = cfg, ds, be, be.xp
        self.out = Path(out_dir)
        self.progress = progress
        t = cfg.train
        self.task = task if task is not None else make_task(cfg, ds, be)
        self.task.out_dir = self.out      # where a task may write per-epoch artefacts (sample grids)
        self.opt = Optimizer(t.optimizer, self.xp, t.momentum, t.adam_beta1, t.adam_beta2, t.adam_eps)
        self.events = EventCounts(chi_bits=cfg.dpu_spec().chi_bits if cfg.synapse.mode != "fp32" else 0)
        self.epoch = 0
        self.clock = 0.0
        self.metrics: list[dict] = []
        self.images = 0

    # --- one mini-batch -------------------------------------------------------------------------
    def step(self, key, lr: float, rand_rng) -> dict:
        st = self.task.train_step(key, lr, rand_rng, self.opt, self.events)
        dt = self.cfg.train.seconds_per_batch
        self.task.advance(dt)
        self.clock += dt
        return st

    def lr_at(self, epoch: int) -> float:
        t = self.cfg.train
        return max(t.lr * t.lr_decay ** epoch, t.lr_min)

    def run(self, on_epoch=None) -> dict:
        """Train up to ``train.epochs``; ``on_epoch(record)`` is called after each epoch's checkpoint."""
        t = self.cfg.train
        task = self.task
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover
            tqdm = None
        while self.epoch < t.epochs:
            ep = self.epoch
            lr = self.lr_at(ep)
            batches = task.epoch_batches(ep)
            rand_rng = self.be.child_rng(RAND_STREAM_BASE + ep)
            t0 = time.perf_counter()
            tot_loss = tot_metric = seen = pulses = refreshes = 0
            bar = tqdm(total=len(batches), desc=f"epoch {ep + 1}/{t.epochs}", unit="batch", leave=False,
                       disable=not self.progress, mininterval=0.5, file=sys.stderr) if tqdm else None
            for bi, key in enumerate(batches):
                st = self.step(key, lr, rand_rng)
                tot_loss += st["loss_sum"]
                tot_metric += st["metric_sum"]
                seen += st["n"]
                pulses += st["pulses"]
                refreshes += st["refreshes"]
                if bar is not None:
                    bar.update(1)
                    if bi % 200 == 0 or bi == len(batches) - 1:   # and the epoch's final figures
                        bar.set_postfix(loss=f"{tot_loss / seen:.3f}", **{task.train_metric: f"{tot_metric / seen:.4f}"},
                                        pulses=pulses)
            if bar is not None:
                bar.close()
            if not math.isfinite(tot_loss):
                raise DivergedError(
                    f"training diverged in epoch {ep + 1}: its mean training loss is {tot_loss / max(seen, 1)}; "
                    + (f"the run folder keeps the checkpoint of epoch {ep}" if ep else "nothing was checkpointed")
                    + f" (a smaller train.lr, now {lr:g}, or train.lr_decay < 1 may keep it finite)")
            self.images += seen
            train_s = time.perf_counter() - t0
            evals = task.evaluate()
            rec = {"epoch": ep + 1, "lr": lr, "loss": tot_loss / seen, task.train_metric: tot_metric / seen,
                   **evals, "seconds": train_s, "eval_seconds": time.perf_counter() - t0 - train_s,
                   "pulses": int(pulses), "refreshes": int(refreshes), "sim_time_s": self.clock}
            self.metrics.append(rec)
            self.epoch += 1
            # checkpoint first: a metrics line always has its checkpoint (a run killed in between
            # resumes from the checkpoint, and --resume rewrites metrics.jsonl from it)
            self.save_checkpoint()
            write_metrics(self.out, self.metrics)
            if self.progress:
                figs = "  ".join(f"{k.replace('_accuracy', '')} {v:.4f}" for k, v in
                                 [(task.train_metric, rec[task.train_metric])] + list(evals.items())
                                 if isinstance(v, (int, float)))          # lists (histograms) stay in the file
                print(f"epoch {ep + 1:3d}  loss {rec['loss']:.4f}  {figs}  pulses {pulses:,}  "
                      f"refreshes {refreshes:,}  {train_s:.1f}s", file=sys.stderr)
            if on_epoch is not None:
                on_epoch(rec)
        return self.summary()

    # --- outputs ----------------------------------------------------------------------------------
    def collect_events(self) -> dict:
        ev = EventCounts(**self.events.as_dict())
        names = set(ev.as_dict())
        for store in self.task.analog_stores():   # one typed counter per tile (gpu_model.tile.TileEvents)
            ev.add(**{k: v for k, v in store.tile.events.as_dict().items() if k in names})
        return ev.as_dict()

    def summary(self) -> dict:
        task = self.task
        m = task.metric
        pick = max if task.higher_is_better else min
        best = pick(self.metrics, key=lambda r: r[m])
        last = self.metrics[-1]
        cfg = self.cfg
        extra = {k: v for k, v in last.items() if k not in ("epoch", "lr", "loss", "seconds", "eval_seconds",
                                                            "pulses", "refreshes", "sim_time_s")}
        return {
            "dataset": self.ds.name, "dataset_source": self.ds.source, "arch": cfg.model.arch,
            "synapse": cfg.synapse.mode,
            "preset": cfg.synapse.preset if cfg.synapse.mode == "pcm" else cfg.synapse.mode,
            "dpu": cfg.synapse.dpu, "backend": self.be.name, "seed": cfg.train.seed,
            "devices_per_side": cfg.synapse.devices_per_side,
            "epochs": self.epoch, **extra, "metric": m,
            f"best_{m}": best[m], "best_epoch": best["epoch"], "loss": last["loss"],
            "total_train_seconds": sum(r["seconds"] for r in self.metrics),
            "seconds_per_epoch": sum(r["seconds"] for r in self.metrics) / len(self.metrics),
            "total_pulses": sum(r["pulses"] for r in self.metrics),
            "total_refreshes": sum(r["refreshes"] for r in self.metrics),
            "sim_time_end_s": self.clock, "images_trained": self.images,
            "batch_size": cfg.train.batch_size, "optimizer": cfg.train.optimizer,
            "layers": task.layer_summary(), "events": self.collect_events(),
        }

    def state(self) -> dict:
        be = self.be
        return {
            "format": CHECKPOINT_FORMAT, "config": self.cfg.to_dict(), "epoch": self.epoch, "clock": self.clock,
            "images": self.images, "metrics": self.metrics, "events": self.events.as_dict(),
            "optimizer": self.opt.state_dict(be), "task": self.task.state_dict(be),
        }

    def save_checkpoint(self):
        """Write ``checkpoint.npz`` atomically, the previous one kept as ``checkpoint.prev.npz``."""
        ckpt.save(self.out / CHECKPOINT, self.state())

    def load_state(self, st: dict):
        if not isinstance(st, dict) or "task" not in st:
            raise RunError("the checkpoint does not hold a trainer state")
        if st.get("format", 1) != CHECKPOINT_FORMAT:
            raise RunError(f"checkpoint format {st.get('format', 1)} was written by an older mcasim "
                           f"(this one reads format {CHECKPOINT_FORMAT}); re-make the run from its command")
        self.epoch, self.clock, self.images = st["epoch"], st["clock"], st["images"]
        self.metrics = list(st["metrics"])
        self.events = EventCounts(**st["events"])
        self.opt.load_state_dict(st["optimizer"])
        self.task.load_state_dict(st["task"])
        self.task.set_time(self.clock)


def write_metrics(run_dir: Path, metrics: list[dict]) -> None:
    """``metrics.jsonl``: one line per epoch, replaced atomically (never a half-written line)."""
    ckpt.write_text_atomic(Path(run_dir) / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in metrics))


def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a checkpoint to resume from (the current or the previous file)."""
    return (Path(run_dir) / CHECKPOINT).is_file() or (Path(run_dir) / CHECKPOINT_PREV).is_file()


def load_checkpoint(run_dir: Path, fallback: bool = False) -> dict:
    """The trainer state in ``run_dir/checkpoint.npz``; with ``fallback``, from ``checkpoint.prev.npz``
    where that one is missing, truncated or corrupted. Never unpickles: an old ``checkpoint.pkl`` is
    an error that names the conversion command."""
    return load_checkpoint_file(run_dir, fallback)[0]


def load_checkpoint_file(run_dir: Path, fallback: bool = False) -> tuple[dict, Path]:
    """``(state, the file it came from)``, as :func:`load_checkpoint`."""
    run_dir = Path(run_dir)
    path, prev = run_dir / CHECKPOINT, run_dir / CHECKPOINT_PREV
    if not path.is_file() and not (fallback and prev.is_file()):
        if (run_dir / LEGACY_CHECKPOINT).is_file():
            raise RunError(f"{run_dir / LEGACY_CHECKPOINT} is a pickle checkpoint of an older mcasim; pickles "
                           "can run code when loaded, so mcasim no longer reads them. If you trust where it "
                           f"came from, convert it with: python -m sim.checkpoint convert {run_dir}")
        if prev.is_file():
            raise RunError(f"no {CHECKPOINT} in {run_dir}; --fallback-checkpoint resumes from {prev}")
        raise RunError(f"no checkpoint in {run_dir} (expected {path})")
    try:
        if not path.is_file():
            print(f"warning: no {path}; using the previous checkpoint {prev}", file=sys.stderr)
            return ckpt.load(prev), prev
        return ckpt.load_or_previous(path, fallback)
    except ckpt.CheckpointError as exc:
        raise RunError(str(exc)) from None


def restore_trainer(run_dir: Path, cfg: Config, be: Backend, ds: Dataset, progress=False,
                    fallback: bool = False) -> Trainer:
    """A trainer for ``run_dir`` at its last checkpoint (``fallback``: see :func:`load_checkpoint`)."""
    tr = Trainer(cfg, ds, be, run_dir, progress=progress)
    tr.load_state(load_checkpoint(run_dir, fallback))
    return tr
