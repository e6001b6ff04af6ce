"""Mixed-precision training orchestrator.

Per mini-batch:
1. forward: each layer's MVM on its crossbar tiles (DAC -> noisy read -> ADC) or in fp32;
   activations, softmax and cross-entropy loss in digital floating point;
2. backward: error vectors through the transposed crossbar reads (the first layer's backward MVM
   is not needed and not done);
3. digital update: the optimizer turns gradients into delta_w; the DPU accumulates delta_w /
   epsilon into chi and returns pulse counts;
4. pulses applied to the devices, refresh where due; the simulated clock advances by
   ``seconds_per_batch``.

``synapse.mode`` picks the weight store: ``fp32`` (software baseline), ``ideal`` (ideal linear
devices: the algorithm alone) or ``pcm`` (full device model); the loop is the same for all three.
Biases are digital (fp32), updated by the same optimizer.
"""
from __future__ import annotations

import contextlib
import json
import math
import pickle
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpu_model.backend import Backend
from gpu_model.devices import FLOAT
from gpu_model.presets import IDEAL, get_pcm_preset
from .config import Config
from .data import Dataset
from .events import EventCounts
from .layers import AnalogWeights, FP32Weights, Optimizer, init_weights

CHECKPOINT = "checkpoint.pkl"
# skip all-zero input columns of the update when fewer than this fraction is live (engineering choice:
# below ~80 % the gather/scatter is cheaper than the dense update)
SPARSE_COLUMN_FRACTION = 0.8


class RunError(RuntimeError):
    """A run folder cannot be used as asked."""


# --- activations ----------------------------------------------------------------------------------
def _act(name, xp, z):
    if name == "sigmoid":
        return 1.0 / (1.0 + xp.exp(-z))
    if name == "tanh":
        return xp.tanh(z)
    return xp.maximum(z, 0)


def _act_grad(name, xp, a):
    """Derivative expressed through the activation output ``a``."""
    if name == "sigmoid":
        return a * (1.0 - a)
    if name == "tanh":
        return 1.0 - a * a
    return (a > 0).astype(a.dtype)


def softmax(xp, z):
    z = z - z.max(axis=1, keepdims=True)
    e = xp.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class Layer:
    name: str
    store: object          # FP32Weights | AnalogWeights
    bias: object           # digital bias (xp array)
    activation: str | None
    gain: object = None    # optional digital per-output gain on the MVM result (xp array), learned


class Model:
    """An MLP whose weight matrices are weight stores (fp32 or crossbar)."""

    def __init__(self, cfg: Config, n_in: int, n_out: int, be: Backend):
        self.cfg, self.be, self.xp = cfg, be, be.xp
        sizes = [n_in] + list(cfg.model.hidden) + [n_out]
        n_layers = len(sizes) - 1
        init_rng = np.random.default_rng(np.random.SeedSequence([cfg.train.seed, 1]))
        s = cfg.synapse
        w_max = cfg.per_layer("w_max", n_layers)
        eps = cfg.per_layer("epsilon_uS", n_layers)
        self.layers: list[Layer] = []
        for i in range(n_layers):
            w0 = init_weights(sizes[i + 1], sizes[i], cfg.model.init, cfg.model.init_gain, init_rng)
            if s.mode == "fp32":
                store = FP32Weights(w0, be)
            else:
                if s.mode == "ideal":
                    preset = IDEAL.with_overrides(ideal_step=eps[i])
                else:
                    preset = get_pcm_preset(s.preset)
                    if not s.drift:
                        preset = preset.with_overrides(drift_model="constant", nu_mean=0.0, nu_std=0.0)
                np.clip(w0, -w_max[i] * s.refresh_threshold, w_max[i] * s.refresh_threshold, out=w0)
                store = AnalogWeights(
                    w0, be, preset, cfg.tile_preset(), cfg.dpu_spec(), s.dpu, w_max=w_max[i],
                    epsilon_uS=eps[i], refresh_threshold=s.refresh_threshold,
                    refresh_tolerance_uS=None if s.refresh_tolerance_uS < 0 else s.refresh_tolerance_uS,
                    read_noise=s.read_noise and preset.read_noise_model != "none", stream=100 + i,
                    common_mode_uS=s.common_mode_uS)
            act = cfg.model.activation if i < n_layers - 1 else None
            gain = self.xp.ones(sizes[i + 1], dtype=FLOAT) if cfg.model.output_gain else None
            self.layers.append(Layer(f"fc{i + 1}", store, self.xp.zeros(sizes[i + 1], dtype=FLOAT), act, gain))
        self.sizes = sizes

    # --- passes -----------------------------------------------------------------------------------
    def forward(self, x, scales=None):
        """Returns the list of layer outputs (post-activation; logits for the last).

        ``scales``: optional per-layer factor applied digitally to each MVM output (global drift
        compensation at inference).
        """
        outs = []
        self.raw = []          # MVM outputs before the digital gain (for its gradient)
        self.mvm = []          # MVM outputs after gain and compensation (for drift calibration)
        h = x
        for i, L in enumerate(self.layers):
            y = L.store.forward(h)
            if L.gain is not None:
                self.raw.append(y)
                y = y * L.gain
            if scales is not None:
                y = y * scales[i]
            self.mvm.append(y)
            z = y + L.bias
            h = _act(L.activation, self.xp, z) if L.activation else z
            outs.append(h)
        return outs

    def predict(self, x, batch: int, scales=None):
        xp = self.xp
        preds = []
        for i in range(0, x.shape[0], batch):
            preds.append(xp.argmax(self.forward(x[i:i + batch], scales)[-1], axis=1))
        return xp.concatenate(preds)

    @contextlib.contextmanager
    def uncounted(self):
        """Crossbar MVMs inside this block are not training events (evaluation, calibration)."""
        mats = [L.store.matrix for L in self.layers if isinstance(L.store, AnalogWeights)]
        for mat in mats:
            mat.count_events = False
        try:
            yield
        finally:
            for mat in mats:
                mat.count_events = True

    def set_time(self, t: float):
        for L in self.layers:
            if isinstance(L.store, AnalogWeights):
                L.store.syn.set_time(t)

    def advance(self, dt: float):
        for L in self.layers:
            if isinstance(L.store, AnalogWeights):
                L.store.syn.advance(dt)


def loss_and_error(xp, logits, yb):
    """Mean cross-entropy, number correct, and dL/dlogits of the mean loss."""
    B = logits.shape[0]
    p = softmax(xp, logits)
    rows = xp.arange(B)
    loss = float(-xp.log(p[rows, yb] + 1e-12).mean())
    correct = int((xp.argmax(p, axis=1) == yb).sum())
    p[rows, yb] -= 1.0
    p *= 1.0 / B
    return loss, correct, p


def backprop(model: Model, xb, outs, d, sparse_ok: bool = False):
    """Yield (layer index, grad_w, grad_b, cols) from the last layer down.

    Each layer's error for the layer below goes through its transposed MVM *before* the caller
    updates that layer (the generator is consumed one layer at a time). ``cols``: when
    ``sparse_ok`` and most inputs of a layer are zero over the whole batch (e.g. MNIST background
    pixels), the gradient covers only the live input columns ``cols`` — the others have a zero
    gradient, which with plain SGD leaves chi unchanged and sends no pulse (work proportional to
    what changes).
    """
    xp = model.xp
    for i in range(len(model.layers) - 1, -1, -1):
        L = model.layers[i]
        a_in = outs[i - 1] if i > 0 else xb
        grad_b = d.sum(axis=0)
        grad_g = None
        if L.gain is not None:                # y = gain * (W a) + b
            grad_g = (d * model.raw[i]).sum(axis=0)
            d = d * L.gain
        cols = None
        if sparse_ok:
            live = xp.flatnonzero(xp.any(a_in, axis=0))   # columns with a non-zero input
            if live.shape[0] < SPARSE_COLUMN_FRACTION * a_in.shape[1]:
                cols = live
        grad_w = d.T @ (a_in if cols is None else a_in[:, cols])   # outer-product sum over the batch
        if i > 0:
            prev = model.layers[i - 1]
            d_next = L.store.backward(d) * _act_grad(prev.activation, xp, outs[i - 1])
        yield i, grad_w, grad_b, cols, grad_g
        if i > 0:
            d = d_next


class Trainer:
    def __init__(self, cfg: Config, ds: Dataset, be: Backend, out_dir: Path, progress: bool = True):
        self.cfg, self.ds, self.be, self.xp = cfg, ds, be, be.xp
        self.out = Path(out_dir)
        self.progress = progress
        xp = self.xp
        t = cfg.train
        ntr = t.train_subset or len(ds.x_train)
        nte = t.test_subset or len(ds.x_test)
        self.x_train = xp.asarray(ds.x_train[:ntr])
        self.y_train = xp.asarray(ds.y_train[:ntr])
        self.x_test = xp.asarray(ds.x_test[:nte])
        self.y_test = xp.asarray(ds.y_test[:nte])
        self.model = Model(cfg, ds.n_features, ds.n_classes, be)
        self.opt = Optimizer(t.optimizer, xp, t.momentum, t.adam_beta1, t.adam_beta2, t.adam_eps)
        self.events = EventCounts(chi_bits=cfg.dpu_spec().chi_bits if cfg.synapse.mode != "fp32" else 0)
        self.epoch = 0
        self.clock = 0.0
        self.metrics: list[dict] = []
        self.images = 0

    # --- one mini-batch -------------------------------------------------------------------------
    def _batch(self, xb, yb, lr, rand_rng):
        xp, m = self.xp, self.model
        B = xb.shape[0]
        outs = m.forward(xb)
        loss, correct, d = loss_and_error(xp, outs[-1], yb)
        self.opt.step_begin()
        ev = self.events
        pulses = refreshes = 0
        sparse_ok = self.opt.kind == "sgd"
        for i, grad_w, grad_b, cols, grad_g in backprop(m, xb, outs, d, sparse_ok):
            L = m.layers[i]
            st = L.store.apply_update(self.opt.delta(f"{L.name}.w", grad_w, lr), rand_rng, cols)
            L.bias += self.opt.delta(f"{L.name}.b", grad_b, lr)
            if grad_g is not None:
                L.gain += self.opt.delta(f"{L.name}.g", grad_g, lr * self.cfg.model.output_gain_lr_scale)
                ev.add(bias_updates=grad_g.size)
            pulses += st["set_pulses"]
            refreshes += st["refreshes"]
            # the digital unit works on the live columns only: a zero input gives a zero update,
            # so it costs no MAC, no chi read-modify-write and no optimizer op
            n_w = L.store.shape[0] * (L.store.shape[1] if cols is None else int(cols.shape[0]))
            ev.add(update_macs=B * n_w, chi_updates=n_w if L.store.kind == "analog" else 0,
                   optimizer_ops=Optimizer.OPS_PER_WEIGHT[self.opt.kind] * (n_w + grad_b.size),
                   bias_updates=grad_b.size)
            if L.activation:
                ev.add(activations=2 * B * grad_b.size)
        ev.add(softmax_outputs=B * m.sizes[-1])
        m.advance(self.cfg.train.seconds_per_batch)
        self.clock += self.cfg.train.seconds_per_batch
        return loss, correct, pulses, refreshes

    def lr_at(self, epoch: int) -> float:
        t = self.cfg.train
        return max(t.lr * t.lr_decay ** epoch, t.lr_min)

    def test_accuracy(self) -> float:
        """Test accuracy with fresh noisy reads; its MVMs are not training events (not counted)."""
        with self.model.uncounted():
            pred = self.model.predict(self.x_test, self.cfg.train.eval_batch)
        return float((pred == self.y_test).mean())

    def run(self) -> dict:
        cfg, xp = self.cfg, self.xp
        t = cfg.train
        n = self.x_train.shape[0]
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover
            tqdm = None
        while self.epoch < t.epochs:
            ep = self.epoch
            lr = self.lr_at(ep)
            perm = np.random.default_rng(np.random.SeedSequence([t.seed, 2, ep])).permutation(n)
            perm = xp.asarray(perm)
            rand_rng = self.be.child_rng(1_000_000 + ep)
            t0 = time.perf_counter()
            tot_loss = tot_correct = seen = pulses = refreshes = 0
            n_batches = math.ceil(n / t.batch_size)
            bar = tqdm(total=n_batches, desc=f"epoch {ep + 1}/{t.epochs}", unit="batch", leave=False,
                       disable=not self.progress, mininterval=0.5, file=sys.stderr) if tqdm else None
            for bi in range(n_batches):
                idx = perm[bi * t.batch_size:(bi + 1) * t.batch_size]
                loss, correct, p_, r_ = self._batch(self.x_train[idx], self.y_train[idx], lr, rand_rng)
                B = int(idx.shape[0])
                tot_loss += loss * B
                tot_correct += correct
                seen += B
                pulses += p_
                refreshes += r_
                if bar is not None:
                    bar.update(1)
                    if bi % 200 == 0:
                        bar.set_postfix(loss=f"{tot_loss / seen:.3f}", acc=f"{tot_correct / seen:.4f}",
                                        pulses=pulses)
            if bar is not None:
                bar.close()
            self.images += seen
            train_s = time.perf_counter() - t0
            test_acc = self.test_accuracy()
            rec = {"epoch": ep + 1, "lr": lr, "loss": tot_loss / seen, "train_accuracy": tot_correct / seen,
                   "test_accuracy": test_acc, "seconds": train_s, "eval_seconds": time.perf_counter() - t0 - train_s,
                   "pulses": int(pulses), "refreshes": int(refreshes), "sim_time_s": self.clock}
            self.metrics.append(rec)
            self.epoch += 1
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
            if self.progress:
                print(f"epoch {ep + 1:3d}  loss {rec['loss']:.4f}  train {rec['train_accuracy']:.4f}  "
                      f"test {test_acc:.4f}  pulses {pulses:,}  refreshes {refreshes:,}  {train_s:.1f}s",
                      file=sys.stderr)
            self.save_checkpoint()
        return self.summary()

    # --- outputs ----------------------------------------------------------------------------------
    def collect_events(self) -> dict:
        ev = EventCounts(**self.events.as_dict())
        for L in self.model.layers:
            if isinstance(L.store, AnalogWeights):
                for k, v in L.store.matrix.events.items():
                    if k in ev.as_dict():
                        ev.add(**{k: v})
                c = L.store.syn.counters
                ev.add(set_pulses=c.set_pulses, refreshes=c.refreshes, refresh_resets=c.refresh_resets,
                       refresh_prog_pulses=c.refresh_prog_pulses, refresh_verify_reads=c.refresh_verify_reads)
        return ev.as_dict()

    def summary(self) -> dict:
        best = max(self.metrics, key=lambda r: r["test_accuracy"])
        last = self.metrics[-1]
        layers = []
        for L in self.model.layers:
            entry = {"name": L.name, "out": int(L.store.shape[0]), "in": int(L.store.shape[1]),
                     "kind": L.store.kind}
            if isinstance(L.store, AnalogWeights):
                syn = L.store.syn
                entry.update(w_max=syn.w_max, epsilon_uS=syn.epsilon_uS, epsilon_w=syn.epsilon_w,
                             tiles=L.store.matrix.n_tiles, inc_saturated=L.store.inc_saturated,
                             init_prog_pulses=syn.counters.init_prog_pulses)
            layers.append(entry)
        return {
            "dataset": self.ds.name, "dataset_source": self.ds.source, "synapse": self.cfg.synapse.mode,
            "preset": self.cfg.synapse.preset if self.cfg.synapse.mode == "pcm" else self.cfg.synapse.mode,
            "dpu": self.cfg.synapse.dpu, "backend": self.be.name, "seed": self.cfg.train.seed,
            "epochs": self.epoch, "test_accuracy": last["test_accuracy"],
            "best_test_accuracy": best["test_accuracy"], "best_epoch": best["epoch"],
            "train_accuracy": last["train_accuracy"], "loss": last["loss"],
            "total_train_seconds": sum(r["seconds"] for r in self.metrics),
            "seconds_per_epoch": sum(r["seconds"] for r in self.metrics) / len(self.metrics),
            "total_pulses": sum(r["pulses"] for r in self.metrics),
            "total_refreshes": sum(r["refreshes"] for r in self.metrics),
            "sim_time_end_s": self.clock, "images_trained": self.images,
            "batch_size": self.cfg.train.batch_size, "optimizer": self.cfg.train.optimizer,
            "layers": layers, "events": self.collect_events(),
        }

    def state(self) -> dict:
        be = self.be
        return {
            "config": self.cfg.to_dict(), "epoch": self.epoch, "clock": self.clock, "images": self.images,
            "metrics": self.metrics, "events": self.events.as_dict(), "optimizer": self.opt.state_dict(be),
            "layers": [{"store": L.store.state_dict(be), "bias": be.asnumpy(L.bias),
                        "gain": None if L.gain is None else be.asnumpy(L.gain)} for L in self.model.layers],
        }

    def save_checkpoint(self):
        tmp = self.out / (CHECKPOINT + ".part")
        with open(tmp, "wb") as f:
            pickle.dump(self.state(), f, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(self.out / CHECKPOINT)

    def load_state(self, st: dict):
        self.epoch, self.clock, self.images = st["epoch"], st["clock"], st["images"]
        self.metrics = list(st["metrics"])
        self.events = EventCounts(**st["events"])
        self.opt.load_state_dict(st["optimizer"])
        for L, ls in zip(self.model.layers, st["layers"]):
            L.store.load_state_dict(ls["store"])
            L.bias[...] = self.xp.asarray(ls["bias"])
            if L.gain is not None:
                L.gain[...] = self.xp.asarray(ls["gain"])
        self.model.set_time(self.clock)


def load_checkpoint(run_dir: Path) -> dict:
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise RunError(f"no checkpoint in {run_dir} (expected {path})")
    with open(path, "rb") as f:
        return pickle.load(f)


def restore_trainer(run_dir: Path, cfg: Config, be: Backend, ds: Dataset, progress=False) -> Trainer:
    tr = Trainer(cfg, ds, be, run_dir, progress=progress)
    tr.load_state(load_checkpoint(run_dir))
    return tr
